"""What every retrieval engine shares: the query batch it receives, the hits it returns, and the on-disk cache.

An engine answers top-k queries over the documents of one :class:`~pyterrier_d2s.index.D2SIndex`. It sees
queries as a :class:`QueryBatch` (CSR rows over the index's term ids, float32 weights, unknown terms and
non-positive weights already dropped) and returns :class:`Hits` (row numbers of the forward store, scores in
float dot-product units, grouped by query in input order, best first, ties by row). The PyTerrier
transformer around it (:class:`~pyterrier_d2s.index.retrievers.D2SRetriever`) does the DataFrame plumbing.

Engines that need their own data structures build them from the forward store on first use and keep them in
``<index>/engines/<name>-v<version>[-<settings>]/`` (see :func:`cached_build`): built in a temporary sibling
directory and renamed into place only when complete, so a killed build never leaves something that loads.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..forward import ForwardStore
from ..integrity import sha256_file

if TYPE_CHECKING:  # pragma: no cover
    from ..core import D2SIndex

logger = logging.getLogger(__name__)

ENGINES_DIR = "engines"
_DONE_FILE = "engine.json"


class MissingDependencyError(ImportError):
    """An optional dependency of an engine is not installed; the message says what to install."""


def require(module: str, extra: str | None, engine: str, hint: str | None = None) -> Any:
    """Import ``module`` or raise :class:`MissingDependencyError` saying what to install.

    Args:
        module: the module to import.
        extra: the pip extra of pyterrier-d2s that provides it (``None`` for core dependencies).
        engine: the engine that needs it (for the message).
        hint: what to install instead of the extra.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        how = hint or f"pip install 'pyterrier-d2s[{extra}]'"
        raise MissingDependencyError(
            f"the {engine!r} engine needs the {module!r} module, which could not be imported ({e}); "
            f"install it with: {how}"
        ) from e


@dataclass(frozen=True)
class QueryBatch:
    """Queries as CSR rows over the index's term ids (sorted within a row, float32 weights > 0)."""

    indptr: np.ndarray  # int64 [n + 1]
    terms: np.ndarray  # int32 [nnz]
    weights: np.ndarray  # float32 [nnz]

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(term ids, weights) of query ``i``."""
        lo, hi = self.indptr[i], self.indptr[i + 1]
        return self.terms[lo:hi], self.weights[lo:hi]

    def slice(self, start: int, stop: int) -> QueryBatch:
        """Queries ``start:stop`` as a batch of their own."""
        lo, hi = self.indptr[start], self.indptr[stop]
        return QueryBatch(self.indptr[start : stop + 1] - lo, self.terms[lo:hi], self.weights[lo:hi])

    def take(self, positions: np.ndarray) -> QueryBatch:
        """The queries at ``positions`` (in that order) as a batch of their own."""
        positions = np.asarray(positions, dtype=np.int64)
        lens = self.indptr[positions + 1] - self.indptr[positions]
        indptr = np.r_[0, np.cumsum(lens)].astype(np.int64)
        src = np.repeat(self.indptr[positions] - indptr[:-1], lens) + np.arange(int(indptr[-1]))
        return QueryBatch(indptr, self.terms[src], self.weights[src])

    @classmethod
    def from_toks(cls, store: ForwardStore, queries: Iterable[Mapping[str, float]]) -> QueryBatch:
        """Encode ``{term: weight}`` dicts; unknown terms (warned about if not lower-case) and weights <= 0 drop out.

        Raises:
            TypeError: if a query is not a dict.
            ValueError: on a NaN or infinite weight (of a known term).
        """
        return cls(*store.query_arrays(queries))

    @classmethod
    def from_arrays(cls, terms: np.ndarray, weights: np.ndarray) -> QueryBatch:
        """A single query from term ids and weights (no checks beyond dropping weights <= 0; ids must be valid)."""
        terms = np.asarray(terms, dtype=np.int32)
        weights = np.asarray(weights, dtype=np.float32)
        keep = weights > 0
        order = np.argsort(terms[keep], kind="stable")
        return cls(np.array([0, int(keep.sum())], dtype=np.int64), terms[keep][order], weights[keep][order])


@dataclass(frozen=True)
class Hits:
    """Results of a batch: parallel arrays grouped by query (input order), best first, ties by ascending row."""

    qpos: np.ndarray  # int64: position of the query in its batch
    rows: np.ndarray  # int64: row of the document in the forward store
    scores: np.ndarray  # float64: dot-product units

    @classmethod
    def empty(cls) -> Hits:
        """No hits."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))

    def ranks(self) -> np.ndarray:
        """0-based rank of each hit within its query (hits are grouped by query, best first)."""
        return group_ranks(self.qpos)

    @classmethod
    def from_padded(cls, rows: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> Hits:
        """From ``[n, k]`` arrays of which the first ``counts[i]`` entries of row ``i`` are used."""
        counts = np.asarray(counts, dtype=np.int64)
        n, k = rows.shape
        mask = np.arange(k)[None, :] < counts[:, None]
        return cls(
            np.repeat(np.arange(n, dtype=np.int64), counts),
            rows[mask].astype(np.int64),
            scores[mask].astype(np.float64),
        )


def group_ranks(groups: np.ndarray) -> np.ndarray:
    """Position of each entry within its run of equal values of ``groups`` (grouped, e.g. by query): 0, 1, ..."""
    if len(groups) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(groups)) + 1]
    return np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))


