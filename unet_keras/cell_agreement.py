"""How closely per-cell measurements of a prediction match those of annotated cells.

Both sides go through ``postprocess.measure_cells`` (the columns of ``cells.csv``); each
annotated cell (an 8-connected component of its mask) is paired with the predicted cell that
overlaps it most, when that IoU exceeds ``MATCH_IOU`` (which makes pairs one-to-one). Errors are
relative to the annotated value. ``unet-keras evaluate`` and ``benchmarks.cell_measures`` use it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.stats import spearmanr
from skimage.measure import label as connected_components

from unet_keras.confidence import CONFIDENCE_COLUMNS
from unet_keras.image_io import atomic_write_csv
from unet_keras.metrics import iou_matrix
from unet_keras.postprocess import measure_cells

MEASURES = ("area", "equivalent_diameter", "perimeter", "circularity", "solidity",
            "nucleus_area", "cytoplasm_area", "nc_ratio")
MATCH_IOU = 0.5


def pair_cells(pred_labels: np.ndarray, pred_instances: np.ndarray, true_labels: np.ndarray,
               image_id: str, has_nucleus: bool = True, probability: np.ndarray | None = None,
               thresholds: Sequence[float] = (0.5,)) -> tuple[list[dict], int, int]:
    """(pairs, annotated cells, predicted cells) of one image.

    Each pair is {"image_id", "iou", "nucleus_dice", "annotated": measure_cells row,
    "predicted": row} for an annotated cell and the predicted cell overlapping it with IoU >
    ``MATCH_IOU``; its nucleus Dice compares the nucleus inside each of the two cells. With
    ``has_nucleus`` False (a 1-channel model, or masks of whole cells) both sides' nucleus
    measurements are NaN and left out of the summaries. Given the model's ``probability`` and
    ``thresholds``, the predicted rows carry their confidences (``confidence``).
    """
    true_instances = connected_components(np.asarray(true_labels) > 0, connectivity=2)
    annotated = measure_cells(true_instances, true_labels, image_id, has_nucleus)
    predicted = measure_cells(pred_instances, pred_labels, image_id, has_nucleus,
                              probability=probability, thresholds=thresholds)
    iou = iou_matrix(pred_instances, true_instances)  # rows and columns in label order
    pairs = []
    for column, cell in enumerate(annotated):
        if not iou.shape[0]:
            break
        row = int(np.argmax(iou[:, column]))
        if iou[row, column] > MATCH_IOU:
            pairs.append({"image_id": image_id, "iou": float(iou[row, column]),
                          "nucleus_dice": _nucleus_dice(pred_instances, pred_labels,
                                                        predicted[row], true_instances,
                                                        true_labels, cell)
                          if has_nucleus else math.nan,
                          "annotated": cell, "predicted": predicted[row]})
    return pairs, len(annotated), len(predicted)


def _nucleus_dice(pred_instances: np.ndarray, pred_labels: np.ndarray, predicted: dict,
                  true_instances: np.ndarray, true_labels: np.ndarray, annotated: dict) -> float:
    """Dice of the nucleus inside a predicted cell against that inside its annotated cell, over
    the two cells' bounding boxes together (1.0 where neither holds nucleus)."""
    box = (slice(min(predicted["bbox_min_row"], annotated["bbox_min_row"]),
                 max(predicted["bbox_max_row"], annotated["bbox_max_row"])),
           slice(min(predicted["bbox_min_col"], annotated["bbox_min_col"]),
                 max(predicted["bbox_max_col"], annotated["bbox_max_col"])))
    pred = ((np.asarray(pred_instances)[box] == predicted["label"])
            & (np.asarray(pred_labels)[box] == 2))
    true = (true_instances[box] == annotated["label"]) & (np.asarray(true_labels)[box] == 2)
    total = int(pred.sum()) + int(true.sum())
    return 2.0 * int((pred & true).sum()) / total if total else 1.0


