"""Frozen dense image-text encoders (BLIP, CLIP, ALBEF) that D2S heads sit on.

    from pyterrier_d2s.encoders import load_encoder
    enc = load_encoder("Salesforce/blip-itm-base-coco")       # or a local dir, "lavis:albef_retrieval/coco"
    q = enc.encode_text(["a dog on a beach"])                  # (1, 256) float32, unit rows
    d = enc.encode_images(["val2017/000000000139.jpg"], ids=["139"])

Backends are picked by :func:`load_encoder` from the model's ``config.json`` (``model_type`` ``blip`` or
``clip``), a ``lavis:`` prefix, or a vectors directory / ``precomputed:`` prefix.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import DenseEncoder, ImageVectors, resolve_device
from .images import ImageError, load_image

__all__ = [
    "DenseEncoder",
    "ImageVectors",
    "ImageError",
    "load_image",
    "load_encoder",
    "resolve_device",
    "BlipEncoder",
    "ClipEncoder",
    "LavisEncoder",
    "PrecomputedEncoder",
]


def __getattr__(name: str):
    # Backends import transformers lazily: ``import pyterrier_d2s.encoders`` stays cheap.
    if name == "BlipEncoder":
        from .transformers_blip import BlipEncoder

        return BlipEncoder
    if name == "ClipEncoder":
        from .transformers_clip import ClipEncoder

        return ClipEncoder
    if name == "LavisEncoder":
        from .lavis import LavisEncoder

        return LavisEncoder
    if name == "PrecomputedEncoder":
        from .precomputed import PrecomputedEncoder

        return PrecomputedEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_encoder(name_or_dir: str | os.PathLike, **kwargs) -> DenseEncoder:
    """Build the dense encoder named by ``name_or_dir``.

    - ``lavis:<model>/<type>`` (e.g. ``lavis:blip_retrieval/coco``): :class:`LavisEncoder`;
    - ``precomputed:<dir or packaged name>``, or a vectors directory: :class:`PrecomputedEncoder`;
    - otherwise a transformers hub name or local directory, by ``model_type`` in its ``config.json``:
      ``blip`` -> :class:`BlipEncoder`, ``clip`` -> :class:`ClipEncoder`.

    ``kwargs`` go to the backend (``batch_size``, ``device``, ``precision``, ``progress``, ...).
    """
    name = str(name_or_dir)
    if name.startswith("lavis:"):
        from .lavis import LavisEncoder

        return LavisEncoder(name, **kwargs)
    if name.startswith("precomputed:") or (Path(name) / "image_vectors.npy").is_file():
        from .precomputed import PrecomputedEncoder

        return PrecomputedEncoder(name.removeprefix("precomputed:"), **kwargs)
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(name_or_dir).model_type
    if model_type == "blip":
        from .transformers_blip import BlipEncoder

        return BlipEncoder(name_or_dir, **kwargs)
    if model_type == "clip":
        from .transformers_clip import ClipEncoder

        return ClipEncoder(name_or_dir, **kwargs)
    raise ValueError(
        f"{name}: model_type {model_type!r} is not supported; dense encoders: transformers 'blip' "
        "(BlipForImageTextRetrieval) and 'clip' models, 'lavis:<model>/<type>', or a vectors directory"
    )
