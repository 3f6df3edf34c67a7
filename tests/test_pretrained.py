"""The shipped pretrained model: made by export.ship, served by `unet-keras predict` by default."""

import json
import textwrap

import pytest

from export.ship import NAMES, ShipError, ship, update_card_cv
from tests.conftest import REPO, run_cli
from tests.test_export import make_run
from unet_keras import pretrained
from unet_keras.config import ConfigError, UNetConfig, resolve_run
from unet_keras.image_io import write_png

TEST_FIGURES = {"whole_cell_dice": 0.97, "whole_cell_iou": 0.94, "nucleus_dice": 0.95,
                "nucleus_iou": 0.91, "ap50": 0.9, "ap50_95": 0.8}


def _finished_run(directory):
    config = UNetConfig(depth=2, base_filters=4, out_channels=2, image_size=32, thresholds=(0.4, 0.6))
    run, _ = make_run(directory, config)
    (run / "metrics.json").write_text(json.dumps(
        {"data_source": "test", "fold": 0, "epochs_run": 3, "train_seconds": 1.5,
         "train_images_per_second": 2.0, "test": TEST_FIGURES}))
    return run, config


def test_ship_writes_model_onnx_and_card_together(tmp_path):
    run, config = _finished_run(tmp_path / "run")
    cv = tmp_path / "cv"
    cv.mkdir()
    (cv / "cv.json").write_text(json.dumps({"mean": {"whole_cell_dice": 0.9}}))
    card = ship(run, tmp_path / "shipped", cv_dir=cv)

    shipped = tmp_path / "shipped"
    assert sorted(p.name for p in shipped.iterdir()) == sorted(NAMES)
    assert card["config"] == config.to_dict() and card["thresholds"] == [0.4, 0.6]
    assert card["test_fold"] == TEST_FIGURES and card["cross_validation"]["mean"]["whole_cell_dice"] == 0.9
    assert card["onnx_parity"]["parity"]["passed"] and card["onnx_parity"]["parity"]["max_abs_diff"] <= 1e-4
    total = sum((shipped / name).stat().st_size for name in NAMES) / 1e6
    assert card["size_mb"] == pytest.approx(total, abs=0.01)
    # The card stands in for config.json beside the shipped .keras file.
    model_path, loaded = resolve_run(shipped / "wbc_unet.keras")
    assert loaded == config and model_path.name == "wbc_unet.keras"

    (cv / "cv.json").write_text(json.dumps({"mean": {"whole_cell_dice": 0.95}}))
    before = {name: (shipped / name).read_bytes() for name in NAMES[:2]}
    assert update_card_cv(shipped, cv)["cross_validation"]["mean"]["whole_cell_dice"] == 0.95
    assert json.loads((shipped / NAMES[2]).read_text())["config"] == config.to_dict()
    assert before == {name: (shipped / name).read_bytes() for name in NAMES[:2]}

    with pytest.raises(ShipError, match="MB"):
        ship(run, tmp_path / "small", max_mb=0.01)
    assert list((tmp_path / "small").iterdir()) == []  # no file, no temporary directory left


def test_card_without_config_is_refused(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"zip")
    (tmp_path / "m.json").write_text('{"name": "m"}')
    with pytest.raises(ConfigError, match=r"m\.json.*\"config\" object"):
        resolve_run(tmp_path / "m.keras")


def test_missing_pretrained_model_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "ONNX_FILE", tmp_path / "wbc_unet.onnx")
    with pytest.raises(pretrained.PretrainedMissingError, match=r"wbc_unet\.onnx.*--model or --onnx"):
        pretrained.pretrained_path("onnx")


def test_shipped_files_are_installed_and_small():
    card = pretrained.model_card()
    assert pretrained.pretrained_path("onnx").is_file()
    total = sum((pretrained.PRETRAINED_DIR / name).stat().st_size for name in NAMES) / 1e6
    assert total <= 10.0
    assert card["config"]["out_channels"] == 2 and len(card["thresholds"]) == 2
    assert "Zheng" in card["data_citation"]


def test_predict_without_model_uses_the_shipped_onnx(tmp_path):
    from unet_keras.data.synthetic import synthetic_smear

    image, _ = synthetic_smear(120, seed=3)
    (tmp_path / "in").mkdir()
    write_png(tmp_path / "in" / "smear.png", image)
    done = run_cli("predict", str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "shipped pretrained model" in done.stdout
    assert (tmp_path / "out" / "smear_mask.png").is_file() and (tmp_path / "out" / "cells.csv").is_file()


def test_the_readme_python_example_runs_without_keras_or_jax(tmp_path):
    """The README's Python block, run as written on an image of the shipped model's kind: it
    segments through onnxruntime alone and gives the mask encoding it promises."""
    import re
    import subprocess
    import sys

    from unet_keras.data.synthetic import synthetic_smear

    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    block = next(b for b in blocks if "Segmenter.from_onnx(pretrained_path" in b)
    image, _ = synthetic_smear(120, seed=3)
    write_png(tmp_path / "cell.png", image)
    code = block.replace('"cell.bmp"', repr(str(tmp_path / "cell.png"))) + textwrap.dedent("""
        import sys
        assert result.mask_png.dtype == np.uint8 and set(np.unique(result.mask_png)) <= {0, 128, 255}
        assert result.instances.max() == len(result.cells)
        print("heavy:", sorted(m for m in ("keras", "jax", "tensorflow") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "heavy: []" in done.stdout


def test_a_run_trained_on_all_data_ships_with_no_test_figures(tmp_path, capsys):
    from export.ship import main

    run, config = _finished_run(tmp_path / "run")
    UNetConfig(**{**config.to_dict(), "all_data": True}).save(run / "config.json")
    (run / "metrics.json").write_text(json.dumps(
        {"data_source": "test", "fold": 0, "n_train": 270, "n_test": 0,
         "epochs_run": 3, "train_seconds": 1.5, "train_images_per_second": 2.0, "test": None}))
    assert main([str(run), "--out", str(tmp_path / "shipped")]) == 0
    assert "test part: none (all data" in capsys.readouterr().out
    card = json.loads((tmp_path / "shipped" / NAMES[2]).read_text())
    assert card["test_fold"] is None and card["config"]["all_data"] is True
    assert card["training"]["all_data"] is True and card["training"]["n_test"] == 0
    assert card["training"]["fold"] is None  # the split's fold numbers mean nothing here
