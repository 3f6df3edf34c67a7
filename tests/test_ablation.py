"""benchmarks.ablation on hand-made fold runs: means, paired differences worked out by hand,
the recipe differences named, and refusals that write nothing; and benchmarks.ablation_index
over hand-made reports."""

import json
from pathlib import Path

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
        make_fold(tmp_path / "other", fold, scores, out_channels=1, stain_augment=True)
    return tmp_path


def test_means_and_paired_differences(two_cvs, capsys):
    out = two_cvs / "report"
    assert main([f"base={two_cvs / 'base'}", f"stain={two_cvs / 'other'}",
                 "--out", str(out)]) == 0
    report = json.loads((out / JSON_NAME).read_text())
    base, other = report["variants"]
    assert base["mean"]["whole_cell_dice"] == pytest.approx(0.8)
    assert other["folds"] == [0, 1]
    assert other["differs_from_baseline"] == {"out_channels": 1, "stain_augment": True}
    diff = other["vs_baseline"]["whole_cell_dice"]
    assert diff["folds"] == [0, 1]
    assert diff["mean"] == pytest.approx(0.04) and diff["sd"] == pytest.approx(0.0008 ** 0.5)
    assert other["vs_baseline"]["nucleus_dice"] is None  # one-output variant: no nucleus
    markdown = (out / MARKDOWN_NAME).read_text()
    assert "| stain | 2 | +0.0400 ± 0.0283 |" in markdown
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


def test_by_cell_type_over_the_common_folds(two_cvs, capsys):
    """Fold 2 exists in the baseline only, so the by-type table covers folds 0 and 1."""
    for name in ("base", "other"):
        for run in (two_cvs / name).glob("fold-*"):
            metrics = json.loads((run / "metrics.json").read_text())
            (run / "metrics.json").write_text(json.dumps({**metrics, "synthetic": False}))
            fold = int(run.name.split("-")[1])
            nucleus = name == "base"
            lines = ["image_id,whole_cell_dice" + (",nucleus_dice" if nucleus else "")]
            for image, dice in ((f"{fold}01", 0.9), (f"{fold}02", 0.7)):
                lines.append(f"{image},{dice}" + (",0.5" if nucleus else ""))
            (run / "test_per_image.csv").write_text("\n".join(lines) + "\n")
    data = two_cvs / "data"
    data.mkdir()
    # Image x01 is a neutrophil (class 1), x02 an eosinophil (class 4), in every fold.
    rows = [f"{f}01,1\n{f}02,4" for f in range(3)]
    (data / "Class Labels of Dataset 1.csv").write_text("image ID,class label\n" + "\n".join(rows) + "\n")
    out = two_cvs / "report"
    assert main([f"base={two_cvs / 'base'}", f"other={two_cvs / 'other'}", "--out", str(out),
                 "--data-dir", str(data)]) == 0
    types = json.loads((out / JSON_NAME).read_text())["by_cell_type"]
    assert types["folds"] == [0, 1]
    assert types["variants"]["base"]["eosinophil"] == {"n_images": 2, "whole_cell_dice": 0.7,
                                                       "nucleus_dice": 0.5}
    assert types["variants"]["other"]["neutrophil"] == {"n_images": 2, "whole_cell_dice": 0.9}
    markdown = (out / MARKDOWN_NAME).read_text()
    assert "| base | 0.900 / 0.500 | 0.700 / 0.500 |" in markdown
    assert "| other | 0.900 / - | 0.700 / - |" in markdown


def test_a_cv_json_alone_stands_in_for_its_runs(two_cvs, capsys):
    """A committed report (cv.json, runs gone) gives the same means and paired differences;
    it has no per-image scores, so it is left out of the by-cell-type table, and said so."""
    import shutil

    from unet_keras.cv import CV_JSON, complete_folds, summarize

    kept = two_cvs / "kept"
    kept.mkdir()
    summary = summarize(complete_folds(two_cvs / "other"))
    del summary["recipe"]["max_filters"]  # a report written before the setting existed
    (kept / CV_JSON).write_text(json.dumps(summary))
    from_runs, from_json = two_cvs / "a", two_cvs / "b"
    assert main([f"base={two_cvs / 'base'}", f"x={two_cvs / 'other'}", "--out", str(from_runs)]) == 0
    shutil.rmtree(two_cvs / "other")
    assert main([f"base={two_cvs / 'base'}", f"x={kept}", "--out", str(from_json)]) == 0
    runs, alone = (json.loads((d / JSON_NAME).read_text())["variants"][1]
                   for d in (from_runs, from_json))
    assert alone["vs_baseline"] == runs["vs_baseline"] and alone["mean"] == runs["mean"]
    assert alone["differs_from_baseline"] == runs["differs_from_baseline"]
    assert (runs["has_runs"], alone["has_runs"]) == (True, False)
    assert f"({CV_JSON} only)" in (from_json / MARKDOWN_NAME).read_text()

    (kept / CV_JSON).write_text('{"folds": []}')
    assert main([f"base={two_cvs / 'base'}", f"x={kept}", "--out", str(two_cvs / "bad")]) == 1
    assert "cv.json" in capsys.readouterr().err and not (two_cvs / "bad").exists()


