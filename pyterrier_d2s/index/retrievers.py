"""PyTerrier retrieval and re-scoring transformers over a :class:`~pyterrier_d2s.index.D2SIndex`.

Attaches ``D2SIndex.retriever`` and ``D2SIndex.scorer``.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import pyterrier as pt
import pyterrier_alpha as pta
from tqdm.auto import tqdm

from ..frames import column_arrays
from .core import DEFAULT_ENGINE, D2SIndex
from .engines import Engine, Hits, MissingDependencyError, QueryBatch, engine_class, get_engine
from .results import (
    candidate_rows,
    empty_reranked,
    empty_result,
    hits_frame,
    query_groups,
    query_result_columns,
    rerank,
    score_pairs,
)

__all__ = ["D2SRetriever", "D2SScorer", "QueryToksRetriever"]

logger = logging.getLogger(__name__)


class QueryToksRetriever(pt.Transformer):
    """What the retrievers share: ``qid`` + ``query_toks`` in, a result frame out (for ``pt.inspect``)."""

    def transform_inputs(self) -> list[list[str]]:
        """Required input columns."""
        return [["qid", "query_toks"]]

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """Output columns for given input columns."""
        return query_result_columns(input_columns)


class D2SRetriever(QueryToksRetriever):
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
        engine: str = DEFAULT_ENGINE,
        threads: int = 1,
        verbose: bool = False,
        **settings: Any,
    ):
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
    def engine(self) -> Engine:
        """The engine object (shared by every retriever of the same index object)."""
        return get_engine(self.index, self.engine_name)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.settings.items() if v is not None)
        return (
            f"{self.index!r}.retriever(num_results={self.num_results}, engine={self.engine_name!r}"
            f"{extra}, threads={self.threads})"
        )

    def fuse_rank_cutoff(self, k: int) -> D2SRetriever | None:
        """``retriever % k`` retrieves only k results."""
        if k >= self.num_results:
            return None
        return D2SRetriever(self.index, k, self.engine_name, self.threads, self.verbose, **self._given)

    def search(self, queries: QueryBatch) -> Hits:
        """Engine-level search for an encoded batch (no DataFrames): ``Hits`` of rows of the forward store."""
        if self.verbose:
            with tqdm(total=len(queries), desc=f"D2S {self.engine_name}", unit="query") as bar:
                return self.engine.search(
                    queries, self.num_results, threads=self.threads, progress=bar.update, **self.settings
                )
        # no tqdm object at all: creating a disabled one costs ~0.1 ms per call
        return self.engine.search(queries, self.num_results, threads=self.threads, **self.settings)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Retrieve ``num_results`` documents per query."""
        pta.validate.query_frame(inp, extra_columns=["query_toks"])
        if len(inp) == 0:
            return empty_result(inp)
        fwd = self.index.forward()
        hits = self.search(QueryBatch.from_toks(fwd, column_arrays(inp)["query_toks"]))
        return hits_frame(inp, hits, fwd)


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


# ---- the methods of D2SIndex ---------------------------------------------------------------------------------


def _available_default_engine() -> str:
    """:data:`DEFAULT_ENGINE`, or ``"exact"`` (with a warning) when its dependency cannot be imported."""
    try:
        engine_class(DEFAULT_ENGINE).check_available()
    except MissingDependencyError as e:
        logger.warning("%s; using the scipy 'exact' engine instead", e)
        return "exact"
    return DEFAULT_ENGINE


def _retriever(
    self: D2SIndex,
    num_results: int = 1000,
    engine: str | None = None,
    threads: int = 1,
    *,
    verbose: bool = False,
    **settings: Any,
) -> D2SRetriever:
    """A retriever mapping ``qid`` + ``query_toks`` frames to ranked results.

    Engines (one module each under :mod:`pyterrier_d2s.index.engines`; see the README's "Engines" table for
    measured latencies):

    - ``"taat"`` (default): exact top-k; a compiled (numba) pass computes an upper bound of every
      document's score from byte-quantised columns of the popular terms plus the rare terms' posting lists,
      then documents are scored exactly in bound order until no bound can beat the k-th score. The fastest
      engine on expanded queries in ``benchmarks/latency.py`` (and exact), hence the default. Its layout is
      built from the forward store on first use and cached under ``<index>/engines/``.
    - ``"exact"``: exhaustive scipy products over the forward store; the ground truth, and the fallback
      default when numba cannot be imported.
    - ``"pisa"``: PISA dynamic pruning over quantised impacts (scores within
      ``index.engine("pisa").error_bound(query_toks)`` of exact), built on first use. Settings: ``algorithm``
      (default ``maxscore``: PISA's own default block-max WAND is 4-5x slower on expanded queries),
      ``toks_scale`` (query scale), and the build settings ``scale`` / ``max_mass_loss``.
    - ``"seismic"``: approximate (pyseismic-lsr, ``pip install 'pyterrier-d2s[seismic]'``), re-scored
      exactly; ``query_cut`` defaults to a value chosen from k and the query length that kept recall@k >=
      0.99 on the benchmark collections (not a guarantee elsewhere).

    Args:
        num_results: results per query (k).
        engine: engine name; ``None`` means :data:`~pyterrier_d2s.index.core.DEFAULT_ENGINE` (``"taat"``).
        threads: threads for batches of queries (results do not depend on it).
        verbose: progress bar over queries.
        **settings: engine-specific settings (see each engine class).

    Raises:
        ValueError: unknown engine.
        TypeError: a setting the engine does not take.
        MissingDependencyError: the engine's optional dependency is missing (the message says what to
            install).
    """
    name = _available_default_engine() if engine is None else engine
    return D2SRetriever(
        self, num_results=num_results, engine=name, threads=threads, verbose=verbose, **settings
    )


def _scorer(self: D2SIndex, verbose: bool = False) -> D2SScorer:
    """A re-ranker replacing ``score`` by the exact float dot product of ``query_toks`` with each stored vector."""
    return D2SScorer(self, verbose=verbose)


D2SIndex.retriever = _retriever
D2SIndex.scorer = _scorer
