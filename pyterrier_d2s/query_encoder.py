"""The query encoder of D2S, and the one conversion of CSR rows into PyTerrier's ``{token: weight}`` dicts.

query_toks = D2SQueryEncoder(model, expansion=False)     # qid, query (+ query_vec) -> query_toks
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyterrier as pt
import pyterrier_alpha as pta
import scipy.sparse as sp

if TYPE_CHECKING:  # pragma: no cover
    from .index import D2SIndex
    from .model import D2S
    from .vocab import Vocabulary

__all__ = ["D2SQueryEncoder", "csr_to_toks", "index_columns", "query_vector_matrix", "query_vectors"]


def index_columns(vocab: Vocabulary, index: D2SIndex) -> tuple[np.ndarray, np.ndarray]:
    """(forward-store column of each vocabulary id or -1, the vocabulary ids some document of ``index`` has).

    A query token no document has adds nothing to any score: encoders that know the index compute only the
    second array's tokens. Kept in the index's cache (one per vocabulary object), so the query encoder and the
    re-scorer of one index share it and a rebuild of the index drops it.
    """

    def build() -> tuple[np.ndarray, np.ndarray]:
        fwd = index.forward()
        term_index = fwd.term_index
        cols = np.array([term_index.get(t, -1) for t in vocab.tokens], dtype=np.int64)
        in_docs = np.flatnonzero((cols >= 0) & (fwd.doc_freq[np.maximum(cols, 0)] > 0))
        return cols, in_docs

    return index.cached(("vocab_columns", vocab), build)


def csr_to_toks(m: sp.csr_matrix, tokens: list[str]) -> list[dict[str, float]]:
    """One ``{token: weight}`` dict per CSR row (PyTerrier's ``toks`` / ``query_toks`` format)."""
    out = []
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        out.append({tokens[j]: float(w) for j, w in zip(m.indices[lo:hi], m.data[lo:hi], strict=True)})
    return out


def query_vectors(inp: pd.DataFrame) -> np.ndarray | None:
    """The ``query_vec`` column as a float32 matrix (None without one); ValueError naming a bad query."""
    if "query_vec" not in inp.columns:
        return None
    return query_vector_matrix(inp["qid"], inp["query_vec"])


def query_vector_matrix(qids: Sequence, vecs: Sequence) -> np.ndarray:
    """The query vectors ``vecs`` (of the queries ``qids``) as a float32 matrix; ValueError naming a bad one."""
    rows: list[np.ndarray] = []
    for qid, v in zip(qids, vecs, strict=True):
        try:
            vec = np.asarray(v, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise ValueError(f"query {qid!r}: query_vec is not a numeric vector ({type(v).__name__})") from e
        if vec.ndim != 1 or (rows and vec.shape != rows[0].shape):
            raise ValueError(
                f"query {qid!r}: query_vec has shape {vec.shape}, expected ({len(rows[0]) if rows else 'd'},)"
            )
        rows.append(vec)
    vecs = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
    bad = ~np.isfinite(vecs).all(axis=1)
    if bad.any():
        raise ValueError(f"query {list(qids)[int(np.argmax(bad))]!r} has a NaN or inf query_vec")
    return vecs


class D2SQueryEncoder(pt.Transformer):
    """Encodes queries (captions) into sparse ``query_toks``.

    Input: ``qid``, ``query`` and, when present, ``query_vec`` (else the model's dense text encoder runs).
    Output: the input plus ``query_toks``. ``expansion=False`` keeps only the caption's own WordPiece tokens
    (the paper's "exp=0" query); ``top_k`` / ``min_weight`` prune the weights.

    ``index``: an expanded query gets only the tokens some document of that index has (the others add nothing
    to any score: every retriever drops them), so the head computes fewer rows of its vocabulary layer; the
    retrieved results are the same, ``query_toks`` lacks the tokens the index does not have. Not with
    ``top_k`` (which ranks the whole vocabulary).
    """

    def __init__(
        self,
        model: D2S,
        expansion: bool = True,
        top_k: int | None = None,
        min_weight: float = 0.0,
        batch_size: int = 1024,
        index: D2SIndex | None = None,
    ):
        if index is not None and top_k is not None:
            raise ValueError("give index or top_k, not both (top_k ranks the whole vocabulary)")
        self.model = model
        self.expansion = expansion
        self.top_k = top_k
        self.min_weight = min_weight
        self.batch_size = batch_size
        self.d2s_index = index

    def _index_columns(self) -> np.ndarray | None:
        """The vocabulary ids the index's documents have (None: no index, or unexpanded queries)."""
        if self.d2s_index is None or not self.expansion:
            return None
        return index_columns(self.model.vocab, self.d2s_index)[1]

    def __repr__(self) -> str:
        extra = "" if self.top_k is None else f", top_k={self.top_k}"
        extra += "" if self.d2s_index is None else f", index={self.d2s_index!r}"
        return f"D2SQueryEncoder(expansion={self.expansion}{extra})"

    def encode(self, inp: pd.DataFrame) -> list[dict[str, float]]:
        """The ``query_toks`` of each row of a frame with ``query`` (+ ``query_vec``)."""
        texts = [str(q) for q in inp["query"]]
        csr = self.model.encode_texts(
            texts,
            query_vectors(inp),
            expansion=self.expansion,
            top_k=self.top_k,
            min_weight=self.min_weight,
            columns=self._index_columns(),
        )
        return csr_to_toks(csr, self.model.vocab.tokens)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """``inp`` with a ``query_toks`` column (ValueError on a duplicate qid)."""
        pta.validate.query_frame(inp, extra_columns=["query"])
        if len(inp) == 0:
            return inp.assign(query_toks=pd.Series(dtype=object))
        if len(inp) > 1:  # (one row: one query, and pandas' duplicated() costs more than the check)
            dup = inp["qid"].duplicated()
            if dup.any():
                # two rows under one qid would merge into one ranking downstream
                raise ValueError(f"duplicate qid {inp['qid'][dup].iat[0]!r} in the query frame")
        return inp.assign(query_toks=self.encode(inp))
