"""The "vectors directory" format (the format of the packaged demo set).

``images.jsonl`` (``image_id``, optional ``split``, anything else) + ``image_vectors.npy``, and
``captions.jsonl`` (``caption_id``, ``image_id``, ``caption``) + ``caption_vectors.npy``, rows aligned line by
line. Written by ``d2s encode`` and read here; ``d2s encode`` also writes ``encoder.json``, whose
``dense_encoder`` (the model the vectors came from) ends up in ``meta["dense_encoder"]``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from .pairs import DataError, PairedVectors

__all__ = ["read_vectors_dir", "read_jsonl"]

logger = logging.getLogger(__name__)


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{n}: not UTF-8 text (byte {e.start})") from e
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def _require(row: dict, key: str, path: Path, n: int) -> str:
    if key not in row:
        raise DataError(f"{path}:{n}: missing field {key!r}")
    return str(row[key])


def read_vectors_dir(directory: str | os.PathLike, name: str | None = None) -> PairedVectors:
    """Read a vectors directory into validated :class:`PairedVectors`."""
    d = Path(directory)
    files = {f: d / f for f in ("images.jsonl", "image_vectors.npy", "captions.jsonl", "caption_vectors.npy")}
    missing = [f for f, p in files.items() if not p.is_file()]
    if missing:
        raise DataError(f"{d} is not a vectors directory: missing {', '.join(missing)}")
    images = read_jsonl(files["images.jsonl"])
    captions = read_jsonl(files["captions.jsonl"])
    image_ids = [_require(r, "image_id", files["images.jsonl"], n) for n, r in enumerate(images, 1)]
    caption_ids, texts, links = _caption_columns(files["captions.jsonl"], captions, image_ids)
    has_split = any("split" in r for r in images)
    split = np.array([str(r.get("split", "")) for r in images]) if has_split else None
    iv = _load_vectors(files["image_vectors.npy"])
    cv = _load_vectors(files["caption_vectors.npy"])
    _check_rows(d, "images.jsonl", len(image_ids), "image_vectors.npy", len(iv))
    _check_rows(d, "captions.jsonl", len(caption_ids), "caption_vectors.npy", len(cv))
    return PairedVectors(
        image_ids=image_ids,
        image_vectors=np.ascontiguousarray(iv, dtype=np.float32),
        caption_ids=caption_ids,
        caption_texts=texts,
        caption_image=np.asarray(links, dtype=np.int64),
        caption_vectors=np.ascontiguousarray(cv, dtype=np.float32),
        image_split=split,
        name=name or str(d),
        meta=_meta(d, images),
    ).validate()


def _caption_columns(
    path: Path, captions: list[dict], image_ids: list[str]
) -> tuple[list[str], list, list[int]]:
    """(caption ids, texts, image rows) of the lines of ``captions.jsonl``; every caption's image must be
    listed."""
    row_of = {iid: i for i, iid in enumerate(image_ids)}
    caption_ids, texts, links = [], [], []
    for n, r in enumerate(captions, 1):
        cid = _require(r, "caption_id", path, n)
        iid = _require(r, "image_id", path, n)
        if iid not in row_of:
            raise DataError(f"{path}:{n}: caption {cid!r} points to unknown image {iid!r}")
        caption_ids.append(cid)
        texts.append(r.get("caption", ""))
        links.append(row_of[iid])
    return caption_ids, texts, links


def _check_rows(d: Path, lines_file: str, lines: int, vectors_file: str, rows: int) -> None:
    if lines != rows:
        raise DataError(f"{d}: {lines_file} has {lines} lines but {vectors_file} has {rows} rows")


def _load_vectors(path: Path) -> np.ndarray:
    """A 2-d numeric array from ``path``, or a DataError naming the file and what is wrong with it."""
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):  # object arrays need pickle, which is never run on load
            raise DataError(f"{path}: vectors must be real numbers, not Python objects") from e
        raise DataError(f"{path}: unreadable .npy file ({e})") from e  # e.g. truncated
    except (OSError, EOFError) as e:  # empty or not a .npy file
        raise DataError(f"{path}: unreadable .npy file ({e or type(e).__name__})") from e
    if arr.dtype.names is not None or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise DataError(f"{path}: vectors must be real numbers, not dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise DataError(f"{path}: vectors must be a 2-d array (rows x dim, dim >= 1), got shape {arr.shape}")
    if arr.dtype != np.float32:
        logger.warning("%s: %s vectors are used as float32", path, arr.dtype)
    return arr


#: every caption text of each image, beside the vectors (only some captions need a vector)
ALL_CAPTIONS_FILE = "captions_all.jsonl"


def _meta(d: Path, images: list[dict]) -> dict:
    meta: dict = {"images": images}
    encoder_file = d / "encoder.json"
    if encoder_file.is_file():
        # so that a head trained on these vectors records which dense model it needs at query time
        meta["dense_encoder"] = json.loads(encoder_file.read_text(encoding="utf-8")).get("dense_encoder")
    all_captions = d / ALL_CAPTIONS_FILE
    if all_captions.is_file():
        # every caption text of each image, also those without a vector (TrainConfig.ridge_all_captions)
        image_captions: dict[str, list[str]] = {}
        for row in read_jsonl(all_captions):
            if "image_id" in row and "caption" in row:
                image_captions.setdefault(str(row["image_id"]), []).append(str(row["caption"]))
        meta["image_captions"] = image_captions
    return meta
