"""The PyTorch reference trainer (benchmarks.torch_reference): a tiny run on synthetic data writes
the metrics of a Keras fold run, complete folds are skipped, the plateau schedule is Keras', and
the batches are drawn in the order Keras' fit draws them."""

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import torch_reference  # noqa: E402
from unet_keras.config import UNetConfig  # noqa: E402
from unet_keras.cv import CV_JSON, CV_MARKDOWN  # noqa: E402

TINY = UNetConfig(depth=2, base_filters=4, image_size=32, batch_size=8, epochs=2, out_channels=1,
                  deep_supervision=0)
# What unet_keras.train writes into every run's metrics.json.
KERAS_KEYS = {"data_source", "synthetic", "fold", "n_train", "n_val", "n_test", "epochs_run",
              "resumed_after_epochs", "best_epoch", "best_val_dice_at_0.5", "thresholds",
              "train_seconds", "train_images_per_second", "val", "test", "versions", "machine",
              "devices"}


def test_tiny_run_writes_keras_metrics_and_skips_complete_folds(tmp_path, monkeypatch):
    out = tmp_path / "torch"
    # The PyTorch twin has no deep-supervision heads: a recipe with them is refused, not
    # trained without them under its name.
    deep = dataclasses.replace(TINY, deep_supervision=1)
    with pytest.raises(ValueError, match="deep_supervision=1: the PyTorch reference U-Net has no"):
        torch_reference.run_reference(deep, out, [1], threads=1, synthetic=True)
    edges = dataclasses.replace(TINY, boundary_weight=2.0)
    with pytest.raises(ValueError, match="boundary_weight=2.0: the PyTorch reference's loss"):
        torch_reference.run_reference(edges, out, [1], threads=1, synthetic=True)
    decayed = dataclasses.replace(TINY, weight_decay=0.01)
    with pytest.raises(ValueError, match="weight_decay=0.01: the PyTorch reference trains with"):
        torch_reference.run_reference(decayed, out, [1], threads=1, synthetic=True)
    hinged = dataclasses.replace(TINY, lovasz_weight=1.0)
    with pytest.raises(ValueError, match="lovasz_weight=1.0: the PyTorch reference's loss is"):
        torch_reference.run_reference(hinged, out, [1], threads=1, synthetic=True)
    assert not (out / "fold-1").exists()
    summary = torch_reference.run_reference(TINY, out, [1], threads=1, synthetic=True)

    run = out / "fold-1"
    metrics = json.loads((run / "metrics.json").read_text())
    assert KERAS_KEYS <= set(metrics)
    assert metrics["framework"] == f"pytorch {torch.__version__}"
    assert metrics["threads"] == 1 and metrics["fold"] == 1 and metrics["epochs_run"] == 2
    assert metrics["best_epoch"] in (1, 2) and metrics["synthetic"] is True
    assert 0.0 <= metrics["test"]["whole_cell_dice"] <= 1.0
    assert metrics["train_images_per_second"] > 0
    assert json.loads((run / "config.json").read_text())["thresholds"] == metrics["thresholds"]
    history = (run / "history.csv").read_text().splitlines()
    losses = [float(row.split(",")[2]) for row in history[1:]]  # epoch, learning_rate, loss, ...
    assert history[0].startswith("epoch,learning_rate,loss") and losses[1] < losses[0]
    assert not (out / "fold-1.partial").exists()

    assert summary["n_folds"] == 1 and summary["folds"][0]["fold"] == 1
    report = json.loads((out / CV_JSON).read_text())
    assert report["framework"] == [metrics["framework"]] and report["threads"] == ["1"]
    assert "PyTorch reference" in (out / CV_MARKDOWN).read_text()

    def must_not_train(*args, **kwargs):
        raise AssertionError("a complete fold was trained again")

    monkeypatch.setattr(torch_reference, "train_fold", must_not_train)
    before = (run / "metrics.json").stat().st_mtime_ns
    messages = []
    torch_reference.run_reference(TINY, out, [1], threads=1, synthetic=True,
                                  progress=messages.append)
    assert (run / "metrics.json").stat().st_mtime_ns == before
    assert any("skipped" in m for m in messages)

    # Tuned again from model.pt with the same rules: the same postprocessing and scores.
    retuned = torch_reference.retune_fold(run, synthetic=True)
    assert retuned["retuned"] is True and json.loads((run / "metrics.json").read_text()) == retuned
    for key in ("thresholds", "min_cell_area", "edge_cells", "test", "val"):
        assert retuned[key] == metrics[key], key


