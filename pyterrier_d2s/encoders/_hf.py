"""Helpers shared by the transformers backends (BLIP, CLIP)."""

from __future__ import annotations

import os

import torch

from .base import DenseEncoder


def load_tokenizer_and_processor(name_or_dir: str | os.PathLike, image_backend: str | None):
    """The tokenizer and image processor saved beside a transformers model (hub name or local dir).

    ``image_backend="pil"`` (the default of the encoders) asks for the PIL image processor: it is what the
    models were trained with (transformers 4 and LAVIS resize with PIL), it needs no torchvision, and it makes
    vectors identical whether or not torchvision is installed.
    """
    from transformers import AutoImageProcessor, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_dir)
    kwargs = {} if image_backend is None else {"backend": image_backend}
    processor = AutoImageProcessor.from_pretrained(name_or_dir, **kwargs)
    return tokenizer, processor


def text_max_length(tokenizer, max_positions: int | None, max_length: int | None) -> int | None:
    """Truncation length: the caller's, else the smaller of the tokenizer's and the model's limits."""
    if max_length is not None:
        return max_length
    limits = [n for n in (getattr(tokenizer, "model_max_length", None), max_positions) if n and n < 1_000_000]
    return min(limits) if limits else None


def pooled(output):
    """``get_*_features`` returns a tensor in transformers 4 and a ``BaseModelOutputWithPooling`` (projection
    in ``pooler_output``) in transformers 5."""
    return output if hasattr(output, "dim") else output.pooler_output


class TransformersEncoder(DenseEncoder):
    """A transformers image-text model (its class named by ``model_class``) with the tokenizer and image
    processor saved beside it; subclasses say how texts and pixels become vectors.

    Args:
        name_or_dir: a hub name or a directory written by ``save_pretrained``.
        max_length: truncate captions to this many tokens (default: the model's limit).
        image_backend: ``"pil"`` (default) or ``"torchvision"`` image processor; ``None``: transformers' choice.
        batch_size, device, precision, progress, num_workers: see :class:`DenseEncoder`.
    """

    model_class: str = ""

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
        import transformers

        self.name = str(name_or_dir)
        model_cls = getattr(transformers, self.model_class)
        self.model = model_cls.from_pretrained(name_or_dir).eval().to(self.device)
        self.tokenizer, self.image_processor = load_tokenizer_and_processor(name_or_dir, image_backend)
        self.max_length = text_max_length(
            self.tokenizer, self.model.config.text_config.max_position_embeddings, max_length
        )

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` on the device (the ITC paths take no other inputs)."""
        tok = self.tokenizer(
            texts,
            padding=True,
            truncation=self.max_length is not None,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {
            "input_ids": tok["input_ids"].to(self.device),
            "attention_mask": tok["attention_mask"].to(self.device),
        }

    def _pixels(self, images: list) -> torch.Tensor:
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
