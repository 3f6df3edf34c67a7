"""Metrics against hand-worked values: a 4x4 Dice, AP on known squares and disks, empty cases."""

import math
import subprocess
import sys

import numpy as np
import pytest
from skimage.draw import disk

from unet_keras.metrics import (
    IOU_THRESHOLDS,
    InstanceCounts,
    PixelCounts,
    average_precision,
    instance_counts,
    instance_scores,
    pixel_counts,
    pixel_scores,
    score_image,
    summarize,
)

PRED_4X4 = np.array([
    [1, 1, 0, 0],
    [1, 1, 0, 0],
    [0, 0, 0, 0],
    [0, 0, 0, 0],
], dtype=bool)
TRUTH_4X4 = np.array([
    [0, 1, 1, 1],
    [0, 1, 1, 1],
    [0, 0, 0, 0],
    [0, 0, 0, 0],
], dtype=bool)


def test_pixel_scores_on_4x4_by_hand():
    # Prediction: 4 px; truth: 6 px; overlap is column 1 of rows 0-1.
    # tp = 2, fp = 4 - 2 = 2, fn = 6 - 2 = 4, tn = 16 - 2 - 2 - 4 = 8.
    counts = pixel_counts(PRED_4X4, TRUTH_4X4)
    assert counts == PixelCounts(tp=2, fp=2, fn=4, tn=8)
    scores = pixel_scores(counts)
    assert scores["dice"] == pytest.approx(0.4)  # 2*2 / (2*2 + 2 + 4) = 4/10
    assert scores["iou"] == pytest.approx(0.25)  # 2 / (2 + 2 + 4) = 2/8
    assert scores["precision"] == pytest.approx(0.5)  # 2 / (2 + 2)
    assert scores["recall"] == pytest.approx(1 / 3)  # 2 / (2 + 4)
    assert scores["accuracy"] == pytest.approx(0.625)  # (2 + 8) / 16


def test_pixel_counts_sum_over_images():
    perfect = pixel_counts(TRUTH_4X4, TRUTH_4X4)  # tp 6, tn 10
    assert perfect == PixelCounts(6, 0, 0, 10)
    total = pixel_counts(PRED_4X4, TRUTH_4X4) + perfect
    assert total == PixelCounts(tp=8, fp=2, fn=4, tn=18)
    assert sum([pixel_counts(PRED_4X4, TRUTH_4X4), perfect]) == total
    # Pooled Dice = 16 / (16 + 2 + 4), not the mean of 0.4 and 1.0.
    assert pixel_scores(total)["dice"] == pytest.approx(16 / 22)


