"""benchmarks.holdout on hand-made runs: paired per-image differences worked out by hand, the
recipe differences named, refusals that write nothing."""

import csv
import json

import pytest

from benchmarks.holdout import JSON_NAME, MARKDOWN_NAME, PLOT_NAME, main
from unet_keras.config import UNetConfig

SOURCE = "Zheng et al. 2018 dataset1 (300 images) from /data"


def make_run(path, ids, dice, **recipe):
    """A finished `unet-keras train --test-ids` run: the files the report reads."""
    path.mkdir(parents=True)
    UNetConfig(test_ids="201-203", **recipe).save(path / "config.json")
    test = {"whole_cell_dice": sum(dice) / len(dice), "whole_cell_iou": 0.9, "ap50": 1.0,
            "ap50_95": 0.9, "n_images": len(ids)}
    (path / "metrics.json").write_text(json.dumps(
        {"data_source": SOURCE, "n_train": 180, "train_seconds": 600.0, "test": test}))
    with (path / "test_per_image.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["image_id", "whole_cell_dice", "whole_cell_iou"])
        writer.writeheader()
        for image_id, d in zip(ids, dice):
            writer.writerow({"image_id": image_id, "whole_cell_dice": d, "whole_cell_iou": d - 0.05})
    return path


IDS = ["201", "202", "203"]


def test_paired_differences_by_image(tmp_path):
    base = make_run(tmp_path / "base", IDS, [0.90, 0.80, 0.70])
    # Differences +0.06, +0.00, -0.03: mean 0.01, sd sqrt((0.0025 + 0.0001 + 0.0016) / 2) =
    # sqrt(0.0021), standard error sqrt(0.0021 / 3) = sqrt(0.0007).
    other = make_run(tmp_path / "other", IDS, [0.96, 0.80, 0.67], colour_strength=2.0)
    out = tmp_path / "report"
    assert main([f"base={base}", f"colour2={other}", "--out", str(out)]) == 0
    report = json.loads((out / JSON_NAME).read_text())
    row = report["runs"][1]
    assert row["differs_from_baseline"] == {"colour_strength": 2.0}
    diff = row["vs_baseline"]["whole_cell_dice"]
    assert diff["mean"] == pytest.approx(0.01) and diff["se"] == pytest.approx(0.0007 ** 0.5)
    assert (diff["better"], diff["worse"]) == (1, 1) and row["vs_baseline"]["nucleus_dice"] is None
    markdown = (out / MARKDOWN_NAME).read_text()
    assert "| colour2 | +0.0100 ± 0.0265 (1 up, 1 down) |" in markdown
    assert report["test_ids"] == "201-203" and (out / PLOT_NAME).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("other_ids, named", [
    (["201", "202", "204"], "tested on other images"), (None, "cannot read the run"),
])
def test_runs_that_cannot_be_compared_exit_1_and_write_nothing(tmp_path, capsys, other_ids, named):
    base = make_run(tmp_path / "base", IDS, [0.9, 0.8, 0.7])
    other = tmp_path / "other"
    if other_ids:
        make_run(other, other_ids, [0.9, 0.8, 0.7])
    assert main([f"base={base}", f"x={other}", "--out", str(tmp_path / "report")]) == 1
    assert named in capsys.readouterr().err and not (tmp_path / "report").exists()


def test_an_evaluate_output_names_predicts_options(tmp_path):
    base = make_run(tmp_path / "base", IDS, [0.90, 0.80, 0.70])
    (base / "model.keras").write_bytes(b"")  # resolve_run only looks for it
    scored = tmp_path / "eval"
    scored.mkdir()
    test = {"whole_cell_dice": 0.9, "n_images": 3}
    (scored / "metrics.json").write_text(json.dumps(
        {"data_source": SOURCE, "model": str(base / "model.keras"), "colour": "auto",
         "scale": "auto", "test": test}))
    with (scored / "per_image.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["image_id", "whole_cell_dice", "whole_cell_iou"])
        writer.writeheader()
        for image_id in IDS:
            writer.writerow({"image_id": image_id, "whole_cell_dice": 0.9, "whole_cell_iou": 0.85})
    out = tmp_path / "report"
    assert main([f"base={base}", f"both={scored}", "--out", str(out)]) == 0
    row = json.loads((out / JSON_NAME).read_text())["runs"][1]
    assert row["differs_from_baseline"] == {"predict --colour": "auto", "predict --scale": "auto"}
