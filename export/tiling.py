"""Tiled inference for images larger than a tile, equal to whole-image inference (numpy only).

Why tiles agree with the whole image: the U-Net is translation-equivariant for shifts that are
multiples of ``2**depth`` (the pooling grid), and an output pixel depends only on inputs within
its receptive field. So tiles start at multiples of ``2**depth`` of the padded image, and a tile's
prediction is used only at least ``receptive_radius(depth)`` pixels inside its cut edges, where the
tile's own zero padding cannot reach. Sides on the image border are used up to the border: the
whole image has that same border. Between the unused margin and the fully trusted interior the
weight rises on a raised-cosine ramp, so overlapping tiles cross-fade smoothly and, where two
tiles overlap by exactly ``2 * margin + ramp``, their weights sum to one.

Memory: the output probability map (float32, H x W x C) is the accumulator. Tile weights are
products of 1-D row and column profiles, so their sum over tiles is the outer product of two 1-D
sums and is never stored as an image. Beyond the output, one tile's input and output are held.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from unet_keras.preprocess import to_model_input

MIN_RAMP = 16
DEFAULT_TILE = 1024
NORMALIZE_ROWS = 256


def receptive_radius(depth: int) -> int:
    """Upper bound, in input pixels, on how far an output pixel of ``build_unet`` looks.

    Each 3x3 convolution at scale ``s`` (pixels per feature) adds ``s``; each 2x2 pooling or
    2x2 transposed convolution adds at most ``s`` of the finer scale. Two convolutions per block.
    Depth 4: 122 (measured by perturbing single pixels: 102).
    """
    radius, scale = 0, 1
    for _ in range(depth):
        radius += 2 * scale + scale  # encoder block, pooling
        scale *= 2
    radius += 2 * scale  # bottleneck
    for _ in range(depth):
        scale //= 2
        radius += scale + 2 * scale  # upsampling, decoder block
    return radius


def default_overlap(depth: int) -> int:
    """The smallest overlap (a multiple of ``2**depth``) that keeps tiled inference exact."""
    multiple = 2**depth
    return -(-(2 * receptive_radius(depth) + MIN_RAMP) // multiple) * multiple


def default_tile(depth: int) -> int:
    """``DEFAULT_TILE``, or for models whose exact overlap reaches it (depth 6 and 7) twice
    that overlap (a multiple of ``2**depth``), so each tile moves on by the overlap."""
    overlap = default_overlap(depth)
    if DEFAULT_TILE > overlap:
        return DEFAULT_TILE
    return 2 * overlap


def tile_origins(length: int, tile: int, step: int) -> list[int]:
    """Tile starts covering ``[0, length)``; the last tile is moved back to end at ``length``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def axis_weights(start: int, stop: int, length: int, margin: int, ramp: int) -> np.ndarray:
    """1-D weights of a tile spanning ``[start, stop)`` of an axis of ``length`` (padded) pixels.

    Zero within ``margin`` of a cut edge, a raised-cosine ramp over the next ``ramp`` pixels, one
    inside; no taper at the image's own borders.
    """
    size = stop - start
    d = np.arange(size, dtype=np.float64)
    weights = np.ones(size)
    for distance, cut in ((d, start > 0), (size - 1 - d, stop < length)):
        if cut:
            t = np.clip((distance - margin + 0.5) / ramp, 0.0, 1.0)
            weights *= np.where(distance < margin, 0.0, np.sin(0.5 * np.pi * t) ** 2)
    return weights


