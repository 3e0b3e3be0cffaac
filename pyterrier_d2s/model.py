"""D2S: a trained head plus (optionally) the frozen dense encoder it sits on; a factory of PyTerrier transformers.

    model = D2S.from_pretrained("runs/coco500-cw")
    query = model.query_encoder(expansion=False)           # qid, query (+ query_vec) -> query_toks
    pipe  = query >> index.retriever(num_results=100) >> model.rescorer(index)

Like pyt_splade's ``Splade``, the model hands out encoders that share its head and vocabulary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

from .head import D2SHead

if TYPE_CHECKING:  # pragma: no cover
    from .image_indexer import D2SImageIndexer
    from .index import D2SIndex
    from .query_encoder import D2SQueryEncoder
    from .rescorer import ExpansionRescorer

__all__ = ["D2S"]


class D2S:
    """A D2S model.

    Args:
        head: the trained projection head.
        dense_encoder: an object with ``encode_text(list[str]) -> np.ndarray`` (and ``encode_images``), used
            when frames carry no ``query_vec`` / ``doc_vec``; ``None`` means vectors must be supplied.
    """

    def __init__(self, head: D2SHead, dense_encoder: Any | None = None):
        self.head = head.eval()
        self.dense_encoder = dense_encoder

    @classmethod
    def from_pretrained(
        cls,
        name_or_dir: str | os.PathLike,
        device: str | torch.device = "cpu",
        dense_encoder: Any | None = None,
        revision: str | None = None,
    ) -> D2S:
        """Load a head saved by ``save_pretrained`` / ``d2s train`` (config.json + safetensors + vocab.txt),
        from a directory or a Hub id (``org/name`` at ``revision``, the Hub cache and ``HF_HUB_OFFLINE``
        honoured), in this package's format or the paper authors' (see :meth:`D2SHead.from_pretrained`).

        ``dense_encoder``: ``None`` (vectors must come with the frames), an encoder object, a name or
        directory for :func:`pyterrier_d2s.encoders.load_encoder`, or ``"auto"`` for the encoder recorded in
        the head's config (the one it was trained on).
        """
        head = D2SHead.from_pretrained(name_or_dir, device=device, revision=revision)
        if dense_encoder == "auto":
            dense_encoder = head.config.dense_encoder
            if dense_encoder is None:
                raise ValueError(f"{name_or_dir}: the head records no dense encoder; pass one explicitly")
        if isinstance(dense_encoder, (str, os.PathLike)):
            from .encoders import load_encoder

            dense_encoder = load_encoder(str(dense_encoder), device=device)
        return cls(head, dense_encoder=dense_encoder)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the head into ``directory`` (see :meth:`D2SHead.save_pretrained`)."""
        self.head.save_pretrained(Path(directory))

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Upload the head to the Hub repository ``repo_id`` (see :meth:`D2SHead.push_to_hub`)."""
        return self.head.push_to_hub(repo_id, **kwargs)

    def __repr__(self) -> str:
        c = self.head.config
        return f"D2S(input_dim={c.input_dim}, vocab={c.vocab_size}, exp={c.exp!r}, dense_encoder={c.dense_encoder!r})"

    @property
    def vocab(self):
        return self.head.vocab

    # -- encoding --------------------------------------------------------------------------------------
    def encode_texts(
        self,
        texts: list[str],
        vectors: np.ndarray | None = None,
        expansion: bool = True,
        top_k: int | None = None,
        min_weight: float = 0.0,
        columns: np.ndarray | None = None,
    ) -> sp.csr_matrix:
        """Sparse vectors (CSR, |texts| x |V|) of captions/queries; ``expansion=False`` keeps their own tokens.

        ``columns`` (expanded queries only): compute only these vocabulary ids (see :meth:`D2SHead.encode`).
        """
        if vectors is None:
            vectors = self._dense("text", texts)
        own = None if expansion else self.vocab.token_ids(texts)
        return self.head.encode(
            vectors, own_token_ids=own, top_k=top_k, threshold=min_weight, columns=columns
        )

    def encode_images(
        self,
        vectors: np.ndarray | None = None,
        images: list | None = None,
        top_k: int | None = None,
        min_weight: float = 0.0,
    ) -> sp.csr_matrix:
        """Sparse vectors (CSR, n x |V|) of images, from dense vectors or (through the dense encoder) images."""
        if vectors is None:
            vectors = self._dense("image", images or [])
        return self.head.encode(vectors, top_k=top_k, threshold=min_weight)

    def top_terms(self, sparse: sp.csr_matrix, k: int = 10) -> list[list[tuple[str, float]]]:
        """The ``k`` highest-weighted (token, weight) pairs of each row of a sparse matrix (paper Table 4)."""
        out = []
        for i in range(sparse.shape[0]):
            lo, hi = sparse.indptr[i], sparse.indptr[i + 1]
            idx, val = sparse.indices[lo:hi], sparse.data[lo:hi]
            order = np.lexsort((idx, -val))[:k]
            out.append([(self.vocab.tokens[idx[j]], float(val[j])) for j in order])
        return out

    def _dense(self, kind: str, items: list) -> np.ndarray:
        if self.dense_encoder is None:
            column = "query_vec" if kind == "text" else "doc_vec"
            raise ValueError(
                f"no {column} column and this D2S model has no dense encoder: add {column} to the frame "
                f"or load the model with a dense encoder"
            )
        fn = self.dense_encoder.encode_text if kind == "text" else self.dense_encoder.encode_images
        return np.asarray(fn(items), dtype=np.float32)

    # -- PyTerrier transformers ------------------------------------------------------------------------
    def query_encoder(
        self,
        expansion: bool | None = None,
        top_k: int | None = None,
        min_weight: float = 0.0,
        batch_size: int = 1024,
        index: D2SIndex | None = None,
    ) -> D2SQueryEncoder:
        """``qid, query (+ query_vec)`` → adds ``query_toks``. ``expansion=None`` follows the training mode.

        ``index``: compute only the tokens some document of that index has (same retrieval results, fewer
        rows of the vocabulary layer read per query).
        """
        from .query_encoder import D2SQueryEncoder

        if expansion is None:
            expansion = self.head.config.exp != "0"
        return D2SQueryEncoder(
            self, expansion=expansion, top_k=top_k, min_weight=min_weight, batch_size=batch_size, index=index
        )

    def image_indexer(self, index: D2SIndex, batch_size: int = 1024, **index_kwargs) -> D2SImageIndexer:
        """``docno + doc_vec`` (or ``image``) → sparse vectors written into ``index``."""
        from .image_indexer import D2SImageIndexer

        return D2SImageIndexer(self, index, batch_size=batch_size, **index_kwargs)

    def rescorer(
        self, index: D2SIndex, top_k: int | None = None, min_weight: float = 0.0, expanded_toks: bool = False
    ) -> ExpansionRescorer:
        """Re-score retrieved candidates exactly with the fully expanded query ("no expansion >> expansion").

        ``expanded_toks=True`` also puts the expanded query's ``{token: weight}`` into ``query_toks``.
        """
        from .rescorer import ExpansionRescorer

        return ExpansionRescorer(self, index, top_k=top_k, min_weight=min_weight, expanded_toks=expanded_toks)