def paired_values(pairs: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(annotated, predicted) values of ``key`` where both are finite and the annotated one is
    not zero (a relative error needs it)."""
    values = np.array([(p["annotated"][key], p["predicted"][key]) for p in pairs], float)
    if not len(values):
        return np.zeros(0), np.zeros(0)
    keep = np.isfinite(values).all(axis=1) & (values[:, 0] != 0)
    return values[keep, 0], values[keep, 1]


def summarise(pairs: Sequence[dict]) -> dict:
    """Per measurement: n, mean annotated and predicted, bias and mean absolute error (both
    relative to the annotated value), Pearson's r (NaN under 3 pairs or with no spread); nucleus
    parts: agreement and the {"annotated->predicted": count} table."""
    out: dict = {"n_cells": len(pairs)}
    for key in MEASURES:
        truth, pred = paired_values(pairs, key)
        relative = (pred - truth) / truth if len(truth) else np.zeros(0)
        spread = len(truth) >= 3 and truth.std() > 0 and pred.std() > 0
        out[key] = {
            "n": int(len(truth)),
            "annotated_mean": float(truth.mean()) if len(truth) else math.nan,
            "predicted_mean": float(pred.mean()) if len(truth) else math.nan,
            "bias": float(relative.mean()) if len(truth) else math.nan,
            "mean_abs_error": float(np.abs(relative).mean()) if len(truth) else math.nan,
            "pearson_r": float(np.corrcoef(truth, pred)[0, 1]) if spread else math.nan,
        }
    counts = [(p["annotated"]["nucleus_parts"], p["predicted"]["nucleus_parts"]) for p in pairs
              if not (math.isnan(p["annotated"]["nucleus_parts"])
                      or math.isnan(p["predicted"]["nucleus_parts"]))]
    table: dict[str, int] = {}
    for truth, pred in counts:
        table[f"{truth}->{pred}"] = table.get(f"{truth}->{pred}", 0) + 1
    out["nucleus_parts"] = {
        "n": len(counts),
        "agreement": (sum(t == p for t, p in counts) / len(counts)) if counts else math.nan,
        "table": dict(sorted(table.items())),
    }
    return out


def confidence_summary(pairs: Sequence[dict]) -> dict:
    """Whether the predicted cells' confidences (``confidence.CONFIDENCE_COLUMNS``) point at
    their errors: per column, the cells with a finite value, Spearman's rank correlation of the
    confidence with the error, and the mean error of the least confident tenth of cells against
    the rest. The error is 1 - the pair's IoU for the outline and 1 - its nucleus Dice for the
    nucleus; a useful confidence correlates negatively."""
    errors = {"outline_confidence": lambda p: 1.0 - p["iou"],
              "nucleus_confidence": lambda p: 1.0 - p.get("nucleus_dice", math.nan)}
    out = {}
    for column, error in errors.items():
        values = np.array([(p["predicted"].get(column, math.nan), error(p)) for p in pairs],
                          float).reshape(-1, 2)
        values = values[np.isfinite(values).all(axis=1)]
        entry = {"n": int(len(values)), "spearman": math.nan, "error_least_confident_tenth":
                 math.nan, "error_rest": math.nan}
        if len(values) >= 10:
            confidence, err = values[:, 0], values[:, 1]
            low = confidence <= np.quantile(confidence, 0.1)
            entry.update(spearman=float(spearmanr(confidence, err)[0]),
                         error_least_confident_tenth=float(err[low].mean()),
                         error_rest=float(err[~low].mean()))
        out[column] = entry
    return out


def confidence_headline(summary: dict) -> str:
    """One line of ``confidence_summary``: each confidence's rank correlation with its error,
    and the error of the least confident tenth of cells against the rest."""
    parts = []
    for column, what in (("outline_confidence", "1 - IoU"),
                         ("nucleus_confidence", "1 - nucleus Dice")):
        entry = summary[column]
        if math.isfinite(entry["spearman"]):
            parts.append(f"{column} vs {what}: Spearman {entry['spearman']:+.2f}, least confident "
                         f"tenth {entry['error_least_confident_tenth']:.4f} against "
                         f"{entry['error_rest']:.4f}")
    return "cell confidence: " + ("; ".join(parts) if parts else "too few paired cells (< 10)")


def count_summary(counts: Sequence[dict]) -> dict:
    """Per-image cell counts ({"annotated", "predicted", "matched"} rows, as
    ``evaluate.cell_agreement`` returns them) summed up: the images whose predicted count equals
    the annotated one, the cells on each side and paired, and the mean absolute and signed
    count error per image (> 0: cells split or extra objects; < 0: cells merged or missed)."""
    errors = np.array([c["predicted"] - c["annotated"] for c in counts], dtype=float)
    return {"images": len(counts), "counted_right": int(np.sum(errors == 0)),
            "annotated": int(sum(c["annotated"] for c in counts)),
            "predicted": int(sum(c["predicted"] for c in counts)),
            "matched": int(sum(c["matched"] for c in counts)),
            "mean_abs_error": float(np.mean(np.abs(errors))) if len(counts) else math.nan,
            "mean_error": float(np.mean(errors)) if len(counts) else math.nan}


def count_headline(summary: dict) -> str:
    """One line of ``count_summary``: images counted right, cells found and annotated."""
    return (f"cell count per image as annotated: {summary['counted_right']} of "
            f"{summary['images']} image(s); {summary['predicted']} cell(s) found, "
            f"{summary['annotated']} annotated, mean error {summary['mean_error']:+.2f} a image")


def headline(summary: dict) -> str:
    """One line: the cells paired, and bias (error) of area, nucleus area and N:C ratio."""
    parts = [f"{summary['n_cells']} cell(s) paired"]
    for key, name in (("area", "area"), ("nucleus_area", "nucleus area"),
                      ("nc_ratio", "nucleus:cytoplasm ratio")):
        m = summary[key]
        if m["n"]:
            parts.append(f"{name} {100 * m['bias']:+.1f} % ({100 * m['mean_abs_error']:.1f} %)")
    return "per-cell measurements against the annotated cells, bias (mean absolute error): " + \
        ", ".join(parts)


def write_pairs_csv(pairs: Sequence[dict], path: Path) -> None:
    """One row per pair: image, IoU, nucleus Dice, then each measurement annotated and
    predicted, then the predicted cell's confidences."""
    keys = (*MEASURES, "nucleus_parts")
    sides = ("annotated", "predicted")
    fields = ["image_id", "iou", "nucleus_dice"] + [f"{s}_{k}" for k in keys for s in sides]
    fields += [f"predicted_{k}" for k in CONFIDENCE_COLUMNS]
    atomic_write_csv(path, fields, (
        {"image_id": pair["image_id"], "iou": round(pair["iou"], 4),
         "nucleus_dice": round(pair["nucleus_dice"], 4),
         **{f"{s}_{k}": pair[s][k] for k in keys for s in sides},
         **{f"predicted_{k}": pair["predicted"].get(k, math.nan) for k in CONFIDENCE_COLUMNS}}
        for pair in pairs))
