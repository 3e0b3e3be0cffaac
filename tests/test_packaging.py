"""What a non-editable install (a wheel) carries: every data file inside the package must be package data.

setuptools only ships files that ``[options.package_data]`` matches *relative to a package it found*
(``packages = find:`` finds directories with an ``__init__.py``); a pattern keyed on a plain data directory is
silently ignored and the embedded demo set would be missing from ``pip install pyterrier-d2s``.
"""

from __future__ import annotations

import configparser
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _package_data() -> dict[str, list[str]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    section = cfg["options.package_data"]
    return {
        pkg: [p.strip() for p in section[pkg].replace("\n", ",").split(",") if p.strip()] for pkg in section
    }


def _shipped(path: Path, package_data: dict[str, list[str]]) -> bool:
    for pkg, patterns in package_data.items():
        pkg_dir = ROOT / pkg.replace(".", "/")
        if not (pkg_dir / "__init__.py").is_file():
            continue  # not a package: setuptools ignores its entry
        if pkg_dir in path.parents and any(
            fnmatch(path.relative_to(pkg_dir).as_posix(), p) for p in patterns
        ):
            return True
    return False


def test_every_data_file_in_the_package_is_package_data():
    package_data = _package_data()
    files = [
        f
        for f in (ROOT / "pyterrier_d2s").rglob("*")
        if f.is_file() and f.suffix not in (".py", ".pyc") and "__pycache__" not in f.parts
    ]
    assert any(f.name == "image_vectors.npy" for f in files)  # the demo set is where this test looks
    missing = [str(f.relative_to(ROOT)) for f in files if not _shipped(f, package_data)]
    assert not missing, f"not in any wheel: {missing} (fix [options.package_data] in setup.cfg)"


def test_the_check_catches_a_pattern_keyed_on_a_data_directory():
    demo = ROOT / "pyterrier_d2s" / "data" / "coco500" / "image_vectors.npy"
    assert not _shipped(demo, {"pyterrier_d2s.data.coco500": ["*.npy"]})  # the pattern that shipped nothing
    assert _shipped(demo, {"pyterrier_d2s.data": ["coco500/*.npy"]})
