"""Helpers shared by the transformers backends (BLIP, CLIP)."""

from __future__ import annotations

import os


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
