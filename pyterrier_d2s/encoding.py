"""``d2s encode`` as a function: a dense model's vectors of image and caption files, written to a vectors
directory (resumable; see :func:`pyterrier_d2s.encoders.cache.encode_vectors_dir`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .encoders.cache import EncodeSummary

__all__ = ["encode_dataset"]


def encode_dataset(
    encoder: str | os.PathLike,
    images: str | os.PathLike,
    captions: str | os.PathLike,
    out: str | os.PathLike,
    *,
    batch_size: int = 32,
    chunk_size: int = 1024,
    skip_bad_images: bool = False,
    device: str | None = None,
    precision: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
) -> EncodeSummary:
    """Encode ``images`` (a directory, or a .jsonl of image_id + file / a text list) and ``captions`` (JSONL
    of caption_id, image_id, caption, or Karpathy's dataset_meta.json) with the dense model ``encoder`` (a
    transformers BLIP/CLIP name or directory, or ``lavis:<model>/<type>``) into the vectors directory ``out``.

    ``batch_size`` inputs per forward pass; ``chunk_size`` items per committed chunk (at most that many are
    lost on a kill; an unfinished run at ``out`` resumes unless ``overwrite``). ``skip_bad_images`` leaves
    unreadable images (and their captions) out, listed in the summary, instead of raising.
    """
    from .encoders import load_encoder
    from .encoders.cache import encode_vectors_dir
    from .encoders.inputs import read_encode_inputs

    image_items, caption_rows = read_encode_inputs(images, captions)
    dense = load_encoder(encoder, batch_size=batch_size, device=device, precision=precision)
    return encode_vectors_dir(
        dense,
        image_items,
        caption_rows,
        out,
        chunk_size=chunk_size,
        on_error="skip" if skip_bad_images else "raise",
        overwrite=overwrite,
        progress=progress,
    )
