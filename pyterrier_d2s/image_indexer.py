"""The image indexer of D2S: dense image vectors (or images) -> sparse vectors -> a :class:`D2SIndex`.

D2SImageIndexer(model, index).index(corpus_iter)     # docno + doc_vec (or image) -> D2SIndex
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

__all__ = ["D2SImageIndexer"]


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

    def index_inputs(self) -> list[list[str]]:
        """The document columns :meth:`index` accepts: a dense vector, or an image for the dense encoder."""
        return [["docno", "doc_vec"], ["docno", "image"]]

    def transform_inputs(self) -> list[list[str]]:
        """The same as :meth:`index_inputs` (for ``pt.inspect``, which asks every transformer this)."""
        return self.index_inputs()

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """No frame: an indexer consumes its documents (the index is what :meth:`index` returns)."""
        with pta.validate.any(input_columns) as v:
            for mode in self.index_inputs():
                v.columns(includes=mode)
        return []

    def _batches(self, it: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        for doc in it:
            batch.append(doc)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def encode(self, it: Iterable[dict[str, Any]] | pd.DataFrame) -> tuple[list[str], sp.csr_matrix]:
        """(docnos, CSR of sparse image vectors) for an iterable of documents (or a frame).

        Raises:
            ValueError: naming a document without ``docno``, without ``doc_vec``/``image``, or with a NaN or
                infinite ``doc_vec``.
        """
        if isinstance(it, pd.DataFrame):
            it = it.to_dict(orient="records")
        docnos: list[str] = []
        blocks: list[sp.csr_matrix] = []
        for batch in tqdm(self._batches(it), desc="encoding images", unit="batch", disable=not self.verbose):
            _check_documents(batch, first=len(docnos))
            batch_docnos = [str(d["docno"]) for d in batch]
            blocks.append(self._encode_batch(batch, batch_docnos))
            docnos.extend(batch_docnos)
        matrix = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, len(self.model.vocab)))
        return docnos, matrix

    def _encode_batch(self, batch: list[dict[str, Any]], docnos: list[str]) -> sp.csr_matrix:
        if not all("doc_vec" in d for d in batch):
            return self.model.encode_images(images=[d["image"] for d in batch])
        vecs = np.stack([np.asarray(d["doc_vec"], dtype=np.float32) for d in batch])
        bad = ~np.isfinite(vecs).all(axis=1)
        if bad.any():
            raise ValueError(f"document {docnos[int(np.argmax(bad))]!r} has a NaN or inf doc_vec")
        return self.model.encode_images(vectors=vecs)

    def index(self, it: Iterable[dict[str, Any]]) -> D2SIndex:
        """Encode the documents of ``it`` and build the index (recording the head's fingerprint)."""
        docnos, matrix = self.encode(it)
        built_with = {"head_fingerprint": self.model.head.fingerprint()}
        self.d2s_index.index_matrix(
            docnos, matrix, self.model.vocab.tokens, built_with=built_with, **self.index_kwargs
        )
        return self.d2s_index


def _check_documents(batch: list[dict[str, Any]], first: int) -> None:
    """ValueError naming the first document of ``batch`` (numbered from ``first``) that cannot be encoded."""
    for n, doc in enumerate(batch):
        if "docno" not in doc:
            raise ValueError(f"document #{first + n} has no 'docno'")
        if "doc_vec" not in doc and "image" not in doc:
            raise ValueError(f"document {doc['docno']!r} has neither 'doc_vec' nor 'image'")
