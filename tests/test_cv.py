"""Cross-validation and data-parallel training: the report aggregated from hand-made fold runs
(means and sds worked out here), the `cv` command's skips, refusals and resume, and training
split over two CPU devices."""

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from unet_keras import cli
from unet_keras.config import UNetConfig
from unet_keras.cv import CV_JSON, CV_MARKDOWN, CV_PLOT, CVError, parse_folds, summarize

TINY = ["--depth", "2", "--base-filters", "4", "--image-size", "32", "--batch-size", "8"]
TINY_RECIPE = {"depth": 2, "base_filters": 4, "image_size": 32, "batch_size": 8, "epochs": 2,
               "out_channels": 1}
SOURCE = "SYNTHETIC smear images (not real data), 200 images"
# fold: whole-cell Dice, IoU, AP@0.5, AP@[.5:.95], training seconds, images/s
FOLDS = {0: (0.90, 0.80, 0.5, 0.40, 100.0, 2.0),
         1: (0.80, 0.60, 0.5, 0.30, 200.0, 1.0),
         2: (0.70, 0.70, 0.8, 0.20, 600.0, 3.0)}
# Worked out by hand, sample sd (n - 1 = 2): Dice 0.9/0.8/0.7 -> 0.8 ± 0.1; IoU 0.8/0.6/0.7 ->
# 0.7 ± 0.1; AP50 0.5/0.5/0.8 -> 0.6 ± sqrt((0.01 + 0.01 + 0.04) / 2) = sqrt(0.03);
# AP50:95 -> 0.3 ± 0.1; seconds 100/200/600 -> 300 ± sqrt((4e4 + 1e4 + 9e4) / 2) = sqrt(7e4);
# images/s 2/1/3 -> 2 ± 1.
EXPECTED = {"whole_cell_dice": (0.8, 0.1), "whole_cell_iou": (0.7, 0.1),
            "ap50": (0.6, math.sqrt(0.03)), "ap50_95": (0.3, 0.1),
            "train_seconds": (300.0, math.sqrt(7e4)), "train_images_per_second": (2.0, 1.0)}


def make_fold(out, fold, scores, nucleus=None, **recipe):
    """A complete fold run as `unet-keras train` leaves it (the files the report reads)."""
    dice, iou, ap50, ap50_95, seconds, per_second = scores
    run = out / f"fold-{fold}"
    run.mkdir(parents=True)
    UNetConfig(fold=fold, thresholds=(0.45,), min_cell_area=10 * fold,  # tuned per fold
               cell_diameter=40.0 + fold,  # measured on each fold's own training masks
               **{**TINY_RECIPE, **recipe}).save(run / "config.json")
    test = {"whole_cell_dice": dice, "whole_cell_dice_sd": 0.05, "whole_cell_iou": iou,
            "ap50": ap50, "ap50_95": ap50_95, "n_images": 40}
    if nucleus is not None:
        test.update(nucleus_dice=nucleus[0], nucleus_iou=nucleus[1])
    metrics = {"data_source": SOURCE, "synthetic": True, "fold": fold, "n_test": 40,
               "best_epoch": 2, "train_seconds": seconds, "train_images_per_second": per_second,
               "test": test, "devices": 1}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture
def three_folds(tmp_path):
    out = tmp_path / "cv"
    for fold in (2, 0, 1):  # created out of order: rows come back by fold number
        make_fold(out, fold, FOLDS[fold])
    return out


def test_summarize_gives_hand_computed_mean_and_sd(three_folds):
    summary = summarize(sorted(three_folds.iterdir()))
    assert [row["fold"] for row in summary["folds"]] == [0, 1, 2]
    assert summary["columns"] == list(EXPECTED)  # no nucleus scores for a 1-channel recipe
    for key, (mean, sd) in EXPECTED.items():
        assert summary["mean"][key] == pytest.approx(mean, abs=1e-12), key
        assert summary["sd"][key] == pytest.approx(sd, abs=1e-9), key
    assert summary["folds"][1]["whole_cell_iou"] == 0.60
    assert summary["folds"][2]["min_cell_area"] == 20 and summary["folds"][2]["thresholds"] == [0.45]
    assert summary["synthetic"] and summary["data_source"] == SOURCE
    assert summary["recipe"]["epochs"] == 2 and "fold" not in summary["recipe"]


