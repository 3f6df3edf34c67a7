"""unet_keras.cell_agreement (evaluate's and benchmarks.cell_measures' per-cell comparison) on
hand-made label maps: pairing by IoU and the summaries worked out by hand."""

import csv
import math

import numpy as np
import pytest

from unet_keras.cell_agreement import (confidence_headline, confidence_summary, count_headline,
                                       count_summary, headline, pair_cells, summarise,
                                       write_pairs_csv)
from unet_keras.separation import separate_instances


def cell(label_map: np.ndarray, rows: slice, cols: slice, nucleus: tuple[slice, slice]) -> None:
    label_map[rows, cols] = 1
    label_map[nucleus] = 2


def test_cells_pair_by_iou_over_half_and_compare_their_measurements():
    truth = np.zeros((40, 60), np.uint8)
    cell(truth, slice(2, 12), slice(2, 12), (slice(4, 8), slice(4, 8)))  # 100 px, nucleus 16
    cell(truth, slice(20, 30), slice(40, 50), (slice(22, 26), slice(42, 46)))  # missed below
    pred = np.zeros_like(truth)
    cell(pred, slice(2, 12), slice(2, 14), (slice(4, 9), slice(4, 8)))  # 120 px, nucleus 20
    cell(pred, slice(20, 24), slice(40, 44), (slice(21, 23), slice(41, 43)))  # IoU 16/100
    cell(pred, slice(30, 38), slice(10, 18), (slice(32, 34), slice(12, 14)))  # no annotated cell
    instances = separate_instances(pred > 0, method="components", min_size=1)
    pairs, n_true, n_pred = pair_cells(pred, instances, truth, "img")
    assert (n_true, n_pred) == (2, 3)
    (pair,) = pairs
    assert pair["iou"] == pytest.approx(100 / 120)
    assert (pair["annotated"]["area"], pair["predicted"]["area"]) == (100, 120)
    assert (pair["annotated"]["nucleus_area"], pair["predicted"]["nucleus_area"]) == (16, 20)
    assert pair["nucleus_dice"] == pytest.approx(2 * 16 / (16 + 20))  # rows 4-7 inside 4-8

    summary = summarise(pairs)
    assert summary["n_cells"] == 1
    assert summary["area"]["bias"] == pytest.approx(0.2)  # (120 - 100) / 100
    assert summary["nucleus_area"]["mean_abs_error"] == pytest.approx(0.25)
    # N:C 20/100 against 16/84: relative error (0.2 - 4/21) / (4/21) = 0.05.
    assert summary["nc_ratio"]["bias"] == pytest.approx(0.05)
    assert math.isnan(summary["area"]["pearson_r"])  # one pair: no correlation
    assert summary["nucleus_parts"] == {"n": 1, "agreement": 1.0, "table": {"1->1": 1}}


def test_summaries_average_relative_errors_and_count_nucleus_parts():
    def pair(area_true, area_pred, parts_true, parts_pred):
        row = {key: 1.0 for key in ("equivalent_diameter", "perimeter", "circularity",
                                    "solidity", "nucleus_area", "cytoplasm_area", "nc_ratio")}
        return {"annotated": {**row, "area": area_true, "nucleus_parts": parts_true},
                "predicted": {**row, "area": area_pred, "nucleus_parts": parts_pred}}

    pairs = [pair(100, 90, 1, 1), pair(200, 220, 2, 1), pair(400, 400, 3, 3),
             pair(0, 5, 2, 2)]  # an annotated area of 0 has no relative error: left out
    summary = summarise(pairs)
    area = summary["area"]
    assert area["n"] == 3
    assert area["bias"] == pytest.approx((-0.1 + 0.1 + 0.0) / 3)
    assert area["mean_abs_error"] == pytest.approx(0.2 / 3)
    assert area["pearson_r"] == pytest.approx(np.corrcoef([100, 200, 400], [90, 220, 400])[0, 1])
    assert math.isnan(summary["circularity"]["pearson_r"])  # every value alike: no spread
    assert summary["nucleus_parts"]["agreement"] == pytest.approx(3 / 4)
    assert summary["nucleus_parts"]["table"] == {"1->1": 1, "2->1": 1, "2->2": 1, "3->3": 1}


