"""The authors' published format (MSCOCO / Flickr30k x BLIP / ALBEF dense vectors).

A directory with ``img_embs.parquet`` and ``text_embs.parquet`` (columns ``id`` and ``emb``, one vector per
row) and a Karpathy ``dataset_meta.json`` (``images[].imgid``, ``images[].split``,
``images[].sentences[].sentid`` / ``raw``). Image ids are ``str(imgid)``, caption ids ``str(sentid)``.
Reading parquet needs ``pyarrow`` (``pip install pyterrier-d2s[parquet]``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .pairs import DataError, PairedVectors

__all__ = ["read_authors_dir", "is_authors_dir"]

IMAGE_FILE, TEXT_FILE, META_FILE = "img_embs.parquet", "text_embs.parquet", "dataset_meta.json"


def is_authors_dir(directory: str | os.PathLike) -> bool:
    d = Path(directory)
    return all((d / f).is_file() for f in (IMAGE_FILE, TEXT_FILE, META_FILE))


def _read_embeddings(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"reading {path} needs pyarrow: pip install 'pyterrier-d2s[parquet]'") from e
    table = pq.read_table(path, columns=["id", "emb"])
    ids = [str(i) for i in table.column("id").to_pylist()]
    emb = table.column("emb").combine_chunks()
    try:
        vectors = np.asarray(emb.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        vectors = vectors.reshape(len(ids), -1)
    except (ValueError, AttributeError) as e:
        raise DataError(f"{path}: column 'emb' must hold equal-length float lists") from e
    return ids, vectors


@dataclass
class _MetaRows:
    """What the Karpathy meta file lists, in its order, as rows of the two embedding tables."""

    image_ids: list[str] = field(default_factory=list)
    image_rows: list[int] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    caption_ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    links: list[int] = field(default_factory=list)  # each caption's row in image_ids
    caption_rows: list[int] = field(default_factory=list)


def _meta_rows(d: Path, meta: dict, img_ids: list[str], txt_ids: list[str]) -> _MetaRows:
    """The images and captions of ``meta``; each must have a vector (a DataError names the first without)."""
    img_row = {i: r for r, i in enumerate(img_ids)}
    txt_row = {i: r for r, i in enumerate(txt_ids)}
    out = _MetaRows()
    for image in meta.get("images", []):
        iid = str(image["imgid"])
        if iid not in img_row:
            raise DataError(f"{d / META_FILE}: image {iid!r} has no vector in {IMAGE_FILE}")
        new_row = len(out.image_ids)
        out.image_ids.append(iid)
        out.image_rows.append(img_row[iid])
        out.splits.append(str(image.get("split", "")))
        for sent in image.get("sentences", []):
            sid = str(sent["sentid"])
            if sid not in txt_row:
                raise DataError(
                    f"{d / META_FILE}: caption {sid!r} of image {iid!r} has no vector in {TEXT_FILE}"
                )
            out.caption_ids.append(sid)
            out.texts.append(sent.get("raw", ""))
            out.links.append(new_row)
            out.caption_rows.append(txt_row[sid])
    if not out.image_ids:
        raise DataError(f"{d / META_FILE}: no images")
    return out


def read_authors_dir(directory: str | os.PathLike, name: str | None = None) -> PairedVectors:
    """Read the authors' parquet + Karpathy-meta directory into validated :class:`PairedVectors`."""
    d = Path(directory)
    missing = [f for f in (IMAGE_FILE, TEXT_FILE, META_FILE) if not (d / f).is_file()]
    if missing:
        raise DataError(f"{d} is not in the authors' format: missing {', '.join(missing)}")
    meta = json.loads((d / META_FILE).read_text(encoding="utf-8"))
    img_ids, img_vecs = _read_embeddings(d / IMAGE_FILE)
    txt_ids, txt_vecs = _read_embeddings(d / TEXT_FILE)
    rows = _meta_rows(d, meta, img_ids, txt_ids)
    return PairedVectors(
        image_ids=rows.image_ids,
        image_vectors=img_vecs[np.asarray(rows.image_rows)],
        caption_ids=rows.caption_ids,
        caption_texts=rows.texts,
        caption_image=np.asarray(rows.links, dtype=np.int64),
        caption_vectors=txt_vecs[np.asarray(rows.caption_rows, dtype=np.int64)]
        if rows.caption_rows
        else np.zeros((0, img_vecs.shape[1]), np.float32),
        image_split=np.asarray(rows.splits) if any(rows.splits) else None,
        name=name or str(d),
    ).validate()