def test_nucleus_scores_of_two_channel_folds_and_one_fold_has_no_sd(tmp_path):
    for fold, nucleus in ((0, (0.6, 0.5)), (3, (0.8, 0.7))):
        make_fold(tmp_path, fold, FOLDS[0], nucleus=nucleus, out_channels=2)
    summary = summarize([tmp_path / "fold-0", tmp_path / "fold-3"])
    # 0.6, 0.8 -> 0.7 ± sqrt(0.01 + 0.01) / sqrt(1); 0.5, 0.7 -> 0.6 ± the same.
    assert summary["mean"]["nucleus_dice"] == pytest.approx(0.7)
    assert summary["sd"]["nucleus_iou"] == pytest.approx(math.sqrt(0.02))
    assert summary["sd"]["whole_cell_dice"] == pytest.approx(0.0)
    single = summarize([tmp_path / "fold-3"])
    assert single["sd"]["nucleus_dice"] is None and single["mean"]["nucleus_dice"] == 0.8


def test_aggregate_only_writes_json_markdown_and_plot(three_folds, capsys):
    assert cli.main(["cv", "--aggregate-only", "--out", str(three_folds)]) == 0
    assert "3 fold(s) of 5" in capsys.readouterr().out
    saved = json.loads((three_folds / CV_JSON).read_text())
    assert saved["mean"]["ap50"] == pytest.approx(0.6) and saved["n_folds"] == 3
    markdown = (three_folds / CV_MARKDOWN).read_text()
    assert "SYNTHETIC" in markdown and SOURCE in markdown and "depth 2" in markdown
    assert "| 1 | 40 | 2 | 0.8000 | 0.6000 | 0.5000 | 0.3000 | 200 | 1.00 |" in markdown
    assert ("| mean ± sd | | | 0.8000 ± 0.1000 | 0.7000 ± 0.1000 | 0.6000 ± 0.1732 | "
            "0.3000 ± 0.1000 | 300 ± 265 | 2.00 ± 1.00 |") in markdown
    with Image.open(three_folds / CV_PLOT) as plot:
        assert plot.format == "PNG" and min(plot.size) > 100
    assert "of the training part" not in markdown


def test_the_report_names_a_fraction_of_the_training_part(tmp_path):
    out = tmp_path / "cv"
    for fold in (0, 1):
        make_fold(out, fold, FOLDS[fold], train_fraction=0.5)
    assert cli.main(["cv", "--aggregate-only", "--out", str(out)]) == 0
    assert ("10% of the rest for validation; 50% of the training part)"
            in (out / CV_MARKDOWN).read_text())


@pytest.mark.parametrize("setting, value, name, named", [
    ("weight_decay", 0.05, "weight decay", "Adam lr 0.001 (plateau, weight decay 0.05)"),
    ("lovasz_weight", 1.0, "Lovasz", "(plateau), Lovasz hinge weight 1, dropout"),
])
def test_the_report_names_a_loss_or_optimiser_setting_only_when_it_is_on(
        tmp_path, three_folds, setting, value, name, named):
    assert cli.main(["cv", "--aggregate-only", "--out", str(three_folds)]) == 0
    assert name not in (three_folds / CV_MARKDOWN).read_text()
    out = tmp_path / "cv-setting"
    for fold in (0, 1):
        make_fold(out, fold, FOLDS[fold], **{setting: value})
    assert cli.main(["cv", "--aggregate-only", "--out", str(out)]) == 0
    assert named in (out / CV_MARKDOWN).read_text()


@pytest.mark.parametrize("damage, named", [
    (lambda m: "{not json", "cannot read fold metrics"),
    (lambda m: json.dumps({**m, "test": {k: v for k, v in m["test"].items() if k != "ap50"}}),
     "missing or non-numeric ap50"),
])
def test_a_bad_fold_is_named_and_the_old_report_kept(three_folds, capsys, damage, named):
    assert cli.main(["cv", "--aggregate-only", "--out", str(three_folds)]) == 0
    before = {name: (three_folds / name).read_bytes() for name in (CV_JSON, CV_MARKDOWN, CV_PLOT)}
    metrics = three_folds / "fold-1" / "metrics.json"
    metrics.write_text(damage(json.loads(metrics.read_text())))
    capsys.readouterr()
    assert cli.main(["cv", "--aggregate-only", "--out", str(three_folds)]) == 1
    err = capsys.readouterr().err
    assert str(metrics) in err and named in err
    assert {name: (three_folds / name).read_bytes() for name in before} == before
    assert not [p for p in three_folds.iterdir() if p.name.startswith(".")]  # no temporaries


