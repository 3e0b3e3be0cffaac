"""BLIP image-text retrieval models through transformers (``Salesforce/blip-itm-base-coco``, ``-flickr``, ...).

The vectors are BLIP's image-text contrastive (ITC) features, exactly as
``BlipForImageTextRetrieval.forward(..., use_itm_head=False)`` computes them before its dot product:

- text: ``normalize(text_proj(text_encoder(input_ids, attention_mask).last_hidden_state[:, 0]))``, the text
  encoder run *without* the image (no cross-attention);
- image: ``normalize(vision_proj(vision_model(pixel_values).last_hidden_state[:, 0]))``.

So the cosine of a caption and an image vector equals the model's own ITC score.
"""

from __future__ import annotations

import os

import torch

from ._hf import load_tokenizer_and_processor, text_max_length
from .base import DenseEncoder

__all__ = ["BlipEncoder"]


class BlipEncoder(DenseEncoder):
    """A BLIP retrieval model (``BlipForImageTextRetrieval``) from a hub name or a local directory.

    Args:
        name_or_dir: e.g. ``Salesforce/blip-itm-base-coco`` or a directory written by ``save_pretrained``
            (with its tokenizer and image processor).
        max_length: truncate captions to this many tokens (default: the model's limit).
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
        from transformers import BlipForImageTextRetrieval

        self.name = str(name_or_dir)
        self.model = BlipForImageTextRetrieval.from_pretrained(name_or_dir).eval().to(self.device)
        self.tokenizer, self.image_processor = load_tokenizer_and_processor(name_or_dir, image_backend)
        self.max_length = text_max_length(
            self.tokenizer, self.model.config.text_config.max_position_embeddings, max_length
        )

    @property
    def dim(self) -> int:
        return int(self.model.text_proj.out_features)

    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(
            texts,
            padding=True,
            truncation=self.max_length is not None,
            max_length=self.max_length,
            return_tensors="pt",
        )
        # Only ids and mask: BlipProcessor drops token_type_ids too, and the ITC path takes no others.
        out = self.model.text_encoder(
            input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device)
        )
        return self.model.text_proj(out.last_hidden_state[:, 0, :])

    def _image_batch(self, images: list) -> torch.Tensor:
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        out = self.model.vision_model(pixel_values=pixels.to(self.device))
        return self.model.vision_proj(out.last_hidden_state[:, 0, :])
