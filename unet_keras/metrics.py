"""Segmentation metrics in plain numpy, computed in two steps: counts, then scores.

Every runtime (Keras on JAX or TensorFlow, onnxruntime, the PyTorch reference) is scored by
this one module, so their numbers are comparable. Counts add up over images (``+``), which
gives pooled dataset scores; the figures reported per dataset by ``summarize`` are instead the
means (and sample standard deviations) of per-image scores.

Numpy, scipy and scikit-image only: the keras-free deployment runtime imports this module.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from skimage.measure import label as connected_components

# 0.5, 0.55, ..., 0.95. Rounded so that an IoU of exactly 0.75 passes the 0.75 threshold:
# np.arange accumulates float error (its 0.75 is 0.7500000000000002).
IOU_THRESHOLDS = np.round(np.linspace(0.5, 0.95, 10), 2)


@dataclasses.dataclass(frozen=True)
class PixelCounts:
    """Pixel confusion counts of one binary mask against its truth; ``+`` sums over images."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: "PixelCounts") -> "PixelCounts":
        if not isinstance(other, PixelCounts):
            return NotImplemented
        return PixelCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                           self.tn + other.tn)

    def __radd__(self, other: object) -> "PixelCounts":
        # Lets the builtin sum() start from its default 0.
        if other == 0:
            return self
        return NotImplemented


@dataclasses.dataclass(frozen=True)
class InstanceCounts:
    """Matched-object counts per IoU threshold; ``+`` sums over images."""

    thresholds: tuple[float, ...]
    tp: tuple[int, ...]
    fp: tuple[int, ...]
    fn: tuple[int, ...]

    def __add__(self, other: "InstanceCounts") -> "InstanceCounts":
        if not isinstance(other, InstanceCounts):
            return NotImplemented
        if self.thresholds != other.thresholds:
            raise ValueError(f"cannot add instance counts at thresholds {self.thresholds} and "
                             f"{other.thresholds}; use the same thresholds for every image")
        return InstanceCounts(
            self.thresholds,
            tuple(a + b for a, b in zip(self.tp, other.tp)),
            tuple(a + b for a, b in zip(self.fp, other.fp)),
            tuple(a + b for a, b in zip(self.fn, other.fn)),
        )

    def __radd__(self, other: object) -> "InstanceCounts":
        if other == 0:
            return self
        return NotImplemented


def _check_same_shape(pred: np.ndarray, truth: np.ndarray, what: str) -> None:
    if pred.shape != truth.shape:
        raise ValueError(f"{what}: prediction shape {pred.shape} differs from truth shape "
                         f"{truth.shape}; expected equal shapes")


def pixel_counts(pred: np.ndarray, truth: np.ndarray) -> PixelCounts:
    """Confusion counts of a boolean prediction mask against a boolean truth mask.

    Raises:
        ValueError: shapes differ, or a mask is not boolean (threshold probabilities and
            compare labels first, e.g. ``label_map > 0``, so nothing is binarised by accident).
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    _check_same_shape(pred, truth, "pixel_counts")
    for name, mask in (("prediction", pred), ("truth", truth)):
        if mask.dtype != np.bool_:
            raise ValueError(f"pixel_counts: {name} has dtype {mask.dtype}; "
                             "expected a boolean mask")
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(truth)) - tp
    return PixelCounts(tp, fp, fn, pred.size - tp - fp - fn)


def _ratio(numerator: int, denominator: int, if_empty: float) -> float:
    return numerator / denominator if denominator else if_empty


def pixel_scores(counts: PixelCounts) -> dict[str, float]:
    """Dice, IoU, precision, recall and accuracy from pixel counts.

    Empty cases: when neither mask has a positive pixel there is nothing to find and nothing
    was claimed, so dice = iou = precision = recall = 1.0. Precision with no positive
    prediction is 1.0 only if the truth is empty too, else 0.0; recall with an empty truth is
    1.0 only if nothing was predicted, else 0.0. An image that misses every cell, or invents
    cells on an empty field, thus scores 0 on every overlap score rather than a flattering 1.
    Accuracy of a zero-pixel image is 1.0.
    """
    tp, fp, fn, tn = counts.tp, counts.fp, counts.fn, counts.tn
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "iou": _ratio(tp, tp + fp + fn, 1.0),
        "precision": _ratio(tp, tp + fp, 1.0 if fn == 0 else 0.0),
        "recall": _ratio(tp, tp + fn, 1.0 if fp == 0 else 0.0),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn, 1.0),
    }


def iou_matrix(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of every predicted object (rows) with every true object (columns), each in
    increasing id order; 0 = background."""
    pred_ids, pred_index = np.unique(pred.ravel(), return_inverse=True)
    true_ids, true_index = np.unique(truth.ravel(), return_inverse=True)
    joint = np.bincount(pred_index * len(true_ids) + true_index,
                        minlength=len(pred_ids) * len(true_ids)).reshape(len(pred_ids), -1)
    pred_area, true_area = joint.sum(axis=1), joint.sum(axis=0)
    pred_keep, true_keep = pred_ids != 0, true_ids != 0
    intersection = joint[np.ix_(pred_keep, true_keep)]
    union = pred_area[pred_keep, None] + true_area[None, true_keep] - intersection
    # Every kept object has at least one pixel, so union > 0.
    return intersection / union


