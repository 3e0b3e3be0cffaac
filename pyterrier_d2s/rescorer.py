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

from .index.engines import QueryBatch
from .index.results import candidate_rows, empty_reranked, query_groups, rerank, score_pairs
from .query_encoder import csr_to_toks, index_columns, query_vector_matrix

if TYPE_CHECKING:  # pragma: no cover
    from .index import D2SIndex
    from .model import D2S

__all__ = ["ExpansionRescorer"]


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
        qcodes, first_rows = query_groups(inp["qid"])
        fwd = self.d2s_index.forward()
        col_of, in_docs = index_columns(self.model.vocab, self.d2s_index)
        # a token no image has cannot add to any score: the head computes only the tokens the index has (a
        # few thousand of 30,522 on a small collection), unless top-k pruning needs the whole vocabulary
        # (with expanded_toks the dict stays the full expanded query)
        restrict = self.top_k is None and not self.expanded_toks
        # the first row of each query, column by column (a row selection of the frame costs more than the rest)
        vectors = None
        if "query_vec" in inp.columns:
            vectors = query_vector_matrix(
                inp["qid"].array.take(first_rows), inp["query_vec"].array.take(first_rows)
            )
        expanded = self.model.encode_texts(
            [str(q) for q in inp["query"].array.take(first_rows)],
            vectors,
            expansion=True,
            top_k=self.top_k,
            min_weight=self.min_weight,
            columns=in_docs if restrict else None,
        )
        scores = score_pairs(
            self.d2s_index, _query_batch(expanded, col_of), qcodes, candidate_rows(fwd, inp["docno"])
        )
        replaced = {}
        if self.expanded_toks:
            toks = csr_to_toks(expanded, self.model.vocab.tokens)
            replaced["query_toks"] = np.array([toks[c] for c in qcodes], dtype=object)
        return rerank(inp, qcodes, scores, out_cols, replaced, self.num_results)


def _query_batch(expanded: sp.csr_matrix, col_of: np.ndarray) -> QueryBatch:
    """Vocabulary-id CSR rows as a batch over the forward store's columns (``col_of``: -1 if not indexed)."""
    terms = col_of[expanded.indices]
    keep = (terms >= 0) & (expanded.data > 0)
    n = expanded.shape[0]
    per_query = np.bincount(np.repeat(np.arange(n), np.diff(expanded.indptr))[keep], minlength=n)
    return QueryBatch(
        np.r_[0, np.cumsum(per_query)].astype(np.int64),
        terms[keep].astype(np.int32),
        expanded.data[keep].astype(np.float32),
    )
