"""Loading images for dense encoders: paths, PIL images or raw bytes, always converted to RGB.

Every failure becomes an :class:`ImageError` that names the image's id (docno) and its file, so that one bad
file among a million is found from the message alone.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

from ..data.pairs import DataError

__all__ = ["ImageError", "ImageInput", "load_image", "describe_source"]

# What encoders accept as an image.
ImageInput = Union[str, os.PathLike, bytes, "PIL.Image.Image"]  # noqa: F821 (PIL is imported lazily)


class ImageError(DataError):
    """An image that cannot be read; ``image_id``, ``source`` and ``reason`` say which, where and why."""

    def __init__(self, image_id: str, source: str, reason: str):
        self.image_id, self.source, self.reason = image_id, source, reason
        super().__init__(f"image {image_id!r} ({source}): {reason}")


def describe_source(image: object) -> str:
    """A short description of where an image came from, for error messages."""
    if isinstance(image, str | os.PathLike):
        return str(image)
    if isinstance(image, bytes | bytearray | memoryview):
        return f"<{len(image)} bytes>"
    return f"<{type(image).__name__}>"


def load_image(image: ImageInput, image_id: str | None = None):
    """Open ``image`` (path, PIL image or encoded bytes) as a fully decoded RGB ``PIL.Image``.

    Raises:
        ImageError: the file is missing, not an image, or truncated; the message names ``image_id`` and the
            file.
    """
    from PIL import Image, UnidentifiedImageError

    image_id = "?" if image_id is None else str(image_id)
    source = describe_source(image)
    try:
        if isinstance(image, Image.Image):
            img = image
        elif isinstance(image, str | os.PathLike):
            path = Path(image)
            if not path.is_file():
                raise ImageError(image_id, source, "no such file")
            img = Image.open(path)
        elif isinstance(image, bytes | bytearray | memoryview):
            img = Image.open(io.BytesIO(bytes(image)))
        else:
            raise ImageError(image_id, source, "expected a path, a PIL image or bytes")
        # convert() decodes every pixel now, so truncated files fail here (with their id) and not later inside
        # a batch of the image processor; it also turns greyscale, palette and RGBA images into RGB.
        return img.convert("RGB")
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(image_id, source, "cannot identify image file") from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three for damaged files
        raise ImageError(image_id, source, str(e) or type(e).__name__) from e
