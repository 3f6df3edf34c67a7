"""benchmarks.ablation on hand-made fold runs: means, paired differences worked out by hand,
the recipe differences named, and refusals that write nothing."""

import json

import pytest

from benchmarks.ablation import JSON_NAME, MARKDOWN_NAME, PLOT_NAME, main
from tests.test_cv import make_fold

# fold -> (Dice, IoU, AP50, AP50:95, seconds, images/s)
BASE = {0: (0.90, 0.80, 0.5, 0.4, 100.0, 2.0), 1: (0.80, 0.70, 0.6, 0.5, 200.0, 1.0),
        2: (0.70, 0.60, 0.7, 0.6, 300.0, 3.0)}
# Dice differences from BASE on the common folds 0 and 1: +0.02 and +0.06 -> mean 0.04, sd
# sqrt(((0.02 - 0.04)^2 + (0.06 - 0.04)^2) / 1) = sqrt(0.0008).
OTHER = {0: (0.92, 0.80, 0.5, 0.4, 100.0, 2.0), 1: (0.86, 0.70, 0.6, 0.5, 200.0, 1.0)}


@pytest.fixture
def two_cvs(tmp_path):
    for fold, scores in BASE.items():
        make_fold(tmp_path / "base", fold, scores, nucleus=(0.8, 0.7), out_channels=2)
    for fold, scores in OTHER.items():
        make_fold(tmp_path / "other", fold, scores, out_channels=1, stain_augment=False)
    return tmp_path


def test_means_and_paired_differences(two_cvs, capsys):
    out = two_cvs / "report"
    assert main([f"base={two_cvs / 'base'}", f"no stain={two_cvs / 'other'}",
                 "--out", str(out)]) == 0
    report = json.loads((out / JSON_NAME).read_text())
    base, other = report["variants"]
    assert base["mean"]["whole_cell_dice"] == pytest.approx(0.8)
    assert other["folds"] == [0, 1]
    assert other["differs_from_baseline"] == {"out_channels": 1, "stain_augment": False}
    diff = other["vs_baseline"]["whole_cell_dice"]
    assert diff["folds"] == [0, 1]
    assert diff["mean"] == pytest.approx(0.04) and diff["sd"] == pytest.approx(0.0008 ** 0.5)
    assert other["vs_baseline"]["nucleus_dice"] is None  # one-output variant: no nucleus
    markdown = (out / MARKDOWN_NAME).read_text()
    assert "| no stain | 2 | +0.0400 ± 0.0283 |" in markdown
    assert (out / PLOT_NAME).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, named", [
    (["base={base}", "base={other}"], "given twice"),
    (["base={base}", "x={missing}"], "missing"),
    (["base={base}", "nolabel"], "LABEL=CV_DIR"),
])
def test_bad_input_exits_1_naming_it_and_writes_nothing(two_cvs, capsys, args, named):
    paths = {"base": two_cvs / "base", "other": two_cvs / "other", "missing": two_cvs / "missing"}
    argv = [a.format(**paths) for a in args] + ["--out", str(two_cvs / "report")]
    assert main(argv) == 1
    assert named in capsys.readouterr().err
    assert not (two_cvs / "report").exists()


def test_folds_of_another_split_are_refused(two_cvs, capsys):
    make_fold(two_cvs / "resplit", 0, BASE[0], split_seed=7)
    assert main([f"base={two_cvs / 'base'}", f"r={two_cvs / 'resplit'}",
                 "--out", str(two_cvs / "report")]) == 1
    assert "split" in capsys.readouterr().err
