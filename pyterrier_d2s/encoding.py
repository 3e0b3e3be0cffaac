"""``d2s encode`` as a function: a dense model's vectors of image and caption files, written to a vectors
directory (resumable; see :func:`pyterrier_d2s.encoders.cache.encode_vectors_dir`), in one process or as
shards (one per ``--shard``, or one per rank under ``torchrun``) whose parts merge into the same directory
(see :mod:`pyterrier_d2s.encoders.parts`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .encoders.cache import EncodeSummary

__all__ = ["encode_dataset", "merge_encoded_parts"]

# ranks of a sharded encode wait for the slowest one before rank 0 merges: days, not torch's 30 minutes
_MERGE_WAIT_S = 14 * 24 * 3600.0


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
    shard: int | None = None,
    num_shards: int | None = None,
) -> EncodeSummary | dict:
    """Encode ``images`` (a directory, or a .jsonl of image_id + file / a text list) and ``captions`` (JSONL
    of caption_id, image_id, caption, or Karpathy's dataset_meta.json) with the dense model ``encoder`` (a
    transformers BLIP/CLIP name or directory, or ``lavis:<model>/<type>``) into the vectors directory ``out``.

    ``batch_size`` inputs per forward pass; ``chunk_size`` items per committed chunk (at most that many are
    lost on a kill; an unfinished run at ``out`` resumes unless ``overwrite``). ``skip_bad_images`` leaves
    unreadable images (and their captions) out, listed in the summary, instead of raising.

    ``shard`` of ``num_shards``: encode only that shard, into ``out``/part-IIIII-of-NNNNN (itself
    resumable); :func:`merge_encoded_parts` joins the parts. Under ``torchrun`` without ``shard``, each rank
    encodes shard RANK of WORLD_SIZE and rank 0 merges once every rank is done (its summary then is the
    merge's; the other ranks return their part's).
    """
    from .encoders import load_encoder
    from .encoders.cache import encode_vectors_dir
    from .encoders.inputs import read_encode_inputs
    from .encoders.parts import encode_shard
    from .training.distributed import init_from_env, under_torchrun

    if (shard is None) != (num_shards is None):
        raise ValueError("give both --shard and --num-shards, or neither")
    dist = None
    if shard is None and under_torchrun():
        dist = init_from_env(backend="gloo", timeout_s=_MERGE_WAIT_S)  # gloo: only a barrier crosses
        shard, num_shards = dist.rank, dist.world
        device = device or (f"cuda:{dist.local_rank}" if _has_cuda() else None)
    image_items, caption_rows = read_encode_inputs(images, captions)
    dense = load_encoder(encoder, batch_size=batch_size, device=device, precision=precision)
    options = dict(
        chunk_size=chunk_size,
        on_error="skip" if skip_bad_images else "raise",
        overwrite=overwrite,
        progress=progress,
    )
    if shard is None:
        return encode_vectors_dir(dense, image_items, caption_rows, out, **options)
    summary = encode_shard(dense, image_items, caption_rows, out, shard, num_shards, **options)
    if dist is None:
        return summary
    dist.barrier()
    return merge_encoded_parts(out) if dist.is_main else summary


def merge_encoded_parts(out: str | os.PathLike, keep_parts: bool = False) -> dict:
    """Merge the finished parts in ``out`` (``d2s encode --merge``) into the vectors directory of one run."""
    from .encoders.parts import merge_parts

    return merge_parts(out, keep_parts=keep_parts)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
