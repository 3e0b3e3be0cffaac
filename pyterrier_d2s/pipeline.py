"""The PyTerrier transformers of D2S: query encoder, image indexer and the expansion re-scorer.

    query_toks  = D2SQueryEncoder(model, expansion=False)            # qid, query (+ query_vec) -> query_toks
    D2SImageIndexer(model, index).index(corpus_iter)                # docno + doc_vec (or image) -> D2SIndex
    search      = query_toks >> index.retriever(num_results=100) >> ExpansionRescorer(model, index)

The re-scorer implements the paper's "no expansion >> expansion": candidates are retrieved with the caption's
own terms (cheap posting lists), then every candidate is scored exactly with the fully expanded query from
the index's forward store, and re-ranked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyterrier as pt
import pyterrier_alpha as pta
import scipy.sparse as sp
from tqdm.auto import tqdm

if TYPE_CHECKING:  # pragma: no cover
    from .index import D2SIndex
    from .model import D2S

__all__ = ["D2SQueryEncoder", "D2SImageIndexer", "ExpansionRescorer", "csr_to_toks"]


def csr_to_toks(m: sp.csr_matrix, tokens: list[str]) -> list[dict[str, float]]:
    """One ``{token: weight}`` dict per CSR row (PyTerrier's ``toks`` / ``query_toks`` format)."""
    out = []
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        out.append({tokens[j]: float(w) for j, w in zip(m.indices[lo:hi], m.data[lo:hi], strict=True)})
    return out


def _query_vectors(inp: pd.DataFrame) -> np.ndarray | None:
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
            texts, _query_vectors(inp), expansion=self.expansion, top_k=self.top_k, min_weight=self.min_weight
        )
        return csr_to_toks(csr, self.model.vocab.tokens)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pta.validate.query_frame(inp, extra_columns=["query"])
        if len(inp) == 0:
            return inp.assign(query_toks=pd.Series(dtype=object))
        dup = inp["qid"].duplicated()
        if dup.any():
            # two rows under one qid would merge into one ranking downstream
            raise ValueError(f"duplicate qid {inp['qid'][dup].iat[0]!r} in the query frame")
        return inp.assign(query_toks=self.encode(inp))