def sort_hits(qpos: np.ndarray, rows: np.ndarray, scores: np.ndarray, k: int) -> Hits:
    """Group by query, best first (ties by row), keep at most ``k`` per query and only positive scores."""
    keep = scores > 0
    qpos, rows, scores = qpos[keep], rows[keep], scores[keep]
    order = np.lexsort((rows, -scores, qpos))
    qpos, rows, scores = qpos[order], rows[order], scores[order]
    sel = group_ranks(qpos) < k
    qpos, rows, scores = qpos[sel], rows[sel], scores[sel]
    return Hits(qpos.astype(np.int64), rows.astype(np.int64), scores.astype(np.float64))


class Engine:
    """Base class of the retrieval engines (one module each under :mod:`pyterrier_d2s.index.engines`).

    Subclasses set :attr:`name`, :attr:`exact` and implement :meth:`search`; those with optional
    dependencies check them in :meth:`check_available`. ``settings`` are engine-specific keyword arguments of
    :meth:`D2SIndex.retriever`; :meth:`validate_settings` rejects unknown ones.
    """

    name: ClassVar[str] = ""
    #: whether results are the exact top-k of float dot products (up to ties and float32 rounding)
    exact: ClassVar[bool] = True
    #: keyword settings :meth:`search` accepts, with their defaults
    settings: ClassVar[dict[str, Any]] = {}

    def __init__(self, index: D2SIndex):
        self.index = index

    @classmethod
    def check_available(cls) -> None:
        """Raise :class:`MissingDependencyError` if an optional dependency is missing."""

    @classmethod
    def validate_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """``settings`` completed with defaults.

        Raises:
            TypeError: naming an unknown setting.
        """
        unknown = sorted(set(settings) - set(cls.settings))
        if unknown:
            known = ", ".join(sorted(cls.settings)) or "none"
            raise TypeError(f"unknown setting(s) {unknown} for engine {cls.name!r} (it takes: {known})")
        return {**cls.settings, **settings}

    def search(self, queries: QueryBatch, k: int, *, threads: int = 1, **settings: Any) -> Hits:
        """Top ``k`` documents of each query (``progress``, if given, is called with numbers of queries done)."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Build or load what the engine needs now rather than on the first query (optional)."""


# ---- the engine cache inside an index directory ------------------------------------------------------------


def _settings_tag(settings: Mapping[str, Any]) -> str:
    return "-".join(f"{k}{settings[k]}" for k in sorted(settings))


def cache_dir(index: D2SIndex, name: str, version: int, settings: Mapping[str, Any] | None = None) -> Path:
    """Where :func:`cached_build` keeps engine ``name``'s files (it may not exist yet)."""
    tag = f"{name}-v{version}" + (f"-{_settings_tag(settings)}" if settings else "")
    return index.path / ENGINES_DIR / tag


def is_cached(index: D2SIndex, name: str, version: int, settings: Mapping[str, Any] | None = None) -> bool:
    """Whether complete engine files are cached in the index directory."""
    return (cache_dir(index, name, version, settings) / _DONE_FILE).exists()


