"""Bad inputs, case by case (docs/reliability.md): image files, arrays and data directories.

Each case states the expected behaviour: refused with ``ImageReadError`` / ``DataError`` whose
message names the file and what was expected, or converted with a note that is also logged.
No Keras here: decoding and preprocessing are numpy + Pillow (the ONNX runtime uses them too).
"""

import io
import logging
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from unet_keras.data.zheng2018 import DataError, iter_examples, scan_pairs
from unet_keras.image_io import ImageReadError, read_rgb
from unet_keras.preprocess import to_model_input
from tests.test_data import write_dataset

FORMATS = {"bmp": "BMP", "png": "PNG", "jpg": "JPEG", "tif": "TIFF"}


def encoded(fmt: str, image: Image.Image | None = None) -> bytes:
    if image is None:
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png16(array: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    h, w, _ = array.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))


def damaged(ext: str, how: str) -> bytes:
    data = encoded(FORMATS[ext])
    if how == "empty":
        return b""
    if how == "truncated":
        return data[:len(data) // 2]
    if how == "corrupt_header":  # the format's magic bytes kept, the header behind them garbage
        return data[:4] + np.random.default_rng(1).integers(0, 256, 60, np.uint8).tobytes() + data[64:]
    if how == "corrupt_pixels":  # 64 zero bytes in the middle of the pixel data
        middle = len(data) // 2
        return data[:middle] + bytes(64) + data[middle + 64:]
    if how == "not_an_image":
        return b"image ID,class label\n1,3\n"
    raise ValueError(how)


@pytest.mark.parametrize("ext", sorted(FORMATS))
@pytest.mark.parametrize("how, message", [
    ("empty", "file is empty (0 bytes); expected a BMP, PNG, JPEG or TIFF image"),
    ("truncated", "not a readable image"),
    ("corrupt_header", "not a readable image"),
    ("not_an_image", "not a readable image: content is no known image format (starts with b'image ID'"),
], ids=["empty", "truncated", "corrupt_header", "not_an_image"])
def test_broken_image_files_are_refused_naming_the_file(tmp_path, ext, how, message):
    path = tmp_path / f"cell.{ext}"
    path.write_bytes(damaged(ext, how))
    with pytest.raises(ImageReadError) as caught:
        read_rgb(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


@pytest.mark.parametrize("ext, refused", [("png", True), ("bmp", False), ("jpg", False), ("tif", False)],
                         ids=["png", "bmp", "jpg", "tif"])
def test_damaged_pixel_data_is_caught_only_where_the_format_can_tell(tmp_path, ext, refused):
    """PNG checksums its data; BMP, baseline JPEG and uncompressed TIFF cannot tell damaged
    pixels from real ones, so those files decode (documented limitation)."""
    path = tmp_path / f"cell.{ext}"
    path.write_bytes(damaged(ext, "corrupt_pixels"))
    if refused:
        with pytest.raises(ImageReadError, match="not a readable image"):
            read_rgb(path)
    else:
        assert read_rgb(path)[0].shape == (40, 48, 3)


def test_content_decides_the_format_not_the_extension(tmp_path):
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(encoded("PNG"))
    assert read_rgb(path)[0].shape == (40, 48, 3)


def test_directory_named_like_an_image_is_refused(tmp_path):
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageReadError, match=r"folder\.png: cannot read file"):
        read_rgb(tmp_path / "folder.png")


def test_decompression_bomb_is_refused(tmp_path):
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b""))
    with pytest.raises(ImageReadError, match=r"huge\.png: not a readable image: too large to decode"):
        read_rgb(path)


RNG = np.random.default_rng(2)
RGB = RNG.integers(0, 256, (20, 24, 3), np.uint8)
CONVERSIONS = [  # (case, file bytes, extension, expected notes, expected image)
    ("grayscale", encoded("PNG", Image.fromarray(RGB[..., 0])), "png",
     ["converted grayscale to RGB by repeating the channel"], np.repeat(RGB[..., :1], 3, 2)),
    ("rgba", encoded("PNG", Image.fromarray(np.dstack([RGB, RGB[..., :1]]))), "png",
     ["dropped the alpha channel of an RGBA image"], RGB),
    ("palette", encoded("PNG", Image.fromarray(RGB).quantize(16)), "png",
     ["converted palette image to RGB"], None),
    ("gray16", encoded("PNG", Image.fromarray((RGB[..., 0].astype(np.uint16) * 257))), "png",
     ["rescaled 16-bit (0..65535) integer image to 8 bits",
      "converted grayscale to RGB by repeating the channel"], np.repeat(RGB[..., :1], 3, 2)),
    ("rgb16", png16(RGB.astype(np.uint16) * 257), "png",
     ["reduced a 16-bit-per-channel colour image to 8 bits"], RGB),
    ("float32", encoded("TIFF", Image.fromarray(RGB[..., 0].astype(np.float32) / 255)), "tif",
     ["converted float image (range 0..1) to 8 bits",
      "converted grayscale to RGB by repeating the channel"], np.repeat(RGB[..., :1], 3, 2)),
    ("cmyk", encoded("TIFF", Image.fromarray(RGB).convert("CMYK")), "tif",
     ["converted CMYK image to RGB"], None),
    ("bilevel", encoded("PNG", Image.fromarray(RGB[..., 0] > 127)), "png",
     ["converted 1-bit image to 8-bit grey", "converted grayscale to RGB by repeating the channel"],
     np.repeat(((RGB[..., :1] > 127) * 255).astype(np.uint8), 3, 2)),
]


