"""Postprocessing tuned on validation data: thresholds, the smallest kept object, edge cells."""

import json

import numpy as np
import pytest

from tests.conftest import run_cli
from unet_keras.config import UNetConfig
from unet_keras.evaluate import (MIN_AREA_GRID, edge_convention, score_config,
                                 score_probabilities, tune_edge_cells, tune_min_cell_area,
                                 tune_postprocessing, tune_thresholds)
from unet_keras.postprocess import label_cells


def _disk(shape, centre, radius):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def _example(blob_side: int):
    """A true cell (disk of radius 12, nucleus radius 5) and a prediction that has it right
    plus a spurious square blob of ``blob_side``^2 pixels in a corner."""
    shape = (64, 64)
    cell, nucleus = _disk(shape, (32, 32), 12), _disk(shape, (32, 32), 5)
    mask = np.where(nucleus, 2, np.where(cell, 1, 0)).astype(np.uint8)
    prob = np.zeros(shape + (2,), np.float32)
    prob[..., 0], prob[..., 1] = cell, nucleus
    prob[2:2 + blob_side, 2:2 + blob_side, 0] = 1.0
    return prob, {"image_id": f"blob{blob_side}", "mask": mask}


def test_label_cells_drops_small_objects_from_mask_and_instances():
    prob, example = _example(blob_side=5)  # 25 px: under the cut of 30
    labels, instances = label_cells(prob, (0.5, 0.5), "components", min_cell_area=30)
    assert instances.max() == 1 and labels[2:7, 2:7].sum() == 0
    np.testing.assert_array_equal(labels, example["mask"])
    labels, instances = label_cells(prob, (0.5, 0.5), "components", min_cell_area=0)
    assert instances.max() == 2 and (labels[2:7, 2:7] == 1).all()


def test_scores_count_only_kept_objects():
    prob, example = _example(blob_side=8)  # 64 px
    kept = score_probabilities([prob], [example], (0.5, 0.5), min_cell_area=30)[1]
    dropped = score_probabilities([prob], [example], (0.5, 0.5), min_cell_area=65)[1]
    # One true cell; with the blob kept it is one TP and one FP: AP = 1 / (1 + 1 + 0).
    assert kept["ap50"] == pytest.approx(0.5) and dropped["ap50"] == pytest.approx(1.0)
    # Pixel scores see the same cells: 441 cell px right, 64 px extra -> Dice 2*441/(2*441+64).
    cell_px = int(_disk((64, 64), (32, 32), 12).sum())
    assert kept["whole_cell_dice"] == pytest.approx(2 * cell_px / (2 * cell_px + 64))
    assert dropped["whole_cell_dice"] == pytest.approx(1.0)


def test_tuned_area_is_the_smallest_that_removes_the_blobs():
    examples = [_example(side) for side in (5, 7)]  # blobs of 25 and 49 px
    probs, truth = [p for p, _ in examples], [e for _, e in examples]
    # Grid 0, 15, 30, 60, ...: 60 drops both blobs, nothing smaller does.
    assert tune_min_cell_area(probs, truth, (0.5, 0.5)) == 60
    # No object cut by the edge: both settings score alike, and the tie decides.
    assert tune_edge_cells(probs, truth, (0.5, 0.5), 60) == "keep"
    assert tune_edge_cells(probs, truth, (0.5, 0.5), 60, tie="drop") == "drop"
    config = UNetConfig(depth=2, base_filters=4, image_size=32)
    summary = tune_postprocessing(probs, truth, config)
    assert config.min_cell_area == 60 and summary["ap50"] == pytest.approx(1.0)
    assert max(MIN_AREA_GRID) <= 250  # never drops a real cell at half Dataset 1's magnification


def test_tune_command_rewrites_a_finished_run(tmp_path):
    run = tmp_path / "run"
    done = run_cli("train", "--synthetic", "--epochs", "1", "--depth", "2", "--base-filters", "4",
                   "--image-size", "32", "--out", str(run))
    assert done.returncode == 0, done.stderr
    config = json.loads((run / "config.json").read_text())
    config["min_cell_area"] = 7  # not on the grid: tune must replace it
    (run / "config.json").write_text(json.dumps(config))
    done = run_cli("tune", "--model", str(run), "--synthetic")
    assert done.returncode == 0, done.stderr
    tuned = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert tuned["min_cell_area"] in MIN_AREA_GRID and metrics["retuned"] is True
    assert metrics["min_cell_area"] == tuned["min_cell_area"]
    assert metrics["thresholds"] == tuned["thresholds"]


def test_tune_refuses_a_model_that_is_not_a_run(tmp_path):
    from tests.test_export import make_run

    run, _ = make_run(tmp_path / "untrained")  # model.keras and config.json, no metrics.json
    done = run_cli("tune", "--model", str(run), "--synthetic")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (f"{run}: expected a finished run directory (model.keras, config.json, metrics.json)"
            in done.stderr)
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "model.keras"]


