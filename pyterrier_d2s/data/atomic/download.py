"""Download AToMiC from the Hugging Face Hub with ``datasets`` (the optional ``atomic`` extra), when online."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["HUB_DATASETS", "download_atomic"]

logger = logging.getLogger(__name__)

# our sub-directory -> the Hugging Face data set it holds
HUB_DATASETS = {
    "texts": "TREC-AToMiC/AToMiC-Texts-v0.2.1",
    "images": "TREC-AToMiC/AToMiC-Images-v0.2",
    "qrels": "TREC-AToMiC/AToMiC-Qrels-v0.2",
}


def _datasets_module():
    try:
        import datasets
    except ImportError as e:
        raise ImportError(
            "downloading AToMiC needs the 'datasets' package: pip install 'pyterrier-d2s[atomic]' "
            "(or fetch the parquet files with huggingface-cli, see the README's AToMiC section)"
        ) from e
    return datasets


def download_atomic(
    directory: str | os.PathLike,
    parts: Sequence[str] = ("texts", "images", "qrels"),
    revision: str | None = None,
) -> Path:
    """Download the AToMiC ``parts`` into ``directory`` in the layout :func:`~.layout.find_layout` reads.

    Each split of each Hub data set is written as ``directory/<part>/data/<split>-00000-of-00001.parquet``
    (the images keep the Hub's ``{bytes, path}`` struct). The images are about 180 GB, and ``datasets`` keeps
    its own cache copy besides: ``huggingface-cli download`` (README) writes the published files only once.
    Returns ``directory``.

    Raises:
        ImportError: ``datasets`` is not installed (one line saying how to get it).
        ValueError: an unknown part.
    """
    unknown = [p for p in parts if p not in HUB_DATASETS]
    if unknown:
        raise ValueError(f"unknown AToMiC part {unknown[0]!r}; parts are {', '.join(HUB_DATASETS)}")
    datasets = _datasets_module()
    root = Path(directory)
    for part in parts:
        splits = datasets.load_dataset(HUB_DATASETS[part], revision=revision)
        for split, data in splits.items():
            out = root / part / "data" / f"{split}-00000-of-00001.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            logger.info("writing %s %s (%d rows) to %s", HUB_DATASETS[part], split, len(data), out)
            data.to_parquet(str(out))
    return root