def _matches(iou: np.ndarray, threshold: float) -> int:
    """Number of one-to-one matches with IoU >= threshold."""
    if iou.size == 0:
        return 0
    if threshold > 0.5:
        # Above 0.5 an object can overlap at most one other by that much, so counting the
        # qualifying pairs already is a one-to-one matching.
        return int(np.count_nonzero(iou >= threshold))
    # At 0.5 and below one object may qualify with several (a cell split in two halves has
    # IoU 0.5 with each), so solve the assignment: as many matches as possible, ties broken by
    # total IoU (the StarDist cost, scaled so IoU never outweighs one extra match).
    qualifies = iou >= threshold
    cost = -(qualifies.astype(float) + iou / (2 * min(iou.shape)))
    rows, cols = linear_sum_assignment(cost)
    return int(np.count_nonzero(qualifies[rows, cols]))


def instance_counts(pred_instances: np.ndarray, true_instances: np.ndarray,
                    thresholds: Sequence[float] = IOU_THRESHOLDS) -> InstanceCounts:
    """Match predicted to true objects one-to-one by IoU and count tp, fp, fn per threshold.

    Args:
        pred_instances, true_instances: integer instance label maps of equal shape, 0 being
            background; ids need not be consecutive.
        thresholds: IoU thresholds; a pair matches at threshold t when IoU >= t.
    Raises:
        ValueError: shapes differ, a map is not of integer (or boolean) dtype, or a
            threshold is outside (0, 1].
    """
    pred, truth = np.asarray(pred_instances), np.asarray(true_instances)
    _check_same_shape(pred, truth, "instance_counts")
    for name, ids in (("prediction", pred), ("truth", truth)):
        if not (np.issubdtype(ids.dtype, np.integer) or ids.dtype == np.bool_):
            raise ValueError(f"instance_counts: {name} has dtype {ids.dtype}; expected an "
                             "integer instance label map")
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds or not all(0.0 < t <= 1.0 for t in thresholds):
        raise ValueError(f"instance_counts: IoU thresholds {thresholds}; expected values in (0, 1]")
    iou = iou_matrix(pred, truth)
    n_pred, n_true = iou.shape
    tp = tuple(_matches(iou, t) for t in thresholds)
    return InstanceCounts(thresholds, tp, tuple(n_pred - m for m in tp),
                          tuple(n_true - m for m in tp))


def average_precision(counts: InstanceCounts) -> np.ndarray:
    """AP per threshold, TP / (TP + FP + FN) (the DSB-2018 / StarDist definition).

    With no objects at all, neither predicted nor true, AP is 1.
    """
    return np.array([_ratio(tp, tp + fp + fn, 1.0)
                     for tp, fp, fn in zip(counts.tp, counts.fp, counts.fn)])


def instance_scores(counts: InstanceCounts) -> dict[str, float]:
    """ap50 (AP at IoU 0.5) and ap50_95 (mean AP over all thresholds of ``counts``)."""
    ap = average_precision(counts)
    at_half = [i for i, t in enumerate(counts.thresholds) if math.isclose(t, 0.5)]
    if not at_half:
        raise ValueError(f"thresholds {counts.thresholds} do not include 0.5; ap50 needs it")
    return {"ap50": float(ap[at_half[0]]), "ap50_95": float(ap.mean())}


def score_image(pred_labels: np.ndarray, true_labels: np.ndarray,
                pred_instances: np.ndarray | None = None,
                true_instances: np.ndarray | None = None,
                has_nucleus: bool = True) -> dict[str, float]:
    """All per-image scores of a predicted label map against the true one.

    Args:
        pred_labels, true_labels: uint8 label maps (0 background, 1 cytoplasm, 2 nucleus).
        pred_instances, true_instances: instance label maps for AP; by default the
            8-connected components of ``label > 0``.
        has_nucleus: whether the prediction has a nucleus channel. Pass False for a
            1-channel model, whose label 1 is the whole cell; nucleus keys are then omitted
            (they would otherwise read 0 for a model that never tried).
    Returns:
        ``whole_cell_{dice,iou,precision,recall,accuracy}``, ``nucleus_{dice,iou,precision,
        recall}`` when ``has_nucleus``, and whole-cell ``ap50`` and ``ap50_95``.
    """
    pred_labels, true_labels = np.asarray(pred_labels), np.asarray(true_labels)
    _check_same_shape(pred_labels, true_labels, "score_image")
    pred_cell, true_cell = pred_labels > 0, true_labels > 0
    scores = {f"whole_cell_{k}": v
              for k, v in pixel_scores(pixel_counts(pred_cell, true_cell)).items()}
    if has_nucleus:
        nucleus = pixel_scores(pixel_counts(pred_labels == 2, true_labels == 2))
        scores.update({f"nucleus_{k}": nucleus[k]
                       for k in ("dice", "iou", "precision", "recall")})
    if pred_instances is None:
        pred_instances = connected_components(pred_cell, connectivity=2)
    if true_instances is None:
        true_instances = connected_components(true_cell, connectivity=2)
    scores.update(instance_scores(instance_counts(pred_instances, true_instances)))
    return scores


def summarize(per_image: list[dict]) -> dict[str, float]:
    """Mean and sample standard deviation of every numeric score across images.

    Dataset figures are means of per-image scores (each image weighs the same, however many
    cells it holds), not scores of pooled counts. A key missing from some images (nucleus
    scores of a 1-channel run) is averaged over the images that have it.

    Returns:
        ``{key: mean, key + "_sd": sd, ..., "n_images": n}``; sd uses ddof=1 and is NaN for a
        single image, where no spread can be estimated.
    Raises:
        ValueError: ``per_image`` is empty.
    """
    if not per_image:
        raise ValueError("summarize: no per-image scores; expected at least one image")
    keys: dict[str, None] = {}
    for row in per_image:
        for key, value in row.items():
            if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                keys[key] = None
    summary: dict[str, float] = {}
    for key in keys:
        values = np.array([row[key] for row in per_image if key in row], dtype=np.float64)
        summary[key] = float(values.mean())
        summary[f"{key}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    summary["n_images"] = len(per_image)
    return summary
