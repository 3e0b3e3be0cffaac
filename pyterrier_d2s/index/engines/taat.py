"""``engine="taat"``: exact top-k by a compiled (numba) term-at-a-time upper-bound pass plus exact re-scoring.

Layout, built once from the forward store (``engines/taat-v1-dense<d>/``):

- **dense columns** for the popular terms (document frequency >= ``dense_min_df`` of the collection): one byte
  per document and term, ``u = ceil(w / step_t)`` with ``step_t = max_t / 255``, so ``u * step_t >= w`` is an
  upper bound of the stored float weight (checked in float32 at build time);
- **posting lists** (docid-sorted, float32 weights) for every other term;
- the forward store's CSR rows, for exact scores.

Per query, one pass over the documents in cache-sized blocks computes ``UB(d) = sum over dense query terms of
(q_t * step_t) * u_td + sum over sparse query terms of q_t * w_td`` (SIMD over the byte columns, a scatter-add
for the short posting lists). ``UB(d)`` is never below the exact score of ``d``. Documents are then scored
exactly (float32 dot product of their forward row with the query) in decreasing ``UB`` order, keeping the best
``k``; it stops once no remaining bound reaches the current k-th exact score (less a relative margin of 1e-4
that covers float32 rounding in both sums). Every document left unscored therefore scores below the returned
k-th document: the result is the exact top-k (ties by index order), typically after exactly scoring about
1.06 k (FLOPs 11) to 1.2 k (FLOPs 80) documents on the benchmark collections. Candidates are found without sorting the collection: a strided
sample of the bounds gives a threshold that about ``2k`` documents pass, lowered only if that proves too few.

The upper-bound pass reads one byte per document per popular query term (about 22 per query at FLOPs 11 over
123k documents: 2.8 MB; 160 at FLOPs 80) instead of 8-byte postings, and needs no random writes for them; the
rest are the rare terms' short posting lists, added block by block. Batches can run on several threads (``threads=``; each has its own buffers).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp

from ._base import Engine, Hits, QueryBatch, cached_build, require

if TYPE_CHECKING:  # pragma: no cover
    from ..core import D2SIndex

logger = logging.getLogger(__name__)

VERSION = 1
#: Terms in at least this fraction of documents get a dense byte column: one byte per document against one
#: 8-byte posting with a random write per matching document. Measured side by side (123k docs, k = 10, median
#: ms at FLOPs 11 | 80): 0.02: 0.40 | 2.08, 0.03: 0.39 | 2.08, 0.05: 0.40 | 2.06, 0.1: 0.45 | 2.29; 0.05 keeps
#: the layout smallest among the fastest (FLOPs 80: 100 MB of columns, against 252 MB at 0.02).
DEFAULT_DENSE_MIN_DF = 0.05
#: Documents per block of the upper-bound pass (the block's float32 bounds stay in L1/L2).
BLOCK = 16384
_BATCH = 256  # queries per kernel call (progress granularity)
NUMBA_HINT = (
    "pip install numba (a dependency of pyterrier-d2s; if it is installed but fails to import, it probably "
    "does not support the installed numpy version)"
)

_kernels: dict[str, Any] | None = None
_kernels_lock = threading.Lock()


def kernels() -> dict[str, Any]:
    """The compiled numba kernels (compiled, or loaded from numba's on-disk cache, on first use)."""
    global _kernels
    with _kernels_lock:
        if _kernels is None:
            _kernels = _compile()
    return _kernels


def _compile() -> dict[str, Any]:
    require("numba", None, "taat", NUMBA_HINT)
    from . import _taat_kernels as k

    return {"search_many": k.search_many, "rescore": k.rescore}


def forward_arrays(index: D2SIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The forward store's CSR arrays with the dtypes the kernels are compiled for (kept in the index's cache)."""

    def contiguous() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = index.forward().matrix
        return (
            np.ascontiguousarray(m.indptr, dtype=np.int64),
            np.ascontiguousarray(m.indices, dtype=np.int32),
            np.ascontiguousarray(m.data, dtype=np.float32),
        )

    return index.cached(("taat", "forward_arrays"), contiguous)


def rescore(index: D2SIndex, queries: QueryBatch, qpos: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Exact float32 scores of (query, document row) pairs, grouped by query (any order within a group).

    The compiled kernel (raises :class:`MissingDependencyError` without numba); use
    :func:`~pyterrier_d2s.index.engines.pair_scores.score_pairs` for any order and a scipy fallback.
    """
    out = np.empty(len(rows), dtype=np.float32)
    if len(rows):
        f_indptr, f_indices, f_data = forward_arrays(index)
        kernels()["rescore"](
            queries.indptr,
            queries.terms,
            queries.weights,
            np.ascontiguousarray(qpos, dtype=np.int64),
            np.ascontiguousarray(rows, dtype=np.int64),
            f_indptr,
            f_indices,
            f_data,
            len(index.forward().terms),
            out,
        )
    return out


def build_layout(matrix: sp.csr_matrix, dense_min_df: float) -> dict[str, np.ndarray]:
    """The engine's arrays for a documents x terms CSR float32 matrix (see the module docstring)."""
    n_docs, n_terms = matrix.shape
    csc = matrix.tocsc()
    csc.sort_indices()
    df = np.diff(csc.indptr)
    dense_terms = np.flatnonzero((df > 0) & (df >= dense_min_df * n_docs)).astype(np.int64)
    dense = np.zeros((len(dense_terms), n_docs), dtype=np.uint8)
    steps = np.zeros(len(dense_terms), dtype=np.float32)
    for j, t in enumerate(dense_terms):
        lo, hi = csc.indptr[t], csc.indptr[t + 1]
        w = csc.data[lo:hi].astype(np.float32)
        top = np.float32(w.max())
        step = np.float32(top / np.float32(255))
        while step * np.float32(255) < top:  # 255 steps must reach the largest weight in float32
            step = np.nextafter(step, np.float32(np.inf), dtype=np.float32)
        u = np.clip(np.ceil(w.astype(np.float64) / float(step)), 1, 255).astype(np.float32)
        short = u * step < w
        u[short] = np.minimum(u[short] + 1, 255)
        if (u * step < w).any():  # pragma: no cover - impossible by the construction of step
            raise AssertionError(f"byte bound below a weight for term {t}")
        dense[j, csc.indices[lo:hi]] = u.astype(np.uint8)
        steps[j] = step
    is_dense = np.zeros(n_terms, dtype=bool)
    is_dense[dense_terms] = True
    keep = np.repeat(~is_dense, df)
    sparse_df = np.where(is_dense, 0, df)
    return {
        "dense_terms": dense_terms,
        "dense_step": steps,
        "dense": dense,
        "post_indptr": np.r_[0, np.cumsum(sparse_df)].astype(np.int64),
        "post_docs": csc.indices[keep].astype(np.int32),
        "post_w": csc.data[keep].astype(np.float32),
    }


_LAYOUT_ARRAYS = ("dense_terms", "dense_step", "dense", "post_indptr", "post_docs", "post_w")


def _dense_problem(lay: dict[str, np.ndarray], n_docs: int, n_terms: int) -> str | None:
    """What is wrong with the dense byte columns of a loaded layout (None if nothing)."""
    dt, dense, step = lay["dense_terms"], lay["dense"], lay["dense_step"]
    if not (dt.ndim == 1 and (len(dt) == 0 or (dt.min() >= 0 and dt.max() < n_terms))):
        return "dense term ids"
    if not (dense.dtype == np.uint8 and dense.shape == (len(dt), n_docs)):
        return "dense block shape"
    if not (step.shape == (len(dt),) and bool(np.isfinite(step).all())):
        return "dense steps"
    return None


def _postings_problem(lay: dict[str, np.ndarray], n_docs: int, n_terms: int) -> str | None:
    """What is wrong with the posting lists of a loaded layout (None if nothing)."""
    ip, docs, w = lay["post_indptr"], lay["post_docs"], lay["post_w"]
    if not (ip.ndim == 1 and len(ip) == n_terms + 1 and ip[0] == 0 and ip[-1] == len(docs)):
        return "posting offsets"
    if not bool((np.diff(ip) >= 0).all()):
        return "posting offsets decrease"
    if not (docs.dtype == np.int32 and (len(docs) == 0 or (docs.min() >= 0 and docs.max() < n_docs))):
        return "doc ids"
    if not (w.shape == docs.shape and bool(np.isfinite(w).all())):
        return "posting weights"
    return None


class TaatEngine(Engine):
    """Exact, compiled term-at-a-time engine (needs numba). See the module docstring for the algorithm.

    Settings (of ``index.retriever(engine="taat", ...)``):
        dense_min_df: document-frequency fraction from which a term gets a dense byte column (a build
            setting: each value is its own cached layout).
    """

    name: ClassVar[str] = "taat"
    exact: ClassVar[bool] = True
    settings: ClassVar[dict[str, Any]] = {"dense_min_df": DEFAULT_DENSE_MIN_DF}

    def __init__(self, index: D2SIndex):
        super().__init__(index)
        self._layouts: dict[float, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def _buffers(self, n_docs: int, n_terms: int) -> tuple[np.ndarray, ...]:
        """Per-thread work buffers of the kernel, reused across calls (qdense is kept all zero)."""
        buf = getattr(self._local, "buffers", None)
        if buf is None or len(buf[0]) != n_docs or len(buf[1]) != n_terms:
            buf = (
                np.empty(n_docs, np.float32),
                np.zeros(n_terms, np.float32),
                np.empty(n_docs, np.int64),
                np.empty(n_docs, np.float32),
            )
            self._local.buffers = buf
        return buf

    @classmethod
    def check_available(cls) -> None:
        require("numba", None, cls.name, NUMBA_HINT)

    def path(self, dense_min_df: float = DEFAULT_DENSE_MIN_DF) -> Path:
        """The layout's directory (building it if needed)."""

        def build(tmp: Path) -> dict:
            arrays = build_layout(self.index.forward().matrix, dense_min_df)
            for name, arr in arrays.items():
                np.save(tmp / f"{name}.npy", arr)
            return {
                "dense_min_df": dense_min_df,
                "dense_terms": len(arrays["dense_terms"]),
                "sparse_postings": len(arrays["post_docs"]),
            }

        return cached_build(self.index, self.name, VERSION, build, {"dense": dense_min_df})

    def layout(self, dense_min_df: float = DEFAULT_DENSE_MIN_DF) -> dict[str, Any]:
        """The loaded arrays (built and cached in the index directory on first use)."""
        with self._lock:
            lay = self._layouts.get(dense_min_df)
            if lay is None:
                path = self.path(dense_min_df)
                lay, problem = self._load_checked(path)
                if problem is not None:  # arrays the kernels would index out of bounds: rebuild, never crash
                    logger.warning("taat engine files at %s are damaged (%s); rebuilding them", path, problem)
                    shutil.rmtree(path, ignore_errors=True)
                    path = self.path(dense_min_df)
                    lay, problem = self._load_checked(path)
                    if problem is not None:  # pragma: no cover - a fresh build is consistent
                        raise ValueError(f"taat engine files at {path}: {problem}")
                n_terms = len(self.index.forward().terms)
                slot = np.full(n_terms, -1, dtype=np.int64)
                slot[lay["dense_terms"]] = np.arange(len(lay["dense_terms"]))
                lay["slot"] = slot
                self._layouts[dense_min_df] = lay
        return lay

    def _load_checked(self, path: Path) -> tuple[dict[str, np.ndarray], str | None]:
        """The layout's arrays and what breaks the invariants the kernels index with (None if nothing)."""
        n_docs, n_terms = len(self.index.forward().docnos), len(self.index.forward().terms)
        try:
            lay = {n: np.load(path / f"{n}.npy", allow_pickle=False) for n in _LAYOUT_ARRAYS}
        except (OSError, ValueError, EOFError) as e:
            return {}, f"unreadable array ({e})"
        return lay, _dense_problem(lay, n_docs, n_terms) or _postings_problem(lay, n_docs, n_terms)

    def prepare(self, dense_min_df: float = DEFAULT_DENSE_MIN_DF) -> None:
        """Build/load the layout and compile the kernels now."""
        self.layout(dense_min_df)
        self.search(QueryBatch.from_arrays(np.zeros(1), np.ones(1)), 1, dense_min_df=dense_min_df)

    def search(
        self,
        queries: QueryBatch,
        k: int,
        *,
        threads: int = 1,
        dense_min_df: float = DEFAULT_DENSE_MIN_DF,
        progress: Callable[[int], Any] | None = None,
    ) -> Hits:
        """Exact top ``k`` of each query."""
        n = len(queries)
        if n == 0 or k <= 0:
            return Hits.empty()
        lay = self.layout(dense_min_df)
        f_indptr, f_indices, f_data = forward_arrays(self.index)
        search_many = kernels()["search_many"]
        kk = min(int(k), len(f_indptr) - 1)
        rows = np.empty((n, kk), dtype=np.int64)
        scores = np.empty((n, kk), dtype=np.float32)
        counts = np.empty(n, dtype=np.int64)
        static = (
            lay["slot"],
            lay["dense_step"],
            lay["dense"],
            lay["post_indptr"],
            lay["post_docs"],
            lay["post_w"],
        )
        static += (f_indptr, f_indices, f_data, BLOCK)

        def run(start: int, stop: int) -> None:
            buffers = self._buffers(len(f_indptr) - 1, len(lay["slot"]))
            for s in range(start, stop, _BATCH):
                e = min(stop, s + _BATCH)
                lo, hi = queries.indptr[s], queries.indptr[e]
                part = (queries.indptr[s : e + 1] - lo, queries.terms[lo:hi], queries.weights[lo:hi], kk)
                search_many(*part, *static, *buffers, rows[s:e], scores[s:e], counts[s:e])
                if progress is not None:
                    progress(e - s)

        threads = max(1, min(int(threads), n))
        if threads == 1:
            run(0, n)
        else:
            bounds = np.linspace(0, n, threads + 1).astype(int)
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(run, bounds[:-1], bounds[1:]))
        if n == 1:  # the latency path: no masks
            c = int(counts[0])
            return Hits(np.zeros(c, np.int64), rows[0, :c], scores[0, :c].astype(np.float64))
        return Hits.from_padded(rows, scores, counts)
