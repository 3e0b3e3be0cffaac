"""PairedVectors: dense image vectors, dense caption vectors, caption texts and which image each caption is of.

This is what training and evaluation consume. Readers for the on-disk formats live beside it
(:mod:`.vectors_dir`, :mod:`.authors`); every reader ends with :meth:`PairedVectors.validate`, so bad input
fails early with an error that names the offending id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["PairedVectors", "DataError", "TRAIN_SPLITS"]

# Karpathy splits: "restval" is the part of the original val set that is trained on.
TRAIN_SPLITS = ("train", "restval")


class DataError(ValueError):
    """Input data that cannot be used; the message names the offending id or file."""


@dataclass
class PairedVectors:
    """Images and captions as dense vectors.

    Attributes:
        image_ids: one id per row of ``image_vectors``.
        image_vectors: float32 (n_images, d).
        caption_ids: one id per row of ``caption_vectors``.
        caption_texts: the caption strings (needed for the captions' own tokens).
        caption_image: int (n_captions,), the row in ``image_vectors`` of each caption's image.
        caption_vectors: float32 (n_captions, d).
        image_split: optional split name per image (``train``/``restval``/``val``/``test``).
        name: where the data came from.
    """

    image_ids: list[str]
    image_vectors: np.ndarray
    caption_ids: list[str]
    caption_texts: list[str]
    caption_image: np.ndarray
    caption_vectors: np.ndarray
    image_split: np.ndarray | None = None
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        # float64 vectors (np.random, pandas) would reach the head as doubles and fail inside autocast
        self.image_vectors = np.asarray(self.image_vectors, dtype=np.float32)
        self.caption_vectors = np.asarray(self.caption_vectors, dtype=np.float32)
        self.caption_image = np.asarray(self.caption_image, dtype=np.int64)

    @property
    def dim(self) -> int:
        return int(self.image_vectors.shape[1])

    def __len__(self) -> int:
        return len(self.caption_ids)

    def __repr__(self) -> str:
        splits = "" if self.image_split is None else f", splits={sorted(set(self.image_split.tolist()))}"
        return (
            f"PairedVectors({self.name!r}, images={len(self.image_ids)}, captions={len(self.caption_ids)}, "
            f"dim={self.dim}{splits})"
        )

    def validate(self) -> PairedVectors:
        """Check shapes, finiteness, ids and texts; raise :class:`DataError` naming the first bad item."""
        self._check_shapes()
        self._check_unique_ids()
        self._check_finite()
        self._check_links()
        self._check_texts()
        if self.image_split is not None and len(self.image_split) != len(self.image_ids):
            raise DataError(
                f"{self.name}: {len(self.image_split)} split labels for {len(self.image_ids)} images"
            )
        return self

    def _check_shapes(self) -> None:
        iv, cv = self.image_vectors, self.caption_vectors
        if iv.ndim != 2 or cv.ndim != 2:
            raise DataError(
                f"{self.name}: vectors must be 2-d, got images {iv.shape} and captions {cv.shape}"
            )
        if iv.shape[1] != cv.shape[1]:
            raise DataError(
                f"{self.name}: dimension mismatch: image vectors are {iv.shape[1]}-d, "
                f"caption vectors are {cv.shape[1]}-d"
            )
        if len(self.image_ids) != iv.shape[0]:
            raise DataError(f"{self.name}: {len(self.image_ids)} image ids for {iv.shape[0]} image vectors")
        n_c = len(self.caption_ids)
        if not (len(self.caption_texts) == n_c == cv.shape[0] == len(self.caption_image)):
            raise DataError(
                f"{self.name}: {n_c} caption ids, {len(self.caption_texts)} texts, "
                f"{cv.shape[0]} caption vectors and {len(self.caption_image)} image links must be equal"
            )

    def _check_unique_ids(self) -> None:
        for ids, what in ((self.image_ids, "image"), (self.caption_ids, "caption")):
            if len(set(ids)) != len(ids):
                seen: set[str] = set()
                dup = next(i for i in ids if i in seen or seen.add(i))
                raise DataError(f"{self.name}: duplicate {what} id {dup!r}")

    def _check_finite(self) -> None:
        for vecs, ids, what in (
            (self.image_vectors, self.image_ids, "image"),
            (self.caption_vectors, self.caption_ids, "caption"),
        ):
            bad = ~np.isfinite(vecs).all(axis=1)
            if bad.any():
                raise DataError(f"{self.name}: {what} {ids[int(np.argmax(bad))]!r} has a NaN or inf vector")

    def _check_links(self) -> None:
        bad_link = (self.caption_image < 0) | (self.caption_image >= len(self.image_ids))
        if bad_link.any():
            i = int(np.argmax(bad_link))
            raise DataError(f"{self.name}: caption {self.caption_ids[i]!r} points to an unknown image")

    def _check_texts(self) -> None:
        for cid, text in zip(self.caption_ids, self.caption_texts, strict=True):
            if not isinstance(text, str):
                raise DataError(
                    f"{self.name}: caption {cid!r}: text must be a string, not {type(text).__name__}"
                )
            if not text.strip():
                raise DataError(f"{self.name}: caption {cid!r} has empty text")

    @property
    def splits(self) -> list[str]:
        return [] if self.image_split is None else sorted(set(self.image_split.tolist()))

    def subset(self, splits: Sequence[str] | str | None) -> PairedVectors:
        """The images of the given split(s) and their captions; ``None`` or no split labels: everything."""
        if splits is None or self.image_split is None:
            return self
        splits = (splits,) if isinstance(splits, str) else tuple(splits)
        keep_img = np.isin(self.image_split, splits)
        new_row = np.full(len(self.image_ids), -1, dtype=np.int64)
        new_row[keep_img] = np.arange(int(keep_img.sum()))
        keep_cap = keep_img[self.caption_image]
        cap_rows = np.flatnonzero(keep_cap)
        return PairedVectors(
            image_ids=[i for i, k in zip(self.image_ids, keep_img, strict=True) if k],
            image_vectors=self.image_vectors[keep_img],
            caption_ids=[self.caption_ids[r] for r in cap_rows],
            caption_texts=[self.caption_texts[r] for r in cap_rows],
            caption_image=new_row[self.caption_image[cap_rows]],
            caption_vectors=self.caption_vectors[cap_rows],
            image_split=self.image_split[keep_img],
            name=f"{self.name}[{'+'.join(splits)}]",
            meta=self.meta,
        )

    def train_and_validation(self) -> tuple[PairedVectors, PairedVectors]:
        """(training pairs, validation pairs): Karpathy train+restval / val, or everything twice without splits."""
        if self.image_split is None or not set(TRAIN_SPLITS) & set(self.splits):
            return self, self
        train = self.subset(TRAIN_SPLITS)
        val = self.subset("val") if "val" in self.splits else train
        return train, val

    def topics(self, with_vectors: bool = True):
        """One query per caption: a frame of ``qid``, ``query`` (+ ``query_vec``)."""
        import pandas as pd

        frame = pd.DataFrame({"qid": self.caption_ids, "query": self.caption_texts})
        if with_vectors:
            frame["query_vec"] = list(self.caption_vectors)
        return frame

    def qrels(self):
        """Each caption's relevant document is its image: a frame of ``qid``, ``docno``, ``label``."""
        import pandas as pd

        img = np.asarray(self.image_ids, dtype=object)
        return pd.DataFrame({"qid": self.caption_ids, "docno": img[self.caption_image], "label": 1})

    def corpus_iter(self):
        """The images as documents: dicts of ``docno`` and ``doc_vec``."""
        for docno, vec in zip(self.image_ids, self.image_vectors, strict=True):
            yield {"docno": docno, "doc_vec": vec}

    def evaluation_split(self) -> PairedVectors:
        """What final numbers are reported on: the test split if there is one, else everything."""
        return self.subset("test") if "test" in self.splits else self
