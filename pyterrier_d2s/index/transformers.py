"""Retrieval and re-scoring transformers over a :class:`~pyterrier_d2s.index.D2SIndex`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyterrier as pt
import pyterrier_alpha as pta
from tqdm.auto import tqdm

from .engines import Hits, QueryBatch

if TYPE_CHECKING:
    from ._store import ForwardStore
    from .core import D2SIndex

logger = logging.getLogger(__name__)

_RESULT_COLUMNS = ["docno", "score", "rank"]


def _empty_result(inp: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in inp.columns if c not in _RESULT_COLUMNS] + _RESULT_COLUMNS
    out = pd.DataFrame({c: pd.Series(dtype=inp[c].dtype if c in inp.columns else object) for c in cols})
    return out.astype({"docno": object, "score": np.float64, "rank": np.int64})


def _assemble(
    inp: pd.DataFrame,
    qpos: np.ndarray,
    fwd: ForwardStore,
    rows: np.ndarray,
    scores: np.ndarray,
    ranks: np.ndarray,
) -> pd.DataFrame:
    """Result frame: the query columns of row ``qpos`` of ``inp`` + docno (of forward-store ``rows``)/score/rank."""
    if len(qpos) == 0:
        return _empty_result(inp)
    # one DataFrame construction from arrays taken by position: iloc/drop/setitem chains cost milliseconds per
    # query, and going through numpy object arrays makes pandas convert every string back to its str dtype
    cols = {c: inp[c].array.take(qpos) for c in inp.columns if c not in _RESULT_COLUMNS}
    cols["docno"] = fwd.docno_array.take(rows)
    cols["score"] = scores.astype(np.float64)
    cols["rank"] = ranks.astype(np.int64)
    return pd.DataFrame(cols)


def _query_outputs(input_columns: list[str]) -> list[str]:
    pta.validate.query_frame(input_columns, extra_columns=["query_toks"])
    return [c for c in input_columns if c not in _RESULT_COLUMNS] + _RESULT_COLUMNS


class _QueryToksRetriever(pt.Transformer):
    """What the retrievers share: ``qid`` + ``query_toks`` in, a result frame out (for ``pt.inspect``)."""

    def transform_inputs(self) -> list[list[str]]:
        """Required input columns."""
        return [["qid", "query_toks"]]

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """Output columns for given input columns."""
        return _query_outputs(input_columns)


class D2SRetriever(_QueryToksRetriever):
    """Top-k retrieval from a :class:`D2SIndex` with one of its engines (see :mod:`pyterrier_d2s.index.engines`).

    Input: ``qid`` + ``query_toks`` (``{term: weight}``); output: the query columns + ``docno``, ``score``
    (float dot-product units), ``rank`` (0-based), best first, ties by index order. Query terms the index does
    not know are dropped (a query left with none gets no rows); only documents sharing a term with the query
    are returned. The engine's data structures are built or loaded on the first call, not at construction.

    Args:
        index: the index.
        num_results: k.
        engine: engine name (``"taat"``, ``"exact"``, ``"pisa"``, ``"seismic"``).
        threads: threads for a batch of queries (results do not depend on it).
        verbose: progress bar over queries.
        **settings: engine-specific settings (e.g. ``algorithm`` for PISA, ``query_cut`` for Seismic).
    """

    def __init__(
        self,
        index: D2SIndex,
        num_results: int = 1000,
        engine: str = "taat",
        threads: int = 1,
        verbose: bool = False,
        **settings,
    ):
        from .engines import engine_class

        cls = engine_class(engine)
        cls.check_available()
        self.index = index
        self.num_results = int(num_results)
        self.engine_name = engine
        self.threads = int(threads)
        self.verbose = verbose
        self.settings = cls.validate_settings(settings)
        self._given = dict(settings)

    @property
    def engine(self):
        """The engine object (shared by every retriever of the same index object)."""
        from .engines import get_engine

        return get_engine(self.index, self.engine_name)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.settings.items() if v is not None)
        return (
            f"{self.index!r}.retriever(num_results={self.num_results}, engine={self.engine_name!r}"
            f"{extra}, threads={self.threads})"
        )

    def _with_k(self, k: int) -> D2SRetriever:
        return D2SRetriever(self.index, k, self.engine_name, self.threads, self.verbose, **self._given)

    def fuse_rank_cutoff(self, k: int) -> D2SRetriever | None:
        """``retriever % k`` retrieves only k results."""
        return self._with_k(k) if k < self.num_results else None

    def search(self, queries: QueryBatch) -> Hits:
        """Engine-level search for an encoded batch (no DataFrames): ``Hits`` of rows of the forward store."""
        return self.engine.search(queries, self.num_results, threads=self.threads, **self.settings)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Retrieve ``num_results`` documents per query."""
        pta.validate.query_frame(inp, extra_columns=["query_toks"])
        if len(inp) == 0:
            return _empty_result(inp)
        fwd = self.index.forward()
        queries = QueryBatch.from_toks(fwd, inp["query_toks"])
        if self.verbose:
            with tqdm(total=len(inp), desc=f"D2S {self.engine_name}", unit="query") as bar:
                hits = self.engine.search(
                    queries, self.num_results, threads=self.threads, progress=bar.update, **self.settings
                )
        else:  # no tqdm object at all: creating a disabled one costs ~0.1 ms per call
            hits = self.engine.search(queries, self.num_results, threads=self.threads, **self.settings)
        if len(hits.rows) == 0:
            return _empty_result(inp)
        starts = np.r_[0, np.flatnonzero(np.diff(hits.qpos)) + 1]
        ranks = np.arange(len(hits.qpos)) - np.repeat(starts, np.diff(np.r_[starts, len(hits.qpos)]))
        return _assemble(inp, hits.qpos, fwd, hits.rows, hits.scores, ranks)


