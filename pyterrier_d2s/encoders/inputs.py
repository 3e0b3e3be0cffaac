"""What ``d2s encode`` reads: image lists and caption files.

Images: a directory (every ``.jpg``/``.jpeg``/``.png`` below it; image id = file stem), a JSONL list
(``image_id``, ``file`` relative to the list's directory, other fields such as ``split`` are kept), or a text
list (one path per line, id = stem, or ``id<TAB>path``). Captions: JSONL (``caption_id``, ``image_id``,
``caption``) or a Karpathy ``dataset_meta.json`` / ``dataset_coco.json`` (image id ``str(imgid)``, caption id
``str(sentid)``, text ``raw``); with a Karpathy file and an image directory, the images are the file's
(``filepath/filename`` below the directory) and keep its ``split``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..data.pairs import DataError
from ..data.vectors_dir import read_jsonl

__all__ = [
    "ImageItem",
    "IMAGE_SUFFIXES",
    "read_image_dir",
    "read_image_list",
    "read_captions",
    "read_encode_inputs",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class ImageItem:
    """One image to encode: its id, where to read it, and its line in ``images.jsonl``."""

    image_id: str
    path: Path
    record: dict


def read_image_dir(directory: str | os.PathLike) -> list[ImageItem]:
    """Every jpg/jpeg/png file below ``directory`` (sorted by path); id = file stem, which must be unique."""
    d = Path(directory)
    files = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    items, seen = [], {}
    for p in files:
        rel = p.relative_to(d).as_posix()
        if p.stem in seen:
            raise DataError(f"{d}: image id {p.stem!r} is the stem of both {seen[p.stem]} and {rel}")
        seen[p.stem] = rel
        items.append(ImageItem(p.stem, p, {"image_id": p.stem, "file": rel}))
    if not items:
        raise DataError(f"{d}: no {'/'.join(IMAGE_SUFFIXES)} files")
    return items


def read_image_list(path: str | os.PathLike) -> list[ImageItem]:
    """A JSONL list (``image_id``, ``file``, ...) or a text list (``path`` or ``id<TAB>path`` per line)."""
    path = Path(path)
    base = path.parent
    items = []
    if path.suffix == ".jsonl":
        for n, row in enumerate(read_jsonl(path), 1):
            if "image_id" not in row or "file" not in row:
                raise DataError(f"{path}:{n}: image lines need 'image_id' and 'file'")
            row = {**row, "image_id": str(row["image_id"])}
            items.append(ImageItem(row["image_id"], base / row["file"], row))
    else:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            image_id, _, file = line.rpartition("\t")
            image_id = image_id.strip() or Path(file).stem
            items.append(
                ImageItem(image_id, base / file.strip(), {"image_id": image_id, "file": file.strip()})
            )
    return items


def _karpathy(meta: dict, path: Path) -> tuple[list[dict], list[dict]]:
    captions, images = [], []
    for image in meta["images"]:
        iid = str(image["imgid"])
        file = "/".join(p for p in (image.get("filepath", ""), image.get("filename", "")) if p)
        images.append(
            {"image_id": iid, "file": file, **({"split": image["split"]} if "split" in image else {})}
        )
        for sent in image.get("sentences", []):
            captions.append(
                {"caption_id": str(sent["sentid"]), "image_id": iid, "caption": sent.get("raw", "")}
            )
    if not images:
        raise DataError(f"{path}: no images")
    return captions, images


def read_captions(path: str | os.PathLike) -> tuple[list[dict], list[dict] | None]:
    """(caption rows, image rows of a Karpathy file or ``None``); rows have string ids."""
    path = Path(path)
    if path.suffix == ".json":
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or "images" not in meta:
            raise DataError(f"{path}: not a Karpathy dataset file (no 'images')")
        return _karpathy(meta, path)
    rows = []
    for n, row in enumerate(read_jsonl(path), 1):
        missing = [k for k in ("caption_id", "image_id", "caption") if k not in row]
        if missing:
            raise DataError(f"{path}:{n}: missing field {missing[0]!r}")
        rows.append({**row, "caption_id": str(row["caption_id"]), "image_id": str(row["image_id"])})
    return rows, None


def read_encode_inputs(
    images: str | os.PathLike, captions: str | os.PathLike
) -> tuple[list[ImageItem], list[dict]]:
    """The images and captions ``d2s encode`` works on, checked: unique ids, every caption's image listed."""
    caption_rows, karpathy_images = read_captions(captions)
    images = Path(images)
    items = _image_items(images, karpathy_images)
    seen: set[str] = set()
    for item in items:
        if item.image_id in seen:
            raise DataError(f"{images}: duplicate image id {item.image_id!r}")
        seen.add(item.image_id)
    _check_captions(captions, caption_rows, seen)
    return items, caption_rows


def _image_items(images: Path, karpathy_images: list[dict] | None) -> list[ImageItem]:
    """The images of a directory (a Karpathy file's, when there is one) or of a list file."""
    if not images.exists():
        raise DataError(f"no images at {images}")
    if images.is_dir() and karpathy_images is not None:
        return [ImageItem(r["image_id"], images / r["file"], r) for r in karpathy_images]
    if images.is_dir():
        return read_image_dir(images)
    return read_image_list(images)


def _check_captions(captions: str | os.PathLike, rows: list[dict], image_ids: set[str]) -> None:
    """Unique caption ids, non-empty texts, and every caption's image among ``image_ids``."""
    caption_ids: set[str] = set()
    for row in rows:
        if row["caption_id"] in caption_ids:
            raise DataError(f"{captions}: duplicate caption id {row['caption_id']!r}")
        caption_ids.add(row["caption_id"])
        if row["image_id"] not in image_ids:
            raise DataError(
                f"{captions}: caption {row['caption_id']!r} is of image {row['image_id']!r}, which is not among the images"
            )
        if not str(row["caption"]).strip():
            raise DataError(f"{captions}: caption {row['caption_id']!r} has empty text")
