"""End-to-end CLI runs on small synthetic data (tiny model, a couple of epochs)."""

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from tests.test_data import write_dataset

TINY = ["--depth", "2", "--base-filters", "4", "--image-size", "64", "--batch-size", "8"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    done = run_cli("train", "--synthetic", "--epochs", "2", "--out-channels", "2", *TINY,
                   "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SYNTHETIC" in done.stdout
    return out


def test_train_writes_a_complete_run(trained_run):
    for name in ("model.keras", "config.json", "history.csv", "metrics.json", "test_per_image.csv"):
        assert (trained_run / name).is_file(), name
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["synthetic"] is True and "SYNTHETIC" in metrics["data_source"]
    assert metrics["epochs_run"] == 2 and len(metrics["thresholds"]) == 2
    config = json.loads((trained_run / "config.json").read_text())
    assert config["thresholds"] == metrics["thresholds"] and config["out_channels"] == 2
    assert 20 < config["cell_diameter"] < 64  # the synthetic training cells' median, in px
    assert not trained_run.with_name("tiny.partial").exists()


def test_train_refuses_existing_output(trained_run):
    done = run_cli("train", "--synthetic", "--epochs", "1", *TINY, "--out", str(trained_run))
    assert done.returncode == 1 and "already exists" in done.stderr


def test_evaluate_writes_metrics_and_per_image_csv(trained_run, tmp_path):
    done = run_cli("evaluate", "--model", str(trained_run), "--synthetic", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    assert metrics["test"]["n_images"] == len(rows) == 40
    assert np.mean([float(r["whole_cell_dice"]) for r in rows]) == pytest.approx(
        metrics["test"]["whole_cell_dice"], abs=1e-9)
    # Its own test part: the plain model, as training scored it.
    assert (metrics["scale"], metrics["colour"]) == (1.0, "off")


def test_evaluate_scores_all_of_another_dataset_as_predict_would(trained_run, tmp_path):
    write_dataset(tmp_path / "data", n=3, size=48, folder="Dataset 2", grey_edges=True)
    out = tmp_path / "d2"
    done = run_cli("evaluate", "--model", str(trained_run), "--data-dir", str(tmp_path / "data"),
                   "--dataset", "dataset2", "--scale", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test images all (Zheng et al. 2018 dataset2 (3 images)" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["dataset"], metrics["trained_on"], metrics["images"]) == (
        "dataset2", "dataset1", "all")
    assert metrics["scale"] == 2.0 and metrics["n_rescaled"] == 3 and "fold" not in metrics
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [r["image_id"] for r in rows] == ["001", "002", "003"]
    assert {r["scale_factor"] for r in rows} == {"2.0"}
    assert metrics["colour"] == "auto" and "colour_mapped" in rows[0]  # predict's default


def test_evaluate_on_chosen_images_says_which_the_model_trained_on(trained_run, tmp_path):
    done = run_cli("evaluate", "--model", str(trained_run), "--synthetic", "--images",
                   "all", "--colour", "always", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # All 200 synthetic images: 40 are the run's test fold, the other 160 trained or tuned it.
    assert metrics["test"]["n_images"] == 200 and metrics["n_seen_in_training"] == 160
    assert "160 of these 200 images were in the model's training" in done.stdout
    assert metrics["n_colour_mapped"] == 200


def test_evaluate_scores_a_folder_of_images_and_masks(trained_run, tmp_path):
    folder = tmp_path / "mine"
    write_dataset(tmp_path / "d", n=2, size=48, folder="Dataset 1")
    folder.mkdir()
    for i in (1, 2):  # the same pairs as one's own files: cell_N.png with cell_N_mask.png
        shutil.copy(tmp_path / "d" / "Dataset 1" / f"00{i}.bmp", folder / f"cell_{i}.png")
        shutil.copy(tmp_path / "d" / "Dataset 1" / f"00{i}.png", folder / f"cell_{i}_mask.png")
    out = tmp_path / "e"
    done = run_cli("evaluate", "--model", str(trained_run), "--image-dir", str(folder),
                   "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test folder (2 image/mask pairs from" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["image_dir"] == metrics["mask_dir"] == str(folder)
    assert metrics["test"]["n_images"] == 2 and "dataset" not in metrics
    # Images from elsewhere: through predict's defaults unless told otherwise.
    assert (metrics["scale"], metrics["colour"]) == ("auto", "auto")
    assert "scored through predict's defaults" in done.stdout
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [r["image_id"] for r in rows] == ["cell_1", "cell_2"]
    # The cells predict would measure, beside the annotated ones: one row per paired cell.
    measured = metrics["cell_measurements"]
    pairs = list(csv.DictReader((out / "cells_vs_annotated.csv").open()))
    assert len(pairs) == measured["n_cells"] <= 2
    assert {p["image_id"] for p in pairs} <= {"cell_1", "cell_2"}
    assert all(float(p["annotated_area"]) == 25 * 25 for p in pairs)  # the 25 px squares
    assert "per-cell measurements against the annotated cells" in done.stdout
    # And how many cells each image holds, beside how many are annotated.
    counted = metrics["cell_counts"]
    assert counted["images"] == 2 and counted["annotated"] == 2  # one square each
    assert [int(r["annotated_cells"]) for r in rows] == [1, 1]
    assert sum(int(r["predicted_cells"]) for r in rows) == counted["predicted"]
    assert counted["counted_right"] == sum(r["predicted_cells"] == "1" for r in rows)
    assert f"cell count per image as annotated: {counted['counted_right']} of 2" in done.stdout
    # The same pairs read as Dataset 1 score exactly alike.
    again = tmp_path / "again"
    done = run_cli("evaluate", "--model", str(trained_run), "--data-dir", str(tmp_path / "d"),
                   "--images", "all", "--out", str(again))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((again / "metrics.json").read_text())["test"]["whole_cell_dice"] == \
        pytest.approx(metrics["test"]["whole_cell_dice"], abs=1e-12)
    (folder / "cell_2_mask.png").unlink()
    done = run_cli("evaluate", "--model", str(trained_run), "--image-dir", str(folder),
                   "--out", str(tmp_path / "bad"))
    assert done.returncode == 1 and "cell_2.png: no mask" in done.stderr
    assert not (tmp_path / "bad").exists()


def test_evaluate_scores_whole_cell_masks_without_the_nucleus(trained_run, tmp_path):
    """A laboratory's masks of whole cells (0/255): refused as cell-and-nucleus masks, scored
    with --masks cell alike in whole-cell figures to the same cells' 0/128/255 masks."""
    write_dataset(tmp_path / "d", n=2, size=48, folder="Dataset 1")
    grey, cells = tmp_path / "grey", tmp_path / "cells"
    for folder in (grey, cells):
        folder.mkdir()
    for i in (1, 2):
        shutil.copy(tmp_path / "d" / "Dataset 1" / f"00{i}.bmp", grey / f"c{i}.png")
        shutil.copy(tmp_path / "d" / "Dataset 1" / f"00{i}.png", grey / f"c{i}_mask.png")
        shutil.copy(grey / f"c{i}.png", cells / f"c{i}.png")
        labels = np.asarray(Image.open(grey / f"c{i}_mask.png"))
        Image.fromarray(np.where(labels > 0, 255, 0).astype(np.uint8)).save(cells / f"c{i}_mask.png")
    done = run_cli("evaluate", "--model", str(trained_run), "--image-dir", str(cells),
                   "--out", str(tmp_path / "refused"))
    assert done.returncode == 1 and "no mask holds cytoplasm" in done.stderr
    assert "--masks cell" in done.stderr and not (tmp_path / "refused").exists()
    scores = {}
    for folder, masks in ((grey, "cell-nucleus"), (cells, "cell")):
        out = tmp_path / f"e-{masks}"
        done = run_cli("evaluate", "--model", str(trained_run), "--image-dir", str(folder),
                       "--masks", masks, "--out", str(out))
        assert done.returncode == 0, done.stderr[-3000:]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["masks"] == masks
        scores[masks] = metrics["test"]
        scores[masks]["cell_measurements"] = metrics["cell_measurements"]
    assert "nucleus_dice" in scores["cell-nucleus"] and "nucleus_dice" not in scores["cell"]
    # Whole-cell masks measure no nucleus: no nucleus figure is compared.
    assert scores["cell"]["cell_measurements"]["nucleus_area"]["n"] == 0
    for key in ("n", "bias", "mean_abs_error"):
        assert scores["cell"]["cell_measurements"]["area"][key] == pytest.approx(
            scores["cell-nucleus"]["cell_measurements"]["area"][key], nan_ok=True)
    for key in ("whole_cell_dice", "whole_cell_iou", "ap50"):
        assert scores["cell"][key] == pytest.approx(scores["cell-nucleus"][key], abs=1e-12)


@pytest.mark.parametrize("args, message", [
    (["--images", "all", "--fold", "1"], "give one of them"),
    (["--images", "nope-x"], "name none of the 200 images"),
    (["--image-dir", "."], "drop --synthetic"),
    (["--mask-dir", "."], "--mask-dir goes with --image-dir"),
    (["--masks", "cell"], "--masks goes with --image-dir"),
])
def test_evaluate_refuses_conflicting_or_empty_choices(trained_run, tmp_path, args, message):
    done = run_cli("evaluate", "--model", str(trained_run), "--synthetic", *args,
                   "--out", str(tmp_path / "e"))
    assert done.returncode != 0 and message in done.stderr
    assert not (tmp_path / "e").exists()


def test_evaluate_refuses_an_out_that_is_a_file_before_scoring(trained_run, tmp_path):
    (tmp_path / "e").write_text("mine\n")
    done = run_cli("evaluate", "--model", str(trained_run), "--synthetic", "--out",
                   str(tmp_path / "e"))
    assert done.returncode == 2 and "a file is there; expected a directory" in done.stderr
    assert (tmp_path / "e").read_text() == "mine\n"


def test_evaluate_without_a_model_needs_out():
    done = run_cli("evaluate", "--synthetic")
    assert done.returncode == 2 and "give --out" in done.stderr


def test_predict_writes_masks_overlays_and_cells(trained_run, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (75, 130, 3), np.uint8)).save(inputs / "odd.png")
    Image.fromarray(rng.integers(0, 255, (64, 64), np.uint8)).save(inputs / "gray.bmp")
    (inputs / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    done = run_cli("predict", str(inputs), "--model", str(trained_run), "--out", str(out))
    assert done.returncode == 3, done.stderr[-3000:]  # one input refused, the rest written
    assert "broken.png" in done.stderr and "not a readable image" in done.stderr
    assert "converted grayscale to RGB" in done.stdout
    mask = np.array(Image.open(out / "odd_mask.png"))
    assert mask.shape == (75, 130) and set(np.unique(mask)) <= {0, 128, 255}
    assert np.array(Image.open(out / "odd_overlay.png")).shape == (75, 130, 3)
    assert (out / "gray_mask.png").is_file() and not (out / "broken_mask.png").exists()
    header = (out / "cells.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["image", "label", "area"] and "nc_ratio" in header
    # images.csv: one row per written image (not the refused one), its size, its cell count as
    # cells.csv has it, and the conversion its pixels went through.
    cells = list(csv.DictReader((out / "cells.csv").open()))
    images = {r["image"]: r for r in csv.DictReader((out / "images.csv").open())}
    assert sorted(images) == ["gray.bmp", "odd.png"]
    assert (images["odd.png"]["height"], images["odd.png"]["width"]) == ("75", "130")
    for name, row in images.items():
        assert int(row["cells"]) == sum(c["image"] == name for c in cells)
    assert "grayscale" in images["gray.bmp"]["conversions"] and images["odd.png"]["conversions"] == ""
    strict = run_cli("predict", str(inputs), "--model", str(trained_run), "--out",
                     str(tmp_path / "strict"), "--strict")
    assert strict.returncode == 1 and "broken.png" in strict.stderr


def test_predict_at_another_scale(trained_run, tmp_path):
    image = tmp_path / "cells.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (70, 90, 3), np.uint8)).save(image)
    refused = run_cli("predict", str(image), "--model", str(trained_run), "--scale", "9",
                      "--out", str(tmp_path / "no"))
    assert refused.returncode == 1 and "--scale '9'" in refused.stderr
    assert not (tmp_path / "no").exists()
    for scale in ("2", "auto"):
        out = tmp_path / scale
        done = run_cli("predict", str(image), "--model", str(trained_run), "--scale", scale,
                       "--out", str(out))
        assert done.returncode == 0, done.stderr[-3000:]
        assert np.array(Image.open(out / "cells_mask.png")).shape == (70, 90)
        (row,) = csv.DictReader((out / "images.csv").open())
        if scale == "2":
            assert row["scale_factor"] == "2.0" and row["colour_mapped"] in ("0", "1")
    assert "--scale auto: " in done.stdout
    # A run trained before runs recorded their cells' size.
    assert_refused_then_off(trained_run, tmp_path, image, "--scale", {"cell_diameter": 0.0})


def assert_refused_then_off(run, tmp_path, image, option, missing):
    """A copy of ``run`` without a recorded reference: ``option auto`` is refused before --out
    exists, saying what to do, and the default leaves the option off."""
    old_run = tmp_path / "old-run"
    shutil.copytree(run, old_run)
    config = json.loads((old_run / "config.json").read_text())
    (old_run / "config.json").write_text(json.dumps({**config, **missing}))
    refused = run_cli("predict", str(image), "--model", str(old_run), option, "auto",
                      "--out", str(tmp_path / "no"))
    assert refused.returncode == 1 and "unet-keras tune" in refused.stderr
    assert not (tmp_path / "no").exists()
    done = run_cli("predict", str(image), "--model", str(old_run), "--out", str(tmp_path / "old"))
    assert done.returncode == 0 and f"{option} auto" not in done.stdout


def test_predict_in_another_stains_colours(trained_run, tmp_path):
    config = json.loads((trained_run / "config.json").read_text())
    assert config["colour_reference"]["n_images"] > 6  # recorded by training
    image = tmp_path / "cells.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 80, 3), np.uint8)).save(image)
    done = run_cli("predict", str(image), "--model", str(trained_run), "--colour", "always",
                   "--scale", "1", "--out", str(tmp_path / "always"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--colour always: 1 of 1 image(s) mapped" in done.stdout
    (row,) = csv.DictReader((tmp_path / "always" / "images.csv").open())
    assert (row["scale_factor"], row["colour_mapped"]) == ("1.0", "1")
    assert np.array(Image.open(tmp_path / "always" / "cells_mask.png")).shape == (64, 80)
    # A run trained before runs recorded their colours.
    assert_refused_then_off(trained_run, tmp_path, image, "--colour", {"colour_reference": {}})


def test_train_on_bad_data_dir_leaves_nothing(tmp_path):
    write_dataset(tmp_path / "data", n=3)
    (tmp_path / "data" / "Dataset 1" / "002.png").unlink()
    out = tmp_path / "run"
    done = run_cli("train", "--data-dir", str(tmp_path / "data"), "--epochs", "1", *TINY,
                   "--out", str(out))
    assert done.returncode == 1
    assert "002.bmp: no mask; expected 002.png" in done.stderr
    assert not out.exists() and not out.with_name("run.partial").exists()


def test_missing_model_is_a_clear_error(tmp_path):
    # An image to predict, so the run gets past its inputs to the model.
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(inputs / "a.png")
    done = run_cli("predict", str(inputs), "--model", str(tmp_path / "nope"),
                   "--out", str(tmp_path / "o"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "nope: model file not found; expected a .keras file or a run directory" in done.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags, stain", [([], False), (["--stain"], True), (["--no-stain"], False)])
def test_stain_flag_sets_the_recipe(flags, stain):
    from unet_keras.cli_parser import build_parser, recipe_config

    args = build_parser().parse_args(["train", "--out", "x", *flags])
    assert recipe_config(args).stain_augment is stain


@pytest.mark.parametrize("flags, field, value", [
    ([], "ema", 0.0), (["--ema", "0.99"], "ema", 0.99),
    ([], "elastic", 0.0), (["--elastic", "3"], "elastic", 3.0),
    ([], "blur", 0.0), (["--blur", "1.5"], "blur", 1.5),
    ([], "checkpoint_metric", "whole_cell"),
    (["--checkpoint-metric", "mean"], "checkpoint_metric", "mean"),
    ([], "batch_norm_stats", "recomputed"),
    (["--batch-norm-stats", "moving"], "batch_norm_stats", "moving"),
    ([], "nucleus_weight", 1.0), (["--nucleus-weight", "2"], "nucleus_weight", 2.0),
    ([], "final_zoom_epochs", 0), (["--final-zoom-epochs", "10"], "final_zoom_epochs", 10),
    ([], "boundary_weight", 0.0), (["--boundary-weight", "2"], "boundary_weight", 2.0),
    ([], "weight_decay", 0.0), (["--weight-decay", "0.05"], "weight_decay", 0.05),
    ([], "lovasz_weight", 0.0), (["--lovasz-weight", "1"], "lovasz_weight", 1.0),
    ([], "train_fraction", 1.0), (["--train-fraction", "0.5"], "train_fraction", 0.5),
])
def test_recipe_flags_set_the_recipe(flags, field, value):
    from unet_keras.cli_parser import build_parser, recipe_config

    args = build_parser().parse_args(["cv", "--out", "x", *flags])
    assert getattr(recipe_config(args), field) == value


def test_train_on_held_out_ids_and_evaluate_them(tmp_path):
    ids = ",".join(f"synthetic-{i:04d}" for i in range(10))
    out = tmp_path / "held"
    done = run_cli("train", "--synthetic", "--epochs", "1", *TINY, "--test-ids", ids,
                   "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_ids"] == ids and metrics["n_test"] == 10 and metrics["n_val"] == 19
    assert json.loads((out / "config.json").read_text())["test_ids"] == ids
    done = run_cli("evaluate", "--model", str(out), "--synthetic")
    assert done.returncode == 0 and f"test images {ids}" in done.stdout
    scored = json.loads((out / "evaluate-test-ids" / "metrics.json").read_text())
    assert scored["test"]["whole_cell_dice"] == pytest.approx(metrics["test"]["whole_cell_dice"])
    assert scored["colour"] == "off"
    done = run_cli("evaluate", "--model", str(out), "--synthetic", "--colour", "always",
                   "--out", str(tmp_path / "mapped"))
    assert done.returncode == 0 and "--colour always: 10 of 10 image(s) mapped" in done.stdout
    assert json.loads((tmp_path / "mapped" / "metrics.json").read_text())["colour"] == "always"
    refused = run_cli("train", "--synthetic", "--test-ids", "nope", "--out", str(tmp_path / "n"))
    assert refused.returncode == 1 and "test ids 'nope' name 0 of the 200" in refused.stderr
    assert not (tmp_path / "n").exists() and not (tmp_path / "n.partial").exists()


def test_train_on_all_data_keeps_no_test_part_and_evaluate_refuses_one(tmp_path):
    out = tmp_path / "all"
    done = run_cli("train", "--synthetic", "--epochs", "1", *TINY, "--all-data", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train 180, val 20, test 0" in done.stdout and "validation (no test part)" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["all_data"] is True and metrics["test"] is None
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (180, 20, 0)
    assert metrics["val"]["n_images"] == 20 and not (out / "test_per_image.csv").exists()
    assert json.loads((out / "config.json").read_text())["all_data"] is True
    done = run_cli("tune", "--model", str(out), "--synthetic")  # retuned, nothing to rescore
    assert done.returncode == 0 and "tuned on 20 validation images" in done.stdout
    assert json.loads((out / "metrics.json").read_text())["test"] is None
    # Its own test part does not exist, whichever fold is asked for; named images still score.
    for extra in ([], ["--fold", "1"]):
        refused = run_cli("evaluate", "--model", str(out), "--synthetic", *extra,
                          "--out", str(tmp_path / "e"))
        assert refused.returncode == 1 and "trained with --all-data" in refused.stderr
        assert not (tmp_path / "e").exists()
    done = run_cli("evaluate", "--model", str(out), "--synthetic", "--images", "synthetic-0001",
                   "--out", str(tmp_path / "named"))
    assert done.returncode == 0
    assert "1 of these 1 images were in the model's training or validation part (it trained " \
           "with --all-data)" in done.stdout
    refused = run_cli("train", "--synthetic", "--all-data", "--test-ids", "1-5",
                      "--out", str(tmp_path / "both"))
    assert refused.returncode == 1 and "all_data with test_ids='1-5'" in refused.stderr
    refused = run_cli("cv", "--synthetic", "--all-data", "--out", str(tmp_path / "cv"))
    assert refused.returncode == 2 and not (tmp_path / "cv").exists()
