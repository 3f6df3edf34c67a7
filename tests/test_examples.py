"""The examples/ scripts, run the way a user runs them (a subprocess) on tiny synthetic inputs."""

from __future__ import annotations

import ast
import csv
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from export.metadata import set_metadata
from tests.conftest import REPO
from unet_keras.config import UNetConfig
from unet_keras.data.synthetic import synthetic_smear
from unet_keras.postprocess import labels_to_png

EXAMPLES = REPO / "examples"
HEAVY = ("keras", "jax", "jaxlib", "tensorflow", "torch")


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(name: str, *args, env: dict | None = None,
                timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], cwd=REPO,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("name", ["finetune.py", "keras_fit.py", "serve_onnx.py",
                                  "touching_cells_report.py", "train_other_backend.py"])
def test_example_docstring_says_how_to_run_it(name):
    doc = ast.get_docstring(ast.parse((EXAMPLES / name).read_text()))
    assert f"python examples/{name} " in doc


# serve_onnx.py: an ONNX file the runtime accepts, whose "model" is pointwise and exact.

def pointwise_onnx(path: Path) -> Path:
    """probability = 1 - (red, green): a pixel is cell where red <= 127, nucleus where green is."""
    consts = [numpy_helper.from_array(np.array(v, dtype), name) for name, v, dtype in (
        ("starts", [0], np.int64), ("ends", [2], np.int64), ("axes", [3], np.int64),
        ("one", 1.0, np.float32))]
    graph = helper.make_graph(
        [helper.make_node("Slice", ["image", "starts", "ends", "axes"], ["red_green"]),
         helper.make_node("Sub", ["one", "red_green"], ["probability"])],
        "pointwise",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", "H", "W", 2])],
        consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    config = UNetConfig(depth=2, base_filters=4, out_channels=2, image_size=64,
                        thresholds=(0.5, 0.5))
    set_metadata(model, {"config": config.to_dict(), "thresholds": [0.5, 0.5]})
    onnx.save(model, str(path))
    return path


CYTOPLASM, NUCLEUS = (0, 255, 255), (0, 0, 255)  # red low: cell; red and green low: nucleus


@pytest.fixture()
def served(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    a = np.full((40, 48, 3), 255, np.uint8)
    a[5:15, 4:16] = CYTOPLASM  # 10 x 12 = 120 px cell ...
    a[8:12, 8:12] = NUCLEUS  # ... with a 4 x 4 nucleus: cytoplasm 104
    a[25:35, 30:40] = CYTOPLASM  # a 100 px cell without a nucleus
    b = np.full((30, 50, 3), 255, np.uint8)
    b[5:25, 5:45] = CYTOPLASM  # two 20 x 20 cells side by side, told apart by their nuclei
    b[12:18, 10:16] = b[12:18, 34:40] = NUCLEUS
    Image.fromarray(a).save(images / "a.png")
    Image.fromarray(b).save(images / "b.png")
    Image.fromarray(b).save(images / "b.tif")  # same output name as b.png: skipped, not overwritten
    (images / "junk.png").write_bytes(b"not an image")
    return pointwise_onnx(tmp_path / "pointwise.onnx"), images, tmp_path / "out"


def test_serve_onnx_writes_masks_and_a_cell_table_without_keras_or_jax(served):
    model, images, out = served
    code = textwrap.dedent(f"""
        import json, runpy, sys
        sys.argv = ["serve_onnx.py", *sys.argv[1:]]
        try:
            runpy.run_path({str(EXAMPLES / "serve_onnx.py")!r}, run_name="__main__")
        except SystemExit as done:
            code = done.code
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        print(json.dumps({{"exit": code, "heavy": heavy}}))
    """)
    done = subprocess.run([sys.executable, "-c", code, str(model), str(images), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"exit": 0, "heavy": []}
    assert "junk.png" in done.stderr and "2 image(s), 4 cell(s)" in done.stdout
    assert "b.tif: output name 'b' already used by b.png" in done.stderr

    with (out / "cells.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    a = sorted((r for r in rows if r["image"] == "a.png"), key=lambda r: -int(r["area"]))
    assert [(r["area"], r["nucleus_area"], r["cytoplasm_area"]) for r in a] == [
        ("120", "16", "104"), ("100", "0", "100")]
    assert float(a[0]["nc_ratio"]) == pytest.approx(16 / 104)
    b = [r for r in rows if r["image"] == "b.png"]
    assert len(b) == 2 and sum(int(r["area"]) for r in b) == 800
    assert [r["nucleus_area"] for r in b] == ["36", "36"]

    mask = np.asarray(Image.open(out / "a_mask.png"))
    assert mask.shape == (40, 48)
    assert [np.count_nonzero(mask == v) for v in (255, 128)] == [16, 204]
    assert not (out / "junk_mask.png").exists()


def test_serve_onnx_names_a_missing_model(tmp_path):
    done = run_example("serve_onnx.py", tmp_path / "missing.onnx", tmp_path, "--out", tmp_path / "o")
    assert done.returncode == 1
    assert "missing.onnx: ONNX file not found" in done.stderr


# finetune.py

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tests.test_export import make_run  # imports keras: only when these tests run

    return make_run(tmp_path_factory.mktemp("finetune") / "base")[0] / "model.keras"


def user_folder(root: Path, n: int = 6) -> tuple[Path, Path]:
    """``n`` synthetic 64 px images with masks, half in grey 0/128/255, half as indices 0/1/2."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for i in range(n):
        image, labels = synthetic_smear(64, n_white=1, seed=i)
        Image.fromarray(image).save(images / f"cell_{i}.png")
        Image.fromarray(labels_to_png(labels, 2) if i % 2 else labels).save(masks / f"cell_{i}.png")
    return images, masks


def test_finetune_reads_both_mask_encodings_alike(tmp_path):
    finetune = load_example("finetune")
    images, masks = user_folder(tmp_path, n=2)
    grey = finetune.load_folder(images, masks)[1]["mask"]  # cell_1: grey 0/128/255
    Image.fromarray(grey).save(masks / "cell_1.png")  # the same labels, as 0/1/2
    again = finetune.load_folder(images, masks)[1]["mask"]
    assert set(np.unique(grey)) == {0, 1, 2}
    np.testing.assert_array_equal(grey, again)


@pytest.mark.slow  # 40-100 s on 2 shared cores: a tiny model built, loaded, trained, saved
def test_finetune_trains_keeps_a_validation_part_and_writes_model_and_config(tiny_model, tmp_path):
    import dataclasses
    import shutil

    from unet_keras.colour import fit_reference

    # A base model carrying its training images' size and colours, as the shipped one does.
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    shutil.copy(tiny_model, base_dir / "model.keras")
    others = [synthetic_smear(64, n_white=1, seed=100 + i)[0] for i in range(10)]
    dataclasses.replace(UNetConfig.load(tiny_model.parent / "config.json"), cell_diameter=123.0,
                        colour_reference=fit_reference(others)).save(base_dir / "config.json")
    images, masks = user_folder(tmp_path)
    out = tmp_path / "finetuned"
    done = run_example("finetune.py", "--model", base_dir / "model.keras", "--images", images,
                       "--masks", masks, "--out", out, "--epochs", "2", "--image-size", "32",
                       "--batch-size", "4")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "5 training and 1 validation image(s)" in done.stdout
    config = UNetConfig.load(out / "config.json")
    assert (config.depth, config.base_filters, config.out_channels) == (2, 4, 2)
    assert (config.epochs, config.learning_rate, config.image_size) == (2, 1e-4, 32)
    summary = json.loads((out / "finetune.json").read_text())
    assert len(summary["val_images"]) == 1 and summary["epochs_run"] == 2
    assert sorted(summary["train_images"] + summary["val_images"]) == [f"cell_{i}" for i in range(6)]
    assert list(config.thresholds) == summary["thresholds"] and len(config.thresholds) == 2
    assert config.min_cell_area == summary["min_cell_area"]
    # Predict's --scale auto and --colour auto follow the fine-tuning images, not the base's:
    # their cells' size; no colour reference from 5 images (too few for one).
    from unet_keras.data.folders import load_folder
    from unet_keras.rescale import training_cell_diameter

    train = [e["mask"] for e in load_folder(images, masks)
             if e["image_id"] in summary["train_images"]]
    assert config.cell_diameter == round(training_cell_diameter(train, config.min_cell_area), 2)
    assert config.cell_diameter != 123.0 and config.colour_reference == {}

    from unet_keras.model import load_model

    base, tuned = load_model(tiny_model), load_model(out / "model.keras")
    changed = [not np.array_equal(w0, w1) for w0, w1 in zip(base.get_weights(), tuned.get_weights())]
    assert len(changed) == len(base.get_weights()) and any(changed)


def lonely_image(images: Path, masks: Path) -> str:
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(images / "lonely.png")
    return f"{images / 'lonely.png'}: no mask; expected {masks / 'lonely'}.png"


def whole_cell_masks(images: Path, masks: Path) -> str:
    """Masks of 0/255 would read as all nucleus: the nucleus channel would learn the cell."""
    for path in masks.iterdir():
        labels = np.asarray(Image.open(path))
        Image.fromarray(np.where(labels > 0, 255, 0).astype(np.uint8)).save(path)
    return f"{masks}: no mask holds cytoplasm"


@pytest.mark.parametrize("spoil", [lonely_image, whole_cell_masks])
def test_finetune_refuses_a_folder_it_cannot_read_as_cells_and_nuclei(tmp_path, spoil):
    images, masks = user_folder(tmp_path, n=2)
    message = spoil(images, masks)
    stand_in = tmp_path / "model.keras"  # the folder is read before the model is loaded
    stand_in.touch()
    done = run_example("finetune.py", "--model", stand_in,
                       "--images", images, "--masks", masks, "--out", tmp_path / "out")
    assert done.returncode == 1
    assert message in done.stderr
    assert not (tmp_path / "out").exists()


# train_other_backend.py

@pytest.mark.parametrize("backend", ["tensorflow", "torch"])  # 8-11 s each, measured
def test_train_under_another_backend(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    out = tmp_path / "run"
    done = run_example("train_other_backend.py", "--synthetic", "--epochs", "1", "--depth", "2",
                       "--base-filters", "4", "--image-size", "32", "--batch-size", "8",
                       "--limit", "8", "--out", out, env={"KERAS_BACKEND": backend}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Keras backend: {backend}" in done.stdout
    assert (out / "model.keras").is_file() and (out / "config.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["versions"]["keras_backend"] == backend and metrics["n_train"] == 8


def test_serve_onnx_with_tta_keeps_a_pointwise_models_masks(served):
    """A per-pixel model gives every flip and turn the same answer, so averaging the 8 views
    must change nothing."""
    model, images, out = served
    for extra, where in (((), out), (("--tta",), out.with_name("out-tta"))):
        done = run_example("serve_onnx.py", model, images, "--out", where, *extra)
        assert done.returncode == 0, done.stderr[-2000:]
    for name in ("a_mask.png", "b_mask.png"):
        plain, averaged = (np.asarray(Image.open(d / name)) for d in (out, out.with_name("out-tta")))
        assert plain.any()
        np.testing.assert_array_equal(averaged, plain)
    assert (out / "cells.csv").read_text() == (out.with_name("out-tta") / "cells.csv").read_text()


# keras_fit.py

def test_keras_fit_pads_as_the_project_does():
    """The example's tf.data pair is the project's validation crop (``fit_to_size``: reflect
    padding, the odd pixel after) with the mask as whole-cell and nucleus targets."""
    from unet_keras.data.augment import fit_to_size

    keras_fit = load_example("keras_fit")
    rng = np.random.default_rng(0)
    for side in (40, 41):
        image = rng.integers(0, 256, (side, side + 2, 3), dtype=np.uint8)
        mask = np.zeros((side, side + 2), np.uint8)
        mask[3:30, 2:25], mask[10:20, 8:18] = 1, 2
        x, y = keras_fit.to_pair({"image": image, "mask": mask[..., None]}, 48)
        want_x, want_mask = fit_to_size(image, mask, 48)
        np.testing.assert_allclose(x.numpy(), want_x, atol=1e-6)
        np.testing.assert_array_equal(y.numpy()[..., 0], want_mask > 0)
        np.testing.assert_array_equal(y.numpy()[..., 1], want_mask == 2)


def test_keras_fit_trains_through_the_tfds_builder_and_scores_the_test_fold(tmp_path):
    from tests.test_data import write_dataset
    from unet_keras.model import load_model

    write_dataset(tmp_path / "d", n=10, size=40)
    out = tmp_path / "fit" / "model.keras"
    done = run_example("keras_fit.py", "--data-dir", tmp_path / "d", "--epochs", "1",
                       "--depth", "2", "--base-filters", "4", "--image-size", "48",
                       "--batch-size", "4", "--out", out, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # 10 images: fold 0 tests 2 of them (the split of `unet-keras train --fold 0`).
    assert "test fold 0, 2 images (jax backend): whole_cell_dice " in done.stdout
    assert "nucleus_dice" in done.stdout
    model = load_model(out)
    assert model.predict(np.zeros((1, 48, 48, 3), np.float32), verbose=0).shape == (1, 48, 48, 2)


def test_keras_fit_names_a_missing_folder_and_writes_nothing(tmp_path):
    out = tmp_path / "model.keras"
    done = run_example("keras_fit.py", "--data-dir", tmp_path / "nowhere", "--out", out)
    assert done.returncode == 1
    assert str(tmp_path / "nowhere") in done.stderr and "not found" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize("name, args", [
    ("keras_fit.py", ["--out", "x.keras", "--image-size", "100", "--data-dir", "."]),
    ("train_other_backend.py", ["--out", "x", "--image-size", "100", "--synthetic"]),
])
def test_examples_refuse_a_bad_recipe_with_a_message_not_a_traceback(name, args, tmp_path):
    done = run_example(name, *args, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "error: invalid config: image_size=100" in done.stderr


@pytest.mark.parametrize("name", ["demo_images.py", "print_scores.py"])
def test_make_demo_helpers_answer_help_without_writing(name, tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLES / name), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage:" in done.stdout and list(tmp_path.iterdir()) == []
