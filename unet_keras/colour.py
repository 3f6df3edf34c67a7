"""Inference on another stain or scanner's colours (numpy and scikit-image only).

A model meets slides stained or lit otherwise than its training images. Dataset 1 holds two
such batches: images 1-200 on a yellow background, 201-300 on a white one with a purple stain.
Trained on the first and tested on the second, the default recipe scored nucleus Dice 0.66
(0.95 on those images when both batches are trained on); the other way round, 0.75
(``benchmarks/results/holdout-white``, ``holdout-yellow``). ``predict --colour`` answers it:

- ``auto``: each image's colour statistics (mean and standard deviation of L*, a*, b*) are
  compared with those of the training images (``colour_reference`` in the model's config,
  measured on them by ``unet-keras train`` and ``tune``). An image further from them than
  ``GATE_QUANTILE`` of the training images (Mahalanobis distance, each training image measured
  against the others) is mapped towards the training images' average statistics before the
  model (Reinhard's colour transfer, in L*a*b*): at distance d beyond the gate g, onto the
  statistics at g**2 / d on the line to the average (inversion in the gate's sphere), so an
  image just past the gate barely changes and a far one lands near the average. The others go
  in as they are, so images like the training ones come out unchanged.
- ``always``: every image is mapped onto the average; ``off``: none.

Masks and measurements stay on the input's own pixels: only the model's input changes colour.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

import numpy as np
from skimage.color import lab2rgb, rgb2lab

from unet_keras.config import COLOUR_MODES as MODES
from unet_keras.image_io import to_uint8_rgb

log = logging.getLogger(__name__)

ProbabilityFn = Callable[[np.ndarray], np.ndarray]
# Training images further from their own mean than this quantile of them are rare: an image
# beyond it is taken for another stain or scanner.
GATE_QUANTILE = 0.99
_FEATURES = 6  # L*, a*, b* means, then their standard deviations
# Statistics of larger images are taken on a regular grid of about this many pixels, and they
# are mapped this many rows at a time: a mosaic's float L*a*b* copy would take gigabytes.
MAX_STAT_PIXELS = 1_000_000
_ROWS = 256
# The most a mapping stretches (or shrinks) a channel's spread. Between Dataset 1's two
# acquisition batches it takes at most 1.92x; a near-blank field (sd of a grey level or two)
# would otherwise be stretched to full contrast, its noise and dust taken for cells.
MAX_GAIN = 3.0


class ColourError(ValueError):
    """A colour request that cannot be served (bad mode, model without a colour reference)."""


def colour_features(image: np.ndarray) -> np.ndarray:
    """(6,) float64: the mean and standard deviation of L*, a* and b* over an RGB image (over
    a regular grid of at most ``MAX_STAT_PIXELS`` of its pixels, for large images)."""
    rgb, _ = to_uint8_rgb(np.asarray(image))
    step = max(1, int(np.ceil(np.sqrt(rgb.shape[0] * rgb.shape[1] / MAX_STAT_PIXELS))))
    lab = rgb2lab(rgb[::step, ::step]).reshape(-1, 3)
    return np.concatenate([lab.mean(0), lab.std(0)])


def fit_reference(images: Iterable[np.ndarray], quantile: float = GATE_QUANTILE) -> dict:
    """The colour reference of training images: their features' mean and covariance, and the
    gate (the ``quantile`` of their leave-one-out Mahalanobis distances: each image's from the
    others'), as JSON-ready lists. {} (no reference: ``--colour auto`` is then refused) for
    ``_FEATURES + 1`` images or fewer: each leave-one-out fit needs more than ``_FEATURES``
    images for a covariance (with 7, the 6-image fits were singular and the gate so wide that
    ``auto`` never mapped an image).
    """
    features = np.stack([colour_features(image) for image in images])
    if len(features) <= _FEATURES + 1:
        log.warning("%d training images: too few for a colour reference (more than %d needed)",
                    len(features), _FEATURES + 1)
        return {}
    # Each image's distance from the others' statistics: an image's own distance from a fit
    # that includes it understates how far a new image of the same batch falls.
    held_out = [distance(features[i], _fit(np.delete(features, i, axis=0)))
                for i in range(len(features))]
    return {**_fit(features), "gate": float(np.quantile(held_out, quantile)),
            "n_images": len(features)}


def _fit(features: np.ndarray) -> dict:
    # A small ridge keeps the inverse finite when images barely vary in some statistic.
    cov = np.cov(features.T) + 1e-6 * np.eye(_FEATURES)
    return {"mean": features.mean(0).tolist(), "cov": cov.tolist()}


def check_reference(reference: dict) -> list[str]:
    """What is wrong with a config's ``colour_reference`` ({} is none: fine)."""
    if not reference:
        return []
    try:
        ok = (np.shape(reference["mean"]) == (_FEATURES,)
              and np.shape(reference["cov"]) == (_FEATURES, _FEATURES)
              and float(reference["gate"]) > 0)
    except (KeyError, TypeError, ValueError):
        ok = False
    return [] if ok else [f"colour_reference (expected {{}} or mean: {_FEATURES} numbers, cov: "
                          f"{_FEATURES}x{_FEATURES}, gate > 0, as `unet-keras tune` records)"]


def distance(features: np.ndarray, reference: dict) -> float:
    """Mahalanobis distance of an image's colour features from the training images'."""
    diff = np.asarray(features) - np.asarray(reference["mean"])
    return float(np.sqrt(diff @ np.linalg.solve(np.asarray(reference["cov"]), diff)))


def normalise(image: np.ndarray, reference: dict, target: np.ndarray | None = None,
              features: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB ``image`` with its L*a*b* mean and sd (``features``, measured when not given)
    mapped onto ``target`` (6 statistics; default the training images' average): Reinhard et
    al. 2001, colour transfer, each channel's spread scaled by at most ``MAX_GAIN`` either way."""
    rgb, _ = to_uint8_rgb(np.asarray(image))
    features = colour_features(rgb) if features is None else np.asarray(features)
    mean, sd = features[:3], np.maximum(features[3:], 1e-6)
    target = np.asarray(reference["mean"] if target is None else target)
    gain = np.clip(target[3:] / sd, 1.0 / MAX_GAIN, MAX_GAIN)
    out = np.empty_like(rgb)
    for top in range(0, rgb.shape[0], _ROWS):  # in bands: float Lab of a whole mosaic is GBs
        lab = (rgb2lab(rgb[top:top + _ROWS]) - mean) * gain + target[:3]
        out[top:top + _ROWS] = np.round(np.clip(lab2rgb(lab), 0.0, 1.0) * 255.0)
    return out


def auto_target(features: np.ndarray, reference: dict) -> np.ndarray | None:
    """Where ``auto`` maps an image's statistics: None (left alone) within the gate; beyond it,
    the inversion of the point in the gate's sphere (Mahalanobis distance d -> gate**2 / d, on
    the line to the training average). Continuous at the gate, so an image just past it barely
    changes, and the further out an image lies, the nearer the average it is brought."""
    d = distance(features, reference)
    if d <= reference["gate"]:
        return None
    mean = np.asarray(reference["mean"])
    return mean + (np.asarray(features) - mean) * (reference["gate"] / d) ** 2


def parse_mode(text: str) -> str:
    if text not in MODES:
        raise ColourError(f"--colour {text!r}: expected one of {', '.join(MODES)}")
    return text


class ColourNormaliser:
    """A one-image probability function that maps out-of-distribution colours first.

    Args:
        fn: one image -> probabilities (H, W, C) on the image's grid (None: ``map`` only).
        mode: "auto" (map images beyond the reference's gate), "always" or "off".
        reference: the model's ``colour_reference``; needed unless ``mode`` is "off".
    Attributes:
        normalised: whether each image so far was mapped, in call order.
    """

    def __init__(self, fn: ProbabilityFn, mode: str, reference: dict) -> None:
        parse_mode(mode)
        if mode != "off" and not reference:
            raise ColourError(f"--colour {mode} needs the model's training colour statistics "
                              "(colour_reference in its config, recorded by `unet-keras train` "
                              "and `unet-keras tune`); this model has none: run `unet-keras "
                              "tune --model RUN`, or give --colour off")
        self.fn, self.mode, self.reference = fn, mode, reference
        self.normalised: list[bool] = []

    def map(self, image: np.ndarray) -> np.ndarray:
        """``image`` as the model will see it: mapped onto the training colours, or as it is."""
        target = features = None
        if self.mode == "always":
            target = np.asarray(self.reference["mean"])
        elif self.mode == "auto":
            features = colour_features(image)
            target = auto_target(features, self.reference)
        self.normalised.append(target is not None)
        if target is None:
            return image
        log.info("colours unlike the training images': mapped towards their average")
        return normalise(image, self.reference, target, features)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.fn(self.map(image))