def test_whole_cell_masks_compare_no_nucleus_and_the_pairs_are_written(tmp_path):
    truth = np.zeros((20, 20), np.uint8)
    cell(truth, slice(2, 12), slice(2, 12), (slice(4, 8), slice(4, 8)))
    pred = truth.copy()
    pred[2:12, 12] = 1  # one column more: area 110 against 100
    instances = separate_instances(pred > 0, method="components", min_size=1)
    pairs, _, _ = pair_cells(pred, instances, truth, "img", has_nucleus=False)
    summary = summarise(pairs)
    assert summary["area"]["bias"] == pytest.approx(0.1)
    assert summary["nucleus_area"]["n"] == summary["nc_ratio"]["n"] == 0
    assert summary["nucleus_parts"]["n"] == 0
    assert headline(summary).endswith("1 cell(s) paired, area +10.0 % (10.0 %)")
    write_pairs_csv(pairs, tmp_path / "pairs.csv")
    (row,) = csv.DictReader((tmp_path / "pairs.csv").open())
    assert (row["annotated_area"], row["predicted_area"], row["iou"]) == ("100", "110", "0.9091")
    assert row["predicted_nucleus_area"] == "nan"
    assert row["predicted_outline_confidence"] == "nan"  # no probability given


def test_predicted_cells_carry_their_confidence_into_the_pairs(tmp_path):
    truth = np.zeros((20, 20), np.uint8)
    cell(truth, slice(2, 12), slice(2, 12), (slice(4, 8), slice(4, 8)))
    probability = np.stack([(truth > 0) * 0.75, (truth == 2) * 1.0], -1).astype(np.float32)
    instances = separate_instances(truth > 0, method="components", min_size=1)
    pairs, _, _ = pair_cells(truth, instances, truth, "img", probability=probability,
                             thresholds=(0.5, 0.5))
    assert pairs[0]["predicted"]["outline_confidence"] == 0.5
    assert pairs[0]["predicted"]["nucleus_confidence"] == 1.0
    assert math.isnan(pairs[0]["annotated"]["outline_confidence"])
    write_pairs_csv(pairs, tmp_path / "pairs.csv")
    (row,) = csv.DictReader((tmp_path / "pairs.csv").open())
    assert (row["predicted_outline_confidence"], row["predicted_nucleus_confidence"]) == ("0.5", "1.0")
    assert pairs[0]["nucleus_dice"] == 1.0 and row["nucleus_dice"] == "1.0"


def fake_pair(iou: float, outline: float, nucleus_dice: float, nucleus: float) -> dict:
    return {"iou": iou, "nucleus_dice": nucleus_dice,
            "predicted": {"outline_confidence": outline, "nucleus_confidence": nucleus}}


def test_confidence_summary_ranks_errors_against_confidence():
    # 20 cells: the less confident, the larger the error, on both columns.
    pairs = [fake_pair(1 - 0.01 * k, 1 - 0.02 * k, 1 - 0.02 * k, 1 - 0.03 * k) for k in range(20)]
    summary = confidence_summary(pairs)
    outline, nucleus = summary["outline_confidence"], summary["nucleus_confidence"]
    assert outline["n"] == nucleus["n"] == 20
    assert outline["spearman"] == pytest.approx(-1.0) and nucleus["spearman"] == pytest.approx(-1.0)
    # The least confident tenth: k = 18, 19 (1 - IoU 0.18, 0.19); the rest k = 0..17.
    assert outline["error_least_confident_tenth"] == pytest.approx(0.185)
    assert outline["error_rest"] == pytest.approx(0.085)
    assert nucleus["error_least_confident_tenth"] == pytest.approx(0.37)  # 1 - Dice, k = 18, 19
    assert "Spearman -1.00" in confidence_headline(summary)
    # Under 10 cells with a value there is nothing to rank.
    few = confidence_summary(pairs[:9])
    assert few["outline_confidence"]["n"] == 9 and math.isnan(few["outline_confidence"]["spearman"])
    assert confidence_headline(few).endswith("too few paired cells (< 10)")


def test_count_summary_sums_per_image_counts_and_their_errors():
    counts = [{"annotated": 1, "predicted": 1, "matched": 1},   # right
              {"annotated": 1, "predicted": 3, "matched": 1},   # a cell split in three: +2
              {"annotated": 2, "predicted": 1, "matched": 0}]   # two cells merged: -1
    summary = count_summary(counts)
    assert summary == {"images": 3, "counted_right": 1, "annotated": 4, "predicted": 5,
                       "matched": 2, "mean_abs_error": pytest.approx(1.0),
                       "mean_error": pytest.approx(1 / 3)}
    assert count_headline(summary) == ("cell count per image as annotated: 1 of 3 image(s); "
                                       "5 cell(s) found, 4 annotated, mean error +0.33 a image")
    assert np.isnan(count_summary([])["mean_error"]) and count_summary([])["images"] == 0
