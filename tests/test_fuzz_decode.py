"""Property-based fuzzing of image decoding and preprocessing: only ImageReadError escapes.

Random byte strings, valid images of every format with random damage (truncation, overwritten
and inserted bytes), and random arrays (shapes, dtypes, NaN/Inf) go through the same functions a
user's file goes through: ``read_rgb``, ``read_gray``, ``to_model_input``, ``pad_to_multiple``.
Each either returns a well-formed result or raises ``ImageReadError`` naming its input.
"""

import io
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from unet_keras.image_io import IMAGE_SUFFIXES, ImageReadError, read_gray, read_rgb
from unet_keras.preprocess import crop_to, pad_to_multiple, to_model_input

FUZZ_EXAMPLES = 1000
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FORMATS = {"BMP": ".bmp", "PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif"}
# Modes each format can write, so every decoder branch (palette, 16-bit, alpha...) is reached.
MODES = {"BMP": ["L", "RGB", "P", "1"], "PNG": ["L", "RGB", "RGBA", "P", "I;16", "LA", "1"],
         "JPEG": ["L", "RGB", "CMYK"], "TIFF": ["L", "RGB", "RGBA", "P", "I;16", "F", "CMYK"]}
counter = itertools.count()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _write(folder, data: bytes, suffix: str):
    path = folder / f"case{next(counter)}{suffix}"
    path.write_bytes(data)
    return path


def _check_file(path) -> str:
    """Decode both ways; return 'ok' or 'refused'. Any other exception fails the test."""
    outcomes = []
    for reader in (read_rgb, read_gray):
        try:
            result = reader(path)
        except ImageReadError as err:
            assert str(path) in str(err), f"message does not name the file: {err}"
            outcomes.append("refused")
            continue
        if reader is read_rgb:
            image, notes = result
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert image.shape[0] >= 1 and image.shape[1] >= 1
            assert all(isinstance(n, str) for n in notes)
        else:
            assert result.ndim == 2 and result.size > 0
        outcomes.append("ok")
    return outcomes[0]


def _encoded(fmt: str, mode: str, height: int, width: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (height, width)).astype(np.uint16))
    elif mode == "F":
        img = Image.fromarray(rng.random((height, width)).astype(np.float32))
    else:
        img = Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8)).convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


@FUZZ
@given(data=st.binary(max_size=4096), suffix=st.sampled_from(IMAGE_SUFFIXES + (".txt",)))
def test_random_bytes_decode_or_refuse(scratch, data, suffix):
    _check_file(_write(scratch, data, suffix))


@st.composite
def damaged_images(draw):
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(MODES[fmt]))
    data = bytearray(_encoded(fmt, mode, draw(st.integers(1, 24)), draw(st.integers(1, 24)),
                              draw(st.integers(0, 2**16))))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["truncate", "overwrite", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "truncate":
            del data[at:]
        elif kind == "overwrite" and data:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at:at + len(chunk)] = chunk
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at:at + draw(st.integers(1, 16))]
    return bytes(data), FORMATS[fmt]


@FUZZ
@given(case=damaged_images())
def test_damaged_images_decode_or_refuse(scratch, case):
    data, suffix = case
    _check_file(_write(scratch, data, suffix))


def test_damaged_images_are_mostly_refused(scratch):
    """The fuzzing above reaches the decoders: plain truncations of PNG, JPEG and TIFF files
    (whose data are compressed or checksummed, unlike raw BMP) are all refused."""
    for fmt in ("PNG", "JPEG", "TIFF"):
        data = _encoded(fmt, "RGB", 24, 24, 0)
        for cut in (0, 8, len(data) // 3, len(data) // 2, len(data) - 40):
            assert _check_file(_write(scratch, data[:cut], FORMATS[fmt])) == "refused", (fmt, cut)


DTYPES = st.sampled_from([np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32,
                          np.int64, np.uint64, np.float16, np.float32, np.float64, np.complex64])
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9)


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(DTYPES))
    shape = draw(SHAPES)
    elements = None
    if dtype.kind == "f":
        elements = st.floats(allow_nan=True, allow_infinity=True, width=8 * dtype.itemsize)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@FUZZ
@given(array=arrays(), multiple=st.sampled_from([1, 2, 4, 8, 16]))
def test_arrays_preprocess_or_refuse(array, multiple):
    try:
        x = to_model_input(array)
    except ImageReadError:
        finite = array.dtype.kind not in "fc" or np.all(np.isfinite(array))
        squeezed_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 2, 3, 4))
        # Refusal is right exactly when the input breaks the documented contract.
        assert (not squeezed_ok or array.size == 0 or not finite or array.dtype.kind == "c")
        return
    assert x.dtype == np.float32 and x.shape == array.shape[:2] + (3,)
    assert 0.0 <= x.min() and x.max() <= 1.0
    padded, size = pad_to_multiple(x, multiple)
    assert padded.shape[0] % multiple == 0 and padded.shape[1] % multiple == 0
    np.testing.assert_array_equal(crop_to(padded, size), x)
