"""Score a model on labelled examples with the shared numpy metrics; tune thresholds."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from unet_keras.image_io import atomic_output, atomic_write_text
from unet_keras.metrics import pixel_counts, pixel_scores, score_image, summarize
from unet_keras.postprocess import probabilities_to_labels

THRESHOLD_GRID = np.round(np.arange(0.2, 0.81, 0.05), 2)


def score_probabilities(probs: Sequence[np.ndarray], examples: Sequence[dict],
                        thresholds: Sequence[float]) -> tuple[list[dict], dict]:
    """Per-image scores and their summary for predicted probability maps."""
    rows = []
    for prob, example in zip(probs, examples):
        pred = probabilities_to_labels(prob, thresholds)
        scores = score_image(pred, example["mask"], has_nucleus=prob.shape[-1] == 2)
        rows.append({"image_id": example["image_id"], **scores})
    return rows, summarize(rows)


def tune_thresholds(probs: Sequence[np.ndarray], examples: Sequence[dict]) -> tuple[float, ...]:
    """Per channel, the grid threshold with the highest pooled Dice on these (validation) examples.

    Channel 0 is scored against whole-cell truth, channel 1 against nucleus truth. Ties keep
    the threshold closest to 0.5.
    """
    truths = [
        [e["mask"] > 0 for e in examples],
        [e["mask"] == 2 for e in examples],
    ]
    chosen = []
    for channel in range(probs[0].shape[-1]):
        def dice_at(t: float) -> float:
            total = sum((pixel_counts(p[..., channel] >= t, truth)
                         for p, truth in zip(probs, truths[channel])),
                        start=pixel_counts(np.zeros(1, bool), np.zeros(1, bool)))
            return pixel_scores(total)["dice"]

        ranked = sorted(THRESHOLD_GRID, key=lambda t: (-dice_at(float(t)), abs(t - 0.5)))
        chosen.append(float(ranked[0]))
    return tuple(chosen)


def write_per_image_csv(rows: list[dict], path: Path) -> None:
    with atomic_output(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_json(data: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=float) + "\n")
