"""The learning-curve report: CVs of one recipe on fractions of the training part."""

import json
import re

import pytest
from PIL import Image

from benchmarks import learning_curve
from tests.test_cv import make_fold

# fraction -> fold -> whole-cell Dice. Folds 0 and 1 at every fraction; fold 2 at two only.
DICE = {0.25: {0: 0.90, 1: 0.80}, 0.5: {0: 0.92, 1: 0.81, 2: 0.70}, 1.0: {0: 0.94, 1: 0.82, 2: 0.75}}


def make_cv(root, fraction, **recipe):
    out = root / f"cv-{fraction:g}"
    for fold, dice in DICE[fraction].items():
        run = make_fold(out, fold, (dice, 0.5, 1.0, 0.9, 100.0 * fraction, 2.0),
                        nucleus=(dice - 0.1, 0.4), train_fraction=fraction, out_channels=2,
                        **recipe)
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["n_train"] = round(200 * fraction)
        (run / "metrics.json").write_text(json.dumps(metrics))
    return out


def test_curve_pairs_each_fraction_with_the_largest_and_fits_the_gain_per_doubling(tmp_path):
    cvs = [f"{f:g}={make_cv(tmp_path, f)}" for f in (1.0, 0.25, 0.5)]  # any order
    assert learning_curve.main([*cvs, "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / learning_curve.JSON_NAME).read_text())
    rows = report["fractions"]
    assert [r["train_fraction"] for r in rows] == [0.25, 0.5, 1.0]
    assert [r["n_train"] for r in rows] == [50, 100, 200]
    assert report["common_folds"] == [0, 1]
    # 0.25 against 1: folds 0 and 1 differ by -0.04 and -0.02.
    quarter = rows[0]["vs_largest"]["whole_cell_dice"]
    assert quarter["folds"] == [0, 1]
    assert quarter["mean"] == pytest.approx(-0.03) and quarter["sd"] == pytest.approx(0.02 ** 0.5 / 10)
    # Per doubling: fold 0 gains 0.02 at each, fold 1 0.01 (fold 2, missing at 0.25, left out).
    doubling = report["per_doubling"]["whole_cell_dice"]
    assert doubling["folds"] == 2 and doubling["mean"] == pytest.approx(0.015)
    assert doubling["sd"] == pytest.approx(0.005 * 2 ** 0.5)
    assert report["per_doubling"]["whole_cell_iou"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert report["per_doubling"]["nucleus_dice"]["mean"] == pytest.approx(0.015)
    markdown = (tmp_path / "report" / learning_curve.MARKDOWN_NAME).read_text()
    assert "| 0.25 | 0.25 | 50 | 2 | 0.8500 ± 0.0707 |" in markdown
    assert "| +0.0150 ± 0.0071 |" in markdown
    with Image.open(tmp_path / "report" / learning_curve.PLOT_NAME) as plot:
        assert plot.format == "PNG" and min(plot.size) > 100


def test_slope_per_doubling_is_the_least_squares_fit_on_log2_fraction():
    assert learning_curve.slope_per_doubling({0.25: 0.0, 0.5: 1.0, 1.0: 2.0}) == pytest.approx(1.0)
    # Two halvings then a flat step: points (-2, 0), (-1, 0), (0, 3) -> slope 1.5.
    assert learning_curve.slope_per_doubling({0.25: 0.0, 0.5: 0.0, 1.0: 3.0}) == pytest.approx(1.5)


@pytest.mark.parametrize("case, message", [
    ("one", "at least two cross-validations"),
    ("twice", "train fraction 0.5 again"),
    ("recipe", "recipe differs .* in \\['epochs'\\]"),
    ("missing", "nowhere: not a directory"),
])
def test_bad_input_is_named_and_nothing_written(tmp_path, capsys, case, message):
    full, half = make_cv(tmp_path, 1.0), make_cv(tmp_path, 0.5)
    variants = {"one": [f"a={full}"], "twice": [f"a={half}", f"b={half}"],
                "recipe": [f"a={full}", f"b={make_cv(tmp_path / 'other', 0.25, epochs=9)}"],
                "missing": [f"a={full}", f"b={tmp_path / 'nowhere'}"]}[case]
    assert learning_curve.main([*variants, "--out", str(tmp_path / "report")]) == 1
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "report").exists()


def test_an_older_cv_json_alone_counts_as_the_whole_training_part(tmp_path):
    from unet_keras import cli

    full = make_cv(tmp_path, 1.0)
    assert cli.main(["cv", "--aggregate-only", "--out", str(full)]) == 0
    report = json.loads((full / "cv.json").read_text())
    # Written before the fraction, the boundary weight and n_train existed; its runs gone.
    for key in ("train_fraction", "boundary_weight"):
        del report["recipe"][key]
    for row in report["folds"]:
        del row["n_train"]
    (full / "cv.json").write_text(json.dumps(report))
    for fold in DICE[1.0]:
        for path in (full / f"fold-{fold}").iterdir():
            path.unlink()
        (full / f"fold-{fold}").rmdir()
    half = make_cv(tmp_path, 0.5)
    built = learning_curve.build([("all", full), ("half", half)])
    assert [(r["label"], r["train_fraction"], r["n_train"]) for r in built["fractions"]] == [
        ("half", 0.5, 100), ("all", 1.0, None)]
    assert built["fractions"][0]["vs_largest"]["whole_cell_dice"]["mean"] == pytest.approx(
        (-0.02 - 0.01 - 0.05) / 3)
