"""Image reading and atomic file writing; numpy and Pillow only (used by the ONNX runtime too).

Every decoding or conversion problem raises ``ImageReadError`` (a ``ValueError``) naming the
file or array and what would be accepted; no other exception type escapes ``read_rgb``,
``read_gray`` or ``to_uint8_rgb`` (property-tested in ``tests/test_fuzz_decode.py``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
EXPECTED_FORMATS = "a BMP, PNG, JPEG or TIFF image"
# Pillow refuses images over twice its MAX_IMAGE_PIXELS (about 179 million pixels) as possible
# decompression bombs; anything smaller is decoded and, for prediction, run tile by tile.
MODE_CONVERSIONS = {
    "P": "converted palette image to RGB",
    "PA": "converted palette image with alpha to RGB (alpha dropped)",
    "CMYK": "converted CMYK image to RGB",
    "YCbCr": "converted YCbCr image to RGB",
    "LAB": "converted LAB image to RGB",
    "HSV": "converted HSV image to RGB",
    "1": "converted 1-bit image to 8-bit grey",
}


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
    array, notes = _decode(path)
    image, more = to_uint8_rgb(array, source=str(path))
    notes = notes + more
    for note in notes:
        log.info("%s: %s", path, note)
    return image, notes


def read_gray(path: str | Path) -> np.ndarray:
    """Read a single-channel image (a mask) as a 2-D array, without rescaling its values.

    A palette mask whose colours are greys reads as those greys; one with coloured entries (the
    way annotation tools save class masks: index 1 drawn red, 2 green) reads as its indices.
    """
    path = Path(path)
    array, notes = _decode(path, palette_indices=True)
    for note in notes:
        log.info("%s: %s", path, note)
    if array.ndim == 3:
        grey = array.shape[2] in (3, 4) and np.all(array[..., :3] == array[..., :1])
        if grey or array.shape[2] == 2:  # RGB(A) with equal channels, or grey + alpha
            array = array[..., 0]
        else:
            raise ImageReadError(
                f"{path}: expected a single-channel mask, found {array.shape[2]} channels "
                "with different values"
            )
    return array


def _decode(path: Path, palette_indices: bool = False) -> tuple[np.ndarray, list[str]]:
    """File -> (array as decoded, notes on mode conversions). Raises ImageReadError.

    With ``palette_indices``, a palette image with coloured entries decodes to its indices.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read file ({err.strerror or err}); "
                             f"expected {EXPECTED_FORMATS}") from err
    if not data:
        raise ImageReadError(f"{path}: file is empty (0 bytes); expected {EXPECTED_FORMATS}")
    notes: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(io.BytesIO(data)) as img:
                # Pillow reads 16-bit colour PNGs as 8-bit RGB without saying so; say so here.
                rawmodes = [str(getattr(tile, "args", tile)) for tile in img.tile]
                if img.mode in ("RGB", "RGBA") and any(";16" in raw for raw in rawmodes):
                    notes.append("reduced a 16-bit-per-channel colour image to 8 bits")
                img.load()
                if palette_indices and img.mode == "P" and _coloured_palette(img):
                    notes.append("read the indices of a palette image with coloured entries")
                    img = Image.fromarray(np.asarray(img))
                if img.mode in MODE_CONVERSIONS:
                    notes.append(MODE_CONVERSIONS[img.mode])
                    target = "L" if img.mode == "1" else "RGBA" if (
                        img.mode == "P" and "transparency" in img.info) else "RGB"
                    img = img.convert(target)
                array = np.asarray(img)
        for warning in caught:
            log.warning("%s: %s", path, warning.message)
    except UnidentifiedImageError as err:
        raise ImageReadError(f"{path}: not a readable image: content is no known image format "
                             f"(starts with {data[:8]!r}); expected {EXPECTED_FORMATS}") from err
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{path}: not a readable image: too large to decode safely "
                             f"({err})") from err
    except Exception as err:
        # Pillow's format plugins raise OSError, SyntaxError, ValueError, struct.error,
        # IndexError, ... on malformed bytes; for a caller every one means "not readable".
        raise ImageReadError(f"{path}: not a readable image ({type(err).__name__}: {err}); "
                             f"expected {EXPECTED_FORMATS}") from err
    if array.ndim not in (2, 3) or array.size == 0:
        raise ImageReadError(f"{path}: decoded to shape {array.shape}; expected (H, W) or (H, W, C)")
    return array, notes


def _coloured_palette(img: Image.Image) -> bool:
    """Whether any palette entry the image uses is a colour rather than a grey."""
    palette = np.asarray(img.getpalette() or [], np.int64).reshape(-1, 3)
    used = np.unique(np.asarray(img))
    used = palette[used[used < len(palette)]]
    return bool(np.any(used != used[:, :1]))


# Float images up to this maximum are 0..1 images (resampling overshoots 1 a little).
FLOAT_OVERSHOOT = 1.5
# Camera bit depths, for integer images brighter than 8 bits.
BIT_DEPTHS = (10, 12, 14, 16)


