"""AToMiC (image suggestion: Wikipedia sections as queries, Wikimedia images as documents) from a local copy.

AToMiC is not in ir_datasets; it is published as Hugging Face parquet data sets. This package reads a local
copy of them (layout: :mod:`.layout`) with pyarrow, lazily and column by column, and registers it with
ir_datasets (:mod:`.irds`, imported on first use: ir_datasets takes half a second to import).

* :func:`load_atomic_split` — one split as ``queries`` / ``documents`` / ``qrels`` frames (optionally the
  judged images plus sampled negatives only).
* :func:`register_atomic` — ``d2s-atomic/<split>`` and ``d2s-atomic/<split>/images`` for ``ir_datasets.load``
  and ``pt.get_dataset("irds:...")``; with ``D2S_ATOMIC_DIR`` set, ``import pyterrier_d2s`` does it.
* :func:`download_atomic` — fetch the data with ``datasets`` (optional extra ``atomic``), when online.
"""

from __future__ import annotations

import os

from .download import HUB_DATASETS, download_atomic
from .frames import AtomicSplit, load_atomic_split
from .layout import CAPTION_COLUMNS, ENV_VAR, QUERY_COLUMNS, SPLITS, AtomicLayout, find_layout
from .reader import image_bytes, join_captions, join_query

__all__ = [
    "AtomicLayout",
    "AtomicSplit",
    "CAPTION_COLUMNS",
    "ENV_VAR",
    "HUB_DATASETS",
    "QUERY_COLUMNS",
    "SPLITS",
    "download_atomic",
    "find_layout",
    "image_bytes",
    "join_captions",
    "join_query",
    "load_atomic_split",
    "read_image_bytes",
    "register_atomic",
]


def register_atomic(directory: str | os.PathLike | None = None, name: str = "d2s-atomic") -> list[str]:
    """Register the AToMiC copy in ``directory`` with ir_datasets; see :func:`.irds.register_atomic`."""
    from .irds import register_atomic as register

    return register(directory, name)


def read_image_bytes(directory: str | os.PathLike | None, image_ids: list[str]) -> dict[str, bytes]:
    """image_id -> encoded image bytes, read only from the row groups holding ``image_ids``."""
    return image_bytes(find_layout(directory), image_ids)