def test_a_setting_an_older_report_lacks_still_differs_from_a_newer_baseline(tmp_path):
    """The baseline trained with deep supervision 2; the variant's report predates the setting
    (0 then): the variant differs in it, whichever of the two is the baseline."""
    from unet_keras.cv import CV_JSON, complete_folds, summarize

    for fold, scores in BASE.items():
        make_fold(tmp_path / "new", fold, scores, deep_supervision=2)
        make_fold(tmp_path / "runs", fold, scores, deep_supervision=0)
    summary = summarize(complete_folds(tmp_path / "runs"))
    del summary["recipe"]["deep_supervision"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / CV_JSON).write_text(json.dumps(summary))
    for first, second, value in (("new", "old", 0), ("old", "new", 2)):
        out = tmp_path / f"report-{first}"
        assert main([f"a={tmp_path / first}", f"b={tmp_path / second}", "--out", str(out)]) == 0
        variant = json.loads((out / JSON_NAME).read_text())["variants"][1]
        assert variant["differs_from_baseline"] == {"deep_supervision": value}


def test_by_cell_type_leaves_out_a_cv_json_variant(two_cvs):
    from unet_keras.cv import CV_JSON, complete_folds, summarize

    for run in (two_cvs / "base").glob("fold-*"):
        metrics = json.loads((run / "metrics.json").read_text())
        (run / "metrics.json").write_text(json.dumps({**metrics, "synthetic": False}))
        (run / "test_per_image.csv").write_text(f"image_id,whole_cell_dice\n{run.name[-1]}01,0.9\n")
    kept = two_cvs / "kept"
    kept.mkdir()
    (kept / CV_JSON).write_text(json.dumps(summarize(complete_folds(two_cvs / "base"))))
    data = two_cvs / "data"
    data.mkdir()
    (data / "Class Labels of Dataset 1.csv").write_text(
        "image ID,class label\n" + "\n".join(f"{f}01,1" for f in range(3)) + "\n")
    out = two_cvs / "report"
    assert main([f"base={two_cvs / 'base'}", f"report={kept}", "--out", str(out),
                 "--data-dir", str(data)]) == 0
    types = json.loads((out / JSON_NAME).read_text())["by_cell_type"]
    assert list(types["variants"]) == ["base"] and types["folds"] == [0, 1, 2]
    assert "Not in this table (a cv.json without per-image scores): report." in \
        (out / MARKDOWN_NAME).read_text()


# benchmarks.ablation_index

def _report(folder: Path, baseline: float, variants: dict[str, tuple[float, list[int]]]) -> None:
    """A minimal ablation.json: the baseline's and each variant's 5-fold means, and the
    variant's paired whole-cell difference over ``folds``."""
    def entry(label, dice, folds, paired=None):
        out = {"label": label, "folds": folds, "mean": {"whole_cell_dice": dice,
                                                       "nucleus_dice": dice - 0.02}}
        if paired is not None:
            out["differs_from_baseline"] = {"seed": 1}
            out["vs_baseline"] = {"whole_cell_dice": {"folds": folds, "mean": paired, "sd": 0.001}}
        return out
    folder.mkdir(parents=True)
    (folder / "ablation.json").write_text(json.dumps({
        "baseline": "base", "variants": [entry("base", baseline, [0, 1, 2, 3, 4])] + [
            entry(label, dice, folds, dice - baseline) for label, (dice, folds) in variants.items()]}))


def test_ablation_index_lists_every_variant_and_the_highest_five_fold_means(tmp_path):
    from benchmarks import ablation_index

    _report(tmp_path / "ablation-a", 0.980, {"wider": (0.982, [0, 1, 2, 3, 4])})
    _report(tmp_path / "ablation-b", 0.981, {"two folds": (0.990, [0, 1])})
    out = tmp_path / "docs" / "INDEX.md"
    assert ablation_index.main([str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| [ablation-a](../ablation-a/ABLATION.md) | base | wider | seed 1 | 0,1,2,3,4 | " \
           "+0.0020 ± 0.0010 | - | - |" in text
    assert "| two folds | seed 1 | 0,1 | +0.0090 ± 0.0010 |" in text
    # The highest 5-fold means: the two-fold variant is not among them, however high.
    top = text.split("Highest 5-fold")[1]
    assert top.index("| 0.9820 | 0.9620 | wider | ablation-a |") < top.index("| 0.9810 |")
    assert "two folds" not in top


def test_ablation_index_names_an_empty_folder_and_a_broken_report(tmp_path, capsys):
    from benchmarks import ablation_index

    assert ablation_index.main([str(tmp_path)]) == 1
    assert str(tmp_path) in capsys.readouterr().err
    (tmp_path / "ablation-x").mkdir()
    (tmp_path / "ablation-x" / "ablation.json").write_text('{"variants": [{}, {}]}')
    assert ablation_index.main([str(tmp_path)]) == 1
    assert "ablation-x/ablation.json" in capsys.readouterr().err
    assert not (tmp_path / "ABLATIONS.md").exists()
