"""The layering and the size limits of the package, checked on every run of the suite.

The import contracts are in pyproject.toml (``[tool.importlinter]``; ``lint-imports`` runs the same). Size:
no function over 60 lines (docstring included) or cyclomatic complexity 12 (radon), except the numba kernels,
which are kept as single loops on purpose (splitting them costs the compiler's inlining across calls).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyterrier_d2s"
KERNELS = {PACKAGE / "index" / "engines" / "_taat_kernels.py"}
MAX_LINES = 60
MAX_COMPLEXITY = 12


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p not in KERNELS)


def test_import_contracts_are_kept():
    from importlinter import configuration
    from importlinter.application.use_cases import lint_imports

    configuration.configure()  # what the lint-imports command does first
    kept = lint_imports(config_filename=str(ROOT / "pyproject.toml"), cache_dir=None, no_logo=True)
    assert kept, "an import contract is broken: run lint-imports for the details"


def test_no_function_over_the_line_limit():
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over the limit:\n" + "\n".join(long)


def test_no_function_over_the_complexity_limit():
    radon = pytest.importorskip("radon.complexity")
    complex_ = []
    for path in _sources():
        for block in radon.cc_visit(path.read_text()):
            if block.complexity > MAX_COMPLEXITY:
                complex_.append(
                    f"{path.relative_to(ROOT)}:{block.lineno} {block.fullname} ({block.complexity})"
                )
    assert not complex_, "functions over the limit:\n" + "\n".join(complex_)
