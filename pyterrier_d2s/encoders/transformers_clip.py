"""CLIP through transformers (``openai/clip-vit-base-patch16``, ...): ``CLIPModel.get_text_features`` /
``get_image_features`` (the projected, pooled outputs), L2-normalised."""

from __future__ import annotations

import os

import torch

from ._hf import load_tokenizer_and_processor, pooled, text_max_length
from .base import DenseEncoder

__all__ = ["ClipEncoder"]


class ClipEncoder(DenseEncoder):
    """A CLIP model from a hub name or a local directory (with its tokenizer and image processor).

    Args:
        name_or_dir: e.g. ``openai/clip-vit-base-patch16`` or a ``save_pretrained`` directory.
        max_length: truncate captions to this many tokens (default: the model's limit, 77 for OpenAI CLIP).
        image_backend: ``"pil"`` (default) or ``"torchvision"`` image processor; ``None``: transformers' choice.
        batch_size, device, precision, progress, num_workers: see :class:`DenseEncoder`.
    """

    def __init__(
        self,
        name_or_dir: str | os.PathLike,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        precision: str = "auto",
        progress: bool = True,
        num_workers: int | None = None,
        max_length: int | None = None,
        image_backend: str | None = "pil",
    ):
        super().__init__(
            batch_size=batch_size,
            device=device,
            precision=precision,
            progress=progress,
            num_workers=num_workers,
        )
        from transformers import CLIPModel

        self.name = str(name_or_dir)
        self.model = CLIPModel.from_pretrained(name_or_dir).eval().to(self.device)
        self.tokenizer, self.image_processor = load_tokenizer_and_processor(name_or_dir, image_backend)
        self.max_length = text_max_length(
            self.tokenizer, self.model.config.text_config.max_position_embeddings, max_length
        )

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(
            texts,
            padding=True,
            truncation=self.max_length is not None,
            max_length=self.max_length,
            return_tensors="pt",
        )
        out = self.model.get_text_features(
            input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device)
        )
        return pooled(out)

    def _image_batch(self, images: list) -> torch.Tensor:
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return pooled(self.model.get_image_features(pixel_values=pixels.to(self.device)))
