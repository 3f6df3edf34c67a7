"""Another laboratory's images: ``predict``'s handling of another magnification and stain.

``DomainAdapter`` wraps a one-image probability function with ``--colour`` (``unet_keras.colour``:
an image whose colours lie outside the training images' is mapped towards them) and ``--scale``
(``unet_keras.rescale``: cells far from the training cells' size are predicted again brought to
it). ``unet-keras predict``, ``unet-keras evaluate`` and the robustness benchmark share it, so an
image is scored through exactly what a user's prediction does.
"""

from __future__ import annotations

import numpy as np

from unet_keras.colour import ColourNormaliser
from unet_keras.config import UNetConfig
from unet_keras.inference import ProbabilityFn
from unet_keras.rescale import ScaledPredictor


def default_scale(config: UNetConfig) -> float | str:
    """``predict``'s default: "auto" where the model records its training cell size, else 1."""
    return "auto" if config.cell_diameter else 1.0


def default_colour(config: UNetConfig) -> str:
    """``predict``'s default: "auto" where the model records its training colours, else "off"."""
    return "auto" if config.colour_reference else "off"


class DomainAdapter:
    """A one-image probability function: colours mapped first (once, before any resampling),
    then the model at the chosen scale.

    Args:
        fn: one image -> probabilities (H, W, C) on the image's grid.
        config: the model's config (training cell size, colour statistics, thresholds).
        scale: a factor, "auto", or None for ``default_scale``.
        colour: "auto", "always", "off", or None for ``default_colour``.
    Raises:
        ScaleError, ColourError: "auto" asked of a model that records no reference.
    """

    def __init__(self, fn: ProbabilityFn, config: UNetConfig, scale: float | str | None = None,
                 colour: str | None = None) -> None:
        self.scale = default_scale(config) if scale is None else scale
        self.colour = default_colour(config) if colour is None else colour
        self.fn = fn
        self.scaler = (ScaledPredictor(fn, self.scale, config.cell_diameter,
                                       config.channel_thresholds()[0])
                       if self.scale != 1.0 else None)
        self.mapper = (ColourNormaliser(None, self.colour, config.colour_reference)
                       if self.colour != "off" else None)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.mapper is not None:
            image = self.mapper.map(image)
        return (self.scaler or self.fn)(image)

    @property
    def mapped(self) -> list[bool]:
        """Whether each image so far had its colours mapped (empty with colour "off")."""
        return list(self.mapper.normalised) if self.mapper else []

    @property
    def factors(self) -> list[float]:
        """The scale factor each image so far was predicted at (empty at scale 1)."""
        return list(self.scaler.factors) if self.scaler else []

    def latest(self) -> dict:
        """What the last call did to its image: {"scale_factor": the factor it was predicted at
        (1.0 at scale 1), "colour_mapped": whether its colours were mapped}."""
        return {"scale_factor": self.scaler.factors[-1] if self.scaler else 1.0,
                "colour_mapped": bool(self.mapper.normalised[-1]) if self.mapper else False}

    def summary(self) -> list[str]:
        """One line per adaptation in use: how many images it changed."""
        lines = []
        if self.mapper:
            lines.append(f"--colour {self.colour}: {sum(self.mapped)} of {len(self.mapped)} "
                         "image(s) mapped towards the training images' colours")
        if self.scale == "auto":
            moved = [f for f in self.factors if f != 1.0]
            lines.append(f"--scale auto: {len(moved)} of {len(self.factors)} image(s) predicted "
                         "again at another scale" + (f" (factors {min(moved):.2f}-"
                                                     f"{max(moved):.2f})" if moved else ""))
        return lines