@pytest.mark.parametrize("case, data, ext, notes, expected", CONVERSIONS, ids=[c[0] for c in CONVERSIONS])
def test_other_image_kinds_are_converted_and_logged(tmp_path, caplog, case, data, ext, notes, expected):
    path = tmp_path / f"{case}.{ext}"
    path.write_bytes(data)
    with caplog.at_level(logging.INFO, logger="unet_keras.image_io"):
        image, found = read_rgb(path)
    assert found == notes
    assert image.dtype == np.uint8 and image.shape == (20, 24, 3)
    if expected is not None:
        np.testing.assert_array_equal(image, expected)
    logged = [r.getMessage() for r in caplog.records]
    assert logged == [f"{path}: {note}" for note in notes]


def test_float_image_with_nan_is_refused(tmp_path):
    values = np.full((8, 8), 0.5, np.float32)
    values[3, 4] = np.nan
    path = tmp_path / "nan.tif"
    Image.fromarray(values).save(path)
    with pytest.raises(ImageReadError, match=r"nan\.tif: float image contains NaN or Inf values"):
        read_rgb(path)


@pytest.mark.parametrize("array, message", [
    (np.array([[0.1, np.nan], [0.2, 0.3]], np.float32), "float image contains NaN or Inf values"),
    (np.array([[0.1, np.inf], [0.2, 0.3]]), "float image contains NaN or Inf values"),
    (np.zeros((0, 5, 3), np.uint8), "empty image of shape (0, 5, 3)"),
    (np.zeros(7, np.uint8), "array of shape (7,): expected (H, W) or (H, W, C)"),
    (np.zeros((2, 4, 4, 3), np.uint8), "array of shape (2, 4, 4, 3): expected (H, W) or (H, W, C)"),
    (np.zeros((4, 4, 5), np.uint8), "shape (4, 4, 5); expected (H, W) or (H, W, 1|2|3|4)"),
    (np.zeros((4, 4), np.complex64), "unsupported dtype complex64; expected bool, integer or float"),
], ids=["nan", "inf", "empty", "1d", "4d", "5_channels", "complex"])
def test_bad_arrays_are_refused(array, message):
    with pytest.raises(ImageReadError) as caught:
        to_model_input(array)
    assert message in str(caught.value)


def test_arrays_of_other_dtypes_are_converted_to_the_same_numbers():
    rgb = RNG.integers(0, 256, (6, 7, 3), np.uint8)
    reference = to_model_input(rgb)
    np.testing.assert_array_equal(to_model_input(rgb.astype(np.float64) / 255), reference)
    np.testing.assert_array_equal(to_model_input(rgb.astype(np.int16)), reference)
    np.testing.assert_array_equal(to_model_input(rgb.astype(np.uint16) * 257), reference)
    np.testing.assert_array_equal(to_model_input(rgb[..., 0] > 100)[..., 0],
                                  (rgb[..., 0] > 100).astype(np.float32))


def _layout(root, case):
    folder = root / "Dataset 1"
    if case == "missing_dir":
        return root / "nowhere"
    if case == "empty_dir":
        root.mkdir(exist_ok=True)
        return root
    write_dataset(root, n=4)
    if case == "wrong_layout":  # images at the top, not in "Dataset 1/"
        for path in folder.iterdir():
            path.rename(root / path.name)
        folder.rmdir()
    elif case == "empty_folder":
        for path in folder.iterdir():
            path.unlink()
    elif case == "missing_mask":
        (folder / "002.png").unlink()
    elif case == "mask_other_size":
        Image.fromarray(np.zeros((20, 30), np.uint8)).save(folder / "003.png")
    elif case == "mask_class_indices":  # a 0/1/2 label map instead of grey 0/128/255
        mask = np.zeros((40, 40), np.uint8)
        mask[5:30, 5:30], mask[10:20, 10:20] = 1, 2
        Image.fromarray(mask).save(folder / "001.png")
    elif case == "mask_not_grey_levels":  # a photo saved as the mask
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40), np.uint8)).save(folder / "004.png")
    elif case == "mask_16_bit":
        Image.fromarray(np.full((40, 40), 128 * 257, np.uint16)).save(folder / "002.png")
    elif case == "mask_in_colour":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8)).save(folder / "002.png")
    elif case == "duplicate_id":
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "003.jpg")
    elif case == "corrupt_image":
        (folder / "001.bmp").write_bytes(b"BM" + bytes(20))
    return root


