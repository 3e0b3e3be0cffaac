"""An encoder that looks vectors up in a vectors directory instead of running a model.

Captions are found by their exact text, images by their id: enough to run a D2S pipeline over a data set
whose vectors were cached with ``d2s encode`` (or over the packaged demo set) without the dense model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from .base import DenseEncoder

__all__ = ["PrecomputedEncoder"]


class PrecomputedEncoder(DenseEncoder):
    """Vectors from a vectors directory (or a packaged data set name such as ``coco500``).

    ``encode_text`` takes caption texts present in ``captions.jsonl``; ``encode_images`` takes image ids
    present in ``images.jsonl``. Anything else raises ``KeyError`` naming it.
    """

    def __init__(
        self,
        name_or_dir: str | os.PathLike,
        progress: bool = False,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        precision: str | None = None,
    ):
        # batch_size, device and precision are accepted because load_encoder (d2s encode) passes them to every
        # backend; a lookup has no batches, model or device, so they change nothing
        super().__init__(batch_size=1 << 30, device="cpu", precision="fp32", progress=progress)
        from ..data import load_pairs

        pairs = load_pairs(name_or_dir)
        self.name = f"precomputed:{name_or_dir}"
        self._dim = pairs.dim
        self._text_vec = dict(zip(pairs.caption_texts, pairs.caption_vectors, strict=True))
        self._image_vec = dict(zip(pairs.image_ids, pairs.image_vectors, strict=True))

    @property
    def dim(self) -> int:
        return self._dim

    @staticmethod
    def _lookup(table: dict, keys: Sequence[str], what: str) -> torch.Tensor:
        missing = [k for k in keys if k not in table]
        if missing:
            raise KeyError(f"no precomputed vector for {what} {missing[0]!r} ({len(missing)} missing in all)")
        return torch.from_numpy(np.stack([table[k] for k in keys]))

    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        return self._lookup(self._text_vec, texts, "caption")

    def encode_images_with_ids(self, images, ids=None, on_error="raise"):
        """Images are given by id here: look them up directly, there is no file to load."""
        from .base import ImageVectors

        keys = [str(i) for i in images]
        vecs = self._lookup(self._image_vec, keys, "image").numpy() if keys else np.zeros((0, self.dim))
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return ImageVectors(ids=keys, vectors=(vecs / np.maximum(norms, 1e-12)).astype(np.float32))

    def _image_batch(self, images: list) -> torch.Tensor:  # pragma: no cover - never called, see above
        raise NotImplementedError
