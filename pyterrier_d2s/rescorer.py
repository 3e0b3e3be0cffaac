"""The expansion re-scorer of D2S: the paper's "no expansion >> expansion".

    search = query_toks >> index.retriever(num_results=100) >> ExpansionRescorer(model, index)

Candidates are retrieved with the caption's own terms (cheap posting lists), then every candidate is scored
exactly with the fully expanded query from the index's forward store, and re-ranked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyterrier as pt
import pyterrier_alpha as pta
import scipy.sparse as sp

from .frames import column_arrays, frame_from_arrays, object_array
from .head import SCREEN_MAX_ROWS
from .index.results import (
    RESULT_COLUMNS,
    candidate_rows,
    empty_reranked,
    hits_frame,
    query_groups,
    ranked_order,
    rerank,
    score_pairs,
)
from .query_encoder import (
    EncodedRetriever,
    column_vocab_ids,
    csr_to_toks,
    index_columns,
    query_batch,
    query_vector_matrix,
)

if TYPE_CHECKING:  # pragma: no cover
    from .index import D2SIndex
    from .model import D2S

__all__ = ["ExpansionRescorer", "RetrieveRescore"]


class ExpansionRescorer(pt.Transformer):
    """Re-scores retrieved candidates exactly with the fully expanded query and re-ranks them.

    Input: a result frame (``qid``, ``query``, ``docno`` and, when present, ``query_vec``), typically from a
    retriever fed with ``D2SQueryEncoder(expansion=False)``. Output: the same rows with ``score`` the exact
    float dot product of the expanded query and the stored image vector and ``rank`` recomputed, best first
    per query. The candidate depth is the retriever's ``num_results``.

    The expanded query goes from the head's output straight to the index's term ids and the candidates are
    scored by a compiled kernel; no ``{token: weight}`` dict is built (that costs about as much as the rest
    of the re-scoring). ``query_toks`` passes through unchanged (the first stage's query) unless
    ``expanded_toks=True``, which replaces it with the expanded query's dict.
    """

    def __init__(
        self,
        model: D2S,
        index: D2SIndex,
        top_k: int | None = None,
        min_weight: float = 0.0,
        expanded_toks: bool = False,
        num_results: int | None = None,
    ):
        if num_results is not None and num_results < 0:
            raise ValueError(f"num_results must be >= 0, not {num_results}")
        self.model = model
        self.num_results = num_results
        self.d2s_index = index
        self.top_k = top_k
        self.min_weight = min_weight
        self.expanded_toks = expanded_toks

    def __repr__(self) -> str:
        extra = "" if self.num_results is None else f", num_results={self.num_results}"
        return f"ExpansionRescorer({self.d2s_index!r}{extra})"

    def fuse_rank_cutoff(self, k: int) -> ExpansionRescorer | None:
        """``rescorer % k`` keeps the top k of each query in the re-scorer itself (no second pass over the frame)."""
        if self.num_results is not None and k >= self.num_results:
            return None
        return ExpansionRescorer(
            self.model, self.d2s_index, self.top_k, self.min_weight, self.expanded_toks, num_results=k
        )

    def transform_inputs(self) -> list[list[str]]:
        """Required input columns."""
        return [["qid", "query", "docno"]]

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """Output columns for given input columns."""
        return self._out_cols(input_columns)

    def _out_cols(self, input_columns: list[str]) -> list[str]:
        pta.validate.result_frame(input_columns, extra_columns=["query"])
        cols = [c for c in input_columns if c not in ("score", "rank")]
        if self.expanded_toks and "query_toks" not in cols:
            cols.append("query_toks")
        return cols + ["score", "rank"]

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Re-score and re-rank the candidates of ``inp``."""
        out_cols = self._out_cols(list(inp.columns))
        if len(inp) == 0:
            return empty_reranked(inp, out_cols)
        columns = column_arrays(inp)
        qcodes, first_rows = query_groups(columns["qid"])
        rows = candidate_rows(self.d2s_index.forward(), columns["docno"])
        scores, expanded = self.expanded_scores(columns, first_rows, qcodes, rows)
        replaced = {}
        if self.expanded_toks:
            toks = csr_to_toks(expanded, self.model.vocab.tokens)
            replaced["query_toks"] = np.array([toks[c] for c in qcodes], dtype=object)
        return rerank(columns, qcodes, scores, out_cols, replaced, self.num_results)

    def expanded_scores(
        self,
        columns: dict,
        query_rows: np.ndarray,
        qcodes: np.ndarray,
        rows: np.ndarray,
        vectors: np.ndarray | None = None,
    ) -> tuple[np.ndarray, sp.csr_matrix]:
        """(exact score of each candidate, the expanded queries' CSR): query ``q`` is row ``query_rows[q]`` of
        the frame ``columns`` (its ``qid``, ``query``, ``query_vec``), candidate ``i`` pairs query
        ``qcodes[i]`` with forward-store row ``rows[i]``; ``vectors``: the queries' dense vectors, when the
        caller has them as a matrix already."""
        fwd = self.d2s_index.forward()
        col_of, in_docs = index_columns(self.model.vocab, self.d2s_index)
        # a token no image has cannot add to any score: the head computes only the tokens the index has (a
        # few thousand of 30,522 on a small collection), unless top-k pruning needs the whole vocabulary
        # (with expanded_toks the dict stays the full expanded query)
        restrict = self.top_k is None and not self.expanded_toks
        tokens = in_docs
        if restrict and len(query_rows) <= SCREEN_MAX_ROWS:
            # one query at a time: only the tokens its candidates have can change their scores, a few
            # thousand, and the head's int8 screen visits only those rows (a batch keeps the index's tokens:
            # their float32 rows are gathered once and cached)
            vocab_ids = column_vocab_ids(self.model.vocab, self.d2s_index)[fwd.columns_of_rows(rows)]
            tokens = np.sort(vocab_ids[vocab_ids >= 0])  # (ascending already when the columns are)
        # the first row of each query, column by column (a row selection of the frame costs more than the rest)
        if vectors is None and "query_vec" in columns:
            vectors = query_vector_matrix(
                columns["qid"].take(query_rows), columns["query_vec"].take(query_rows)
            )
        expanded = self.model.encode_texts(
            [str(q) for q in columns["query"].take(query_rows)],
            vectors,
            expansion=True,
            top_k=self.top_k,
            min_weight=self.min_weight,
            columns=tokens if restrict else None,
        )
        return score_pairs(self.d2s_index, query_batch(expanded, col_of), qcodes, rows), expanded

    def fuse_left(self, left: pt.Transformer) -> pt.Transformer | None:
        """``(encoder >> retriever) >> rescorer`` on the same index becomes one :class:`RetrieveRescore`."""
        if isinstance(left, EncodedRetriever) and left.retriever.index is self.d2s_index:
            return RetrieveRescore(left, self)
        return None


class RetrieveRescore(pt.Transformer):
    """``D2SQueryEncoder >> D2SRetriever >> ExpansionRescorer`` as one stage (PyTerrier's ``.compile()``).

    The same result frame as the three stages, without the two intermediate frames: the candidates go from
    the engine's hits to the re-scorer as forward-store rows (no docno look-up), and one frame of the kept
    rows is built at the end.
    """

    def __init__(self, first_stage: EncodedRetriever, rescorer: ExpansionRescorer):
        self.first_stage = first_stage
        self.rescorer = rescorer

    def __repr__(self) -> str:
        return f"({self.first_stage!r} >> {self.rescorer!r})"

    def transform_inputs(self) -> list[list[str]]:
        """Required input columns."""
        return self.first_stage.transform_inputs()

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """Output columns for given input columns."""
        return self.rescorer.transform_outputs(self.first_stage.transform_outputs(input_columns))

    def fuse_rank_cutoff(self, k: int) -> RetrieveRescore | None:
        """``(... >> rescorer) % k`` keeps the top k in the re-scorer."""
        fused = self.rescorer.fuse_rank_cutoff(k)
        return None if fused is None else RetrieveRescore(self.first_stage, fused)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Retrieve with the first stage, re-score exactly with the expanded queries, keep the best."""
        if len(inp) == 0:
            return self.rescorer.transform(self.first_stage.transform(inp))
        columns, hits, vectors = self.first_stage.encode_and_search(inp)
        fwd = self.rescorer.d2s_index.forward()
        if len(hits.qpos) == 0:
            return self.rescorer.transform(hits_frame(columns, hits, fwd))
        # queries numbered in input order (hits are grouped by input position, in that order)
        query_rows, qcodes = np.unique(hits.qpos, return_inverse=True)
        scores, expanded = self.rescorer.expanded_scores(
            columns, query_rows, qcodes, hits.rows, None if vectors is None else vectors[query_rows]
        )
        order, ranks = ranked_order(qcodes, scores, self.rescorer.num_results)  # ties: first-stage order
        positions = hits.qpos[order]
        out = {c: a.take(positions) for c, a in columns.items() if c not in RESULT_COLUMNS}
        if self.rescorer.expanded_toks:
            toks = csr_to_toks(expanded, self.rescorer.model.vocab.tokens)
            out["query_toks"] = object_array([toks[c] for c in qcodes[order]])
        out["docno"] = fwd.docno_array.take(hits.rows[order])
        out["score"] = scores[order]
        out["rank"] = ranks.astype(np.int64)
        return frame_from_arrays(out, len(order))
