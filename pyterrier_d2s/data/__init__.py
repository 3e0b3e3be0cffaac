"""Readers for paired image/caption dense vectors, and the packaged COCO-500 demo set."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .authors import is_authors_dir, read_authors_dir
from .pairs import TRAIN_SPLITS, DataError, PairedVectors
from .vectors_dir import read_vectors_dir

__all__ = ["load_pairs", "packaged_path", "PairedVectors", "DataError", "TRAIN_SPLITS", "PACKAGED"]

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
