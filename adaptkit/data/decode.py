"""Decoding image files the way viewers show them, with errors that name the file.

- EXIF orientation is applied (phone photos are stored sideways with a rotation tag).
- 16-bit images (``I;16*``, and ``I`` with values above 255) are scaled to 8 bits by 255/65535;
  float images (``F``) in [0, 1] by 255, other float ranges by their own min-max. Pillow's plain
  ``convert("RGB")`` would clip them to white or black.
- Everything else is converted with ``convert("RGB")``, as open_clip and CLIP_benchmark do, so
  ordinary files decode bit for bit like theirs.
- A file Pillow cannot read, a truncated file, or one over Pillow's decompression-bomb limit
  (``PIL.Image.MAX_IMAGE_PIXELS``, settable with ``ADAPTKIT_MAX_IMAGE_PIXELS``) raises
  :class:`ImageDecodeError`, a ``ValueError`` that names the file and the reason.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..storage import expand_path

JPEG_MAGIC = b"\xff\xd8\xff"


class ImageDecodeError(ValueError):
    """An image that cannot be decoded; the message names the file and the reason."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"cannot read image {name}: {reason}")
        self.name, self.reason = name, reason


def display_path(path: str | os.PathLike) -> str:
    """A path as printable text: undecodable bytes of non-UTF-8 names shown as escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _max_pixels() -> int | None:
    value = os.environ.get("ADAPTKIT_MAX_IMAGE_PIXELS")
    if value is None:
        return Image.MAX_IMAGE_PIXELS
    return None if value.lower() in ("none", "0", "off") else int(value)


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image, dtype=np.int64)
        if mode.startswith("I;16") or values.max(initial=0) > 255 or values.min(initial=0) < 0:
            high = 65535 if 0 <= values.min(initial=0) and values.max(initial=0) <= 65535 else None
            values = _scale(values.astype(np.float64), 0.0 if high else None, high)
        return Image.fromarray(values.clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        unit = finite.size == 0 or (finite.min() >= 0.0 and finite.max() <= 1.0)
        scaled = _scale(np.nan_to_num(values), 0.0 if unit else None, 1.0 if unit else None)
        return Image.fromarray(scaled.clip(0, 255).astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")


def _scale(values: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    """Map [low, high] (default: the values' own range) linearly onto [0, 255], rounded."""
    low = values.min(initial=0.0) if low is None else low
    high = values.max(initial=0.0) if high is None else high
    span = high - low
    return np.zeros_like(values) if span <= 0 else np.rint((values - low) * (255.0 / span))


def decode_image(source: str | os.PathLike | bytes, name: str | None = None) -> Image.Image:
    """An RGB PIL image from a file path or encoded bytes (see the module docstring).

    ``name`` is what errors call the image (default: the path)."""
    if name is None:
        name = "<bytes>" if isinstance(source, (bytes, bytearray)) else display_path(source)
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = _max_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(handle) as image:
                image.load()
                return _to_rgb(ImageOps.exif_transpose(image))
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(name, f"{err} Raise the limit with ADAPTKIT_MAX_IMAGE_PIXELS=<pixels> (or "
                                     "'none') or PIL.Image.MAX_IMAGE_PIXELS if you trust the file") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(name, "not an image file Pillow can read (empty, damaged or another format)") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {name}") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(name, f"truncated or damaged ({err})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def load_image(image) -> Image.Image:
    """An RGB PIL image from a PIL image or a file path (see :func:`decode_image`)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        path = expand_path(image, "image")
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {display_path(path)}")
        return decode_image(path)
    raise TypeError(f"an image must be a PIL image or a file path; got {type(image).__name__}")


def is_jpeg(data: bytes) -> bool:
    """Whether encoded bytes are a JPEG (by their magic number)."""
    return data[:3] == JPEG_MAGIC
