"""Where the files of a local AToMiC copy are, which split each qrels file is, and the columns they must have.

AToMiC (Yang et al., 2023) is published as three Hugging Face data sets of parquet files, not through
ir_datasets: ``TREC-AToMiC/AToMiC-Texts-v0.2.1`` (Wikipedia sections: the queries of image suggestion),
``TREC-AToMiC/AToMiC-Images-v0.2`` (Wikimedia images with their captions: the documents) and
``TREC-AToMiC/AToMiC-Qrels-v0.2`` (``text_id Q0 image_id rel``, splits train / validation / test).

A local copy is a directory with one sub-directory per data set, named ``texts``, ``images`` and ``qrels``
(or the data sets' own names, ``AToMiC-Texts-v0.2.1`` ...). Each holds the parquet files anywhere below it
(``data/train-00000-of-00042-<hash>.parquet`` as ``huggingface-cli download --local-dir`` leaves them, or
``default/validation/0000.parquet`` as the Hub's parquet conversion names them). Qrels may also be TREC text
files (``validation.qrels``, ``qrels.test.txt``). Hidden directories (``.cache/`` of the Hub client) are skipped.

Which split a qrels file is comes from its name (``validation-00000-of-00001.parquet``) or else from the
name of a directory above it; only the qrels decide the queries of a split: the texts and images are read
whatever split their files are named after, since AToMiC's image collection is shared by all splits.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..pairs import DataError

__all__ = [
    "AtomicLayout",
    "CAPTION_COLUMNS",
    "ENV_VAR",
    "IMAGE_COLUMN",
    "QUERY_COLUMNS",
    "SPLITS",
    "find_layout",
    "require_columns",
]

ENV_VAR = "D2S_ATOMIC_DIR"
SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}
# the query is these sections' fields, joined in this order
QUERY_COLUMNS = ("page_title", "section_title", "context_section_description")
# the document text is these captions, joined in this order
CAPTION_COLUMNS = (
    "caption_reference_description",
    "caption_alt_text_description",
    "caption_attribution_description",
)
IMAGE_COLUMN = "image"
# sub-directory names of each part: ours first, then the Hugging Face data set names (any version)
_PART_DIRS = {
    "texts": ("texts", "AToMiC-Texts*"),
    "images": ("images", "AToMiC-Images*"),
    "qrels": ("qrels", "AToMiC-Qrels*"),
}
_TEXT_SUFFIXES = {".qrels", ".txt", ".tsv", ".trec"}


@dataclass(frozen=True)
class AtomicLayout:
    """The files of a local AToMiC copy: parquet files of texts and images, qrels files per split."""

    root: Path
    texts: tuple[Path, ...]
    images: tuple[Path, ...]
    qrels: dict[str, tuple[Path, ...]]

    @property
    def splits(self) -> list[str]:
        """The splits that have qrels, in the order train, validation, test."""
        return [s for s in SPLITS if s in self.qrels]

    def qrels_files(self, split: str) -> tuple[Path, ...]:
        """The qrels files of ``split``; a DataError names the splits there are."""
        if split not in self.qrels:
            raise DataError(
                f"{self.root}: no qrels for split {split!r} (there are: {', '.join(self.splits) or 'none'})"
            )
        return self.qrels[split]


def _visible_files(directory: Path) -> list[Path]:
    """Files below ``directory``, sorted, skipping hidden files and directories (the Hub client's .cache)."""
    out = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).parts
        if path.is_file() and not any(p.startswith(".") for p in rel):
            out.append(path)
    return out


def _part_dir(root: Path, part: str) -> Path:
    for pattern in _PART_DIRS[part]:
        found = sorted(p for p in root.glob(pattern) if p.is_dir())
        if found:
            return found[0]
    names = " or ".join(_PART_DIRS[part])
    raise DataError(f"{root}: not an AToMiC directory: no {names} sub-directory")


def split_of(path: Path, below: Path) -> str | None:
    """The split a qrels file is of: the first split word in its name, else in the directories above it."""
    parts = [path.name, *reversed(path.relative_to(below).parts[:-1])]
    for part in parts:
        for word in re.split(r"[^a-z]+", part.lower()):
            if word in _SPLIT_ALIASES:
                return _SPLIT_ALIASES[word]
    return None


def _qrels_by_split(directory: Path) -> dict[str, tuple[Path, ...]]:
    by_split: dict[str, list[Path]] = {}
    for path in _visible_files(directory):
        if path.suffix != ".parquet" and path.suffix not in _TEXT_SUFFIXES:
            continue
        split = split_of(path, directory)
        if split is not None:
            by_split.setdefault(split, []).append(path)
    if not by_split:
        raise DataError(f"{directory}: no qrels files named after a split ({', '.join(SPLITS)})")
    return {s: tuple(files) for s, files in by_split.items()}


def find_layout(directory: str | os.PathLike | None = None) -> AtomicLayout:
    """The layout of the AToMiC copy in ``directory`` (default: the ``D2S_ATOMIC_DIR`` environment variable).

    Raises:
        DataError: no such directory, a missing part, or a part without parquet files (one line, naming it).
    """
    if directory is None:
        directory = os.environ.get(ENV_VAR)
        if not directory:
            raise DataError(f"no AToMiC directory given and {ENV_VAR} is not set")
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such AToMiC directory")
    parquet = {}
    for part in ("texts", "images"):
        sub = _part_dir(root, part)
        parquet[part] = tuple(p for p in _visible_files(sub) if p.suffix == ".parquet")
        if not parquet[part]:
            raise DataError(f"{sub}: no parquet files of AToMiC {part}")
    qrels = _qrels_by_split(_part_dir(root, "qrels"))
    return AtomicLayout(root=root, texts=parquet["texts"], images=parquet["images"], qrels=qrels)


def require_columns(path: Path, names: list[str], needed: tuple[str, ...] | list[str]) -> None:
    """A DataError naming ``path`` and the first of ``needed`` that is not among its columns ``names``."""
    missing = [c for c in needed if c not in names]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r} (has: {', '.join(names)})")
