"""Result frames and exact re-scoring, shared by every retriever and re-scorer of a :class:`D2SIndex`.

Retrievers turn engine :class:`~.engines.Hits` into PyTerrier result frames (:func:`hits_frame`,
:func:`empty_result`); re-scorers take a result frame apart into query groups and forward-store rows
(:func:`query_groups`, :func:`candidate_rows`), score the pairs exactly (:func:`score_pairs`: the compiled
kernel, scipy without numba) and sort it again (:func:`rerank`, :func:`empty_reranked`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyterrier_alpha as pta

from ..frames import column_arrays, frame_from_arrays
from .engines import Hits, group_ranks
from .engines.pair_scores import score_pairs

if TYPE_CHECKING:  # pragma: no cover
    from .forward import ForwardStore

__all__ = [
    "RESULT_COLUMNS",
    "candidate_rows",
    "empty_reranked",
    "empty_result",
    "hits_frame",
    "query_groups",
    "query_result_columns",
    "ranked_order",
    "rerank",
    "score_pairs",
]

#: frames up to this many rows are grouped by query in Python (see :func:`query_groups`)
SMALL_FRAME_ROWS = 1000

#: the columns a retriever adds to the query columns
RESULT_COLUMNS = ["docno", "score", "rank"]


def query_result_columns(input_columns: list[str]) -> list[str]:
    """Output columns of a retriever for a query frame with ``input_columns`` (validated: ``query_toks``)."""
    pta.validate.query_frame(input_columns, extra_columns=["query_toks"])
    return [c for c in input_columns if c not in RESULT_COLUMNS] + RESULT_COLUMNS


def empty_result(inp: pd.DataFrame) -> pd.DataFrame:
    """A result frame without rows for the query frame ``inp``: its columns + docno (object), score, rank."""
    cols = [c for c in inp.columns if c not in RESULT_COLUMNS] + RESULT_COLUMNS
    out = pd.DataFrame({c: pd.Series(dtype=inp[c].dtype if c in inp.columns else object) for c in cols})
    return out.astype({"docno": object, "score": np.float64, "rank": np.int64})


def hits_frame(inp: pd.DataFrame | Mapping[str, Any], hits: Hits, fwd: ForwardStore) -> pd.DataFrame:
    """Result frame of ``hits`` over the queries of ``inp`` (a frame, or its :func:`column_arrays`), by
    position: the query columns + docno/score/rank."""
    columns = column_arrays(inp) if isinstance(inp, pd.DataFrame) else inp
    if len(hits.qpos) == 0:
        n = len(next(iter(columns.values()))) if columns else 0
        return empty_result(inp if isinstance(inp, pd.DataFrame) else frame_from_arrays(columns, n))
    # one frame assembled from arrays taken by position: iloc/drop/setitem chains cost milliseconds per query,
    # and going through numpy object arrays makes pandas convert every string back to its str dtype
    cols = {c: a.take(hits.qpos) for c, a in columns.items() if c not in RESULT_COLUMNS}
    cols["docno"] = fwd.docno_array.take(hits.rows)
    cols["score"] = hits.scores.astype(np.float64)
    cols["rank"] = hits.ranks().astype(np.int64)
    return frame_from_arrays(cols, len(hits.qpos))


def query_groups(qids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(code of each row's query, numbered in order of first appearance; the first row of each query)."""
    if len(qids) > SMALL_FRAME_ROWS:
        qcodes, _ = pd.factorize(qids, sort=False)
        return qcodes, np.unique(qcodes, return_index=True)[1]
    # a small frame (one query's candidates): a dict over the values costs a tenth of pandas' hashing
    codes: dict = {}
    first: list[int] = []
    qcodes = np.empty(len(qids), dtype=np.int64)
    for i, q in enumerate(qids.tolist()):
        c = codes.get(q)
        if c is None:
            c = codes[q] = len(codes)
            first.append(i)
        qcodes[i] = c
    return qcodes, np.array(first, dtype=np.int64)


def candidate_rows(fwd: ForwardStore, docnos: pd.Series) -> np.ndarray:
    """Forward-store rows of a result frame's ``docno`` column (KeyError naming docnos not in the index)."""
    return fwd.rows([d if isinstance(d, str) else str(d) for d in docnos.tolist()])


def empty_reranked(inp: pd.DataFrame, out_cols: list[str]) -> pd.DataFrame:
    """What a re-ranker returns for an empty frame: no rows, ``out_cols``, float ``score`` and int ``rank``."""
    return inp.reindex(columns=out_cols).astype({"score": np.float64, "rank": np.int64})


def ranked_order(
    qcodes: np.ndarray, scores: np.ndarray, num_results: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(positions best first within each query, queries in ``qcodes`` order, and their 0-based ranks): ties keep
    the input order; ``num_results`` keeps the first that many of each query."""
    order = np.lexsort((-scores, qcodes))  # lexsort is stable
    ranks = group_ranks(qcodes[order])
    if num_results is not None:
        order, ranks = order[ranks < num_results], ranks[ranks < num_results]
    return order, ranks


def rerank(
    inp: pd.DataFrame | Mapping[str, Any],
    qcodes: np.ndarray,
    scores: np.ndarray,
    out_cols: list[str],
    replaced: dict[str, np.ndarray] | None = None,
    num_results: int | None = None,
) -> pd.DataFrame:
    """``inp`` (a frame or its :func:`column_arrays`) with new ``score``s, sorted per query (queries in
    first-appearance order), ``rank`` recomputed.

    ``qcodes`` numbers the queries in order of first appearance (``pd.factorize(..., sort=False)``); ties keep
    the input order. ``replaced`` holds whole columns (in input row order) that replace or add to ``inp``'s.
    ``num_results``: keep the first that many rows of each query (what ``% num_results`` would keep).
    """
    order, ranks = ranked_order(qcodes, scores, num_results)
    replaced = replaced or {}
    arrays = column_arrays(inp) if isinstance(inp, pd.DataFrame) else inp
    cols = {
        c: replaced[c][order] if c in replaced else arrays[c].take(order)
        for c in out_cols
        if c not in ("score", "rank")
    }
    cols["score"] = np.asarray(scores[order], dtype=np.float64)
    cols["rank"] = ranks.astype(np.int64)
    return frame_from_arrays(cols, len(order))  # built in out_cols order
