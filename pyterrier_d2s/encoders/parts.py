"""Sharded encoding: shard I of N encodes one contiguous block of the images (and their captions) into a part,
and the parts merge into exactly the vectors directory one process writes.

A part is ``OUT/part-IIIII-of-NNNNN/``: an ordinary vectors directory written by
:func:`~pyterrier_d2s.encoders.cache.encode_vectors_dir` (so each part resumes on its own after a kill), and,
once it is finished, ``shard.json`` (the shard, the input sizes and, for each caption kept, its position in
the caption input). Images are cut into contiguous blocks, so the parts' images concatenate in input order;
captions follow their image into its part and are put back in input order by their positions on merging.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.pairs import DataError
from ..data.vectors_dir import read_jsonl
from .base import DenseEncoder
from .cache import FINAL_FILES, EncodeSummary, _write_atomic, _write_jsonl, encode_vectors_dir
from .inputs import ImageItem

__all__ = ["PART_FILE", "encode_shard", "merge_parts", "part_dir", "shard_of_inputs"]

PART_FILE = "shard.json"


def part_dir(out: str | os.PathLike, shard: int, num_shards: int) -> Path:
    """Where shard ``shard`` of ``num_shards`` writes its part of the vectors directory ``out``."""
    return Path(out) / f"part-{shard:05d}-of-{num_shards:05d}"


def _check_shard(shard: int, num_shards: int) -> None:
    if num_shards < 1:
        raise ValueError(f"--num-shards must be >= 1, not {num_shards}")
    if not 0 <= shard < num_shards:
        raise ValueError(
            f"--shard {shard} is out of range: shards are 0..{num_shards - 1} of --num-shards {num_shards}"
        )


def shard_of_inputs(
    images: Sequence[ImageItem], captions: Sequence[dict], shard: int, num_shards: int
) -> tuple[list[ImageItem], list[dict], list[int]]:
    """Shard ``shard``'s images (a contiguous block), their captions, and those captions' input positions.

    Captions of an image not in ``images`` go with shard 0, so that every caption is in exactly one part.
    """
    _check_shard(shard, num_shards)
    bounds = np.cumsum(
        [0] + [len(images) // num_shards + (r < len(images) % num_shards) for r in range(num_shards)]
    )
    mine = list(images[bounds[shard] : bounds[shard + 1]])
    owner = {item.image_id: r for r in range(num_shards) for item in images[bounds[r] : bounds[r + 1]]}
    positions = [k for k, c in enumerate(captions) if owner.get(c["image_id"], 0) == shard]
    return mine, [captions[k] for k in positions], positions


def encode_shard(
    encoder: DenseEncoder,
    images: Sequence[ImageItem],
    captions: Sequence[dict],
    out: str | os.PathLike,
    shard: int,
    num_shards: int,
    **kwargs,
) -> EncodeSummary:
    """Encode shard ``shard`` of ``num_shards`` of the inputs into its part of ``out`` (resumable; a finished
    part is left as it is). ``kwargs`` go to :func:`~pyterrier_d2s.encoders.cache.encode_vectors_dir`."""
    mine, my_captions, positions = shard_of_inputs(images, captions, shard, num_shards)
    part = part_dir(out, shard, num_shards)
    done = _read_part(part)
    if done is not None and not kwargs.get("overwrite"):
        return EncodeSummary(out=str(part), encoder=encoder.name, dim=encoder.dim, images=len(mine))
    (part / PART_FILE).unlink(missing_ok=True)
    summary = encode_vectors_dir(encoder, mine, my_captions, part, **kwargs)
    kept = [
        p for p, c in zip(positions, my_captions, strict=True) if c["image_id"] not in summary.skipped_images
    ]
    record = {
        "shard": shard,
        "num_shards": num_shards,
        "images": len(images),
        "captions": len(captions),
        "caption_positions": kept,
    }
    _write_atomic(part / PART_FILE, lambda f: f.write(json.dumps(record).encode("utf-8")))
    return summary


def _read_part(part: Path) -> dict | None:
    path = part / PART_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _finished_parts(out: Path) -> list[tuple[Path, dict]]:
    """The parts of ``out`` in shard order, all of one split into N, all finished.

    Raises:
        DataError: no parts, parts of different N, or a missing or unfinished part (named).
    """
    found = sorted(out.glob("part-*-of-*"))
    if not found:
        raise DataError(
            f"{out}: no part-*-of-* directories to merge; run d2s encode --shard I --num-shards N"
        )
    counts = {p.name.rsplit("-of-", 1)[1] for p in found}
    if len(counts) > 1:
        raise DataError(f"{out}: parts of different --num-shards ({', '.join(sorted(counts))}); keep one set")
    num_shards = int(counts.pop())
    parts = []
    for shard in range(num_shards):
        part = part_dir(out, shard, num_shards)
        record = _read_part(part)
        if record is None:
            raise DataError(
                f"{part}: shard {shard} of {num_shards} is missing or unfinished; run (or resume) it first"
            )
        parts.append((part, record))
    return parts


def merge_parts(out: str | os.PathLike, keep_parts: bool = False) -> dict:
    """Merge the finished parts of ``out`` into ``out`` itself: the vectors directory one process writes.

    Every merged file is written atomically and the parts are removed only after (``keep_parts`` keeps
    them), so a kill while merging leaves parts that merge again. Returns a summary (images, captions, parts).

    Raises:
        DataError: parts missing or unfinished, or of different encoders (named).
    """
    out = Path(out)
    parts = _finished_parts(out)
    meta = _merged_meta(out, [p for p, _ in parts])
    images = np.concatenate([np.load(p / "image_vectors.npy") for p, _ in parts])
    _write_atomic(out / "image_vectors.npy", lambda f: np.save(f, images))
    _write_jsonl(out / "images.jsonl", [row for p, _ in parts for row in read_jsonl(p / "images.jsonl")])
    # captions back in input order: by the positions each part recorded
    positions = [np.asarray(r["caption_positions"], dtype=np.int64) for _, r in parts]
    order = np.argsort(np.concatenate(positions), kind="stable")
    captions = np.concatenate([np.load(p / "caption_vectors.npy") for p, _ in parts])[order]
    caption_rows = [row for p, _ in parts for row in read_jsonl(p / "captions.jsonl")]
    _write_atomic(out / "caption_vectors.npy", lambda f: np.save(f, captions))
    _write_jsonl(out / "captions.jsonl", [caption_rows[k] for k in order])
    _write_atomic(out / "encoder.json", lambda f: f.write(json.dumps(meta, indent=1).encode("utf-8")))
    if not keep_parts:
        for part, _ in parts:
            shutil.rmtree(part)
    return {
        "out": str(out),
        "images": len(images),
        "captions": len(captions),
        "parts": len(parts),
        "files": list(FINAL_FILES),
    }


def _merged_meta(out: Path, parts: list[Path]) -> dict:
    """The merged ``encoder.json``: the parts' encoder (one for all, checked) and their skipped images."""
    metas = [json.loads((p / "encoder.json").read_text(encoding="utf-8")) for p in parts]
    encoders = {(m["dense_encoder"], m["dim"]) for m in metas}
    if len(encoders) > 1:
        raise DataError(f"{out}: the parts were encoded with different encoders: {sorted(encoders)}")
    skipped = {k: v for m in metas for k, v in m["skipped_images"].items()}
    return {"dense_encoder": metas[0]["dense_encoder"], "dim": metas[0]["dim"], "skipped_images": skipped}