def test_pixel_scores_empty_cases():
    empty = np.zeros((4, 4), dtype=bool)
    assert pixel_scores(pixel_counts(empty, empty)) == {
        "dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "accuracy": 1.0}
    missed = pixel_scores(pixel_counts(empty, TRUTH_4X4))
    assert (missed["dice"], missed["iou"], missed["precision"], missed["recall"]) == (0, 0, 0, 0)
    assert missed["accuracy"] == pytest.approx(10 / 16)
    invented = pixel_scores(pixel_counts(PRED_4X4, empty))
    assert (invented["dice"], invented["precision"], invented["recall"]) == (0, 0, 0)


def test_pixel_counts_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        pixel_counts(PRED_4X4, np.zeros((4, 5), dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        pixel_counts(PRED_4X4.astype(np.float32), TRUTH_4X4)


def test_iou_thresholds_are_exact():
    assert len(IOU_THRESHOLDS) == 10
    assert IOU_THRESHOLDS.tolist() == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    # A 4x3 prediction inside a 4x4 truth has IoU 12/16 = 0.75 exactly: it matches at 0.75.
    truth = np.zeros((6, 6), dtype=np.int32)
    truth[1:5, 1:5] = 1
    pred = np.zeros_like(truth)
    pred[1:5, 1:4] = 1
    counts = instance_counts(pred, truth)
    assert counts.tp == (1,) * 6 + (0,) * 4


def test_ap_on_two_squares_by_hand():
    # Truth: two 10x10 squares. Prediction: the first exactly, the second shifted 2 px right:
    # overlap 10*8 = 80, union 100 + 100 - 80 = 120, IoU = 2/3.
    truth = np.zeros((20, 40), dtype=np.int32)
    truth[5:15, 2:12] = 1
    truth[5:15, 20:30] = 2
    pred = np.zeros_like(truth)
    pred[5:15, 2:12] = 7  # ids need not agree with the truth's
    pred[5:15, 22:32] = 3
    counts = instance_counts(pred, truth)
    # t <= 0.65: both match, AP = 2 / 2. t >= 0.7: tp 1, fp 1, fn 1, AP = 1 / 3.
    assert counts.tp == (2,) * 4 + (1,) * 6
    assert counts.fp == (0,) * 4 + (1,) * 6
    assert counts.fn == (0,) * 4 + (1,) * 6
    np.testing.assert_allclose(average_precision(counts), [1.0] * 4 + [1 / 3] * 6)
    scores = instance_scores(counts)
    assert scores["ap50"] == 1.0
    assert scores["ap50_95"] == pytest.approx((4 * 1 + 6 / 3) / 10)  # 0.6


def test_ap_on_two_disks():
    # Truth: disks of radius 8 at columns 20 and 60. Prediction: the first exactly, the second
    # shifted 2 px. Continuous geometry gives IoU = (2r^2 acos(d/2r) - (d/2) sqrt(4r^2 - d^2))
    # / (2 pi r^2 - overlap) = 169.2 / 233.0 = 0.726; the digital disks give 163 / 223 = 0.731.
    shape = (40, 90)
    truth = np.zeros(shape, dtype=np.int32)
    truth[disk((20, 20), 8, shape=shape)] = 1
    truth[disk((20, 60), 8, shape=shape)] = 2
    pred = np.zeros(shape, dtype=np.int32)
    pred[disk((20, 20), 8, shape=shape)] = 1
    pred[disk((20, 62), 8, shape=shape)] = 2
    overlap = np.count_nonzero((truth == 2) & (pred == 2))
    union = np.count_nonzero((truth == 2) | (pred == 2))
    assert 0.70 < overlap / union < 0.75
    ap = average_precision(instance_counts(pred, truth))
    # 0.5 .. 0.7: both disks match; 0.75 .. 0.95: one match, one fp, one fn.
    np.testing.assert_allclose(ap, [1.0] * 5 + [1 / 3] * 5)
    assert instance_scores(instance_counts(pred, truth))["ap50_95"] == pytest.approx(2 / 3)


def test_split_cell_matches_once_at_half():
    # One 10x20 true cell predicted as two 10x10 halves: each half has IoU 100/200 = 0.5.
    # One-to-one matching at t = 0.5: tp 1, fp 1, fn 0 -> AP 1/2; above 0.5 nothing matches.
    truth = np.zeros((12, 22), dtype=np.int32)
    truth[1:11, 1:21] = 1
    pred = np.zeros_like(truth)
    pred[1:11, 1:11] = 1
    pred[1:11, 11:21] = 2
    counts = instance_counts(pred, truth)
    assert (counts.tp[0], counts.fp[0], counts.fn[0]) == (1, 1, 0)
    assert (counts.tp[1], counts.fp[1], counts.fn[1]) == (0, 2, 1)
    assert average_precision(counts)[:2].tolist() == [0.5, 0.0]


def test_low_threshold_uses_optimal_assignment():
    # One row of pixels. Truth X = [0, 10), Y = [10, 20). Prediction A = [3, 15), B = [0, 3).
    # IoU(A, X) = 7/15 = 0.467, IoU(A, Y) = 5/17 = 0.294, IoU(B, X) = 3/10 = 0.3.
    # Greedy (A-X first) would leave B unmatched; the assignment A-Y, B-X matches both at 0.25.
    truth = np.zeros((1, 20), dtype=np.int32)
    truth[0, :10], truth[0, 10:] = 1, 2
    pred = np.zeros_like(truth)
    pred[0, 3:15], pred[0, :3] = 1, 2
    counts = instance_counts(pred, truth, thresholds=(0.25, 0.4))
    assert counts.tp == (2, 1)
    assert counts.fp == (0, 1) and counts.fn == (0, 1)


def test_ap_empty_cases():
    empty = np.zeros((8, 8), dtype=np.int32)
    assert average_precision(instance_counts(empty, empty)).tolist() == [1.0] * 10
    truth = empty.copy()
    truth[1:3, 1:3], truth[5:7, 5:7] = 1, 2
    missed = instance_counts(empty, truth)
    assert missed.fn == (2,) * 10 and missed.tp == (0,) * 10
    assert average_precision(missed).tolist() == [0.0] * 10
    assert average_precision(instance_counts(truth, empty)).tolist() == [0.0] * 10


def test_instance_counts_sum_and_errors():
    empty = np.zeros((8, 8), dtype=np.int32)
    one = empty.copy()
    one[2:6, 2:6] = 5
    total = instance_counts(one, one) + instance_counts(empty, one)
    assert total.tp == (1,) * 10 and total.fn == (1,) * 10 and total.fp == (0,) * 10
    assert sum([instance_counts(one, one), instance_counts(empty, one)]) == total
    with pytest.raises(ValueError, match="thresholds"):
        instance_counts(one, one, (0.5,)) + instance_counts(one, one)
    with pytest.raises(ValueError, match=r"\(8, 8\).*\(8, 9\)"):
        instance_counts(one, np.zeros((8, 9), dtype=np.int32))
    with pytest.raises(ValueError, match="integer"):
        instance_counts(one.astype(float), one)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        instance_counts(one, one, thresholds=(0.0,))
    assert isinstance(total, InstanceCounts)


def test_score_image_on_label_maps():
    # One 4x4 cell with a 2x2 nucleus; the prediction gets the cell right and the nucleus
    # shifted one column: nucleus tp 2, fp 2, fn 2 -> dice 4/8, iou 2/6.
    truth = np.zeros((8, 8), dtype=np.uint8)
    truth[2:6, 2:6] = 1
    truth[3:5, 3:5] = 2
    pred = truth.copy()
    pred[3:5, 3:6] = 1
    pred[3:5, 4:6] = 2
    scores = score_image(pred, truth)
    assert scores["whole_cell_dice"] == 1.0 and scores["whole_cell_accuracy"] == 1.0
    assert scores["nucleus_dice"] == pytest.approx(0.5)
    assert scores["nucleus_iou"] == pytest.approx(1 / 3)
    assert scores["nucleus_precision"] == pytest.approx(0.5)
    assert scores["ap50"] == 1.0 and scores["ap50_95"] == 1.0

    one_channel = score_image((pred > 0).astype(np.uint8), truth, has_nucleus=False)
    assert not any(key.startswith("nucleus_") for key in one_channel)
    assert set(one_channel) == {"whole_cell_dice", "whole_cell_iou", "whole_cell_precision",
                                "whole_cell_recall", "whole_cell_accuracy", "ap50", "ap50_95"}


def test_score_image_default_instances_are_8_connected():
    # Two squares touching at a corner are one 8-connected object in both maps; given
    # instances that split the prediction in two, AP drops to 0 at every threshold:
    # the merged truth (32 px) has IoU 16/32 = 0.5 with each half, one of which matches at 0.5.
    truth = np.zeros((10, 10), dtype=np.uint8)
    truth[0:4, 0:4] = 1
    truth[4:8, 4:8] = 1
    assert score_image(truth, truth)["ap50_95"] == 1.0
    split = np.zeros((10, 10), dtype=np.int32)
    split[0:4, 0:4], split[4:8, 4:8] = 1, 2
    scores = score_image(truth, truth, pred_instances=split)
    assert scores["ap50"] == pytest.approx(0.5)  # tp 1, fp 1, fn 0
    assert scores["ap50_95"] == pytest.approx(0.05)


def test_summarize_means_and_sds():
    per_image = [
        {"image": "a.bmp", "whole_cell_dice": 1.0, "nucleus_dice": 0.8, "ap50": 1},
        {"image": "b.bmp", "whole_cell_dice": 0.5, "ap50": 0},
    ]
    summary = summarize(per_image)
    assert summary["n_images"] == 2
    assert summary["whole_cell_dice"] == pytest.approx(0.75)
    # Sample sd: sqrt(((1 - 0.75)^2 + (0.5 - 0.75)^2) / (2 - 1)) = sqrt(0.125).
    assert summary["whole_cell_dice_sd"] == pytest.approx(math.sqrt(0.125))
    assert summary["ap50"] == pytest.approx(0.5)
    assert summary["nucleus_dice"] == pytest.approx(0.8)  # only the image that has it
    assert math.isnan(summary["nucleus_dice_sd"])
    assert "image" not in summary
    with pytest.raises(ValueError, match="no per-image"):
        summarize([])


def test_scoring_and_postprocessing_import_no_deep_learning_framework():
    # The ONNX deployment runtime imports these modules; they must stay numpy/scipy/skimage.
    code = ("import sys, unet_keras.metrics, unet_keras.postprocess; "
            "print(sorted(m for m in ('keras', 'jax', 'tensorflow', 'torch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"
