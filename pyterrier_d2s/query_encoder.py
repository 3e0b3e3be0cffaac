"""The query encoder of D2S, and the one conversion of CSR rows into PyTerrier's ``{token: weight}`` dicts.

query_toks = D2SQueryEncoder(model, expansion=False)     # qid, query (+ query_vec) -> query_toks
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyterrier as pt
import pyterrier_alpha as pta
import scipy.sparse as sp

from .frames import column_arrays, frame_from_arrays, object_array
from .index.engines import Hits, QueryBatch
from .index.results import hits_frame, query_result_columns
from .index.retrievers import D2SRetriever

if TYPE_CHECKING:  # pragma: no cover
    from .index import D2SIndex
    from .model import D2S
    from .vocab import Vocabulary

__all__ = [
    "D2SQueryEncoder",
    "EncodedRetriever",
    "column_vocab_ids",
    "csr_to_toks",
    "index_columns",
    "query_batch",
    "query_vector_matrix",
    "query_vectors",
]


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


def column_vocab_ids(vocab: Vocabulary, index: D2SIndex) -> np.ndarray:
    """The vocabulary id of each forward-store column of ``index`` (-1 for a term not in ``vocab``), cached
    with :func:`index_columns`."""

    def build() -> np.ndarray:
        cols = index_columns(vocab, index)[0]
        out = np.full(len(index.forward().terms), -1, dtype=np.int64)
        known = np.flatnonzero(cols >= 0)
        out[cols[known]] = known
        return out

    return index.cached(("column_vocab_ids", vocab), build)


def query_batch(m: sp.csr_matrix, col_of: np.ndarray) -> QueryBatch:
    """Vocabulary-id CSR rows as a batch over an index's forward-store columns (``col_of``: the column of each
    vocabulary id, -1 if the index lacks it): what ``QueryBatch.from_toks`` makes of their ``{token: weight}``
    dicts, without the dicts."""
    terms = col_of[m.indices]
    keep = (terms >= 0) & (m.data > 0)
    n = m.shape[0]
    row_of = np.repeat(np.arange(n), np.diff(m.indptr))[keep]
    terms, weights = terms[keep], m.data[keep]
    order = np.lexsort((terms, row_of))  # columns ascending within a row, as engines expect
    return QueryBatch(
        np.r_[0, np.cumsum(np.bincount(row_of, minlength=n))].astype(np.int64),
        terms[order].astype(np.int32),
        weights[order].astype(np.float32),
    )


def csr_to_toks(m: sp.csr_matrix, tokens: list[str]) -> list[dict[str, float]]:
    """One ``{token: weight}`` dict per CSR row (PyTerrier's ``toks`` / ``query_toks`` format)."""
    out = []
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        out.append({tokens[j]: float(w) for j, w in zip(m.indices[lo:hi], m.data[lo:hi], strict=True)})
    return out


def query_vectors(inp: pd.DataFrame | Mapping) -> np.ndarray | None:
    """The ``query_vec`` column of a frame (or of its :func:`~pyterrier_d2s.frames.column_arrays`) as a float32
    matrix (None without one); ValueError naming a bad query."""
    if "query_vec" not in (inp.columns if isinstance(inp, pd.DataFrame) else inp):
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
        return csr_to_toks(self.encode_columns(column_arrays(inp)), self.model.vocab.tokens)

    def encode_columns(self, columns: dict, vectors: np.ndarray | None = None) -> sp.csr_matrix:
        """The sparse queries (CSR over the vocabulary) of a frame's :func:`~pyterrier_d2s.frames.column_arrays`
        (``vectors``: its ``query_vec`` column as a matrix, when the caller has it already)."""
        texts = [str(q) for q in columns["query"]]
        if vectors is None:
            vectors = query_vectors(columns)
        return self.model.encode_texts(
            texts,
            vectors,
            expansion=self.expansion,
            top_k=self.top_k,
            min_weight=self.min_weight,
            columns=self._index_columns(),
        )

    def check_frame(self, inp: pd.DataFrame) -> None:
        """The query frame checks of :meth:`transform` (ValueError on a missing column or a duplicate qid)."""
        pta.validate.query_frame(inp, extra_columns=["query"])
        if len(inp) > 1:  # (one row: one query, and pandas' duplicated() costs more than the check)
            dup = inp["qid"].duplicated()
            if dup.any():
                # two rows under one qid would merge into one ranking downstream
                raise ValueError(f"duplicate qid {inp['qid'][dup].iat[0]!r} in the query frame")

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """``inp`` with a ``query_toks`` column (ValueError on a duplicate qid)."""
        self.check_frame(inp)
        if len(inp) == 0:
            return inp.assign(query_toks=pd.Series(dtype=object))
        columns = column_arrays(inp)
        toks = csr_to_toks(self.encode_columns(columns), self.model.vocab.tokens)
        columns["query_toks"] = object_array(toks)  # replaced in place if present
        return frame_from_arrays(columns, inp.index)

    def fuse_right(self, right: pt.Transformer) -> pt.Transformer | None:
        """``encoder >> index.retriever(...)`` becomes one :class:`EncodedRetriever` (``.compile()``)."""
        if type(right) is D2SRetriever:  # (a subclass may retrieve differently)
            return EncodedRetriever(self, right)
        return None


class EncodedRetriever(pt.Transformer):
    """``D2SQueryEncoder >> D2SRetriever`` as one stage, what PyTerrier's ``.compile()`` makes of the pair.

    The same result frame (``query_toks`` included) without the intermediate query frame, and the encoded
    queries go from the head's output to the index's term ids directly instead of through their
    ``{token: weight}`` dicts: what one query at a time spends most of its time on after the encoding.
    """

    def __init__(self, encoder: D2SQueryEncoder, retriever: D2SRetriever):
        self.encoder = encoder
        self.retriever = retriever

    def __repr__(self) -> str:
        return f"({self.encoder!r} >> {self.retriever!r})"

    def transform_inputs(self) -> list[list[str]]:
        """Required input columns."""
        return [["qid", "query"]]

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """Output columns for given input columns."""
        pta.validate.query_frame(input_columns, extra_columns=["query"])
        with_toks = list(input_columns) + ([] if "query_toks" in input_columns else ["query_toks"])
        return query_result_columns(with_toks)

    def fuse_rank_cutoff(self, k: int) -> EncodedRetriever | None:
        """``(encoder >> retriever) % k`` retrieves only k results."""
        fused = self.retriever.fuse_rank_cutoff(k)
        return None if fused is None else EncodedRetriever(self.encoder, fused)

    def encode_and_search(self, inp: pd.DataFrame) -> tuple[dict, Hits, np.ndarray | None]:
        """(the query columns with ``query_toks``, the engine's hits, the ``query_vec`` matrix or None) of
        ``inp``."""
        self.encoder.check_frame(inp)
        columns = column_arrays(inp)
        vectors = query_vectors(columns)
        csr = self.encoder.encode_columns(columns, vectors)
        columns["query_toks"] = object_array(csr_to_toks(csr, self.encoder.model.vocab.tokens))
        col_of = index_columns(self.encoder.model.vocab, self.retriever.index)[0]
        return columns, self.retriever.search(query_batch(csr, col_of)), vectors

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Encode and retrieve (the result frame of the two stages run one after the other)."""
        if len(inp) == 0:
            return self.retriever.transform(self.encoder.transform(inp))
        columns, hits, _ = self.encode_and_search(inp)
        return hits_frame(columns, hits, self.retriever.index.forward())

