"""PyTerrier side of the image-suggestion bi-encoders: a model factory like pyt_splade's ``Splade``.

    model = SuggestModel.from_pretrained("runs/suggest/M4")
    index = D2SIndex("indexes/m4")
    index.indexer(overwrite=True).index(model.doc_encoder()(docs_frame).to_dict("records"))
    pipe = model.query_encoder() >> index.retriever(num_results=100)

``query_encoder()``: ``qid, query`` -> adds ``query_toks``; ``doc_encoder()``: ``docno`` + ``text`` (the
captions) and/or ``doc_vec`` (the image vector) -> adds ``toks``. Both are ``{token: weight}`` dicts over the
package's vocabulary, so the documents go into a :class:`~pyterrier_d2s.index.D2SIndex` and every engine of it
searches them.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyterrier as pt
import pyterrier_alpha as pta
import torch

from ..query_encoder import csr_to_toks  # the model's CSR holds positive entries only (dense_to_csr)
from .model import SuggestBiEncoder

__all__ = ["SuggestDocEncoder", "SuggestModel", "SuggestQueryEncoder"]


class SuggestModel:
    """A trained :class:`SuggestBiEncoder` and the transformers it hands out."""

    def __init__(self, biencoder: SuggestBiEncoder):
        self.biencoder = biencoder.eval()

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> SuggestModel:
        return cls(SuggestBiEncoder.from_pretrained(directory, device=device))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        self.biencoder.save_pretrained(directory)

    def __repr__(self) -> str:
        return f"SuggestModel({self.biencoder.config.preset})"

    def query_encoder(self, batch_size: int = 64) -> SuggestQueryEncoder:
        return SuggestQueryEncoder(self.biencoder, batch_size)

    def doc_encoder(self, batch_size: int = 64) -> SuggestDocEncoder:
        return SuggestDocEncoder(self.biencoder, batch_size)


class SuggestQueryEncoder(pt.Transformer):
    """``qid, query`` -> the same frame with ``query_toks`` (the preset's query encoder)."""

    def __init__(self, biencoder: SuggestBiEncoder, batch_size: int = 64):
        self.biencoder = biencoder
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"SuggestQueryEncoder({self.biencoder.config.preset})"

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pta.validate.query_frame(inp, extra_columns=["query"])
        out = inp.copy()
        if len(inp) == 0:
            out["query_toks"] = pd.Series(dtype=object)
            return out
        matrix = self.biencoder.encode_queries(list(inp["query"].astype(str)), self.batch_size)
        out["query_toks"] = csr_to_toks(matrix, self.biencoder.vocab.tokens)
        return out


class SuggestDocEncoder(pt.Transformer):
    """``docno`` + ``text`` and/or ``doc_vec`` (as the preset needs) -> the same frame with ``toks``."""

    def __init__(self, biencoder: SuggestBiEncoder, batch_size: int = 64):
        self.biencoder = biencoder
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"SuggestDocEncoder({self.biencoder.config.preset})"

    def _needed(self) -> list[str]:
        cfg = self.biencoder.config
        return ["docno"] + ["text"] * bool(cfg.caption) + ["doc_vec"] * bool(cfg.image)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pta.validate.columns(inp, includes=self._needed())
        out = inp.copy()
        if len(inp) == 0:
            out["toks"] = pd.Series(dtype=object)
            return out
        cfg = self.biencoder.config
        texts = list(inp["text"].astype(str)) if cfg.caption else None
        vectors = np.stack(inp["doc_vec"].to_numpy()).astype(np.float32) if cfg.image else None
        matrix = self.biencoder.encode_documents(texts, vectors, self.batch_size)
        out["toks"] = csr_to_toks(matrix, self.biencoder.vocab.tokens)
        return out
