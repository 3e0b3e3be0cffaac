"""``engine="seismic"``: approximate retrieval with Seismic (PyPI ``pyseismic-lsr``), re-scored exactly.

Seismic keeps, per term, only the ``n_postings`` largest postings (static pruning), clusters them into blocks
with a (lossy) summary vector each, and at query time visits the ``query_cut`` heaviest query terms, skipping
blocks whose summary score is below ``heap_factor`` times the current k-th score (so a larger heap_factor is
faster and loses more). Its index is built from the
forward store on first use and cached in ``<index>/engines/seismic-v1-.../``. Seismic stores weights in 16
bits; the documents it returns are re-scored exactly from the forward store (``rescore=True``), so scores and
order match the exact engines for every document that is retrieved: only recall is approximate.

Its default ``query_cut=10`` loses recall on expanded D2S queries (tens to hundreds of terms), the more so at
large k; ``query_cut`` left as ``None`` is chosen per query from k and the query's length by :func:`auto_knobs`,
measured on 123k-document collections of FLOPs 11 and 80 (``benchmarks/latency.py``) to keep recall@k >= 0.99
against exact scoring there. Recall is not guaranteed on other data: Seismic's summaries are approximations.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ._base import Engine, Hits, QueryBatch, cached_build, is_cached, require, sort_hits
from .pair_scores import score_pairs

if TYPE_CHECKING:  # pragma: no cover
    from ..core import D2SIndex

logger = logging.getLogger(__name__)

VERSION = 1

#: Build settings (Seismic's own defaults, except ``n_postings``; see :func:`auto_knobs` for the measurements).
DEFAULT_BUILD: dict[str, Any] = {
    "n_postings": 3500,
    "centroid_fraction": 0.1,
    "summary_energy": 0.4,
}


def auto_knobs(k: int, n_terms: int) -> tuple[int, float]:
    """(query_cut, heap_factor) for top-``k`` retrieval of a query with ``n_terms`` terms.

    Measured on 123k-document collections (``benchmarks/latency.py``; queries of ~55 terms at FLOPs 11 and
    ~306 at FLOPs 80): recall@k >= 0.99 needed ``query_cut`` >= 20 / 40 at k = 10 and >= 40 / 60 at k = 1000,
    i.e. about ``a_k + 0.08 * n_terms`` with ``a_k`` growing from 16 (k = 10) to 36 (k = 1000); a 1.25 safety
    factor is applied on top. ``heap_factor`` stays at pyseismic's 0.7: a block is visited when its summary
    scores at least ``heap_factor`` times the current k-th score, so larger values skip more and lose recall
    (at k = 1000, FLOPs 11, query_cut 52: recall 0.997 at 0.7, 0.994 at 1.0). pyseismic's own query_cut (10)
    reaches only recall@10 0.98 / 0.77 and recall@1000 0.87 / 0.61 there.
    """
    a = 16.0 + 10.0 * max(0.0, math.log10(max(k, 1) / 10.0))
    cut = 4 * math.ceil(1.25 * (a + 0.08 * n_terms) / 4)  # multiples of 4: fewer distinct batches
    return max(1, min(n_terms, cut)), 0.7


class SeismicEngine(Engine):
    """Approximate top-k with pyseismic-lsr (``pip install 'pyterrier-d2s[seismic]'``).

    Settings:
        query_cut: query terms visited (heaviest first); ``None``: chosen from k and the query length
            (:func:`auto_knobs`).
        heap_factor: block-skipping aggressiveness in (0, 1] (larger: faster, lower recall); ``None``: 0.7.
        rescore: re-score the returned documents exactly from the forward store (default True).
        n_postings, centroid_fraction, summary_energy: build settings (each combination is its own cached
            index).
    """

    name: ClassVar[str] = "seismic"
    exact: ClassVar[bool] = False
    settings: ClassVar[dict[str, Any]] = {
        "query_cut": None,
        "heap_factor": None,
        "rescore": True,
        **DEFAULT_BUILD,
    }

    def __init__(self, index: D2SIndex):
        super().__init__(index)
        self._indexes: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def check_available(cls) -> None:
        require("seismic", "seismic", cls.name)

    def path(self, **build: Any) -> Path:
        """Directory of the Seismic index for these build settings (built on first use)."""
        seismic = require("seismic", "seismic", self.name)
        build = {**DEFAULT_BUILD, **build}

        def run(tmp: Path) -> dict:
            m = self.index.forward().matrix.copy()
            m.sort_indices()
            ds = seismic.SeismicDataset(dim=m.shape[1])
            ds.add_documents_by_id(
                [str(i) for i in range(m.shape[0])],
                m.indices.astype(np.int64),
                m.data.astype(np.float32),
                m.indptr.astype(np.int64),
            )
            idx = seismic.SeismicIndex.build_from_dataset(ds, **build)
            idx.save(str(tmp / "index"))
            return {"build": build}

        return cached_build(self.index, self.name, VERSION, run, self._tag(build))

    def is_built(self, **build: Any) -> bool:
        """Whether the Seismic index for these build settings is already cached in the index directory."""
        return is_cached(self.index, self.name, VERSION, self._tag(build))

    @staticmethod
    def _tag(build: dict[str, Any]) -> dict[str, Any]:
        build = {**DEFAULT_BUILD, **build}
        return {"np": build["n_postings"], "cf": build["centroid_fraction"], "se": build["summary_energy"]}

    def seismic_index(self, **build: Any):
        """The loaded :class:`seismic.SeismicIndex`."""
        key = tuple(sorted({**DEFAULT_BUILD, **build}.items()))
        with self._lock:
            idx = self._indexes.get(key)
            if idx is None:
                seismic = require("seismic", "seismic", self.name)
                path = self.path(**dict(key))
                idx = seismic.SeismicIndex.load(str(path / "index.index.seismic"))
                self._indexes[key] = idx
        return idx

    def prepare(self, **build: Any) -> None:
        self.seismic_index(**build)

    def search(
        self,
        queries: QueryBatch,
        k: int,
        *,
        threads: int = 1,
        query_cut: int | None = None,
        heap_factor: float | None = None,
        rescore: bool = True,
        progress: Callable[[int], Any] | None = None,
        **build: Any,
    ) -> Hits:
        """Seismic's top ``k`` of each query (scores exact if ``rescore``)."""
        seismic = require("seismic", "seismic", self.name)
        n = len(queries)
        if n == 0:
            return Hits.empty()
        idx = self.seismic_index(**build)
        st = seismic.get_seismic_string()
        qpos_l: list[int] = []
        rows_l: list[int] = []
        scores_l: list[float] = []
        for (cut, hf), members in _knob_groups(queries, k, query_cut, heap_factor).items():
            comps = [np.array([str(t) for t in queries.row(i)[0].tolist()], dtype=st) for i in members]
            vals = [np.ascontiguousarray(queries.row(i)[1], dtype=np.float32) for i in members]
            ids = np.array([str(i) for i in members], dtype=st)
            res = idx.batch_search(ids, comps, vals, k, cut, hf, num_threads=max(1, int(threads)))
            # pyseismic-lsr 0.5.4 returns the per-query lists in no particular order (even on one thread): each
            # hit names its query, so map by that rather than by position
            for hits in res:
                for qid, score, doc in hits:
                    qpos_l.append(int(qid))
                    rows_l.append(int(doc))
                    scores_l.append(float(score))
        if progress is not None:
            progress(n)
        qpos = np.asarray(qpos_l, dtype=np.int64)
        rows = np.asarray(rows_l, dtype=np.int64)
        scores = np.asarray(scores_l, dtype=np.float64)
        if rescore and len(rows):
            scores = score_pairs(self.index, queries, qpos, rows)
        return sort_hits(qpos, rows, scores, k)


def _knob_groups(
    queries: QueryBatch, k: int, query_cut: int | None, heap_factor: float | None
) -> dict[tuple[int, float], list[int]]:
    """Positions of the non-empty queries grouped by their (query_cut, heap_factor): one batch_search call each."""
    lengths = np.diff(queries.indptr)
    groups: dict[tuple[int, float], list[int]] = {}
    for i in np.flatnonzero(lengths > 0).tolist():
        auto_cut, auto_hf = auto_knobs(k, int(lengths[i]))
        knobs = (
            auto_cut if query_cut is None else int(query_cut),
            auto_hf if heap_factor is None else float(heap_factor),
        )
        groups.setdefault(knobs, []).append(i)
    return groups