def test_folds_of_different_recipes_are_refused(tmp_path):
    make_fold(tmp_path, 0, FOLDS[0])
    make_fold(tmp_path, 1, FOLDS[1], epochs=3)
    with pytest.raises(CVError, match=r"fold-1/config.json: recipe differs .* in epochs"):
        summarize([tmp_path / "fold-0", tmp_path / "fold-1"])


def test_aggregate_of_an_empty_directory_writes_nothing(tmp_path, capsys):
    assert cli.main(["cv", "--aggregate-only", "--out", str(tmp_path)]) == 1
    assert "no complete folds" in capsys.readouterr().err and not list(tmp_path.iterdir())
    assert cli.main(["cv", "--aggregate-only", "--epochs", "3", "--out", str(tmp_path)]) == 2


@pytest.mark.parametrize("text, folds", [(None, [0, 1, 2, 3, 4]), ("0,2", [0, 2]), ("4,1", [1, 4])])
def test_parse_folds(text, folds):
    assert parse_folds(text, 5) == folds


@pytest.mark.parametrize("text", ["5", "0,0", "a", "", "-1"])
def test_parse_folds_refuses(text):
    with pytest.raises(CVError, match="expected distinct fold numbers in 0..4"):
        parse_folds(text, 5)


def test_cv_skips_complete_folds_and_refuses_another_recipe(three_folds, capsys):
    argv = ["cv", "--synthetic", *TINY, "--epochs", "2", "--out-channels", "1", "--folds", "0,2",
            "--out", str(three_folds)]
    assert cli.main(argv) == 0  # nothing to train: no data loaded, no model built
    out = capsys.readouterr().out
    assert "fold 0: complete" in out and "fold 2: complete" in out and ": training" not in out
    assert json.loads((three_folds / CV_JSON).read_text())["n_folds"] == 3  # every complete fold
    argv[argv.index("--epochs") + 1] = "3"
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert str(three_folds / "fold-0" / "config.json") in err and "epochs" in err


def test_check_devices_refusals(monkeypatch):
    import keras

    from unet_keras.distribution import DeviceError, check_devices

    check_devices(1, 7)
    with pytest.raises(DeviceError, match="batch size 7 cannot be split over 2 devices"):
        check_devices(2, 7)
    found = len(keras.distribution.list_devices())
    with pytest.raises(DeviceError, match=f"requested but only {found} found"):
        check_devices(found + 1, 8 * (found + 1))
    with pytest.raises(DeviceError, match="expected 1 or more"):
        check_devices(0, 8)
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(DeviceError, match="needs KERAS_BACKEND=jax"):
        check_devices(2, 8)


def test_even_batches_cut_the_short_batch_to_a_multiple_of_the_devices():
    from unet_keras.distribution import EvenBatches

    config = UNetConfig(depth=2, image_size=32, batch_size=4, augment=False)
    examples = [{"image": np.full((40, 40, 3), i, np.uint8), "mask": np.zeros((40, 40), np.uint8),
                 "image_id": i} for i in range(7)]
    two = EvenBatches(examples, config, seed=0, devices=2)  # 7 = 4 + 3 -> 4 + 2
    assert [len(two[i][0]) for i in range(len(two))] == [4, 2]
    four = EvenBatches(examples, config, seed=0, devices=4)  # the short batch of 3 sits out
    assert len(four) == 1 and len(four[0][1]) == 4


TWO_CPUS = {"JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2 "
                         "--xla_backend_optimization_level=0"}


def train_on(devices: int, out, epochs: int = 1) -> dict:
    done = run_cli("train", "--synthetic", "--epochs", str(epochs), *TINY, "--devices",
                   str(devices), "--out", str(out), env=TWO_CPUS)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def test_train_on_two_devices_writes_a_model(tmp_path, capsys):
    metrics = train_on(2, tmp_path / "dp")
    assert (tmp_path / "dp" / "model.keras").is_file()
    assert metrics["devices"] == 2 and metrics["epochs_run"] == 1
    assert 0.0 <= metrics["test"]["whole_cell_dice"] <= 1.0
    import keras  # this process has its own device count

    found = len(keras.distribution.list_devices())
    assert cli.main(["train", "--synthetic", "--devices", str(found + 1), "--batch-size",
                     str(8 * (found + 1)), "--out", str(tmp_path / "no")]) == 1
    assert f"requested but only {found} found" in capsys.readouterr().err
    assert not (tmp_path / "no").exists() and not (tmp_path / "no.partial").exists()


