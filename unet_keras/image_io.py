"""Image reading and atomic file writing; numpy and Pillow only (used by the ONNX runtime too)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


class ImageReadError(ValueError):
    """A file that is not a readable image of the expected kind. The message names the file."""


def read_rgb(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read an image file as uint8 RGB.

    Grayscale, palette, RGBA, 16-bit and float images are converted; each conversion is
    described in the returned notes (and logged) so callers can report it.

    Returns:
        (image, notes): image is uint8 of shape (H, W, 3).
    Raises:
        ImageReadError: empty, truncated, corrupt or non-image files.
    """
    path = Path(path)
    array = _decode(path)
    image, notes = to_uint8_rgb(array, source=str(path))
    for note in notes:
        log.info("%s: %s", path, note)
    return image, notes


def read_gray(path: str | Path) -> np.ndarray:
    """Read a single-channel image (a mask) as a 2-D array, without rescaling its values."""
    path = Path(path)
    array = _decode(path)
    if array.ndim == 3:
        if array.shape[2] in (3, 4) and np.all(array[..., :3] == array[..., :1]):
            array = array[..., 0]
        else:
            raise ImageReadError(
                f"{path}: expected a single-channel mask, found {array.shape[2]} channels "
                "with different values"
            )
    return array


def _decode(path: Path) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read file ({err.strerror or err})") from err
    if not data:
        raise ImageReadError(f"{path}: file is empty (0 bytes); expected an image")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV", "1", "LA", "PA"):
                img = img.convert("RGBA" if "A" in img.mode else "RGB" if img.mode != "1" else "L")
            array = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(
            f"{path}: not a readable image ({err}); expected BMP, PNG, JPEG or TIFF"
        ) from err
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{path}: image too large to decode safely ({err})") from err
    if array.ndim not in (2, 3) or array.size == 0:
        raise ImageReadError(f"{path}: decoded to shape {array.shape}; expected (H, W) or (H, W, C)")
    return array


def to_uint8_rgb(array: np.ndarray, source: str = "array") -> tuple[np.ndarray, list[str]]:
    """Convert a decoded image array to uint8 RGB, describing every conversion made."""
    notes: list[str] = []
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(f"{source}: shape {array.shape}; expected (H, W), (H, W, 1|3|4)")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
        notes.append("converted boolean image to 0/255")
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16 or (np.issubdtype(array.dtype, np.integer) and array.max(initial=0) > 255):
        info_max = 65535.0 if array.max(initial=0) > 255 or array.dtype == np.uint16 else 255.0
        array = np.clip(np.round(array.astype(np.float64) * (255.0 / info_max)), 0, 255).astype(np.uint8)
        notes.append(f"rescaled {info_max:.0f}-max integer image to 8 bits")
    elif np.issubdtype(array.dtype, np.integer):
        array = np.clip(array, 0, 255).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ImageReadError(f"{source}: float image contains NaN or Inf values")
        top = 1.0 if array.max(initial=0.0) <= 1.0 else 255.0
        array = np.clip(np.round(array.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
        notes.append(f"converted float image (range 0..{top:g}) to 8 bits")
    else:
        raise ImageReadError(f"{source}: unsupported dtype {array.dtype}; expected integer or float")
    channels = array.shape[2]
    if channels == 1:
        array = np.repeat(array, 3, axis=2)
        notes.append("converted grayscale to RGB by repeating the channel")
    elif channels == 2:
        array = np.repeat(array[..., :1], 3, axis=2)
        notes.append("dropped alpha from grayscale+alpha and repeated gray to RGB")
    elif channels == 4:
        array = array[..., :3]
        notes.append("dropped the alpha channel of an RGBA image")
    return np.ascontiguousarray(array), notes


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_output(path, "w") as handle:
        handle.write(text)


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG, atomically."""
    path = Path(path)
    with atomic_output(path) as handle:
        Image.fromarray(np.ascontiguousarray(array)).save(handle, format="PNG")
