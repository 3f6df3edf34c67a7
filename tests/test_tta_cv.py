"""benchmarks.tta_cv on a tiny synthetic cross-validation: its plain column is the scoring of
`unet-keras cv` itself, the gain is TTA minus plain, and bad input writes nothing."""

import json

import pytest

from benchmarks.tta_cv import JSON_NAME, MARKDOWN_NAME, main
from tests.conftest import run_cli

TINY = ["--depth", "2", "--base-filters", "4", "--image-size", "32", "--batch-size", "8",
        "--epochs", "1"]


@pytest.fixture(scope="module")
def tiny_cv(tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "cv"
    done = run_cli("cv", "--synthetic", *TINY, "--folds", "0,1", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_plain_scores_are_the_cv_scores_and_gain_is_the_difference(tiny_cv, tmp_path, capsys):
    assert main([str(tiny_cv), "--out", str(tmp_path / "r"), "--synthetic"]) == 0
    report = json.loads((tmp_path / "r" / JSON_NAME).read_text())
    assert [row["fold"] for row in report["folds"]] == [0, 1]
    for row in report["folds"]:
        trained = json.loads((tiny_cv / f"fold-{row['fold']}" / "metrics.json").read_text())
        for key in ("whole_cell_dice", "whole_cell_iou", "nucleus_dice", "ap50"):
            assert row["plain"][key] == pytest.approx(trained["test"][key], abs=1e-6)
        assert row["tta"]["seconds_per_image"] > 0
    gains = [r["tta"]["whole_cell_dice"] - r["plain"]["whole_cell_dice"] for r in report["folds"]]
    assert report["mean"]["gain_whole_cell_dice"] == pytest.approx(sum(gains) / 2)
    assert "| whole-cell Dice |" in (tmp_path / "r" / MARKDOWN_NAME).read_text()


def test_a_directory_without_folds_exits_1_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "r"), "--synthetic"]) == 1
    assert "no complete fold-k runs" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