class D2SPisaRetriever(D2SRetriever):
    """Top-k retrieval with PISA over the quantised impacts; scores are divided back into float units.

    Query terms the index does not know are dropped before PISA sees them (so PISA's lower-casing of query
    terms cannot make an unknown term match), and each remaining weight is sent as ``floor(t * w)`` copies.
    Same as ``index.retriever(engine="pisa", ...)``.
    """

    def __init__(
        self,
        index: D2SIndex,
        num_results: int = 1000,
        algorithm: str = "maxscore",
        threads: int = 1,
        toks_scale: float | None = None,
        verbose: bool = False,
    ):
        super().__init__(
            index, num_results, "pisa", threads, verbose, algorithm=algorithm, toks_scale=toks_scale
        )
        self.algorithm = self.settings["algorithm"]
        self.toks_scale = toks_scale

    def __repr__(self) -> str:
        return (
            f"{self.index!r}.retriever(num_results={self.num_results}, engine='pisa', "
            f"algorithm={self.algorithm!r}, threads={self.threads})"
        )

    def _with_k(self, k: int) -> D2SPisaRetriever:
        return D2SPisaRetriever(self.index, k, self.algorithm, self.threads, self.toks_scale, self.verbose)


class D2SExactRetriever(D2SRetriever):
    """Exhaustive top-k by exact float dot products over the forward store (scipy; the ground truth).

    Only documents sharing at least one positive-weight term with the query are returned. Ties are broken
    by index order, as PISA does. Same as ``index.retriever(engine="exact", ...)``.
    """

    def __init__(self, index: D2SIndex, num_results: int = 1000, verbose: bool = False):
        super().__init__(index, num_results, "exact", 1, verbose)

    def __repr__(self) -> str:
        return f"{self.index!r}.retriever(num_results={self.num_results}, engine='exact')"

    def _with_k(self, k: int) -> D2SExactRetriever:
        return D2SExactRetriever(self.index, k, self.verbose)