def cached_build(
    index: D2SIndex,
    name: str,
    version: int,
    build: Callable[[Path], dict],
    settings: Mapping[str, Any] | None = None,
) -> Path:
    """The directory holding engine ``name``'s files for ``index``, building them first if needed.

    ``build(tmp_dir)`` writes the files into an empty directory and returns a JSON-able description; it runs
    in a temporary sibling of the final directory, which is renamed into place only after ``engine.json``
    (written last, with every file's SHA-256) is complete. A build killed part-way therefore leaves only a
    ``.tmp-`` directory, which is never loaded and is removed by the next successful build. Finished files
    that no longer match their recorded hashes are rebuilt. If the index directory is not writable the engine
    is built into a per-process temporary directory instead (and a warning says so).

    Args:
        index: the D2S index.
        name: engine name.
        version: format version of the engine's files (bump it when the format changes).
        build: the builder.
        settings: build settings that change the files (part of the directory name).
    """
    index.require_built()
    final = cache_dir(index, name, version, settings)
    if _usable(final):
        return final
    try:
        final.parent.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as e:
        fallback = (
            _process_cache() / f"{uuid.uuid5(uuid.NAMESPACE_URL, str(index.path.resolve()))}" / final.name
        )
        if (fallback / _DONE_FILE).exists():
            return fallback
        logger.warning(
            "cannot write engine files into %s (%s); building %r in %s for this process",
            final.parent,
            e,
            name,
            fallback,
        )
        fallback.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=fallback.parent))
        final = fallback
    _build_into_place(tmp, final, name, version, build)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by killed builds
        _remove_if_stale(stale)
    return final


def _usable(final: Path) -> bool:
    """Whether ``final`` holds a finished, undamaged build; removes an unfinished or damaged one."""
    if (final / _DONE_FILE).exists():
        problem = _damage(final)
        if problem is None:
            return True
        logger.warning("engine files at %s are damaged (%s); rebuilding them", final, problem)
        shutil.rmtree(final, ignore_errors=True)
    if final.exists():
        # no engine.json: not a finished build (a copy cut short, a file deleted by hand); rebuild it
        logger.warning("engine directory %s has no %s; rebuilding it", final, _DONE_FILE)
        shutil.rmtree(final, ignore_errors=True)
    return False


def _build_into_place(tmp: Path, final: Path, name: str, version: int, build: Callable[[Path], dict]) -> None:
    """Run ``build`` in ``tmp``, record ``engine.json`` there and rename ``tmp`` to ``final`` (``tmp`` goes on failure)."""
    try:
        started = time.perf_counter()
        info = build(tmp)
        seconds = round(time.perf_counter() - started, 3)
        hashes = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        record = {
            "engine": name,
            "version": version,
            "build_seconds": seconds,
            **(info or {}),
            "files": hashes,
        }
        (tmp / _DONE_FILE).write_text(json.dumps(record))
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / _DONE_FILE).exists():  # not a concurrent builder that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _damage(path: Path) -> str | None:
    """What is wrong with a finished engine directory (a file missing or changed since its build), or None."""
    try:
        recorded = json.loads((path / _DONE_FILE).read_text()).get("files")
    except (OSError, ValueError, AttributeError) as e:
        return f"unreadable {_DONE_FILE}: {e}"
    if recorded is None:
        return None  # built by a version that recorded no hashes: the engines check their arrays
    for name, digest in recorded.items():
        if not (path / name).is_file():
            return f"{name} missing"
        if sha256_file(path / name) != digest:
            return f"{name} changed since the build"
    return None


def _remove_if_stale(path: Path, age_s: float = 3600.0) -> None:
    try:
        if time.time() - path.stat().st_mtime > age_s:
            shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass


_PROCESS_CACHE: Path | None = None


def _process_cache() -> Path:
    global _PROCESS_CACHE
    if _PROCESS_CACHE is None:
        _PROCESS_CACHE = Path(tempfile.mkdtemp(prefix="d2s-engines-"))
        import atexit

        atexit.register(shutil.rmtree, _PROCESS_CACHE, True)
    return _PROCESS_CACHE


def engine_info(path: Path) -> dict:
    """The description a build stored in ``engine.json``."""
    return json.loads((path / _DONE_FILE).read_text())


def dir_size_mb(path: Path) -> float:
    """Size of the files under ``path`` in MiB."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
