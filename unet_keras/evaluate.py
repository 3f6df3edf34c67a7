"""Score a model on labelled examples with the shared numpy metrics; tune thresholds."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from unet_keras.image_io import atomic_output, atomic_write_text
from unet_keras.metrics import pixel_counts, pixel_scores, score_image, summarize
from unet_keras.postprocess import MIN_CELL_AREA, label_cells

THRESHOLD_GRID = np.round(np.arange(0.2, 0.81, 0.05), 2)
# Capped at 250 px: the smallest white cell of Dataset 1 covers 1,729 px, ~430 px at half the
# magnification; a larger cut would drop real cells on another scanner's images.
MIN_AREA_GRID = (0, 15, 30, 60, 120, 250)


def score_probabilities(probs: Sequence[np.ndarray], examples: Sequence[dict],
                        thresholds: Sequence[float], min_cell_area: int = MIN_CELL_AREA,
                        edge_cells: str = "keep") -> tuple[list[dict], dict]:
    """Per-image scores and their summary for predicted probability maps.

    The prediction is postprocessed as ``predict`` does it (``postprocess.label_cells``): objects
    are the 8-connected components of at least ``min_cell_area`` pixels (without those cut by
    the image edge, with ``edge_cells="drop"``), the instances AP counts. Nucleus scores are
    left out for a 1-channel model and for an example whose ``nucleus_annotated`` is False.
    """
    rows = []
    for prob, example in zip(probs, examples):
        pred, instances = label_cells(prob, thresholds, "components", min_cell_area, edge_cells)
        scores = score_image(pred, example["mask"], pred_instances=instances,
                             has_nucleus=nucleus_scored(prob, example))
        rows.append({"image_id": example["image_id"], **scores})
    return rows, summarize(rows)


def nucleus_scored(prob: np.ndarray, example: dict) -> bool:
    """Whether an image's nucleus is compared: the model has a nucleus channel and the mask
    annotates the nucleus (not a mask of whole cells)."""
    return prob.shape[-1] == 2 and example.get("nucleus_annotated", True)


def cell_agreement(probs: Sequence[np.ndarray], examples: Sequence[dict], config,
                   instances: str = "watershed") -> tuple[list[dict], list[dict]]:
    """The cells ``predict`` would measure (the config's postprocessing, ``instances`` as
    predict's ``--instances``) beside the annotated ones: (``cell_agreement.pair_cells``' pairs
    of every image, one {"image_id", "annotated", "predicted", "matched"} count row per image)."""
    from unet_keras.cell_agreement import pair_cells

    pairs, counts = [], []
    for prob, example in zip(probs, examples):
        labels, cells = label_cells(prob, config.thresholds, instances, config.min_cell_area,
                                    config.edge_cells)
        found, n_true, n_pred = pair_cells(labels, cells, example["mask"], example["image_id"],
                                           nucleus_scored(prob, example), prob,
                                           config.thresholds)
        pairs += found
        counts.append({"image_id": example["image_id"], "annotated": n_true,
                       "predicted": n_pred, "matched": len(found)})
    return pairs, counts


def tune_min_cell_area(probs: Sequence[np.ndarray], examples: Sequence[dict],
                       thresholds: Sequence[float]) -> int:
    """The grid area with the best mean AP@[.5:.95] on these (validation) examples, every cell
    kept; ties keep the smallest, so no real cell is dropped for nothing."""
    def mean_ap(area: int) -> float:
        return score_probabilities(probs, examples, thresholds, area)[1]["ap50_95"]

    scores = {area: mean_ap(area) for area in MIN_AREA_GRID}
    best = max(scores.values())
    return min(area for area, score in scores.items() if score == best)


def edge_convention(examples: Sequence[dict]) -> str:
    """How these (training) masks treat cells cut by the image edge: "keep" if any annotated
    cell touches the edge, "drop" if none does (the annotators left such cells out: all 300
    masks of Dataset 1)."""
    def touches(mask: np.ndarray) -> bool:
        return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())

    return "keep" if any(touches(np.asarray(e["mask"]) > 0) for e in examples) else "drop"


def tune_edge_cells(probs: Sequence[np.ndarray], examples: Sequence[dict],
                    thresholds: Sequence[float], min_cell_area: int, tie: str = "keep") -> str:
    """"drop" if leaving out the cells cut by the image edge scores a higher mean AP@[.5:.95],
    or the same AP and a higher whole-cell Dice, on these (validation) examples; "keep" if
    keeping them scores higher; ``tie`` where both score the same, as when no predicted object
    on these images is cut by the edge (callers pass the training masks' ``edge_convention``).

    Tuned after ``min_cell_area`` rather than on a joint grid: where the edge rule removes the
    objects that made a larger area win, a joint grid's ties fall back to the smallest area
    and let specks through (5-fold CV, class balance 0.5: AP@0.5 0.981 on a joint grid, 0.998
    tuned in turn).
    """
    def scores(edge: str) -> tuple[float, float]:
        summary = score_probabilities(probs, examples, thresholds, min_cell_area, edge)[1]
        return summary["ap50_95"], summary["whole_cell_dice"]

    drop, keep = scores("drop"), scores("keep")
    if drop == keep:
        return tie
    return "drop" if drop > keep else "keep"


def tune_thresholds(probs: Sequence[np.ndarray], examples: Sequence[dict]) -> tuple[float, ...]:
    """Per channel, the grid threshold with the highest pooled Dice on these (validation) examples.

    Channel 0 is scored against whole-cell truth, channel 1 against nucleus truth on the
    examples whose nucleus is annotated (``nucleus_scored``). Ties keep
    the threshold closest to 0.5. The label map's cell is channel 0 or 1 over their thresholds;
    tuning channel 0 against that union instead picks the same threshold and validation Dice
    (to 5 decimals, for the shipped model's validation part and two other runs'), since the
    nucleus channel is hardly ever on where the cell channel is off.
    """
    pairs = [
        [(p, e["mask"] > 0) for p, e in zip(probs, examples)],
        # Masks of whole cells say nothing of the nucleus (with none, every threshold ties).
        [(p, e["mask"] == 2) for p, e in zip(probs, examples) if nucleus_scored(p, e)],
    ]
    chosen = []
    for channel in range(probs[0].shape[-1]):
        def dice_at(t: float) -> float:
            total = sum((pixel_counts(p[..., channel] >= t, truth) for p, truth in pairs[channel]),
                        start=pixel_counts(np.zeros(1, bool), np.zeros(1, bool)))
            return pixel_scores(total)["dice"]

        ranked = sorted(THRESHOLD_GRID, key=lambda t: (-dice_at(float(t)), abs(t - 0.5)))
        chosen.append(float(ranked[0]))
    return tuple(chosen)


def tune_postprocessing(probs: Sequence[np.ndarray], examples: Sequence[dict], config,
                        edge_tie: str = "keep") -> dict:
    """Tune ``config.thresholds``, then ``config.min_cell_area`` and ``config.edge_cells``, on
    these (validation) examples, in place; returns their summary at the tuned values.

    ``edge_tie``: the edge-cell setting where these examples cannot tell (``tune_edge_cells``);
    training code passes ``edge_convention`` of its training masks.
    """
    config.thresholds = tune_thresholds(probs, examples)
    config.min_cell_area = tune_min_cell_area(probs, examples, config.thresholds)
    config.edge_cells = tune_edge_cells(probs, examples, config.thresholds, config.min_cell_area,
                                        edge_tie)
    return score_config(probs, examples, config)[1]


def score_config(probs: Sequence[np.ndarray], examples: Sequence[dict], config
                 ) -> tuple[list[dict], dict]:
    """``score_probabilities`` with a config's postprocessing (thresholds, object filters)."""
    return score_probabilities(probs, examples, config.thresholds, config.min_cell_area,
                               config.edge_cells)


def format_scores(name: str, summary: dict, source: str) -> str:
    """One line of a summary's headline scores: "test fold 0 (SOURCE): whole_cell_dice ..."."""
    keys = [k for k in ("whole_cell_dice", "whole_cell_iou", "nucleus_dice", "nucleus_iou",
                        "ap50", "ap50_95") if k in summary]
    return f"{name} ({source}): " + ", ".join(f"{k} {summary[k]:.4f}" for k in keys)


def write_per_image_csv(rows: list[dict], path: Path) -> None:
    with atomic_output(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_json(data: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=float) + "\n")