class D2SImageIndexer(pt.Indexer):
    """Encodes images into sparse vectors and writes them into a :class:`~pyterrier_d2s.index.D2SIndex`.

    Input (an iterable of dicts or a frame): ``docno`` plus ``doc_vec`` (dense image vector) or ``image``
    (path / PIL image / bytes, through the model's dense image encoder).
    """

    def __init__(
        self, model: D2S, index: D2SIndex, batch_size: int = 1024, verbose: bool = True, **index_kwargs
    ):
        self.model = model
        self.d2s_index = index
        self.batch_size = batch_size
        self.verbose = verbose
        self.index_kwargs = index_kwargs

    def __repr__(self) -> str:
        return f"D2SImageIndexer({self.d2s_index!r})"

    def _batches(self, it: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        for doc in it:
            batch.append(doc)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def encode(self, it: Iterable[dict[str, Any]]) -> tuple[list[str], sp.csr_matrix]:
        """(docnos, CSR of sparse image vectors) for an iterable of documents."""
        if isinstance(it, pd.DataFrame):
            it = it.to_dict(orient="records")
        docnos: list[str] = []
        blocks: list[sp.csr_matrix] = []
        for batch in tqdm(self._batches(it), desc="encoding images", unit="batch", disable=not self.verbose):
            for n, doc in enumerate(batch):
                if "docno" not in doc:
                    raise ValueError(f"document #{len(docnos) + n} has no 'docno'")
                if "doc_vec" not in doc and "image" not in doc:
                    raise ValueError(f"document {doc['docno']!r} has neither 'doc_vec' nor 'image'")
            batch_docnos = [str(d["docno"]) for d in batch]
            if all("doc_vec" in d for d in batch):
                vecs = np.stack([np.asarray(d["doc_vec"], dtype=np.float32) for d in batch])
                bad = ~np.isfinite(vecs).all(axis=1)
                if bad.any():
                    raise ValueError(
                        f"document {batch_docnos[int(np.argmax(bad))]!r} has a NaN or inf doc_vec"
                    )
                blocks.append(self.model.encode_images(vectors=vecs))
            else:
                blocks.append(self.model.encode_images(images=[d["image"] for d in batch]))
            docnos.extend(batch_docnos)
        matrix = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, len(self.model.vocab)))
        return docnos, matrix

    def index(self, it: Iterable[dict[str, Any]]) -> D2SIndex:
        docnos, matrix = self.encode(it)
        built_with = {"head_fingerprint": self.model.head.fingerprint()}
        self.d2s_index.index_matrix(
            docnos, matrix, self.model.vocab.tokens, built_with=built_with, **self.index_kwargs
        )
        return self.d2s_index


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
    ):
        self.model = model
        self.d2s_index = index
        self.top_k = top_k
        self.min_weight = min_weight
        self.expanded_toks = expanded_toks
        # (forward store, its column of each vocabulary id, the vocabulary ids some document has)
        self._term_columns: tuple[Any, np.ndarray, np.ndarray] | None = None

    def __repr__(self) -> str:
        return f"ExpansionRescorer({self.d2s_index!r})"

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

    def _vocab_columns(self, fwd) -> tuple[np.ndarray, np.ndarray]:
        """(forward-store column of each vocabulary id or -1, the vocabulary ids some document has)."""
        if self._term_columns is None or self._term_columns[0] is not fwd:
            term_index = fwd.term_index
            cols = np.array([term_index.get(t, -1) for t in self.model.vocab.tokens], dtype=np.int64)
            in_docs = np.flatnonzero((cols >= 0) & (fwd.doc_freq[np.maximum(cols, 0)] > 0))
            self._term_columns = (fwd, cols, in_docs)
        return self._term_columns[1], self._term_columns[2]

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Re-score and re-rank the candidates of ``inp``."""
        from .index.engines import QueryBatch
        from .index.transformers import candidate_rows, empty_reranked, query_groups, rerank, score_pairs

        out_cols = self._out_cols(list(inp.columns))
        if len(inp) == 0:
            return empty_reranked(inp, out_cols)
        qcodes, first_rows = query_groups(inp["qid"])
        queries = inp.iloc[first_rows]
        texts = [str(q) for q in queries["query"]]
        fwd = self.d2s_index.forward()
        col_of, in_docs = self._vocab_columns(fwd)
        # a token no image has cannot add to any score: the head computes only the tokens the index has (a
        # few thousand of 30,522 on a small collection), unless top-k pruning needs the whole vocabulary
        # (with expanded_toks the dict stays the full expanded query)
        restrict = self.top_k is None and not self.expanded_toks
        expanded = self.model.encode_texts(
            texts,
            _query_vectors(queries),
            expansion=True,
            top_k=self.top_k,
            min_weight=self.min_weight,
            columns=in_docs if restrict else None,
        )
        terms = col_of[expanded.indices]
        keep = (terms >= 0) & (expanded.data > 0)
        per_query = np.bincount(
            np.repeat(np.arange(len(texts)), np.diff(expanded.indptr))[keep], minlength=len(texts)
        )
        batch = QueryBatch(
            np.r_[0, np.cumsum(per_query)].astype(np.int64),
            terms[keep].astype(np.int32),
            expanded.data[keep].astype(np.float32),
        )
        scores = score_pairs(self.d2s_index, batch, qcodes, candidate_rows(fwd, inp["docno"]))
        replaced = {}
        if self.expanded_toks:
            toks = csr_to_toks(expanded, self.model.vocab.tokens)
            replaced["query_toks"] = np.array([toks[c] for c in qcodes], dtype=object)
        return rerank(inp, qcodes, scores, out_cols, replaced)
