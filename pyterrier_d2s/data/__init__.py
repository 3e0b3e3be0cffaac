"""Readers for paired image/caption dense vectors, and the packaged COCO-500 demo set."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .authors import is_authors_dir, read_authors_dir
from .pairs import TRAIN_SPLITS, DataError, PairedVectors
from .split import (
    SPLIT_FILE,
    apply_split,
    assign_split,
    describe_split,
    ensure_split,
    has_train_split,
    load_split,
    save_split,
    split_for_head,
    split_summary,
    without_split,
)
from .vectors_dir import read_jsonl, read_vectors_dir

__all__ = [
    "load_pairs",
    "load_all_captions",
    "packaged_path",
    "PairedVectors",
    "DataError",
    "TRAIN_SPLITS",
    "PACKAGED",
    "SPLIT_FILE",
    "apply_split",
    "assign_split",
    "describe_split",
    "ensure_split",
    "has_train_split",
    "load_split",
    "save_split",
    "split_for_head",
    "split_summary",
    "without_split",
]

# name -> package sub-directory of the embedded data sets
PACKAGED = {"coco500": "coco500"}


def packaged_path(name: str) -> Path:
    """Path of an embedded data set (``coco500``: 500 COCO val2017 pairs as CLIP ViT-B/16 vectors)."""
    if name not in PACKAGED:
        raise KeyError(f"no packaged data set {name!r}; packaged: {sorted(PACKAGED)}")
    return Path(str(resources.files(__package__).joinpath(PACKAGED[name])))


def load_pairs(name_or_path: str | os.PathLike) -> PairedVectors:
    """Load paired vectors from a packaged name (``coco500``), a vectors directory, or an authors'-format dir."""
    key = str(name_or_path)
    if key in PACKAGED:
        return read_vectors_dir(packaged_path(key), name=key)
    path = Path(name_or_path)
    if not path.exists():
        raise DataError(f"no data at {key!r}: not a packaged name ({', '.join(PACKAGED)}) nor a path")
    if is_authors_dir(path):
        return read_authors_dir(path)
    return read_vectors_dir(path)


# every caption of each image (text only), beside a data set's vectors; only one per image has a vector
ALL_CAPTIONS_FILE = "captions_all.jsonl"


def load_all_captions(name_or_path: str | os.PathLike) -> dict[str, list[str]]:
    """image_id -> every caption text of that image, in file order, from ``captions_all.jsonl``.

    ``name_or_path``: a packaged name (``coco500``: the five COCO captions of each of its 500 images) or a
    directory holding ``captions_all.jsonl`` (lines with ``image_id`` and ``caption``).
    """
    key = str(name_or_path)
    directory = packaged_path(key) if key in PACKAGED else Path(name_or_path)
    path = directory / ALL_CAPTIONS_FILE
    if not path.is_file():
        raise DataError(f"{key}: no {ALL_CAPTIONS_FILE} (every caption of each image) in {directory}")
    out: dict[str, list[str]] = {}
    for n, row in enumerate(read_jsonl(path), 1):
        if "image_id" not in row or "caption" not in row:
            raise DataError(f"{path}:{n}: needs the fields 'image_id' and 'caption'")
        out.setdefault(str(row["image_id"]), []).append(str(row["caption"]))
    return out
