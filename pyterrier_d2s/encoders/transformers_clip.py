"""CLIP through transformers (``openai/clip-vit-base-patch16``, ...): ``CLIPModel.get_text_features`` /
``get_image_features`` (the projected, pooled outputs), L2-normalised."""

from __future__ import annotations

import torch

from ._hf import TransformersEncoder, pooled

__all__ = ["ClipEncoder"]


class ClipEncoder(TransformersEncoder):
    """A CLIP model (``CLIPModel``) from a hub name or a local directory, e.g. ``openai/clip-vit-base-patch16``;
    arguments as :class:`~pyterrier_d2s.encoders._hf.TransformersEncoder` (captions truncate at the model's 77)."""

    model_class = "CLIPModel"

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        return pooled(self.model.get_text_features(**self._tokens(texts)))

    def _image_batch(self, images: list) -> torch.Tensor:
        return pooled(self.model.get_image_features(pixel_values=self._pixels(images)))
