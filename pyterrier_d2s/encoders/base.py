"""The dense encoder interface and what all backends share: batching, device, autocast, normalisation.

A backend implements two methods, ``_text_batch(list[str]) -> Tensor`` and
``_image_batch(list[PIL.Image]) -> Tensor`` (unnormalised, any float dtype); :class:`DenseEncoder` does the
rest, so every backend returns the same thing: L2-normalised float32 numpy arrays, one row per input.
"""

from __future__ import annotations

import contextlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .images import ImageError, ImageInput, load_image

__all__ = ["DenseEncoder", "ImageVectors", "resolve_device", "ON_ERROR"]

logger = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class ImageVectors:
    """Vectors of the images that could be read.

    Attributes:
        ids: the id of each row of ``vectors`` (input order, skipped images left out).
        vectors: float32 (len(ids), dim), L2-normalised.
        skipped: id -> reason, for each image that could not be read (only with ``on_error="skip"``).
    """

    ids: list[str]
    vectors: np.ndarray
    skipped: dict[str, str] = field(default_factory=dict)


class DenseEncoder(ABC):
    """A frozen image-text model that maps captions and images into one dense space.

    Args:
        batch_size: inputs per forward pass.
        device: ``"cuda"``, ``"cpu"``, ...; default CUDA when present, else CPU.
        precision: ``"auto"`` (bf16 autocast on GPUs that support it, else fp16; fp32 on CPU), ``"fp16"``,
            ``"bf16"`` or ``"fp32"``. Half precision is only ever used on a GPU: CPU autocast is slow and
            changes results, so CPU always computes in fp32.
        progress: show a tqdm bar when there is more than one batch.
        num_workers: threads that decode images (the next batch is decoded while the model runs).
    """

    name: str = "dense-encoder"

    def __init__(
        self,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        precision: str = "auto",
        progress: bool = True,
        num_workers: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if precision not in ("auto", "fp16", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, fp16, bf16 or fp32, got {precision!r}")
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.precision = precision
        self.progress = progress
        self.num_workers = num_workers or min(4, os.cpu_count() or 1)

    # -- what a backend provides ------------------------------------------------------------------------
    @property
    @abstractmethod
    def dim(self) -> int:
        """Dimension of the vectors."""

    @abstractmethod
    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        """Unnormalised vectors of one batch of texts."""

    @abstractmethod
    def _image_batch(self, images: list) -> torch.Tensor:
        """Unnormalised vectors of one batch of RGB PIL images."""

    # -- shared machinery -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dim={self.dim}, device={self.device.type})"

    def _autocast(self):
        if self.device.type != "cuda" or self.precision == "fp32":
            return contextlib.nullcontext()
        if self.precision == "auto":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _run(self, fn: Callable[[list], torch.Tensor], batch: list) -> np.ndarray:
        with torch.inference_mode(), self._autocast():
            out = fn(batch)
        # Normalise in fp32 even after a half-precision forward pass, so norms are 1 to float32 precision.
        out = torch.nn.functional.normalize(out.float(), dim=-1)
        return out.cpu().numpy().astype(np.float32, copy=False)

    def _bar(self, total: int, desc: str):
        return tqdm(
            total=total,
            desc=desc,
            unit=desc.split()[-1],
            disable=not self.progress or total <= self.batch_size,
        )

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 vectors (len(texts), dim) of captions / queries."""
        texts = [str(t) for t in texts]
        blocks = []
        with self._bar(len(texts), f"{self.name} texts") as bar:
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start : start + self.batch_size]
                blocks.append(self._run(self._text_batch, batch))
                bar.update(len(batch))
        return np.concatenate(blocks) if blocks else np.zeros((0, self.dim), np.float32)

    def encode_images(
        self,
        images: Sequence[ImageInput],
        ids: Sequence[str] | None = None,
        on_error: str = "raise",
    ) -> np.ndarray:
        """L2-normalised float32 vectors of images (paths, PIL images or encoded bytes).

        Args:
            images: the images.
            ids: their ids (docnos), used in error messages; default: their positions.
            on_error: ``"raise"`` raises :class:`ImageError` naming the id and file of the first unreadable
                image; ``"skip"`` leaves unreadable images out (the result then has fewer rows; use
                :meth:`encode_images_with_ids` to know which) and logs a warning naming them.
        """
        return self.encode_images_with_ids(images, ids, on_error=on_error).vectors

    def encode_images_with_ids(
        self,
        images: Sequence[ImageInput],
        ids: Sequence[str] | None = None,
        on_error: str = "raise",
    ) -> ImageVectors:
        """Like :meth:`encode_images`, returning which ids were encoded and which were skipped (and why)."""
        ids = _checked_ids(images, ids, on_error)
        kept_ids: list[str] = []
        skipped: dict[str, str] = {}
        blocks = []
        starts = range(0, len(images), self.batch_size)
        # The batch being prefetched waits on its images' decoding: it runs on a thread of its own, since on
        # one of the decoding pool's it would wait on the pool it occupies (a deadlock with num_workers=1).
        with (
            ThreadPoolExecutor(self.num_workers) as pool,
            ThreadPoolExecutor(1) as prefetch,
            self._bar(len(images), f"{self.name} images") as bar,
        ):

            def decode(n: int) -> Future | None:
                """Start decoding batch ``n`` (none past the last)."""
                if n >= len(starts):
                    return None
                return prefetch.submit(self._decode_batch, pool, images, ids, starts[n])

            # The next batch is decoded while the model runs on this one.
            pending = decode(0)
            for n, start in enumerate(starts):
                loaded = pending.result()
                pending = decode(n + 1)
                try:
                    batch, batch_ids = _readable(loaded, ids[start : start + len(loaded)], on_error, skipped)
                except ImageError:
                    if pending is not None:
                        pending.cancel()
                    raise
                if batch:
                    blocks.append(self._run(self._image_batch, batch))
                    kept_ids.extend(batch_ids)
                bar.update(len(loaded))
        _log_skipped(skipped)
        vectors = np.concatenate(blocks) if blocks else np.zeros((0, self.dim), np.float32)
        return ImageVectors(ids=kept_ids, vectors=vectors, skipped=skipped)

    def _decode_batch(
        self, pool: ThreadPoolExecutor, images: Sequence[ImageInput], ids: list[str], start: int
    ) -> list:
        """The decoded images of the batch at ``start``, an :class:`ImageError` in place of each unreadable one.

        Decoding is most of the CPU work; PIL releases the GIL while decoding, so threads overlap it.
        Failures come back as values so that one bad image does not lose the rest of its batch.
        """

        def one(k: int):
            try:
                return load_image(images[k], ids[k])
            except ImageError as e:
                return e

        return list(pool.map(one, range(start, min(start + self.batch_size, len(images)))))


def _checked_ids(images: Sequence[ImageInput], ids: Sequence[str] | None, on_error: str) -> list[str]:
    """The images' ids as strings (default: their positions), checked against ``images`` and ``on_error``."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    ids = [str(i) for i in range(len(images))] if ids is None else [str(i) for i in ids]
    if len(ids) != len(images):
        raise ValueError(f"{len(images)} images but {len(ids)} ids")
    return ids


def _readable(loaded: list, ids: list[str], on_error: str, skipped: dict[str, str]) -> tuple[list, list[str]]:
    """The readable images of a decoded batch and their ids; an unreadable one is raised (``on_error="raise"``)
    or recorded in ``skipped``."""
    batch, batch_ids = [], []
    for image_id, item in zip(ids, loaded, strict=True):
        if isinstance(item, ImageError):
            if on_error == "raise":
                raise item
            skipped[image_id] = str(item)
        else:
            batch.append(item)
            batch_ids.append(image_id)
    return batch, batch_ids


def _log_skipped(skipped: dict[str, str]) -> None:
    if skipped:
        shown = ", ".join(repr(i) for i in list(skipped)[:10]) + (" ..." if len(skipped) > 10 else "")
        logger.warning("skipped %d unreadable image(s): %s", len(skipped), shown)
        for message in skipped.values():
            logger.debug("skipped %s", message)