class D2SScorer(pt.Transformer):
    """Re-scores a result frame exactly: ``score`` = float ``query_toks · stored vector``, re-sorted per query.

    ``query_toks`` is taken per query (from the first row of each ``qid``), which lets an expansion re-scorer
    retrieve with the unexpanded query and swap in the expanded one before this stage.
    """

    def __init__(self, index: D2SIndex, verbose: bool = False):
        self.index = index
        self.verbose = verbose

    def __repr__(self) -> str:
        return f"{self.index!r}.scorer()"

    def transform_inputs(self) -> list[list[str]]:
        """Required input columns."""
        return [["qid", "docno", "query_toks"]]

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """Output columns for given input columns."""
        pta.validate.result_frame(input_columns, extra_columns=["query_toks"])
        return [c for c in input_columns if c not in ("score", "rank")] + ["score", "rank"]

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Re-score and re-rank ``inp``."""
        pta.validate.result_frame(inp, extra_columns=["query_toks"])
        out_cols = [c for c in inp.columns if c not in ("score", "rank")] + ["score", "rank"]
        if len(inp) == 0:
            return empty_reranked(inp, out_cols)
        fwd = self.index.forward()
        qcodes, first_rows = query_groups(inp["qid"])
        queries = QueryBatch.from_toks(fwd, inp["query_toks"].to_numpy()[first_rows])
        scores = score_pairs(self.index, queries, qcodes, candidate_rows(fwd, inp["docno"]))
        return rerank(inp, qcodes, scores, out_cols)


def query_groups(qids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(code of each row's query, numbered in order of first appearance; the first row of each query)."""
    qcodes, _ = pd.factorize(qids, sort=False)
    return qcodes, np.unique(qcodes, return_index=True)[1]


def candidate_rows(fwd: ForwardStore, docnos: pd.Series) -> np.ndarray:
    """Forward-store rows of a result frame's ``docno`` column (KeyError naming docnos not in the index)."""
    return fwd.rows([d if isinstance(d, str) else str(d) for d in docnos.tolist()])


def score_pairs(index: D2SIndex, queries: QueryBatch, qcodes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Exact float scores of the pairs (query ``qcodes[i]`` of ``queries``, document row ``rows[i]``), in input order.

    Compiled (the taat engine's kernel: one dense scatter of each query, then a dot product per candidate);
    scipy row products per query when numba cannot be imported.
    """
    from .engines import MissingDependencyError, taat

    by_query = np.argsort(qcodes, kind="stable")  # the kernel wants each query's pairs contiguous
    scores = np.empty(len(rows), dtype=np.float64)
    try:
        scores[by_query] = taat.rescore(index, queries, qcodes[by_query], rows[by_query])
        return scores
    except MissingDependencyError:
        pass
    matrix = index.forward().matrix
    bounds = np.r_[0, np.cumsum(np.bincount(qcodes, minlength=len(queries)))]
    qdense = np.zeros(matrix.shape[1], dtype=np.float32)
    for q in range(len(queries)):
        members = by_query[bounds[q] : bounds[q + 1]]
        terms, weights = queries.row(q)
        qdense[terms] = weights
        scores[members] = matrix[rows[members]] @ qdense
        qdense[terms] = 0.0
    return scores


def empty_reranked(inp: pd.DataFrame, out_cols: list[str]) -> pd.DataFrame:
    """What a re-ranker returns for an empty frame: no rows, ``out_cols``, float ``score`` and int ``rank``."""
    return inp.reindex(columns=out_cols).astype({"score": np.float64, "rank": np.int64})


def rerank(
    inp: pd.DataFrame,
    qcodes: np.ndarray,
    scores: np.ndarray,
    out_cols: list[str],
    replaced: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """``inp`` with new ``score``s, sorted per query (queries in first-appearance order), ``rank`` recomputed.

    ``qcodes`` numbers the queries in order of first appearance (``pd.factorize(..., sort=False)``); ties keep
    the input order. ``replaced`` holds whole columns (in input row order) that replace or add to ``inp``'s.
    """
    order = np.lexsort((-scores, qcodes))  # lexsort is stable
    sorted_codes = qcodes[order]
    group_start = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1]
    starts = np.repeat(group_start, np.diff(np.r_[group_start, len(order)]))
    replaced = replaced or {}
    cols = {
        c: replaced[c][order] if c in replaced else inp[c].array.take(order)
        for c in out_cols
        if c not in ("score", "rank")
    }
    cols["score"] = scores[order]
    cols["rank"] = (np.arange(len(order)) - starts).astype(np.int64)
    return pd.DataFrame(cols)  # built in out_cols order
