"""Exact float scores of given (query, document) pairs: what re-scoring stages and approximate engines share.

One implementation for all of them: the taat engine's compiled kernel (one dense scatter of each query, then a
dot product per candidate), and scipy row products per query when numba cannot be imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import taat
from ._base import MissingDependencyError, QueryBatch

if TYPE_CHECKING:  # pragma: no cover
    from ...core import D2SIndex

__all__ = ["score_pairs"]


def score_pairs(index: D2SIndex, queries: QueryBatch, qpos: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Exact float scores of the pairs (query ``qpos[i]`` of ``queries``, forward-store row ``rows[i]``).

    Float64 values of float32 dot products, in input order (pairs need not be grouped by query).
    """
    qpos = np.asarray(qpos, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    grouped = bool((qpos[1:] >= qpos[:-1]).all())  # what retrievers pass: no reordering needed
    by_query = np.arange(len(qpos)) if grouped else np.argsort(qpos, kind="stable")
    try:
        if grouped:
            return taat.rescore(index, queries, qpos, rows).astype(np.float64)
        scores = np.empty(len(rows), dtype=np.float64)
        # the kernel wants each query's pairs contiguous
        scores[by_query] = taat.rescore(index, queries, qpos[by_query], rows[by_query])
        return scores
    except MissingDependencyError:
        pass
    scores = np.empty(len(rows), dtype=np.float64)
    matrix = index.forward().matrix
    bounds = np.r_[0, np.cumsum(np.bincount(qpos, minlength=len(queries)))]
    qdense = np.zeros(matrix.shape[1], dtype=np.float32)
    for q in range(len(queries)):
        members = by_query[bounds[q] : bounds[q + 1]]
        terms, weights = queries.row(q)
        qdense[terms] = weights
        scores[members] = matrix[rows[members]] @ qdense
        qdense[terms] = 0.0
    return scores
