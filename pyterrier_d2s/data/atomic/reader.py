"""Streaming readers of a local AToMiC copy: qrels, the sections of a split (queries), the images (documents).

Everything goes through pyarrow, one row group at a time and only the columns asked for: AToMiC has 11 M
images (about 180 GB, nearly all of it the image bytes), so image bytes are read only when asked for and only
from the row groups that hold a wanted image.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
except ImportError as e:  # pragma: no cover - pyarrow is in the test extras
    raise ImportError("reading AToMiC needs pyarrow: pip install 'pyterrier-d2s[atomic]'") from e

from ..pairs import DataError
from .layout import CAPTION_COLUMNS, IMAGE_COLUMN, QUERY_COLUMNS, AtomicLayout, require_columns

__all__ = [
    "count_images",
    "image_bytes",
    "iter_images",
    "iter_sections",
    "join_captions",
    "join_query",
    "read_qrels",
    "find_image_rows",
    "read_image_rows",
    "warn_missing",
]

logger = logging.getLogger(__name__)

QRELS_COLUMNS = ("text_id", "image_id")
_LABEL_COLUMNS = ("rel", "relevance", "label")
_BATCH = 8192


def _open(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from e


def _strings(column: pa.ChunkedArray | pa.Array) -> list[str]:
    """A column as Python strings, nulls as ''; ids stored as integers become their decimal strings."""
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.string())
    return ["" if v is None else v for v in column.to_pylist()]


# ---------------------------------------------------------------------------------------------------- qrels


def _qrels_parquet(path: Path) -> pd.DataFrame:
    names = _open(path).schema_arrow.names
    require_columns(path, names, QRELS_COLUMNS)
    label = next((c for c in _LABEL_COLUMNS if c in names), None)
    if label is None:
        raise DataError(f"{path}: missing column 'rel' (the relevance label; has: {', '.join(names)})")
    table = pq.read_table(path, columns=[*QRELS_COLUMNS, label])
    return pd.DataFrame(
        {
            "qid": _strings(table["text_id"]),
            "docno": _strings(table["image_id"]),
            "label": table[label].to_numpy(zero_copy_only=False).astype("int64"),
        }
    )


def _qrels_text(path: Path) -> pd.DataFrame:
    """TREC qrels text, ``text_id Q0 image_id rel`` per line (whitespace separated)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 4 or not fields[3].lstrip("-").isdigit():
                raise DataError(f"{path}:{n}: expected 'text_id Q0 image_id rel', got {line.strip()!r}")
            rows.append((fields[0], fields[2], int(fields[3])))
    return pd.DataFrame(rows, columns=["qid", "docno", "label"]).astype({"label": "int64"})


def read_qrels(layout: AtomicLayout, split: str) -> pd.DataFrame:
    """The qrels of ``split`` as a frame of ``qid`` (text_id), ``docno`` (image_id), ``label`` (int)."""
    frames = [
        _qrels_parquet(p) if p.suffix == ".parquet" else _qrels_text(p) for p in layout.qrels_files(split)
    ]
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------------- sections


def join_query(page_title: str, section_title: str, context_section_description: str) -> str:
    """The query of a section: its page title, section title and section text, joined by spaces.

    The page title says what the section is about, the section title narrows it, the section text is what an
    image is suggested for; empty parts are left out.
    """
    parts = (page_title, section_title, context_section_description)
    return " ".join(p.strip() for p in parts if p and p.strip())


def iter_sections(layout: AtomicLayout, text_ids: set[str]) -> Iterator[dict[str, str]]:
    """The sections whose ``text_id`` is in ``text_ids``, in file order: dicts of ``qid``, ``query`` and the
    three fields of :data:`QUERY_COLUMNS`. Ids of ``text_ids`` not found are logged (one warning)."""
    wanted = pa.array(sorted(text_ids), type=pa.string())
    seen: set[str] = set()
    for path in layout.texts:
        pf = _open(path)
        require_columns(path, pf.schema_arrow.names, ("text_id", *QUERY_COLUMNS))
        for batch in pf.iter_batches(batch_size=_BATCH, columns=["text_id", *QUERY_COLUMNS]):
            ids = pc.cast(batch.column("text_id"), pa.string())
            keep = pc.is_in(ids, value_set=wanted)
            if not pc.any(keep).as_py():
                continue
            sub = batch.filter(keep)
            cols = [_strings(sub.column(c)) for c in ("text_id", *QUERY_COLUMNS)]
            for qid, *fields in zip(*cols, strict=True):
                seen.add(qid)
                yield {
                    "qid": qid,
                    "query": join_query(*fields),
                    **dict(zip(QUERY_COLUMNS, fields, strict=True)),
                }
    warn_missing("texts", text_ids - seen, layout.root)