def bit_depth(high: int) -> int:
    """The smallest of ``BIT_DEPTHS`` (or, beyond 16, the exact count) whose range holds
    ``high``."""
    bits = max(int(high).bit_length(), 1)
    return next((depth for depth in BIT_DEPTHS if bits <= depth), bits)


def to_uint8_rgb(array: np.ndarray, source: str | None = None) -> tuple[np.ndarray, list[str]]:
    """Convert a decoded image array to uint8 RGB, describing every conversion made.

    Accepted: (H, W) or (H, W, 1|2|3|4) of bool, integer or finite float values. Integers up
    to 255 are kept, whatever their dtype; larger ones are read at the smallest camera bit depth
    that holds their maximum (10, 12, 14 or 16 bits, or more: 0..2**bits - 1), so 12-bit data in
    a 16-bit container keep their brightness. Floats are read as 0..1 when their maximum is at
    most ``FLOAT_OVERSHOOT`` (interpolation overshoots 1 a little), as 0..255 up to 255 times
    that, by the integer rule beyond (by their maximum past 32 bits). Values outside the range
    are clipped, and counted in a note.

    Raises:
        ImageReadError: other ranks, channel counts or dtypes, empty arrays, NaN or Inf.
    """
    array = np.asarray(array)
    if source is None:
        source = f"array of dtype {array.dtype}, shape {array.shape}"
    notes: list[str] = []
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(f"{source}: shape {array.shape}; expected (H, W) or (H, W, 1|2|3|4)")
    if array.size == 0:
        raise ImageReadError(f"{source}: empty image of shape {array.shape}; expected H, W >= 1")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
        notes.append("converted boolean image to 0/255")
    if array.dtype == np.uint8:
        pass
    elif np.issubdtype(array.dtype, np.integer):
        low, high, dtype = int(array.min()), int(array.max()), array.dtype
        if high > 255:
            bits = bit_depth(high)
            top = 2**bits - 1
            array = np.round(np.clip(array.astype(np.float64), 0, top) * (255.0 / top))
            notes.append(f"rescaled {bits}-bit (0..{top}) integer image to 8 bits")
        if low < 0:
            notes.append(f"clipped negative values (min {low}) of a {dtype} image to 0")
        array = np.clip(array, 0, 255).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ImageReadError(f"{source}: float image contains NaN or Inf values; "
                                 "expected finite values in 0..1 or 0..255")
        values = array.astype(np.float64)
        peak = float(values.max())
        if peak <= FLOAT_OVERSHOOT:
            top = 1.0
        elif peak <= 255.0 * FLOAT_OVERSHOOT:
            top = 255.0
        elif peak < 2.0**32:
            top = float(2**bit_depth(int(np.ceil(peak))) - 1)
        else:
            top = peak
        outside = int(np.count_nonzero((values < 0) | (values > top)))
        array = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
        notes.append(f"converted float image (range 0..{top:g}) to 8 bits")
        if outside:
            notes.append(f"clipped {outside} value(s) outside 0..{top:g}")
    else:
        raise ImageReadError(f"{source}: unsupported dtype {array.dtype}; "
                             "expected bool, integer or float")
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


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# mkstemp creates 0600 files; outputs get the permissions a plain open() would have given them.
_FILE_MODE = _default_mode()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) for a writer that takes a file name;
    renamed onto ``path`` only when the block succeeds, removed otherwise.

    Readers of ``path`` see the old file or the complete new one, never a partial one, even if
    the process is killed mid-write (a stale ``.NAME.*.tmp`` file may then remain; it is never
    read). OS errors name ``path``.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}",
                                   dir=path.parent)
        os.close(fd)
        os.chmod(tmp, _FILE_MODE)
    except OSError as err:
        raise _naming(err, path) from err
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise _naming(err, path) from err
        raise


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; rename it onto ``path`` only on success."""
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); where directories cannot be opened, skip."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _naming(err: OSError, path: Path) -> OSError:
    """The same kind of OSError (ENOSPC, EACCES, ...) with a message naming the output."""
    if err.errno is None:
        return OSError(f"cannot write {path}: {err}")
    return OSError(err.errno, f"cannot write {path}: {os.strerror(err.errno)}")


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_output(path, "w") as handle:
        handle.write(text)


def atomic_write_csv(path: str | Path, fields: Sequence[str], rows: Iterable[dict]) -> None:
    """Write dict rows as CSV with a header of ``fields``, atomically.

    Raises:
        ValueError: a row has a key outside ``fields``.
    """
    with atomic_output(path, "w") as handle:
        # The temporary file is opened in text mode without newline=""; a "\n" terminator lets
        # that mode write the platform's line ending instead of doubling csv's "\r\n" on Windows.
        writer = csv.DictWriter(handle, fieldnames=list(fields), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG, atomically."""
    path = Path(path)
    with atomic_output(path) as handle:
        Image.fromarray(np.ascontiguousarray(array)).save(handle, format="PNG")
