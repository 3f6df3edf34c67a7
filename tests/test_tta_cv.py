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


def test_fragment_sweep_at_the_default_fraction_is_the_cv_scoring(tiny_cv, tmp_path):
    from benchmarks import nucleus_fragments
    from unet_keras import postprocess

    default = postprocess.NUCLEUS_FRAGMENT_FRACTION
    out = tmp_path / "f"
    assert nucleus_fragments.main([str(tiny_cv), "--out", str(out), "--synthetic",
                                   "--fractions", f"0,{default:g},0.9"]) == 0
    assert postprocess.NUCLEUS_FRAGMENT_FRACTION == default  # the sweep puts it back
    report = json.loads((out / nucleus_fragments.JSON_NAME).read_text())
    for row in report["folds"]:
        trained = json.loads((tiny_cv / f"fold-{row['fold']}" / "metrics.json").read_text())
        for key in ("whole_cell_dice", "nucleus_dice", "ap50"):
            assert row[f"test_{default:g}"][key] == pytest.approx(trained["test"][key], abs=1e-6)
        # The rule never touches the whole cell.
        assert row["test_0.9"]["whole_cell_dice"] == pytest.approx(row["test_0"]["whole_cell_dice"])
    assert "| 0.9 |" in (out / nucleus_fragments.MARKDOWN_NAME).read_text()


def test_fragment_sweep_rejects_a_fraction_of_one(tiny_cv, tmp_path, capsys):
    from benchmarks import nucleus_fragments

    assert nucleus_fragments.main([str(tiny_cv), "--out", str(tmp_path / "f"), "--synthetic",
                                   "--fractions", "0,1"]) == 1
    assert "expected values in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_cell_measures_pair_every_cell_the_cv_scoring_finds(tiny_cv, tmp_path):
    """The per-cell benchmark over the tiny CV: one count row per test image, pairs whose
    measurements are those of measure_cells, and the report's files."""
    from benchmarks import cell_measures

    out = tmp_path / "m"
    assert cell_measures.main([str(tiny_cv), "--out", str(out), "--synthetic",
                               "--instances", "components"]) == 0
    report = json.loads((out / cell_measures.JSON_NAME).read_text())
    assert report["instances"] == "components" and [f["fold"] for f in report["folds"]] == [0, 1]
    for fold in report["folds"]:
        trained = json.loads((tiny_cv / f"fold-{fold['fold']}" / "metrics.json").read_text())
        assert len(fold["counts"]) == trained["test"]["n_images"]
        for pair in fold["pairs"]:
            assert pair["iou"] > cell_measures.MATCH_IOU
            assert set(pair["predicted"]) == set(pair["annotated"]) >= set(cell_measures.MEASURES)
    pairs = [p for f in report["folds"] for p in f["pairs"]]
    assert pairs  # a 1-epoch model still finds a few of the synthetic cells
    assert report["summaries"]["all cells"]["n_cells"] == len(pairs)
    # Every predicted cell carries its confidences; the summary counts the cells that have them.
    assert all(0 <= p["predicted"]["outline_confidence"] <= 1 for p in pairs)
    assert report["confidence"]["outline_confidence"]["n"] == len(pairs)
    assert "| all cells |" in (out / cell_measures.MARKDOWN_NAME).read_text()
    assert (out / cell_measures.PLOT_NAME).stat().st_size > 0
    # One run, through predict's defaults for images from elsewhere.
    assert cell_measures.main([str(tiny_cv / "fold-1"), "--adapt", "--out", str(tmp_path / "a"),
                               "--synthetic"]) == 0
    adapted = json.loads((tmp_path / "a" / cell_measures.JSON_NAME).read_text())
    assert adapted["adapt"] and [f["fold"] for f in adapted["folds"]] == [1]
    assert "through predict's defaults" in (tmp_path / "a" / cell_measures.MARKDOWN_NAME).read_text()
    assert cell_measures.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 1
    assert not (tmp_path / "x").exists()
