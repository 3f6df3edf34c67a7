"""Inference at the magnification a model was trained at (numpy and scikit-image only).

Another scanner or objective shows cells larger or smaller than the training images did. The
training zoom (0.5x-2x by default) covers part of that; beyond it, ``unet-keras predict --scale``
resamples each image before the model and the probabilities back to the image's own grid after:

- a number: every image by that factor (2: the model sees cells twice as large);
- ``auto``: a first pass at the image's own size finds the cells; when their median equivalent
  diameter is more than ``AUTO_TOLERANCE`` times off the training cells' (``cell_diameter`` in
  the model's config, measured on its training masks), the image is resampled so that the two
  match and predicted again. Otherwise the first pass stands, so images at the training
  magnification cost one pass and come out unchanged. A first pass that calls for enlarging
  is checked first: cells far larger than any the model trained on come out in fragments, which
  look like small cells; shrunken views (``SHRINK_CHECKS``) that show larger cells at the
  training size win over the enlargement. A first pass that finds no cell at all is checked
  too: cells far smaller than the training ones (a third of their size, say) can vanish from
  the model's view, and enlarged views (``ENLARGE_CHECKS``) that show cells at the training
  size are taken instead; where none does, the first pass stands.

Resampling is bilinear and anti-aliased when shrinking, as in the robustness benchmark's zoom.
Works on any one-image probability function: the Keras model's or the ONNX runtime's.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Sequence

import numpy as np
from skimage.measure import label as connected_components
from skimage.measure import regionprops
from skimage.transform import resize

from unet_keras.image_io import to_uint8_rgb

log = logging.getLogger(__name__)

ProbabilityFn = Callable[[np.ndarray], np.ndarray]

# Dataset 1's whole cells have equivalent diameters from 0.73x (5th percentile) to 1.18x (95th)
# their median: sizes within this factor of the reference are the cell types' own spread, and
# inside the training zoom besides.
AUTO_TOLERANCE = 1.4
SCALE_LIMITS = (0.25, 4.0)
# Enlarging stops at this many pixels (the 8000 x 8000 image whose tiled inference peaks at
# 1.5 GB): a large smear of small cells would otherwise be resampled to 16x its pixels.
MAX_SCALED_PIXELS = 8000 * 8000
# Objects narrower than this fraction of the widest are fragments or debris, not cells to size.
_MIN_WIDTH_FRACTION = 0.5
# Shrunken views tried when a first pass calls for enlarging (a factor sqrt(2) apart, so one
# of them brings cells 1.4-5.7x the training size to within AUTO_TOLERANCE of it).
SHRINK_CHECKS = (0.25, 0.35, 0.5, 0.7)
# Enlarged views tried when a first pass finds no cell (a factor sqrt(2) apart, so one of them
# brings cells 0.18-0.7x the training size to within AUTO_TOLERANCE of it).
ENLARGE_CHECKS = (1.4, 2.0, 2.8, 4.0)


class ScaleError(ValueError):
    """A scale request that cannot be served (bad factor, model without a reference size)."""


def parse_scale(text: str) -> float | str:
    """``"auto"`` or a factor in ``SCALE_LIMITS`` from the command line's ``--scale``."""
    if text == "auto":
        return text
    try:
        factor = float(text)
    except ValueError:
        factor = float("nan")
    if not SCALE_LIMITS[0] <= factor <= SCALE_LIMITS[1]:
        raise ScaleError(f"--scale {text!r}: expected 'auto' or a factor from {SCALE_LIMITS[0]} "
                         f"to {SCALE_LIMITS[1]} (2: cells drawn twice as large)")
    return factor


def equivalent_diameters(mask: np.ndarray, min_area: float = 0) -> tuple[list[float], list[float]]:
    """Equivalent diameters (px) of a boolean mask's objects of at least ``min_area`` pixels:
    (those clear of the image edge, those touching it)."""
    clear, cut = [], []
    height, width = mask.shape
    for region in regionprops(connected_components(mask, connectivity=2)):
        if region.area < min_area:
            continue
        top, left, bottom, right = region.bbox
        touches = top == 0 or left == 0 or bottom == height or right == width
        (cut if touches else clear).append(float(region.equivalent_diameter_area))
    return clear, cut


