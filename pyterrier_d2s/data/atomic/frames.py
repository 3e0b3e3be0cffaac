"""One AToMiC split as the three frames an experiment needs: queries, documents and qrels."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .layout import CAPTION_COLUMNS, IMAGE_COLUMN, QUERY_COLUMNS, AtomicLayout, find_layout
from .reader import (
    count_images,
    find_image_rows,
    iter_images,
    iter_sections,
    read_image_rows,
    read_qrels,
    warn_missing,
)

__all__ = ["AtomicSplit", "load_atomic_split"]


@dataclass
class AtomicSplit:
    """A split of AToMiC for image suggestion (sections as queries, images as documents).

    Attributes:
        split: ``train``, ``validation`` or ``test``.
        queries: ``qid``, ``query`` (:func:`~.reader.join_query`) and the section fields ``page_title``,
            ``section_title``, ``context_section_description``: the sections judged in this split.
        documents: ``docno``, ``text`` (the captions joined, :func:`~.reader.join_captions`), the three
            caption fields, and ``image`` (encoded bytes) when asked for.
        qrels: ``qid``, ``docno``, ``label``.
    """

    split: str
    queries: pd.DataFrame
    documents: pd.DataFrame
    qrels: pd.DataFrame


def _documents_frame(rows: list[dict], with_images: bool) -> pd.DataFrame:
    columns = ["docno", "text", *CAPTION_COLUMNS] + ([IMAGE_COLUMN] if with_images else [])
    return pd.DataFrame(rows, columns=columns)


def _free_rows(n_images: int, taken: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` row numbers drawn uniformly without replacement (seeded) from ``range(n_images)`` minus the
    sorted rows ``taken``: draw positions among the free rows, then map each to its row number."""
    n_free = n_images - len(taken)
    picks = np.sort(np.random.default_rng(seed).choice(n_free, size=min(k, n_free), replace=False))
    # the m-th free row is m plus the number of taken rows at or before it: taken[j] - j counts the free rows
    # before taken[j]
    return picks + np.searchsorted(taken - np.arange(len(taken)), picks, side="right")


def _judged_and_negatives(
    layout: AtomicLayout, judged: set[str], negatives: int, seed: int, with_images: bool
) -> list[dict]:
    """The judged images and ``negatives`` other images drawn uniformly from the whole collection, in
    collection order: one pass over the ``image_id`` columns finds the judged rows, then only the row groups
    holding a wanted row are read."""
    taken = find_image_rows(layout, judged)
    rows = taken
    if negatives > 0:
        rows = np.concatenate([taken, _free_rows(count_images(layout), taken, negatives, seed)])
    return list(read_image_rows(layout, rows, with_images=with_images))


def load_atomic_split(
    directory: str | os.PathLike | None,
    split: str,
    *,
    judged_only: bool = False,
    negatives: int = 0,
    seed: int = 0,
    with_images: bool = False,
) -> AtomicSplit:
    """Queries, documents and qrels of one AToMiC split from a local copy (see :mod:`.layout`).

    ``directory`` ``None`` reads ``D2S_ATOMIC_DIR``. The queries are the sections that ``split``'s qrels judge;
    the documents are every image of the collection, or with ``judged_only`` the images judged in ``split``
    plus ``negatives`` other images drawn uniformly (seeded by ``seed``) from the whole collection.

    Why restrict: the full collection is 11 M images, which takes a GPU and hours to encode; ranking the judged
    images among random negatives keeps the task a search (most candidates are not relevant) at a size a
    laptop encodes. The numbers are then higher than against the full collection and are not comparable with
    published AToMiC results. ``with_images`` adds the encoded image bytes (``image``) of the documents read.

    Raises:
        DataError: a missing directory, split, file or column (one line, naming it).
    """
    layout = find_layout(directory)
    qrels = read_qrels(layout, split)
    sections = list(iter_sections(layout, set(qrels["qid"])))
    queries = pd.DataFrame(sections, columns=["qid", "query", *QUERY_COLUMNS])
    if judged_only:
        rows = _judged_and_negatives(layout, set(qrels["docno"]), max(0, int(negatives)), seed, with_images)
    else:
        rows = list(iter_images(layout, with_images=with_images))
    documents = _documents_frame(rows, with_images)
    warn_missing("images", set(qrels["docno"]) - set(documents["docno"]), layout.root)
    return AtomicSplit(split=split, queries=queries, documents=documents, qrels=qrels)