def warn_missing(what: str, missing: set[str], root: Path) -> None:
    """One warning for judged ids that a partial copy lacks (not an error: part of the images may be enough)."""
    if missing:
        logger.warning("%s: %d judged ids are not in the %s, e.g. %r", root, len(missing), what, min(missing))


# --------------------------------------------------------------------------------------------------- images


def join_captions(*captions: str) -> str:
    """The text of an image: its distinct non-empty captions, joined by spaces, in the order given.

    The reference caption often repeats as the alt text: it is kept once, so that it is not counted twice.
    """
    out: list[str] = []
    for c in captions:
        c = (c or "").strip()
        if c and c not in out:
            out.append(c)
    return " ".join(out)


def _bytes_column(column: pa.Array, path: Path) -> list[bytes | None]:
    """Image bytes from the Hugging Face ``Image`` struct (``{bytes, path}``) or from a plain binary column."""
    if pa.types.is_struct(column.type):
        if column.type.get_field_index("bytes") < 0:
            raise DataError(f"{path}: column 'image' is a struct without a 'bytes' field")
        column = pc.struct_field(column, "bytes")
    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        raise DataError(f"{path}: column 'image' holds {column.type}, not image bytes")
    return column.to_pylist()


def _doc_rows(table: pa.Table | pa.RecordBatch, path: Path, with_images: bool) -> Iterator[dict]:
    ids = _strings(table.column("image_id"))
    caps = [_strings(table.column(c)) for c in CAPTION_COLUMNS]
    images = _bytes_column(table.column(IMAGE_COLUMN), path) if with_images else None
    for i, docno in enumerate(ids):
        fields = [c[i] for c in caps]
        row = {
            "docno": docno,
            "text": join_captions(*fields),
            **dict(zip(CAPTION_COLUMNS, fields, strict=True)),
        }
        if images is not None:
            row[IMAGE_COLUMN] = images[i]
        yield row


def _image_columns(path: Path, pf: pq.ParquetFile, with_images: bool) -> list[str]:
    columns = ["image_id", *CAPTION_COLUMNS] + ([IMAGE_COLUMN] if with_images else [])
    require_columns(path, pf.schema_arrow.names, columns)
    return columns


def iter_images(layout: AtomicLayout, with_images: bool = False) -> Iterator[dict]:
    """Every image as a document, in file order: dicts of ``docno``, ``text`` (:func:`join_captions`), the
    three caption fields and, with ``with_images``, ``image`` (the encoded bytes)."""
    for path in layout.images:
        pf = _open(path)
        columns = _image_columns(path, pf, with_images)
        for batch in pf.iter_batches(batch_size=_BATCH if not with_images else 256, columns=columns):
            yield from _doc_rows(batch, path, with_images)


def count_images(layout: AtomicLayout) -> int:
    """The number of images, from the parquet footers (nothing else is read)."""
    return sum(_open(p).metadata.num_rows for p in layout.images)


def find_image_rows(layout: AtomicLayout, image_ids: Iterable[str]) -> np.ndarray:
    """The collection row numbers (0-based, over the files in order) of ``image_ids``, sorted; reads only the
    ``image_id`` columns. Ids not in the collection have no row."""
    wanted = pa.array(sorted(set(image_ids)), type=pa.string())
    rows, offset = [], 0
    for path in layout.images:
        pf = _open(path)
        require_columns(path, pf.schema_arrow.names, ("image_id",))
        for batch in pf.iter_batches(batch_size=_BATCH * 8, columns=["image_id"]):
            hits = pc.is_in(pc.cast(batch.column("image_id"), pa.string()), value_set=wanted)
            rows.append(pc.indices_nonzero(hits).to_numpy() + offset)
            offset += batch.num_rows
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64)


def read_image_rows(layout: AtomicLayout, rows: np.ndarray, with_images: bool = False) -> Iterator[dict]:
    """The documents (as :func:`iter_images`) at collection row numbers ``rows``, in collection order.

    Row groups are located from the parquet footers, and only those holding a wanted row are read (with only
    the columns needed): image bytes of other row groups are never read.
    """
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    offset = 0
    for path in layout.images:
        pf = _open(path)
        columns = _image_columns(path, pf, with_images)
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            lo, hi = np.searchsorted(rows, [offset, offset + n])
            if hi > lo:
                table = pf.read_row_group(g, columns=columns).take(pa.array(rows[lo:hi] - offset))
                yield from _doc_rows(table, path, with_images)
            offset += n


def image_bytes(layout: AtomicLayout, image_ids: Iterable[str]) -> dict[str, bytes]:
    """image_id -> encoded image bytes for ``image_ids``, reading only the row groups that hold them."""
    wanted = set(image_ids)
    rows = find_image_rows(layout, wanted)
    out = {row["docno"]: row[IMAGE_COLUMN] for row in read_image_rows(layout, rows, with_images=True)}
    warn_missing("images", wanted - set(out), layout.root)
    return out
