"""The query encoder of D2S, and the one conversion of CSR rows into PyTerrier's ``{token: weight}`` dicts.

query_toks = D2SQueryEncoder(model, expansion=False)     # qid, query (+ query_vec) -> query_toks
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyterrier as pt
import pyterrier_alpha as pta
import scipy.sparse as sp

if TYPE_CHECKING:  # pragma: no cover
    from .model import D2S

__all__ = ["D2SQueryEncoder", "csr_to_toks", "query_vectors"]


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
    rows = []
    for qid, v in zip(inp["qid"], inp["query_vec"], strict=True):
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
        raise ValueError(f"query {inp['qid'].iloc[int(np.argmax(bad))]!r} has a NaN or inf query_vec")
    return vecs


class D2SQueryEncoder(pt.Transformer):
    """Encodes queries (captions) into sparse ``query_toks``.

    Input: ``qid``, ``query`` and, when present, ``query_vec`` (else the model's dense text encoder runs).
    Output: the input plus ``query_toks``. ``expansion=False`` keeps only the caption's own WordPiece tokens
    (the paper's "exp=0" query); ``top_k`` / ``min_weight`` prune the weights.
    """

    def __init__(
        self,
        model: D2S,
        expansion: bool = True,
        top_k: int | None = None,
        min_weight: float = 0.0,
        batch_size: int = 1024,
    ):
        self.model = model
        self.expansion = expansion
        self.top_k = top_k
        self.min_weight = min_weight
        self.batch_size = batch_size

    def __repr__(self) -> str:
        extra = "" if self.top_k is None else f", top_k={self.top_k}"
        return f"D2SQueryEncoder(expansion={self.expansion}{extra})"

    def encode(self, inp: pd.DataFrame) -> list[dict[str, float]]:
        """The ``query_toks`` of each row of a frame with ``query`` (+ ``query_vec``)."""
        texts = [str(q) for q in inp["query"]]
        csr = self.model.encode_texts(
            texts, query_vectors(inp), expansion=self.expansion, top_k=self.top_k, min_weight=self.min_weight
        )
        return csr_to_toks(csr, self.model.vocab.tokens)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """``inp`` with a ``query_toks`` column (ValueError on a duplicate qid)."""
        pta.validate.query_frame(inp, extra_columns=["query"])
        if len(inp) == 0:
            return inp.assign(query_toks=pd.Series(dtype=object))
        dup = inp["qid"].duplicated()
        if dup.any():
            # two rows under one qid would merge into one ranking downstream
            raise ValueError(f"duplicate qid {inp['qid'][dup].iat[0]!r} in the query frame")
        return inp.assign(query_toks=self.encode(inp))
