"""How sure the model was of each cell it found: the probability's margin from the threshold.

Two numbers per cell, both in [0, 1] (1: every pixel's probability at 0 or 1, as far from the
decision as it can be; 0: every pixel at the threshold), written to ``cells.csv`` beside the
measurements:

- ``outline_confidence``: the whole-cell channel's mean margin over the cell's rim, the pixels
  within ``RIM_WIDTH`` of its outline, where an uncertain outline puts its doubt. A pixel is
  cell where either channel is on (``postprocess.probabilities_to_labels``): where the nucleus
  channel alone made it cell, that channel's margin counts (0 where neither is on);
- ``nucleus_confidence``: the nucleus channel's mean margin over the whole cell (NaN for a
  one-channel model).

They rank cells for review; they are not probabilities of being right. Measured over the 5 fold
models' 300 Dataset 1 test cells and the two acquisition-batch hold-outs (docs/inference.md,
"Confidence of each cell"): the tenth of cells with the lowest nucleus confidence has the lowest
nucleus Dice, most of all on the batch the model never saw.

Numpy and scipy only: the keras-free deployment runtime imports this module.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

RIM_WIDTH = 3  # pixels inside a cell's outline that its outline confidence averages over
CONFIDENCE_COLUMNS = ("outline_confidence", "nucleus_confidence")
DECIMALS = 3


def decision_margin(probability: np.ndarray, threshold: float, signed: bool = False
                    ) -> np.ndarray:
    """|p - t| scaled to [0, 1] on each side of the threshold t: 0 at t, 1 at 0 and at 1
    (``signed``: negative below t, -1 at 0)."""
    p = np.asarray(probability, np.float32)
    t = float(threshold)
    if not 0.0 < t < 1.0:
        raise ValueError(f"threshold {t}: expected a value strictly between 0 and 1")
    below = (p - t) / t if signed else (t - p) / t
    return np.where(p >= t, (p - t) / (1.0 - t), below).astype(np.float32)


def cell_confidences(instances: np.ndarray, probability: np.ndarray,
                     thresholds: Sequence[float]) -> dict[int, dict[str, float]]:
    """``CONFIDENCE_COLUMNS`` of every cell of ``instances`` (int (H, W), 0 background).

    Args:
        instances: cell labels 1..N.
        probability: float (H, W, C) model output, channels whole cell[, nucleus].
        thresholds: one per channel, or one for all (as ``postprocess.probabilities_to_labels``).
    Returns:
        {label: {"outline_confidence": float, "nucleus_confidence": float or NaN}}.
    """
    instances, probability = np.asarray(instances), np.asarray(probability)
    if probability.ndim != 3 or probability.shape[:2] != instances.shape:
        raise ValueError(f"probability {probability.shape} for instances {instances.shape}; "
                         "expected (H, W, C) over the same pixels")
    channel = lambda c: thresholds[min(c, len(thresholds) - 1)]  # noqa: E731
    # The whole-cell channel's margin where it is on; a pixel the nucleus channel alone made
    # cell is as sure as that channel, not as sure as the whole-cell channel was of background.
    outline = decision_margin(probability[..., 0], channel(0), signed=True)
    if probability.shape[-1] == 2:
        alone = np.maximum(decision_margin(probability[..., 1], channel(1), signed=True), 0.0)
        outline = np.where(outline >= 0, outline, alone)
    outline = np.maximum(outline, 0.0)
    nucleus = None
    if probability.shape[-1] == 2:
        counts = np.bincount(instances.ravel())
        sums = np.bincount(instances.ravel(),
                           weights=decision_margin(probability[..., 1], channel(1)).ravel())
        nucleus = sums / np.maximum(counts, 1)
    out = {}
    for label, box in enumerate(ndi.find_objects(instances), start=1):
        if box is None:
            continue
        cell = instances[box] == label
        # Erosion treats pixels beyond the box as background: the rim follows the outline.
        rim = cell & ~ndi.binary_erosion(cell, iterations=RIM_WIDTH)
        # Three decimals: enough to rank cells, and the Keras and ONNX paths (float32 outputs
        # equal to ~1e-6) write the same table.
        out[label] = {"outline_confidence": round(float(outline[box][rim].mean()), DECIMALS),
                      "nucleus_confidence": math.nan if nucleus is None
                      else round(float(nucleus[label]), DECIMALS)}
    return out