@pytest.mark.parametrize("case, message", [
    ("missing_dir", r"nowhere: data directory not found"),
    ("empty_dir", r"Dataset 1: folder not found; expected 'Dataset 1/NNN\.bmp' with masks 'NNN\.png'"),
    ("wrong_layout", r"Dataset 1: folder not found; expected 'Dataset 1/NNN\.bmp'"),
    ("empty_folder", r"Dataset 1: no images \(NNN\.bmp\) found"),
    ("missing_mask", r"002\.bmp: no mask; expected 002\.png beside it"),
    ("mask_other_size", r"003\.png: mask is 30x20 but image 003\.bmp is 40x40; expected equal sizes"),
    ("mask_class_indices", r"001\.png: mask values \[0, 1, 2\] all read as background; expected grey 0"),
    ("mask_not_grey_levels", r"004\.png: \d+% of mask pixels are not 0, 128 or 255"),
    ("mask_16_bit", r"002\.png: mask dtype uint16; expected 8-bit grey 0/128/255"),
    ("mask_in_colour", r"002\.png: expected a single-channel mask, found 3 channels"),
    ("duplicate_id", r"003\.jpg: duplicate image id '003' \(also .*003\.bmp\)"),
    ("corrupt_image", r"001\.bmp: not a readable image"),
], ids=["missing_dir", "empty_dir", "wrong_layout", "empty_folder", "missing_mask", "mask_other_size",
        "mask_class_indices", "mask_not_grey_levels", "mask_16_bit", "mask_in_colour", "duplicate_id",
        "corrupt_image"])
def test_bad_data_directories_are_refused_naming_the_path(tmp_path, case, message):
    root = _layout(tmp_path / "data", case)
    with pytest.raises(DataError, match=message):
        list(iter_examples(root, "dataset1"))


def test_anti_aliased_mask_edges_are_accepted(tmp_path):
    write_dataset(tmp_path, n=2, size=60, folder="Dataset 2", grey_edges=True)
    assert len(scan_pairs(tmp_path, "dataset2")) == 2
    assert [e["mask"].max() for e in iter_examples(tmp_path, "dataset2")] == [2, 2]


def test_integer_images_keep_their_brightness_at_their_bit_depth():
    from unet_keras.image_io import to_uint8_rgb

    rgb = np.random.default_rng(4).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    rgb[0, 0] = 255
    kept, notes = to_uint8_rgb(rgb.astype(np.uint16))  # 8-bit values in a 16-bit container
    np.testing.assert_array_equal(kept, rgb)
    assert notes == []
    twelve, notes = to_uint8_rgb(rgb.astype(np.uint16) * 16)  # a 12-bit camera: 0..4080
    assert np.abs(twelve.astype(int) - rgb).max() <= 1
    assert notes == ["rescaled 12-bit (0..4095) integer image to 8 bits"]


def test_float_images_overshooting_one_a_little_stay_0_to_1_images():
    from unet_keras.image_io import to_uint8_rgb

    rgb = np.random.default_rng(5).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    floats = rgb / 255.0
    floats[0, 0] = 1.02  # resampling overshoot
    out, notes = to_uint8_rgb(floats)
    np.testing.assert_array_equal(out[1:], rgb[1:])
    assert notes == ["converted float image (range 0..1) to 8 bits",
                     "clipped 3 value(s) outside 0..1"]


def test_grey_and_alpha_masks_read_as_their_grey_channel(tmp_path):
    from unet_keras.image_io import read_gray

    grey = np.zeros((6, 6), np.uint8)
    grey[1:5, 1:5], grey[2:4, 2:4] = 128, 255
    Image.fromarray(np.stack([grey, np.full_like(grey, 255)], axis=-1), mode="LA").save(
        tmp_path / "mask.png")
    np.testing.assert_array_equal(read_gray(tmp_path / "mask.png"), grey)


def test_palette_masks_read_as_indices_when_coloured_and_as_greys_when_grey(tmp_path):
    from unet_keras.image_io import read_gray

    indices = np.zeros((6, 6), np.uint8)
    indices[1:5, 1:5], indices[2:4, 2:4] = 1, 2
    for name, palette, expected in (
            ("coloured.png", [0, 0, 0, 255, 0, 0, 0, 255, 0], indices),  # an annotation tool's
            ("grey.png", [0, 0, 0, 128, 128, 128, 255, 255, 255], np.array([0, 128, 255])[indices])):
        image = Image.fromarray(indices, mode="P")
        image.putpalette(palette)
        image.save(tmp_path / name)
        np.testing.assert_array_equal(read_gray(tmp_path / name), expected)