@pytest.mark.slow
def test_two_devices_train_the_same_model_as_one(tmp_path):
    """Data parallelism splits each batch, it does not change the computation: batch-norm
    statistics and the loss are over the whole batch, the seed is the same, so the epoch's
    loss agrees to float32 reduction-order noise (measured: identical after 1 epoch)."""
    one, two = train_on(1, tmp_path / "one"), train_on(2, tmp_path / "two")
    history = [list(csv.DictReader((tmp_path / name / "history.csv").open()))
               for name in ("one", "two")]
    assert float(history[1][0]["loss"]) == pytest.approx(float(history[0][0]["loss"]), rel=1e-5)
    assert float(history[1][0]["val_dice"]) == pytest.approx(float(history[0][0]["val_dice"]),
                                                             abs=1e-3)
    assert one["devices"] == 1 and two["devices"] == 2


def test_cv_checks_the_folds_it_was_not_asked_for_before_training(three_folds, capsys,
                                                                  monkeypatch):
    """The report covers every complete fold in --out, so folds 0-2 of another recipe, or of
    other data, refuse training fold 3 into it (it trained, then no report could be written)."""
    import unet_keras.train

    def trained(*args, **kwargs):
        raise AssertionError("trained a fold")

    monkeypatch.setattr(unet_keras.train, "train", trained)
    argv = ["cv", "--synthetic", *TINY, "--epochs", "3", "--out-channels", "1", "--folds", "3",
            "--out", str(three_folds)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert str(three_folds / "fold-0" / "config.json") in err and "epochs" in err
    argv[argv.index("--epochs") + 1] = "2"  # the folds' recipe, but not their data
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert str(three_folds / "fold-0" / "metrics.json") in err and f"trained on {SOURCE!r}" in err


@pytest.mark.slow
def test_cv_trains_resumes_an_interrupted_fold_and_reports(tmp_path, monkeypatch, capsys):
    from unet_keras.checkpoint import EpochCheckpoint

    out = tmp_path / "cv"
    argv = ["cv", "--synthetic", *TINY, "--epochs", "2", "--folds", "0,1", "--out", str(out)]
    save = EpochCheckpoint.on_epoch_end

    def save_then_stop(self, epoch, logs=None):  # fold 0 trains whole; fold 1 stops after 1 epoch
        save(self, epoch, logs)
        if self.run.name == "fold-1.partial":
            raise KeyboardInterrupt

    monkeypatch.setattr(EpochCheckpoint, "on_epoch_end", save_then_stop)
    assert cli.main(argv) == 130
    assert (out / "fold-0" / "metrics.json").is_file() and (out / "fold-1.partial").is_dir()
    monkeypatch.setattr(EpochCheckpoint, "on_epoch_end", save)
    assert "resumes an interrupted fold-k.partial" in capsys.readouterr().err
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "fold 0: complete" in printed and "fold 1: resuming" in printed
    fold1 = json.loads((out / "fold-1" / "metrics.json").read_text())
    assert fold1["resumed_after_epochs"] == [1] and fold1["epochs_run"] == 2
    summary = json.loads((out / CV_JSON).read_text())
    assert [row["fold"] for row in summary["folds"]] == [0, 1]
    dice = [row["whole_cell_dice"] for row in summary["folds"]]
    assert summary["mean"]["whole_cell_dice"] == pytest.approx(np.mean(dice))
    assert summary["sd"]["whole_cell_dice"] == pytest.approx(abs(dice[0] - dice[1]) / math.sqrt(2))


@pytest.mark.parametrize("recipe, message", [
    ({"all_data": True}, "all_data: cross-validation tests on each fold"),
    ({"test_ids": "1-5"}, "test_ids='1-5': cross-validation tests on each fold"),
])
def test_cv_refuses_a_fixed_test_part_or_none(tmp_path, recipe, message):
    from unet_keras.cv import run_cv

    with pytest.raises(CVError, match=message):
        run_cv(UNetConfig(**recipe), tmp_path / "cv", [0], synthetic=True)
    assert not (tmp_path / "cv").exists()
