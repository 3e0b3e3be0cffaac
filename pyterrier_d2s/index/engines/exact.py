"""``engine="exact"``: exhaustive float dot products with scipy over the forward store (the ground truth).

No files of its own: the forward store's transpose (terms x documents) is built in memory on first use.
Only documents sharing at least one positive-weight term with the query are returned; ties by index order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from ._base import Engine, Hits, QueryBatch, sort_hits


class ExactEngine(Engine):
    """Exhaustive exact scoring (scipy sparse products, float32), a batch of queries at a time."""

    name: ClassVar[str] = "exact"
    exact: ClassVar[bool] = True
    batch_size: ClassVar[int] = 256

    def search(
        self, queries: QueryBatch, k: int, *, threads: int = 1, progress: Callable[[int], Any] | None = None
    ) -> Hits:
        """Exact top ``k`` of each query (``threads`` is ignored: scipy's product is single-threaded)."""
        fwd = self.index.forward()
        postings = fwd.transposed
        n_terms = len(fwd.terms)
        qpos, rows, scores = [], [], []
        for start in range(0, len(queries), self.batch_size):
            part = queries.slice(start, min(len(queries), start + self.batch_size))
            q = sp.csr_matrix(
                (part.weights, part.terms, part.indptr), shape=(len(part), n_terms), dtype=np.float32
            )
            s = (q @ postings).tocsr()
            for i in range(s.shape[0]):
                lo, hi = s.indptr[i], s.indptr[i + 1]
                docs, vals = s.indices[lo:hi], s.data[lo:hi]
                keep = vals > 0
                docs, vals = docs[keep], vals[keep]
                if len(vals) > k:
                    # argpartition may cut through a tie at the k-th score: keep every tied doc, sort_hits trims
                    kth = np.partition(vals, len(vals) - k)[len(vals) - k]
                    sel = vals >= kth
                    docs, vals = docs[sel], vals[sel]
                qpos.append(np.full(len(docs), start + i, dtype=np.int64))
                rows.append(docs.astype(np.int64))
                scores.append(vals.astype(np.float64))
            if progress is not None:
                progress(len(part))
        if not qpos:
            return Hits.empty()
        return sort_hits(np.concatenate(qpos), np.concatenate(rows), np.concatenate(scores), k)
