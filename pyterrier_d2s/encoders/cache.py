"""A resumable vector cache: encode images and captions into a vectors directory, chunk by chunk.

Work in progress lives in ``OUT/.d2s-encode/``: each chunk's vectors are written to their own ``.npy`` shard
(written to a temporary name, fsynced, renamed), and only then is one JSON line naming the shard and its ids
appended (and fsynced) to an append-only log. A chunk is therefore either fully recorded or not at all: a run
killed at any point (even by SIGKILL) resumes by re-reading the logs, skipping every id they name, and
encoding the rest; a torn last log line is cut off. When everything is encoded the shards are consolidated, in
input order, into ``image_vectors.npy`` / ``images.jsonl`` / ``caption_vectors.npy`` / ``captions.jsonl``
(plus ``encoder.json``) and the work directory is removed.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.pairs import DataError
from .base import DenseEncoder
from .inputs import ImageItem

__all__ = ["encode_vectors_dir", "EncodeSummary", "WORK_DIR"]

logger = logging.getLogger(__name__)

WORK_DIR = ".d2s-encode"
FINAL_FILES = ("image_vectors.npy", "images.jsonl", "caption_vectors.npy", "captions.jsonl", "encoder.json")


@dataclass
class EncodeSummary:
    """What :func:`encode_vectors_dir` did."""

    out: str
    encoder: str
    dim: int
    images: int = 0  # images in the final directory
    captions: int = 0
    encoded_images: int = 0  # encoded by this run
    encoded_captions: int = 0
    resumed_images: int = 0  # found already encoded by an earlier, interrupted run
    resumed_captions: int = 0
    skipped_images: dict[str, str] = field(default_factory=dict)  # id -> reason
    dropped_captions: int = 0  # captions of skipped images
    seconds: float = 0.0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["skipped_images"] = sorted(self.skipped_images)
        return d


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # directories cannot be opened on some platforms (Windows); rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, write: Callable) -> None:
    """Write through ``write(file)`` to a temporary name, fsync, and rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class _ChunkLog:
    """The append-only log of one kind (images or captions) and its shards."""

    def __init__(self, work: Path, kind: str):
        self.work, self.kind = work, kind
        self.path = work / f"{kind}.log.jsonl"
        self.records: list[dict] = []
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        raw = self.path.read_bytes()
        end = raw.rfind(b"\n") + 1
        if end < len(raw):
            # A run killed while appending: the torn line's chunk was never committed; drop it.
            logger.warning("%s: dropping a torn last line (%d bytes)", self.path, len(raw) - end)
            with open(self.path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        for line in raw[:end].decode("utf-8").splitlines():
            record = json.loads(line)
            shard = self.work / record["shard"]
            rows = np.load(shard, mmap_mode="r").shape[0] if shard.is_file() else -1
            if rows != len(record["ids"]):
                raise DataError(
                    f"{self.path}: shard {record['shard']} has {rows} rows for {len(record['ids'])} ids; "
                    f"the work directory {self.work} is damaged: delete it (or pass overwrite) to start over"
                )
            self.records.append(record)

    def done(self) -> set[str]:
        return {i for r in self.records for i in (*r["ids"], *r.get("skipped", {}))}

    def skipped(self) -> dict[str, str]:
        return {i: why for r in self.records for i, why in r.get("skipped", {}).items()}

    def commit(self, ids: list[str], vectors: np.ndarray, skipped: dict[str, str] | None = None) -> None:
        # A random suffix: a shard left by a killed run before its log line was written is never reused.
        shard = f"{self.kind}-{len(self.records):06d}-{secrets.token_hex(4)}.npy"
        _write_atomic(self.work / shard, lambda f: np.save(f, np.ascontiguousarray(vectors, np.float32)))
        record = {"shard": shard, "ids": ids}
        if skipped:
            record["skipped"] = skipped
        with open(self.path, "ab") as f:
            f.write((json.dumps(record) + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)

    def vectors_in_order(self, ids: Sequence[str], out: Path, dim: int) -> None:
        """Write the vectors of ``ids`` (all encoded), in that order, to ``out`` as one .npy file."""
        where = {i: (k, r) for k, rec in enumerate(self.records) for r, i in enumerate(rec["ids"])}
        rows = np.array([where[i][1] for i in ids], dtype=np.int64)
        shard_of = np.array([where[i][0] for i in ids], dtype=np.int64)
        tmp = out.with_name(f".{out.name}.tmp")
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(ids), dim))
        for k, rec in enumerate(self.records):
            targets = np.flatnonzero(shard_of == k)
            if len(targets):
                mm[targets] = np.load(self.work / rec["shard"], mmap_mode="r")[rows[targets]]
        mm.flush()
        del mm
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    _write_atomic(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")))


def encode_vectors_dir(
    encoder: DenseEncoder,
    images: Sequence[ImageItem],
    captions: Sequence[dict],
    out: str | os.PathLike,
    chunk_size: int = 1024,
    on_error: str = "raise",
    overwrite: bool = False,
    progress: bool = True,
    on_chunk: Callable[[str, int, int], None] | None = None,
) -> EncodeSummary:
    """Encode ``images`` and ``captions`` with ``encoder`` into the vectors directory ``out``, resumably.

    Args:
        encoder: the dense encoder.
        images: what to encode (see :func:`~pyterrier_d2s.encoders.inputs.read_encode_inputs`).
        captions: rows with ``caption_id``, ``image_id``, ``caption``.
        out: the vectors directory to write; an unfinished run there is resumed.
        chunk_size: items per committed chunk (what a kill can lose at most).
        on_error: ``"raise"`` stops at the first unreadable image (its id and file named; the chunks already
            committed are kept), ``"skip"`` leaves such images and their captions out and reports them.
        overwrite: remove a finished directory or an unfinished run at ``out`` and start afresh.
        progress: show tqdm bars.
        on_chunk: called as ``on_chunk(kind, done, total)`` after each committed chunk.

    Returns:
        an :class:`EncodeSummary`; the directory loads with :func:`pyterrier_d2s.data.load_pairs`.
    """
    started = time.perf_counter()
    out = Path(out)
    work = _open_work_dir(out, encoder, overwrite)
    summary = EncodeSummary(out=str(out), encoder=encoder.name, dim=encoder.dim)
    image_log, caption_log = _ChunkLog(work, "images"), _ChunkLog(work, "captions")
    run = _ChunkedEncoding(encoder, summary, chunk_size, on_error, progress, on_chunk)
    was_progress = encoder.progress
    encoder.progress = False  # one bar per kind here, not one per chunk inside the encoder
    try:
        run.images(images, image_log)
        skipped = image_log.skipped()
        kept_captions = [c for c in captions if c["image_id"] not in skipped]
        summary.dropped_captions = len(captions) - len(kept_captions)
        run.captions(kept_captions, caption_log)
    finally:
        encoder.progress = was_progress
    kept_images = [item for item in images if item.image_id not in skipped]
    _consolidate(out, encoder, kept_images, kept_captions, skipped, image_log, caption_log)
    shutil.rmtree(work)

    summary.images, summary.captions = len(kept_images), len(kept_captions)
    summary.skipped_images = skipped
    if skipped:
        logger.warning(
            "%d image(s) could not be read and were left out, with their %d caption(s): %s",
            len(skipped),
            summary.dropped_captions,
            ", ".join(repr(i) for i in sorted(skipped)[:10]),
        )
    summary.seconds = round(time.perf_counter() - started, 2)
    return summary


def _open_work_dir(out: Path, encoder: DenseEncoder, overwrite: bool) -> Path:
    """The work directory of ``out``: emptied with ``overwrite``, else an unfinished run's (which must be
    of the same encoder) or a new one.

    Raises:
        FileExistsError: ``out`` is a finished vectors directory and ``overwrite`` is not set.
        DataError: an unfinished run of another encoder (or dimension) is there.
    """
    work = out / WORK_DIR
    if overwrite:
        shutil.rmtree(work, ignore_errors=True)
        for name in FINAL_FILES:
            (out / name).unlink(missing_ok=True)
    elif not work.exists() and (out / "image_vectors.npy").exists():
        raise FileExistsError(f"{out} already holds encoded vectors; pass overwrite to encode again")
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "state.json"
    state = {"encoder": encoder.name, "dim": encoder.dim}
    if state_path.exists():
        previous = json.loads(state_path.read_text(encoding="utf-8"))
        if previous != state:
            raise DataError(
                f"{out}: an unfinished run with {previous} is there, not {state}; resume it with the same "
                "encoder or pass overwrite"
            )
    else:
        _write_atomic(state_path, lambda f: f.write(json.dumps(state).encode("utf-8")))
    return work


@dataclass
class _ChunkedEncoding:
    """Encodes what a log has not recorded yet, chunk by chunk, committing each chunk to the log."""

    encoder: DenseEncoder
    summary: EncodeSummary
    chunk_size: int
    on_error: str
    progress: bool
    on_chunk: Callable[[str, int, int], None] | None

    def images(self, images: Sequence[ImageItem], log: _ChunkLog) -> None:
        """Encode the ``images`` that ``log`` has not recorded; unreadable ones as ``on_error`` says."""
        done = log.done()
        todo = [item for item in images if item.image_id not in done]
        resumed = self.summary.resumed_images = len(images) - len(todo)
        if resumed:
            logger.info("resuming: %d of %d images already encoded", resumed, len(images))
        with tqdm(total=len(images), initial=resumed, desc="images", disable=not self.progress) as bar:
            for start in range(0, len(todo), self.chunk_size):
                chunk = todo[start : start + self.chunk_size]
                result = self.encoder.encode_images_with_ids(
                    [c.path for c in chunk], [c.image_id for c in chunk], on_error=self.on_error
                )
                log.commit(result.ids, result.vectors, result.skipped)
                self.summary.encoded_images += len(result.ids)
                bar.update(len(chunk))
                self._report("images", resumed + start + len(chunk), len(images))

    def captions(self, captions: list[dict], log: _ChunkLog) -> None:
        """Encode the texts of the ``captions`` that ``log`` has not recorded."""
        done = log.done()
        todo = [c for c in captions if c["caption_id"] not in done]
        resumed = self.summary.resumed_captions = len(captions) - len(todo)
        with tqdm(total=len(captions), initial=resumed, desc="captions", disable=not self.progress) as bar:
            for start in range(0, len(todo), self.chunk_size):
                chunk = todo[start : start + self.chunk_size]
                vectors = self.encoder.encode_text([c["caption"] for c in chunk])
                log.commit([c["caption_id"] for c in chunk], vectors)
                self.summary.encoded_captions += len(chunk)
                bar.update(len(chunk))
                self._report("captions", resumed + start + len(chunk), len(captions))

    def _report(self, kind: str, done: int, total: int) -> None:
        if self.on_chunk is not None:
            self.on_chunk(kind, done, total)


def _consolidate(
    out: Path,
    encoder: DenseEncoder,
    kept_images: list[ImageItem],
    kept_captions: list[dict],
    skipped: dict[str, str],
    image_log: _ChunkLog,
    caption_log: _ChunkLog,
) -> None:
    """Write the final files from the shards, in input order.

    Every final file is written atomically and the work directory is removed only after them, so a kill
    here leaves a run that simply consolidates again.
    """
    image_log.vectors_in_order([i.image_id for i in kept_images], out / "image_vectors.npy", encoder.dim)
    _write_jsonl(out / "images.jsonl", [i.record for i in kept_images])
    caption_log.vectors_in_order(
        [c["caption_id"] for c in kept_captions], out / "caption_vectors.npy", encoder.dim
    )
    _write_jsonl(out / "captions.jsonl", list(kept_captions))
    meta = {"dense_encoder": encoder.name, "dim": encoder.dim, "skipped_images": skipped}
    _write_atomic(out / "encoder.json", lambda f: f.write(json.dumps(meta, indent=1).encode("utf-8")))
