"""The one preprocessing path shared by training, Keras inference and ONNX inference (numpy only).

Contract: the model takes float32 NHWC RGB in [0, 1], with height and width multiples of
``2**depth``. Images of other sizes are padded by reflection and the output is cropped back.
"""

from __future__ import annotations

import numpy as np

from unet_keras.image_io import ImageReadError, to_uint8_rgb

PREPROCESSING_CONTRACT = (
    "input 'image': float32 NHWC RGB scaled to [0, 1] (uint8 / 255); height and width padded by "
    "reflection to a multiple of 2**depth; output 'probability': float32 NHWC sigmoid "
    "probabilities, channels whole cell[, nucleus], cropped back to the input size"
)


def to_model_input(image: np.ndarray) -> np.ndarray:
    """Any decoded image array -> float32 (H, W, 3) in [0, 1].

    uint8 is divided by 255; other dtypes and channel counts go through the same conversion
    as image files (``to_uint8_rgb``), so every path sees identical numbers.

    Raises:
        ImageReadError: wrong rank or channel count, empty arrays, NaN/Inf values.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ImageReadError(f"array of shape {image.shape}: expected (H, W) or (H, W, C)")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        image, _ = to_uint8_rgb(image)  # converts, or refuses (empty, NaN, ...) naming why
    return image.astype(np.float32) * np.float32(1.0 / 255.0)


def pad_to_multiple(image: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad (H, W, C) or (N, H, W, C) so H and W are multiples of ``multiple``.

    Returns:
        (padded, (H, W)): the original height and width, for ``crop_to``.
    """
    h, w = image.shape[-3], image.shape[-2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return image, (h, w)
    pad = [(0, 0)] * image.ndim
    pad[-3] = (0, ph)
    pad[-2] = (0, pw)
    # Reflection needs the padding to be smaller than the axis; fall back to edge for tiny images.
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(image, pad, mode=mode), (h, w)


def crop_to(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Undo ``pad_to_multiple`` on a (H, W, C) or (N, H, W, C) array."""
    h, w = size
    return array[..., :h, :w, :]


def mask_targets(label_map: np.ndarray, out_channels: int) -> np.ndarray:
    """Label map (0 background, 1 cytoplasm, 2 nucleus) -> float32 targets (..., out_channels).

    Channel 0 is the whole cell (label > 0); channel 1, when present, is the nucleus.
    """
    cell = label_map > 0
    if out_channels == 1:
        return cell[..., None].astype(np.float32)
    return np.stack([cell, label_map == 2], axis=-1).astype(np.float32)
