"""benchmarks.robustness: perturbations keep image and mask aligned; scores and report are sound."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil

import numpy as np
import pytest

from benchmarks import robustness
from benchmarks.robustness import main
from benchmarks.shifts import CONDITIONS, EXTRA_CONDITIONS, perturb, pick_conditions

# A cell (label 1, radius 20) with a nucleus (label 2, radius 10) off the image centre, in
# smear-like colours whose green channel alone says where the cell is (below GREEN_EDGE).
SIDE, CENTRE, RADIUS = 96, (40.0, 52.0), 20.0
COLOURS = np.array([[235, 230, 240], [215, 150, 200], [110, 60, 150]], np.uint8)
GREEN_EDGE = (230 + 150) / 2


def _cell_example() -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[:SIDE, :SIDE]
    d2 = (rows - CENTRE[0]) ** 2 + (cols - CENTRE[1]) ** 2
    mask = np.where(d2 <= (RADIUS / 2) ** 2, 2, np.where(d2 <= RADIUS**2, 1, 0)).astype(np.uint8)
    return COLOURS[mask], mask


ZOOMS = [c for c in CONDITIONS if c.kind == "zoom"]


@pytest.mark.parametrize("condition", ZOOMS, ids=[c.name for c in ZOOMS])
def test_zoom_rescales_mask_with_the_image(condition):
    image, mask = _cell_example()
    scale = condition.params["scale"]
    out_image, out_mask = perturb(condition, image, mask)
    side = round(SIDE * scale)
    assert out_image.shape == (side, side, 3) and out_image.dtype == np.uint8
    assert out_mask.shape == (side, side) and out_mask.dtype == np.uint8
    assert set(np.unique(out_mask)) == {0, 1, 2}
    cell, dark = out_mask > 0, out_image[..., 1] < GREEN_EDGE
    # Pixel centres map as out = (in + 0.5) * scale - 0.5 (skimage's convention).
    expected = [(np.mean(axis) + 0.5) * scale - 0.5 for axis in np.nonzero(mask > 0)]
    # Resampled alike, mask and image agree to rounding; nearest neighbour was 0.3 px apart here.
    assert np.allclose(_centroid(cell), _centroid(dark), atol=0.1)
    assert np.allclose(_centroid(cell), expected, atol=0.2)
    assert (cell & dark).sum() / (cell | dark).sum() > 0.99
    # Area pi (r s)^2 to within a quarter-pixel band along the boundary (a one-pixel erosion or
    # dilation moves it by a whole band, perimeter x 1 px); the nucleus likewise.
    for radius, region in ((RADIUS * scale, cell), (RADIUS * scale / 2, out_mask == 2)):
        assert abs(region.sum() - np.pi * radius**2) <= 0.25 * 2 * np.pi * radius


def _centroid(region: np.ndarray) -> list[float]:
    return [float(np.mean(axis)) for axis in np.nonzero(region)]


def test_colour_conditions_change_the_image_only_and_identity_nothing():
    image, mask = _cell_example()
    for condition in CONDITIONS:
        if condition.kind == "zoom":
            continue
        out_image, out_mask = perturb(condition, image, mask)
        assert out_mask is mask, condition.name
        assert out_image.shape == image.shape and out_image.dtype == np.uint8, condition.name
        changed = np.abs(out_image.astype(int) - image).max()
        assert (changed == 0) == (condition.kind == "identity"), condition.name
        assert perturb(condition, image, mask)[0].tobytes() == out_image.tobytes()  # deterministic


COMPOUNDS = [c for c in EXTRA_CONDITIONS if c.kind == "compound"]


@pytest.mark.parametrize("condition", COMPOUNDS, ids=[c.name for c in COMPOUNDS])
def test_a_compound_condition_is_its_steps_in_order(condition):
    image, mask = _cell_example()
    out_image, out_mask = perturb(condition, image, mask)
    step_image, step_mask = image, mask
    for name in condition.params["steps"]:
        step_image, step_mask = perturb(*pick_conditions(name), step_image, step_mask)
    assert out_image.tobytes() == step_image.tobytes() and out_image.dtype == np.uint8
    np.testing.assert_array_equal(out_mask, step_mask)
    # One zoom among the steps sets the size, and image and mask keep to it.
    zoom = [pick_conditions(n)[0] for n in condition.params["steps"] if n.startswith("zoom")]
    side = round(SIDE * zoom[0].params["scale"])
    assert out_image.shape == (side, side, 3) and out_mask.shape == (side, side)


def test_every_condition_is_described_and_unknown_names_refused():
    everything = CONDITIONS + EXTRA_CONDITIONS
    assert len({c.name for c in everything}) == len(everything)
    assert json.loads(json.dumps([dataclasses.asdict(c) for c in everything]))
    assert [c.name for c in pick_conditions("identity,zoom_2.0")] == ["identity", "zoom_2.0"]
    with pytest.raises(ValueError, match="zoom_3"):
        pick_conditions("identity,zoom_3")
    from benchmarks import shifts

    with pytest.raises(shifts.RobustnessError, match=r"unknown steps \['zoom_9'\]"):
        shifts._compound("bad", ("eosin_up", "zoom_9"), "a step that is not a condition")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tests.test_export import CONFIG, make_run

    root = tmp_path_factory.mktemp("robustness")
    one_channel = dataclasses.replace(CONFIG, out_channels=1, thresholds=(0.45,))
    two = make_run(root / "two", dataclasses.replace(CONFIG, min_cell_area=45))[0]
    fold1 = root / "fold1"  # the same model, said to be trained on another fold
    fold1.mkdir()
    shutil.copy(two / "model.keras", fold1 / "model.keras")
    dataclasses.replace(CONFIG, fold=1, min_cell_area=45).save(fold1 / "config.json")
    return {"two": two, "one": make_run(root / "one", one_channel, seed=1)[0], "fold1": fold1}


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    """One synthetic run of the command on a 2-channel and a 1-channel model, with TTA."""
    out = tmp_path_factory.mktemp("report") / "out"
    code = main([str(runs["two"]), str(runs["one"]), "--labels", "stain-on,zoom-off",
                 "--out", str(out), "--synthetic", "--tta",
                 "--conditions", "identity,zoom_0.5,eosin_up,lab_pale_high_mag"])
    assert code == 0
    return out, json.loads((out / "robustness.json").read_text())


def test_identity_equals_plain_scoring(runs, report):
    from unet_keras.config import resolve_run
    from unet_keras.data.loading import load_fold
    from unet_keras.evaluate import score_probabilities
    from unet_keras.inference import predict_probabilities
    from unet_keras.model import load_model

    result = report[1]
    model_path, config = resolve_run(runs["two"])
    test = load_fold(config, synthetic=True).test
    model = load_model(model_path)
    probs = predict_probabilities(model, [e["image"] for e in test], config.multiple)
    plain = score_probabilities(probs, test, config.thresholds, config.min_cell_area)[1]
    assert result["models"]["stain-on"]["scores"]["identity"] == plain
    assert result["test_ids"] == [e["image_id"] for e in test] and result["synthetic"]


def test_scale_and_colour_auto_score_each_run_again(runs, tmp_path):
    out = tmp_path / "auto"
    assert main([str(runs["two"]), "--labels", "m", "--out", str(out), "--synthetic",
                 "--scale-auto", "--colour-auto", "--conditions", "identity,hue_18deg"]) == 0
    result = json.loads((out / "robustness.json").read_text())
    assert result["labels"] == ["m", "m, scale auto", "m, colour auto", "m, scale + colour auto"]
    plain, coloured = result["models"]["m"], result["models"]["m, colour auto"]
    scaled, both = result["models"]["m, scale auto"], result["models"]["m, scale + colour auto"]
    n = result["n_test_images"]
    for name in ("identity", "hue_18deg"):
        mapped = coloured["colour"]["mapped"][name]
        assert len(mapped) == n and len(scaled["scale"]["factors"][name]) == n
        assert both["colour"]["mapped"][name] == mapped  # the mapping comes first, alike
        if not any(mapped):  # nothing mapped: exactly the plain scores
            assert coloured["scores"][name] == plain["scores"][name]
            assert both["scores"][name] == scaled["scores"][name]
        if set(both["scale"]["factors"][name]) == {1.0}:  # nothing resampled: colour alone
            assert both["scores"][name] == coloured["scores"][name]
    assert coloured["colour"]["gate"] > 0
    markdown = (out / "ROBUSTNESS.md").read_text()
    assert "`--colour auto`" in markdown and "`--scale auto`" in markdown


def test_report_files_with_tta(report):
    out, result = report
    assert result["labels"] == ["stain-on", "zoom-off"]
    shifted = ["zoom_0.5", "eosin_up", "lab_pale_high_mag"]
    assert [c["name"] for c in result["conditions"]] == ["identity", *shifted]
    two, one = result["models"]["stain-on"], result["models"]["zoom-off"]
    assert "nucleus_dice" in two["scores"]["zoom_0.5"]
    assert "nucleus_dice" not in one["scores"]["zoom_0.5"]
    mean = two["shifted_means"]["all_shifted"]
    assert mean["conditions"] == shifted
    dice = [two["scores"][name]["whole_cell_dice"] for name in shifted]
    assert mean["whole_cell_dice"] == pytest.approx(sum(dice) / 3)
    assert two["shifted_means"]["compound"]["conditions"] == ["lab_pale_high_mag"]
    tta = two["tta"]
    assert tta["gain"]["whole_cell_dice"] == pytest.approx(
        tta["tta"]["scores"]["whole_cell_dice"] - tta["plain"]["scores"]["whole_cell_dice"])
    assert tta["plain"]["scores"] == two["scores"]["identity"]
    assert tta["tta"]["seconds_per_image"] > 0 and tta["plain"]["seconds_per_image"] > 0
    assert result["machine"]["cpu"]["logical_cores"] >= 1 and "numpy" in result["versions"]
    markdown = (out / "ROBUSTNESS.md").read_text()
    assert "| zoom_0.5 | scale=0.5 |" in markdown and "mean, all shifted" in markdown
    assert "| lab_pale_high_mag | steps=eosin_down + zoom_2.0 + jpeg_q30 |" in markdown
    assert "**mean, compound**" in markdown
    assert "TTA" in markdown and "stain-on" in markdown
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.parametrize("case", ["mismatched folds", "missing run", "labels"])
def test_bad_input_exits_1_naming_it_and_writes_nothing(runs, tmp_path, capsys, case):
    missing = tmp_path / "no-such-run"
    args = {"mismatched folds": [str(runs["two"]), str(runs["fold1"])],
            "missing run": [str(runs["two"]), str(missing)],
            "labels": [str(runs["two"]), str(runs["one"]), "--labels", "a"]}[case]
    out = tmp_path / "out"
    assert main([*args, "--out", str(out), "--synthetic", "--conditions", "identity"]) == 1
    err = capsys.readouterr().err
    named = {"mismatched folds": str(runs["fold1"]), "missing run": str(missing),
             "labels": "--labels"}[case]
    assert named in err and "error" in err
    assert not out.exists()


def test_report_names_a_held_out_test_part(report):
    from benchmarks.robustness_report import render_markdown

    result = copy.deepcopy(report[1])
    assert f"test part: fold {result['fold']} (" in render_markdown(result)
    for model in result["models"].values():
        model["config"]["test_ids"] = "201-300"
    assert "test part: images 201-300 (" in render_markdown(result)
