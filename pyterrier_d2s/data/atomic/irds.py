"""AToMiC as ir_datasets data sets, so that ``ir_datasets.load`` and ``pt.get_dataset("irds:...")`` give it.

Names (``NAME`` is ``d2s-atomic`` unless :func:`register_atomic` is given another):

* ``NAME/<split>`` (``train``, ``validation``, ``test``): docs are the images (``doc_id`` = image_id,
  ``text`` = the captions joined, and the three caption fields), queries the sections judged in that split
  (``query_id`` = text_id, ``text`` = page title, section title and section text joined), qrels that split's.
* ``NAME/<split>/images``: the same, with each document's encoded ``image`` bytes as well (read only here).

Queries have a single text field, so ``pt.get_dataset(...).get_topics()`` gives ``qid``, ``query`` directly;
the separate section fields are in :func:`~.frames.load_atomic_split`'s frames.

With ``D2S_ATOMIC_DIR`` set when ``pyterrier_d2s`` is imported, the ``d2s-atomic/...`` names resolve from that
directory (read when a name is first loaded): plain ``ir_datasets.load("d2s-atomic/validation")`` works.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import ir_datasets
from ir_datasets.datasets.base import Dataset
from ir_datasets.formats import BaseDocs, BaseQrels, BaseQueries, GenericQuery, TrecQrel

from ..pairs import DataError
from .layout import SPLITS, AtomicLayout, find_layout
from .reader import count_images, iter_images, iter_sections, read_qrels

__all__ = ["AtomicDoc", "AtomicImageDoc", "DEFAULT_NAME", "atomic_dataset", "register_atomic", "register_env"]

DEFAULT_NAME = "d2s-atomic"
QRELS_DEFS = {1: "the image illustrates the section (it appears in it on Wikipedia)"}


class AtomicDoc(NamedTuple):
    """An AToMiC image as a text document: its captions."""

    doc_id: str
    text: str
    caption_reference_description: str
    caption_alt_text_description: str
    caption_attribution_description: str

    def default_text(self) -> str:
        return self.text


class AtomicImageDoc(NamedTuple):
    """An AToMiC image with its captions and its encoded bytes (PNG, JPEG, WebP ... as published)."""

    doc_id: str
    text: str
    caption_reference_description: str
    caption_alt_text_description: str
    caption_attribution_description: str
    image: bytes | None

    def default_text(self) -> str:
        return self.text


class _DocsIter:
    """What ``docs_iter()`` returns: an iterator that also slices, as ir_datasets' own docs iterators do
    (``pt.get_dataset(...).get_corpus_iter(start=, count=)`` slices it)."""

    def __init__(self, make: Callable[[], Iterator]):
        self._make, self._it = make, None

    def __iter__(self) -> _DocsIter:
        return self

    def __next__(self):
        if self._it is None:
            self._it = self._make()
        return next(self._it)

    def __getitem__(self, key: slice) -> Iterator:
        if not isinstance(key, slice):
            raise TypeError("AToMiC docs_iter() takes slices only, e.g. docs_iter()[10:20]")
        return itertools.islice(self._make(), key.start, key.stop, key.step)


class AtomicDocs(BaseDocs):
    """The image collection (shared by all splits), streamed from the parquet files."""

    def __init__(self, layout: AtomicLayout, with_images: bool):
        self._layout, self._with_images = layout, with_images

    def docs_iter(self) -> _DocsIter:
        return _DocsIter(self._docs)

    def _docs(self) -> Iterator:
        cls = self.docs_cls()
        for row in iter_images(self._layout, with_images=self._with_images):
            yield cls(doc_id=row.pop("docno"), **row)

    def docs_count(self) -> int:
        return count_images(self._layout)

    def docs_cls(self):
        return AtomicImageDoc if self._with_images else AtomicDoc

    def docs_namespace(self) -> str:
        return DEFAULT_NAME

    def docs_lang(self) -> str:
        return "en"


class AtomicQrels(BaseQrels):
    def __init__(self, layout: AtomicLayout, split: str):
        self._layout, self._split = layout, split

    def qrels_iter(self):
        for row in read_qrels(self._layout, self._split).itertuples(index=False):
            yield TrecQrel(row.qid, row.docno, int(row.label), "Q0")

    def qrels_cls(self):
        return TrecQrel

    def qrels_defs(self) -> dict[int, str]:
        return QRELS_DEFS


class AtomicQueries(BaseQueries):
    """The sections judged in a split (its qrels decide which)."""

    def __init__(self, layout: AtomicLayout, split: str):
        self._layout, self._split = layout, split

    def queries_iter(self):
        judged = set(read_qrels(self._layout, self._split)["qid"])
        for row in iter_sections(self._layout, judged):
            yield GenericQuery(row["qid"], row["query"])

    def queries_cls(self):
        return GenericQuery

    def queries_namespace(self) -> str:
        return DEFAULT_NAME

    def queries_lang(self) -> str:
        return "en"


def atomic_dataset(layout: AtomicLayout, split: str, with_images: bool = False) -> Dataset:
    """The ir_datasets ``Dataset`` of one split of the AToMiC copy ``layout`` (not registered)."""
    layout.qrels_files(split)  # a missing split fails here, not on first use
    return Dataset(AtomicDocs(layout, with_images), AtomicQueries(layout, split), AtomicQrels(layout, split))


# name -> the directory it was registered from (so that registering the same directory again is a no-op)
_REGISTERED: dict[str, Path] = {}


def register_atomic(directory: str | os.PathLike | None = None, name: str = DEFAULT_NAME) -> list[str]:
    """Register the splits of the AToMiC copy in ``directory`` (default ``D2S_ATOMIC_DIR``) with ir_datasets.

    Registers ``name/<split>`` and ``name/<split>/images`` for every split with qrels, and returns those
    names. Registering the same directory under the same name again does nothing.

    Raises:
        DataError: a bad directory, or ``name`` already registered from another directory.
    """
    layout = find_layout(directory)
    names = []
    for split in layout.splits:
        for suffix, with_images in (("", False), ("/images", True)):
            key = f"{name}/{split}{suffix}"
            if key in _REGISTERED and _REGISTERED[key] == layout.root.resolve():
                names.append(key)
                continue
            if key in ir_datasets.registry:
                raise DataError(
                    f"{key} is already registered (from {_REGISTERED.get(key, 'elsewhere')}): "
                    "give register_atomic another name"
                )
            ir_datasets.registry.register(key, atomic_dataset(layout, split, with_images))
            _REGISTERED[key] = layout.root.resolve()
            names.append(key)
    return names


_ENV_PATTERN = rf"^{DEFAULT_NAME}/({'|'.join(SPLITS)})(/images)?$"
_env_registered = False


def _from_env(_name: str, groups: tuple[str, str | None]) -> Dataset:
    split, images = groups
    layout = find_layout(None)
    _REGISTERED[_name] = layout.root.resolve()  # register_atomic of the same directory is then a no-op
    return atomic_dataset(layout, split, with_images=images is not None)


def register_env() -> None:
    """Make ``d2s-atomic/<split>[/images]`` resolve from ``D2S_ATOMIC_DIR`` when first loaded (once)."""
    global _env_registered
    if not _env_registered:
        ir_datasets.registry.register_pattern(_ENV_PATTERN, _from_env)
        _env_registered = True
