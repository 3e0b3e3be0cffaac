"""Integrity of an index directory: a manifest of its files, and the checks that run before native code.

A build records every file's size and SHA-256 in ``manifest.json``. Engine files under ``engines/`` (taat,
pisa, seismic) are not part of it: each engine build records its own files' hashes in its ``engine.json``,
checked whenever the engine loads them, and is rebuilt when broken. Opening an index compares sizes (cheap) and the hashes of the small
text files whose damage would silently mislabel results (``docnos.txt``, ``terms.txt``), and checks the
structural invariants that numba kernels and PISA rely on; ``d2s check`` verifies every hash.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = [
    "MANIFEST_FILE",
    "IndexDamaged",
    "check_csr",
    "check_files",
    "manifest_names",
    "sha256_file",
    "verify",
    "write_manifest",
]

MANIFEST_FILE = "manifest.json"
_NOT_LISTED = {MANIFEST_FILE, "pt_meta.json", ".builder-pid"}  # at the top level: written after the manifest


class IndexDamaged(ValueError):
    """A file of an index does not match what its build recorded, or breaks a structural invariant."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _listed_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and str(p.relative_to(directory)) not in _NOT_LISTED
        and "engines" not in p.relative_to(directory).parts
    )


def write_manifest(directory: Path) -> dict:
    """Record size and SHA-256 of every file below ``directory`` (but engine caches) in ``manifest.json``."""
    files = {
        str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in _listed_files(directory)
    }
    manifest = {"version": 1, "files": files}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    return manifest


def _manifest(directory: Path) -> dict | None:
    path = directory / MANIFEST_FILE
    if not path.is_file():
        return None  # an index built before manifests existed
    try:
        return json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise IndexDamaged(f"{path}: unreadable manifest ({e}); rebuild the index") from e


def manifest_names(directory: Path) -> list[str]:
    """The files the build listed (paths relative to ``directory``); empty for an index without a manifest."""
    return list(_manifest(directory) or {})


def check_files(directory: Path, names: list[str] | None = None, hashed: tuple[str, ...] = ()) -> None:
    """Compare the sizes of ``names`` (default: every listed file) with the manifest, and the hashes of
    ``hashed``. Raises :class:`IndexDamaged` naming the first file that differs."""
    files = _manifest(directory)
    if files is None:
        return
    for name in names if names is not None else list(files):
        rec = files.get(name)
        if rec is None:
            continue
        path = directory / name
        if not path.is_file():
            raise IndexDamaged(f"{path}: missing; rebuild the index (d2s index --overwrite)")
        size = path.stat().st_size
        if size != rec["size"]:
            raise IndexDamaged(
                f"{path}: {size} bytes, the build wrote {rec['size']}: damaged; rebuild the index "
                "(d2s index --overwrite)"
            )
        if name in hashed and sha256_file(path) != rec["sha256"]:
            raise IndexDamaged(f"{path}: contents changed since the build; rebuild the index")


def verify(directory: Path) -> list[str]:
    """Every problem found by comparing all files with the manifest (sizes and SHA-256): empty if intact."""
    files = _manifest(directory)
    if files is None:
        return [f"{directory / MANIFEST_FILE}: missing (index built by an older version; nothing to verify)"]
    problems = []
    for name, rec in files.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != rec["size"]:
            problems.append(f"{path}: {path.stat().st_size} bytes, the build wrote {rec['size']}")
        elif sha256_file(path) != rec["sha256"]:
            problems.append(f"{path}: contents differ from the build (SHA-256)")
    return problems


def check_csr(matrix: sp.csr_matrix, shape: tuple[int, int], what: str) -> None:
    """The CSR invariants kernels index with: shape, indptr from 0 to nnz and non-decreasing, column ids in
    range, finite non-negative weights. Raises :class:`IndexDamaged` naming the first that fails."""
    problem = _csr_layout_problem(matrix, shape) or _csr_values_problem(matrix, shape[1])
    if problem:
        raise IndexDamaged(f"{what}: {problem}; rebuild the index")


def _csr_layout_problem(matrix: sp.csr_matrix, shape: tuple[int, int]) -> str | None:
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data
    if matrix.shape != shape:
        return f"shape {matrix.shape}, expected {shape}"
    if (
        len(indptr) != shape[0] + 1
        or indptr[0] != 0
        or indptr[-1] != len(indices)
        or len(data) != len(indices)
    ):
        return "row pointers do not match the stored entries"
    if len(indptr) > 1 and (np.diff(indptr) < 0).any():
        return "row pointers decrease"
    return None


def _csr_values_problem(matrix: sp.csr_matrix, n_columns: int) -> str | None:
    indices, data = matrix.indices, matrix.data
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= n_columns):
        return "column ids out of range"
    if len(data) and not (np.isfinite(data).all() and (data >= 0).all()):
        return "weights that are negative, NaN or infinite"
    return None