def training_cell_diameter(masks: Iterable[np.ndarray], min_area: float = 0) -> float:
    """Median equivalent diameter (px) of the whole cells (label > 0) of training label maps;
    cells cut by the image edge count only when no cell is clear of it."""
    clear, cut = [], []
    for mask in masks:
        a, b = equivalent_diameters(np.asarray(mask) > 0, min_area)
        clear += a
        cut += b
    sizes = clear or cut
    if not sizes:
        raise ScaleError("no cells in the training masks: cannot measure a reference cell size")
    return float(np.median(sizes))


def resample(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, C) float array resampled to ``shape`` (bilinear; anti-aliased when shrinking)."""
    shrinking = shape[0] < array.shape[0] or shape[1] < array.shape[1]
    return resize(array, (*shape, array.shape[2]), order=1, mode="reflect",
                  anti_aliasing=shrinking, preserve_range=True).astype(np.float32)


def scaled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def within_pixel_bound(shape: tuple[int, ...], factor: float) -> bool:
    """Whether resampling by ``factor`` keeps the image within ``MAX_SCALED_PIXELS`` (shrinking
    always does)."""
    return factor <= 1.0 or shape[0] * shape[1] * factor**2 <= MAX_SCALED_PIXELS


def bounded_factor(shape: tuple[int, ...], factor: float) -> float:
    """``factor``, lowered where needed so the resampled image has at most ``MAX_SCALED_PIXELS``
    (never below 1: an image already that large is not enlarged)."""
    if within_pixel_bound(shape, factor):
        return factor
    pixels = shape[0] * shape[1]
    bounded = max(1.0, float(np.sqrt(MAX_SCALED_PIXELS / pixels)))
    log.warning("a %dx%d image enlarged %.2fx would have %.0f Mpx: enlarged %.2fx instead "
                "(at most %d Mpx)", shape[1], shape[0], factor, pixels * factor**2 / 1e6,
                bounded, MAX_SCALED_PIXELS // 10**6)
    return bounded


def predict_at_scale(fn: ProbabilityFn, image: np.ndarray, factor: float) -> np.ndarray:
    """``fn``'s probabilities for ``image`` resampled by ``factor``, on the image's own grid.

    The resampled image is rounded to uint8, as a file scanned at that magnification would be.
    """
    rgb, _ = to_uint8_rgb(np.asarray(image))
    if factor == 1.0:
        return fn(rgb)
    scaled = resample(rgb.astype(np.float32), scaled_shape(rgb.shape, factor))
    prob = fn(np.round(np.clip(scaled, 0, 255)).astype(np.uint8))
    return np.clip(resample(prob, rgb.shape[:2]), 0.0, 1.0)


def cell_size(prob: np.ndarray, threshold: float) -> float | None:
    """The cells' size (px) in a probability map, or None when it finds none.

    Measured: the median equivalent diameter of the objects at least half as wide as the
    widest, so that fragments and debris (which would call for a large zoom) do not count.
    Objects clear of the edge are measured; cut ones only without them (their size then
    understates the cell, so a factor made from it errs towards less change).
    """
    clear, cut = equivalent_diameters(prob[..., 0] > threshold)
    sizes = np.asarray(clear or cut)
    if not sizes.size:
        return None
    return float(np.median(sizes[sizes >= _MIN_WIDTH_FRACTION * sizes.max()]))


class ScaledPredictor:
    """A one-image probability function that runs ``fn`` at a fixed or automatic scale.

    Args:
        fn: one image -> probabilities (H, W, C) on the image's grid.
        scale: a factor, or ``"auto"``.
        reference: the training cells' median equivalent diameter (px); needed by ``"auto"``.
        threshold: the whole-cell threshold that makes the first pass's mask.
        tolerance: ``"auto"`` resamples only when the estimated factor lies outside
            [1 / tolerance, tolerance].
    Attributes:
        factors: the factor applied to each image so far, in call order (1.0: none); an
            enlargement is bounded by ``MAX_SCALED_PIXELS`` (logged when it is).
    """

    def __init__(self, fn: ProbabilityFn, scale: float | str, reference: float = 0.0,
                 threshold: float = 0.5, tolerance: float = AUTO_TOLERANCE) -> None:
        if scale == "auto" and not reference > 0:
            raise ScaleError("--scale auto needs the model's training cell size (cell_diameter "
                             "in its config, recorded by `unet-keras train` and `unet-keras "
                             "tune`); this model has none: run `unet-keras tune --model RUN`, or "
                             "give --scale a factor")
        if scale != "auto":
            scale = parse_scale(str(scale))
        self.fn, self.scale, self.reference = fn, scale, float(reference)
        self.threshold, self.tolerance = float(threshold), float(tolerance)
        self.factors: list[float] = []

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.scale != "auto":
            factor = bounded_factor(np.shape(image), float(self.scale))
            self.factors.append(factor)
            return predict_at_scale(self.fn, image, factor)
        prob = self.fn(image)
        size = cell_size(prob, self.threshold)
        if size is None:
            # Enlarging never goes past the pixel bound; views beyond it are not tried (nor
            # logged as lowered: bounded_factor's warning is for an enlargement that happens).
            views = [f for f in ENLARGE_CHECKS if within_pixel_bound(prob.shape, f)]
            smaller = self._view_at_training_size(image, views)
            if smaller is not None:
                log.info("first pass found no cell: cells at the training size at %.2fx",
                         smaller[0])
            factor, prob = smaller or (1.0, prob)
            self.factors.append(factor)
            return prob
        # The pixel bound applies to the enlargement itself, after the tolerance test and the
        # check for fragments (bounding first took a capped 1.2x for "within tolerance").
        factor = float(np.clip(self.reference / size, *SCALE_LIMITS))
        if 1 / self.tolerance <= factor <= self.tolerance:
            self.factors.append(1.0)
            return prob
        if factor > 1.0:
            # A model meets cells far larger than its training crops only in pieces: a first
            # pass over them measures fragments and calls for enlarging, which makes them
            # larger still. Fragments do not add up to a larger cell, so a larger cell at the
            # training size in a shrunken view is the image's cell. Small cells stay small
            # when shrunk: nothing there.
            larger = self._view_at_training_size(image, SHRINK_CHECKS,
                                                 wider_than=self.tolerance * size)
            if larger is not None:
                log.info("first pass found fragments: cells at the training size at %.2fx",
                         larger[0])
                self.factors.append(larger[0])
                return larger[1]
            factor = bounded_factor(prob.shape, factor)
            if factor == 1.0:  # an image already at the pixel bound is not enlarged
                self.factors.append(1.0)
                return prob
        log.info("cells %.2fx the training size: predicting again at %.2fx", 1 / factor, factor)
        self.factors.append(factor)
        return predict_at_scale(self.fn, image, factor)

    def _view_at_training_size(self, image: np.ndarray, factors: Sequence[float],
                               wider_than: float = 0.0) -> tuple[float, np.ndarray] | None:
        """(factor, probabilities) of the view among ``factors`` that shows cells at the training
        size (within ``tolerance``; the closest to it when several do), or None when none does.

        Only cells wider than ``wider_than`` px (measured on the image's own grid) count.
        """
        best = None
        for factor in factors:
            prob = predict_at_scale(self.fn, image, factor)
            found = cell_size(prob, self.threshold)
            if found is None or found <= wider_than:
                continue
            miss = abs(np.log(self.reference / (found * factor)))
            if miss <= np.log(self.tolerance) and (best is None or miss < best[0]):
                best = (miss, factor, prob)
        return None if best is None else (best[1], best[2])
