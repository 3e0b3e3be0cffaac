"""One AToMiC split as the three frames an experiment needs: queries, documents and qrels."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .layout import CAPTION_COLUMNS, IMAGE_COLUMN, QUERY_COLUMNS, AtomicLayout, find_layout
from .reader import count_images, iter_images, iter_sections, read_qrels, scan_images, warn_missing

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


def _negative_rows(n_images: int, n_judged: int, negatives: int, seed: int) -> dict[int, int]:
    """Row number -> draw rank of ``negatives + n_judged`` distinct rows drawn uniformly (seeded), so that
    ``negatives`` of them remain once the judged images among them are dropped."""
    size = min(n_images, negatives + n_judged)
    drawn = np.random.default_rng(seed).choice(n_images, size=size, replace=False)
    return {int(r): rank for rank, r in enumerate(drawn)}


def _judged_and_negatives(
    layout: AtomicLayout, judged: set[str], negatives: int, seed: int, with_images: bool
) -> list[dict]:
    """The judged images and ``negatives`` other images drawn uniformly from the whole collection, in
    collection order; one pass over the ``image_id`` columns, the other columns read only where needed."""
    drawn = _negative_rows(count_images(layout), len(judged), negatives, seed) if negatives > 0 else {}
    ranks: list[int] = []  # per row read: its draw rank, or -1 if it was not drawn

    def marked(first: int, ids: list[str]) -> list[bool]:
        flags = [i in judged or (first + k) in drawn for k, i in enumerate(ids)]
        ranks.extend(drawn.get(first + k, -1) for k, f in enumerate(flags) if f)
        return flags

    rows = list(scan_images(layout, marked, with_images=with_images))
    # the negatives: the first `negatives` drawn rows (by draw rank) that are not judged
    drawn_free = sorted(
        (r, n)
        for n, (row, r) in enumerate(zip(rows, ranks, strict=True))
        if r >= 0 and row["docno"] not in judged
    )
    chosen = {n for _, n in drawn_free[:negatives]}
    return [row for n, row in enumerate(rows) if row["docno"] in judged or n in chosen]


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
