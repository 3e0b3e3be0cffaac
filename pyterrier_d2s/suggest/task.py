"""The image-suggestion task built from a vectors directory whose images have two or more captions.

One query per image: the caption that has a vector (``captions.jsonl``; with several, the first of the
image), as text, and its vector for the dense baseline. The image's document: its image vector plus the
image's *other* captions (from ``captions_all.jsonl`` when the directory has one, else the other captions of
``captions.jsonl``), so the query's own words are never in its document. Splits: the data's ``split`` labels
(coco500's fixed 400/50/50), or a seeded 80/10/10 split by image.

On ``coco500``: 500 images, each with its one vector caption as the query and its four other COCO captions
(CC BY 4.0) as the document's text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import (
    PACKAGED,
    DataError,
    PairedVectors,
    ensure_split,
    load_all_captions,
    load_pairs,
    packaged_path,
)
from .trainer import SuggestPairs

__all__ = ["EvaluationSet", "SuggestTask", "build_task"]

ALL_CAPTIONS_FILE = "captions_all.jsonl"


def _collapse(text: str) -> str:
    return " ".join(text.split())


@dataclass
class EvaluationSet:
    """What systems are evaluated on: ``topics`` (qid, query, optional query_vec), ``documents`` (docno, text,
    optional doc_vec) and ``qrels`` (qid, docno, label). Unlike a :class:`SuggestTask`'s test images, a query
    may have several relevant documents and the collection may hold documents no query judges (AToMiC)."""

    topics: pd.DataFrame
    documents: pd.DataFrame
    qrels: pd.DataFrame


@dataclass
class SuggestTask:
    """Queries, documents and their split, one query and one document per image (row ``i`` = image ``i``)."""

    name: str
    image_ids: list[str]
    image_vectors: np.ndarray
    queries: list[str]
    query_vectors: np.ndarray
    captions: list[list[str]]
    split: np.ndarray
    pairs_data: PairedVectors | None = field(default=None, repr=False)  # for the D2S baseline

    def __len__(self) -> int:
        return len(self.image_ids)

    def subset(self, splits: str | tuple[str, ...]) -> SuggestTask:
        """The images of ``splits`` (e.g. ``"test"``, or ``("train", "restval")``)."""
        rows = np.flatnonzero(np.isin(self.split, (splits,) if isinstance(splits, str) else splits))
        return SuggestTask(
            self.name,
            [self.image_ids[i] for i in rows],
            self.image_vectors[rows],
            [self.queries[i] for i in rows],
            self.query_vectors[rows],
            [self.captions[i] for i in rows],
            self.split[rows],
            self.pairs_data,
        )

    def document_texts(self) -> list[str]:
        """Each document's captions joined into one text (the caption encoders' input, BM25's document)."""
        return [" ".join(c) for c in self.captions]

    def training_pairs(self) -> SuggestPairs:
        """Query ``i`` with document ``i`` (its captions' text and image vector)."""
        return SuggestPairs(self.queries, self.document_texts(), self.image_vectors)

    def topics(self) -> pd.DataFrame:
        """``qid`` (the image id), ``query``, ``query_vec``."""
        return pd.DataFrame(
            {"qid": self.image_ids, "query": self.queries, "query_vec": list(self.query_vectors)}
        )

    def documents(self) -> pd.DataFrame:
        """``docno`` (the image id), ``text`` (its captions), ``doc_vec``."""
        return pd.DataFrame(
            {"docno": self.image_ids, "text": self.document_texts(), "doc_vec": list(self.image_vectors)}
        )

    def qrels(self) -> pd.DataFrame:
        """Each query's one relevant document: its own image."""
        return pd.DataFrame({"qid": self.image_ids, "docno": self.image_ids, "label": 1})

    def evaluation_set(self) -> EvaluationSet:
        """These images as an :class:`EvaluationSet` (one query and one relevant document per image)."""
        return EvaluationSet(self.topics(), self.documents(), self.qrels())


def _all_captions(name_or_path: str | os.PathLike, data: PairedVectors) -> dict[str, list[str]]:
    key = str(name_or_path)
    directory = packaged_path(key) if key in PACKAGED else Path(name_or_path)
    if (directory / ALL_CAPTIONS_FILE).is_file():
        return load_all_captions(name_or_path)
    out: dict[str, list[str]] = {}
    for text, row in zip(data.caption_texts, data.caption_image.tolist(), strict=True):
        out.setdefault(data.image_ids[row], []).append(text)
    return out


def build_task(name_or_path: str | os.PathLike = "coco500", seed: int = 0) -> SuggestTask:
    """The task of a packaged name or vectors directory (see the module docstring).

    Raises:
        DataError: an image without a caption that has a vector, or without a second caption.
    """
    data = ensure_split(load_pairs(name_or_path).validate(), seed=seed)
    every = _all_captions(name_or_path, data)
    first: dict[int, int] = {}
    for c, row in enumerate(data.caption_image.tolist()):
        first.setdefault(row, c)
    queries, captions = [], []
    for row, image_id in enumerate(data.image_ids):
        if row not in first:
            raise DataError(f"{data.name}: image {image_id} has no caption with a vector (its query)")
        query = data.caption_texts[first[row]]
        others = list(every.get(image_id, []))
        same = [i for i, c in enumerate(others) if _collapse(c) == _collapse(query)]
        if same:
            others.pop(same[0])
        if not others:
            raise DataError(f"{data.name}: image {image_id} has one caption; its document needs another")
        queries.append(query)
        captions.append(others)
    query_vectors = data.caption_vectors[[first[r] for r in range(len(data.image_ids))]]
    split = np.asarray(data.image_split, dtype=object)
    return SuggestTask(
        data.name, list(data.image_ids), data.image_vectors, queries, query_vectors, captions, split, data
    )
