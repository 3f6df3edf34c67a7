"""The fixed, controlled domain shifts of ``benchmarks.robustness``: what each does to a test
image and its mask.

The perturbations have no random draws, so they are the same in every invocation. Colour ones
are the training augmentation's own functions (``stain_jitter``, ``colour_jitter``) at fixed
severities beyond the training ranges, and leave the mask untouched. Zoom rescales the whole
image (bilinear, anti-aliased when shrinking), as another scanner's magnification would, rather
than the training warp's crop of a 128 px window; the mask goes through the same resampling, one
label at a time (see ``perturb``), so it stays on the image to a tenth of a pixel.
Each perturbed image is rounded to uint8, as a file from another scanner would be.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from typing import Sequence

import numpy as np

from unet_keras.data.augment import (
    STAIN_SCALE, STAIN_SHIFT, AugmentParams, colour_jitter, stain_jitter,
)
from unet_keras.preprocess import to_model_input


class RobustnessError(ValueError):
    """Runs, labels or conditions that cannot be compared; the message names the path or value."""


@dataclasses.dataclass(frozen=True)
class Condition:
    """One fixed perturbation: ``kind`` picks the function, ``params`` are its exact arguments."""

    name: str
    kind: str  # identity, zoom, stain, colour, blur, jpeg, compound (params["steps"]: names)
    params: dict
    description: str


# Training draws HED stain scale in 1 +/- STAIN_SCALE and shift in +/- STAIN_SHIFT, hue in
# +/- 0.03 turns, brightness in +/- 0.06 and contrast in 0.85-1.15: the severities below are
# three times the stain-scale half-width and beyond the colour ranges, so every model meets
# colours it was not trained on; the stain shift sits at the training edge.
def _stain(name: str, channel: int, sign: int, description: str) -> Condition:
    scale, shift = [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]
    scale[channel], shift[channel] = 1 + sign * 3 * STAIN_SCALE, sign * STAIN_SHIFT
    return Condition(name, "stain", {"stain_scale": tuple(scale), "stain_shift": tuple(shift)},
                     description)


CONDITIONS: tuple[Condition, ...] = (
    Condition("identity", "identity", {}, "test images as they are"),
    *(Condition(f"zoom_{s}", "zoom", {"scale": s}, f"whole image and mask rescaled {s}x")
      for s in (0.5, 0.7, 1.5, 2.0)),
    _stain("haematoxylin_up", 0, 1, "more haematoxylin (darker, bluer nuclei)"),
    _stain("haematoxylin_down", 0, -1, "less haematoxylin (paler nuclei)"),
    _stain("eosin_up", 1, 1, "more eosin (pinker cytoplasm and red cells)"),
    _stain("eosin_down", 1, -1, "less eosin (paler cytoplasm and red cells)"),
    Condition("hue_18deg", "colour", {"hue": 0.05}, "hue turned 18 degrees about the grey axis"),
    Condition("bright_low_contrast", "colour", {"brightness": 0.1, "contrast": 0.75},
              "brighter, lower-contrast scan"),
    Condition("blur_sigma1", "blur", {"sigma": 1.0}, "Gaussian blur, sigma 1 px (defocus)"),
    Condition("jpeg_q30", "jpeg", {"quality": 30}, "JPEG round trip at quality 30"),
)
_BY_NAME = {c.name: c for c in CONDITIONS}


def _compound(name: str, steps: tuple[str, ...], description: str) -> Condition:
    """Several of ``CONDITIONS`` at once, applied in the order given (each rounding to uint8)."""
    unknown = [step for step in steps if step not in _BY_NAME]
    if unknown:
        raise RobustnessError(f"compound condition {name}: unknown steps {unknown}")
    return Condition(name, "compound", {"steps": steps}, description)


# Magnifications beyond the training zoom, for ``--scale-auto``, and another laboratory's
# images, where stain, magnification, focus, camera colour and compression all move at once
# (each step in the order a slide meets them: stain, optics, camera, file). Asked for by name
# only, so the default set (and its means) stay those of the earlier reports.
EXTRA_CONDITIONS: tuple[Condition, ...] = (
    *(Condition(f"zoom_{s}", "zoom", {"scale": s}, f"whole image and mask rescaled {s}x")
      for s in (0.35, 2.5, 3.0)),
    _compound("lab_pale_high_mag", ("eosin_down", "zoom_2.0", "jpeg_q30"),
              "paler eosin, twice the magnification, JPEG quality 30"),
    _compound("lab_dark_low_mag", ("haematoxylin_up", "zoom_0.5", "blur_sigma1"),
              "darker nuclei, half the magnification, soft focus"),
    _compound("lab_camera", ("eosin_up", "zoom_1.5", "hue_18deg", "bright_low_contrast"),
              "more eosin, 1.5x magnification, another camera's hue and exposure"),
    _compound("lab_everything", ("haematoxylin_down", "zoom_0.7", "blur_sigma1", "hue_18deg",
                                 "bright_low_contrast", "jpeg_q30"),
              "paler nuclei, 0.7x, soft focus, hue, exposure and JPEG together"),
)
GROUPS = {"zoom": ("zoom",), "stain": ("stain",), "colour_quality": ("colour", "blur", "jpeg"),
          "compound": ("compound",)}


def perturb(condition: Condition, image: np.ndarray,
            mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB image, label map) of one example under ``condition``; the identity returns both
    arrays unchanged, and only zoom changes the mask (keeping its exact labels and dtype)."""
    p = condition.params
    if condition.kind == "identity":
        return image, mask
    if condition.kind == "compound":
        for step in p["steps"]:
            image, mask = perturb(_BY_NAME[step], image, mask)
        return image, mask
    x = to_model_input(image)
    if condition.kind == "zoom":
        from skimage.transform import rescale

        # Each label's indicator goes through the image's own resampling, then the most
        # covered label wins: nearest neighbour at 0.5x and 1.5x samples exactly half-way
        # between input pixels, and its tie rule shifted the mask 0.25 px off the image.
        labels = np.unique(mask)
        resample = functools.partial(rescale, scale=p["scale"], order=1,
                                     anti_aliasing=p["scale"] < 1, channel_axis=-1)
        x = resample(x)
        cover = resample(np.stack([mask == label for label in labels], -1).astype(np.float32))
        mask = labels[np.argmax(cover, axis=-1)]
    elif condition.kind == "stain":
        x = stain_jitter(x, p["stain_scale"], p["stain_shift"])
    elif condition.kind == "colour":
        x = colour_jitter(x, AugmentParams(**p))
    elif condition.kind == "blur":
        from scipy.ndimage import gaussian_filter

        x = gaussian_filter(x, sigma=(p["sigma"], p["sigma"], 0), mode="reflect")
    elif condition.kind == "jpeg":
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(_to_uint8(x)).save(buffer, format="JPEG", quality=p["quality"])
        return np.asarray(Image.open(buffer).convert("RGB")), mask
    else:
        raise RobustnessError(f"condition {condition.name}: unknown kind {condition.kind!r}")
    return _to_uint8(x), mask


def perturb_examples(condition: Condition, examples: Sequence[dict]) -> list[dict]:
    """Examples (image, mask, image_id) of ``condition``, in the order given."""
    out = []
    for example in examples:
        image, mask = perturb(condition, example["image"], example["mask"])
        out.append({"image": image, "mask": mask, "image_id": example["image_id"]})
    return out


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def pick_conditions(text: str | None) -> tuple[Condition, ...]:
    """``"identity,zoom_0.5"`` -> those conditions; ``None`` -> all of ``CONDITIONS``."""
    if text is None:
        return CONDITIONS
    known = {c.name: c for c in CONDITIONS + EXTRA_CONDITIONS}
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise RobustnessError(f"--conditions {text!r}: unknown {unknown}; expected names from "
                              f"{list(known)}, comma-separated")
    return tuple(known[n] for n in names)