def padded_indices(height: int, width: int, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """Source row and column of each pixel of the image as ``pad_to_multiple`` pads it.

    ``image[np.ix_(rows, cols)]`` equals ``pad_to_multiple(image, multiple)[0]`` (a test checks
    it), so a tile can be cut from the padded image without padding the whole image.
    """
    hp, wp = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    # Reflection, or edge values when the image is too small to reflect, as pad_to_multiple does.
    mode = "reflect" if hp - height < height and wp - width < width else "edge"
    return (np.pad(np.arange(height), (0, hp - height), mode=mode),
            np.pad(np.arange(width), (0, wp - width), mode=mode))


def tile_predict(run: Callable[[np.ndarray], np.ndarray], image: np.ndarray, depth: int,
                 out_channels: int, tile: int, overlap: int | None = None) -> np.ndarray:
    """Probabilities (H, W, C) float32 of a uint8 RGB image, predicted tile by tile.

    Args:
        run: float32 (1, h, w, 3) with h, w multiples of ``2**depth`` -> (1, h, w, C).
        image: uint8 (H, W, 3).
        depth: the model depth; tiles align to ``2**depth`` and keep clear of its receptive field.
        out_channels: C.
        tile: tile side, a multiple of ``2**depth``.
        overlap: overlap of neighbouring tiles, a multiple of ``2**depth`` below ``tile``;
            default ``default_overlap(depth)``, the smallest that is exact. A smaller overlap
            shrinks the unused margin below the receptive field: faster, no longer exact.
    Returns:
        float32 (H, W, C), equal to whole-image inference up to float rounding when exact.
    """
    multiple = 2**depth
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image {image.dtype} {image.shape}; expected uint8 (H, W, 3)")
    overlap = default_overlap(depth) if overlap is None else overlap
    if tile % multiple or overlap % multiple or not 0 <= overlap < tile:
        raise ValueError(f"tile={tile}, overlap={overlap}; expected multiples of {multiple} "
                         "with 0 <= overlap < tile")
    margin = min(receptive_radius(depth), max(0, (overlap - MIN_RAMP) // 2))
    ramp = max(1, overlap - 2 * margin)
    h, w = image.shape[:2]
    rows, cols = padded_indices(h, w, multiple)
    hp, wp = len(rows), len(cols)
    row_starts = tile_origins(hp, tile, tile - overlap)
    col_starts = tile_origins(wp, tile, tile - overlap)
    row_total, col_total = np.zeros(hp), np.zeros(wp)
    for r in row_starts:
        r1 = min(r + tile, hp)
        row_total[r:r1] += axis_weights(r, r1, hp, margin, ramp)
    for c in col_starts:
        c1 = min(c + tile, wp)
        col_total[c:c1] += axis_weights(c, c1, wp, margin, ramp)
    if row_total[:h].min() <= 0 or col_total[:w].min() <= 0:
        raise ValueError(f"tile={tile}, overlap={overlap} leave pixels without a tile; "
                         "use a larger overlap")

    out = np.zeros((h, w, out_channels), np.float32)
    for r in row_starts:
        r1 = min(r + tile, hp)
        wy = axis_weights(r, r1, hp, margin, ramp).astype(np.float32)
        keep_r = min(r1, h) - r
        for c in col_starts:
            c1 = min(c + tile, wp)
            wx = axis_weights(c, c1, wp, margin, ramp).astype(np.float32)
            keep_c = min(c1, w) - c
            x = to_model_input(image[np.ix_(rows[r:r1], cols[c:c1])])
            prob = run(x[None])[0, :keep_r, :keep_c]
            weight = wy[:keep_r, None] * wx[None, :keep_c]
            out[r:r + keep_r, c:c + keep_c] += prob * weight[..., None]
    col_total = col_total[:w].astype(np.float32)
    for r in range(0, h, NORMALIZE_ROWS):
        r1 = min(r + NORMALIZE_ROWS, h)
        out[r:r1] /= (row_total[r:r1, None].astype(np.float32) * col_total[None, :])[..., None]
        # float32 rounding of the weighted sum leaves overlap pixels a few ulp off: keep 0..1.
        np.clip(out[r:r1], 0.0, 1.0, out=out[r:r1])
    return out


def is_exact(depth: int, overlap: int) -> bool:
    """Whether ``overlap`` keeps every used tile pixel clear of the receptive field."""
    return max(0, (overlap - MIN_RAMP) // 2) >= receptive_radius(depth)