def test_evaluate_with_tta_records_it(tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", "--synthetic", "--epochs", "1", "--depth", "2", "--base-filters", "4",
                   "--image-size", "32", "--out", str(run)).returncode == 0
    done = run_cli("evaluate", "--model", str(run), "--synthetic", "--tta", "--out", str(tmp_path / "e"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["tta"] is True


def _edge_example(truth_touches_edge: bool = False):
    """A true cell in the middle and a 15 x 20 px object cut by the top edge, too large for any
    area cut; the ground truth annotates the edge object only if ``truth_touches_edge``."""
    prob, example = _example(blob_side=0)
    prob[0:15, 22:42, 0] = 1.0
    if truth_touches_edge:
        example["mask"][0:15, 22:42] = 1
    return prob, example


def test_edge_cells_drop_cut_cells_only_while_another_cell_is_clear_of_the_edge():
    prob, example = _edge_example()
    labels, instances = label_cells(prob, (0.5, 0.5), "components", 0, edge_cells="drop")
    assert instances.max() == 1 and not labels[0:15].any()
    np.testing.assert_array_equal(labels, example["mask"])
    labels, instances = label_cells(prob, (0.5, 0.5), "components", 0, edge_cells="keep")
    assert instances.max() == 2 and (labels[0:15, 22:42] == 1).all()
    prob[..., :] = 0.0
    prob[0:15, 22:42, 0] = 1.0  # the cut cell alone stays
    labels, instances = label_cells(prob, (0.5, 0.5), "components", 0, edge_cells="drop")
    assert instances.max() == 1 and (labels[0:15, 22:42] == 1).all()
    with pytest.raises(ValueError, match="edge_cells='clear'"):
        label_cells(prob, (0.5, 0.5), "components", 0, edge_cells="clear")


def test_edge_convention_reads_whether_annotated_cells_touch_the_edge():
    _, clear = _edge_example(truth_touches_edge=False)
    _, cut = _edge_example(truth_touches_edge=True)
    assert edge_convention([clear, clear]) == "drop"
    assert edge_convention([clear, cut]) == "keep"
    side = np.zeros((8, 8), np.uint8)
    side[3:5, 7] = 2  # a nucleus on the right-hand edge counts as well
    assert edge_convention([{"mask": side}]) == "keep"


@pytest.mark.parametrize("truth_touches_edge, expected", [(False, "drop"), (True, "keep")])
@pytest.mark.parametrize("tie", ["keep", "drop"])
def test_tuning_drops_edge_cells_only_where_validation_says_so(truth_touches_edge, expected, tie):
    # Validation can tell here, so the tie setting does not matter.
    examples = [_edge_example(truth_touches_edge) for _ in range(2)]
    probs, truth = [p for p, _ in examples], [e for _, e in examples]
    assert tune_edge_cells(probs, truth, (0.5, 0.5), 0, tie=tie) == expected
    config = UNetConfig(depth=2, base_filters=4, image_size=32)
    summary = tune_postprocessing(probs, truth, config)
    assert config.edge_cells == expected and summary["whole_cell_dice"] == pytest.approx(1.0)
    assert score_config(probs, truth, config)[1] == summary


class _PerfectModel:
    """Stands in for a Keras model: predicts each image's own truth (images carry it)."""

    def predict(self, x, batch_size=16, verbose=0):
        cell, nucleus = x[..., 0] > 0.5, x[..., 1] > 0.5
        return np.stack([cell, nucleus], axis=-1).astype(np.float32)


@pytest.mark.parametrize("train_cut_by_edge, expected", [(False, "drop"), (True, "keep")])
def test_a_run_settles_an_undecided_edge_rule_by_its_training_masks(
        tmp_path, train_cut_by_edge, expected):
    # Validation and test images hold no object cut by the edge, so validation cannot tell;
    # the run then follows how its training masks treat cells on the edge.
    from unet_keras.data.loading import FoldData
    from unet_keras.train import tune_and_score

    def example(name, cut=False):
        mask = _example(blob_side=0)[1]["mask"]
        if cut:
            mask[0:15, 22:42] = 1
        image = np.stack([mask > 0, mask == 2, np.zeros_like(mask, bool)], -1)
        return {"image_id": name, "mask": mask, "image": (image * 255).astype(np.uint8)}

    data = FoldData(train=[example("t0"), example("t1", cut=train_cut_by_edge)],
                    val=[example("v0")], test=[example("s0")], source="test", synthetic=True)
    config = UNetConfig(depth=2, base_filters=4, image_size=32)
    tune_and_score(_PerfectModel(), config, data, tmp_path)
    assert config.edge_cells == expected
    assert UNetConfig.load(tmp_path / "config.json").edge_cells == expected


def test_thresholds_are_tuned_per_channel_and_whole_cell_masks_do_not_vote_on_the_nucleus():
    # Cell channel: 0.9 on the cell, 0.7 on a one-pixel ring outside it -> best at > 0.7.
    # Nucleus channel: 0.6 on the annotated nucleus, 0.3 on the rest of the cell.
    prob = np.zeros((12, 12, 2), np.float32)
    cell, ring, nucleus = (_disk((12, 12), (6, 6), radius) for radius in (4, 5, 2))
    prob[..., 0] = np.where(cell, 0.9, np.where(ring, 0.7, 0.0))
    prob[..., 1] = np.where(nucleus, 0.6, np.where(cell, 0.3, 0.0))
    mask = cell.astype(np.uint8) + nucleus
    annotated = {"mask": mask, "image_id": "a"}
    t_cell, t_nucleus = tune_thresholds([prob], [annotated])
    assert 0.7 < t_cell <= 0.9 and 0.3 < t_nucleus <= 0.6
    # A whole-cell mask (nucleus not drawn) holds no nucleus: it must not push the nucleus
    # threshold above 0.6, where nothing would be predicted.
    whole = {"mask": cell.astype(np.uint8), "image_id": "b", "nucleus_annotated": False}
    assert tune_thresholds([prob, prob], [annotated, whole])[1] == t_nucleus
    assert tune_thresholds([prob], [whole])[1] == 0.5  # nothing to tune on: every value ties