def test_plateau_halves_the_rate_after_five_epochs_without_improvement_as_keras_does():
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3)
    scheduler = torch_reference.plateau_scheduler(optimizer)
    # Epoch 1 sets the best (0.5); +5e-5 is below Keras' min_delta 1e-4, so epochs 2-6 are 5
    # epochs without improvement: Keras (wait >= patience 5) halves the rate after epoch 6,
    # then waits 5 more epochs before halving again.
    rates = []
    for score in [0.5] + [0.50005] * 10:
        scheduler.step(score)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == [1e-3] * 5 + [5e-4] * 5 + [2.5e-4]


def test_batches_follow_keras_fit_order():
    """Keras' fit draws batch 0 once before the first epoch and restarts the epoch; the
    reference must draw the same sequence so that both see the same augmented images."""
    import keras

    from unet_keras.data.loading import load_fold
    from unet_keras.data.pipeline import TrainingBatches
    from unet_keras.model import build_unet
    from unet_keras.train import compile_model

    config = UNetConfig(depth=1, base_filters=2, image_size=16, batch_size=64, epochs=2,
                        out_channels=1)
    data = load_fold(config, synthetic=True)
    calls = []

    class Recorded(TrainingBatches):
        def __getitem__(self, index):
            calls.append(index)
            return super().__getitem__(index)

        def on_epoch_end(self):
            calls.append("end")
            super().on_epoch_end()

    batches = Recorded(data.train, config, seed=0)
    model = build_unet(config)
    compile_model(model, config, len(batches))
    model.optimizer.build(model.trainable_variables)
    model.fit(batches, epochs=2, verbose=0, shuffle=False)
    steps = list(range(len(batches)))
    assert calls == [0, "end", *steps, "end", *steps, "end"], keras.version()


def test_torch_predictor_batches_like_keras_predict():
    torch.manual_seed(0)
    model = torch_reference.TorchUNet(TINY).eval()
    x = np.random.default_rng(0).random((5, 32, 32, 3), dtype=np.float32)
    whole = torch_reference.TorchPredictor(model).predict(x, batch_size=16)
    split = torch_reference.TorchPredictor(model).predict(x, batch_size=2)
    assert whole.shape == (5, 32, 32, 1)
    np.testing.assert_allclose(split, whole, atol=1e-6)


@pytest.mark.parametrize("recipe, want", [
    ("seed", {"base_filters": 16, "out_channels": 1, "stain_augment": True}),
    ("default", {"base_filters": UNetConfig.base_filters, "out_channels": 2,
                 "stain_augment": UNetConfig.stain_augment}),
])
def test_recipe_option_picks_the_trained_config(recipe, want, tmp_path, monkeypatch):
    seen = {}

    def fake_run(config, out, folds, threads, data_dir=None, synthetic=False):
        seen.update(config=config, folds=folds)
        return {"folds": [], "mean": {}, "sd": {}}

    monkeypatch.setattr(torch_reference, "run_reference", fake_run)
    assert torch_reference.main(["--recipe", recipe, "--folds", "2", "--epochs", "3",
                                 "--out", str(tmp_path)]) == 0
    config = seen["config"]
    assert {key: getattr(config, key) for key in want} == want
    assert (config.epochs, config.init, seen["folds"]) == (3, "pytorch", [2])
