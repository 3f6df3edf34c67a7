"""The benchmark harness: FLOP counting, the PyTorch reference's equality, stats and the report.

Fast: tiny models only. The timed runs themselves are ``python -m benchmarks.run``; the one
end-to-end test here is marked ``benchmark``.
"""

import dataclasses
import json
import math
import subprocess
import sys

import keras
import numpy as np
import pytest

from benchmarks import measure, report, summary
from benchmarks.flops import layer_flops, model_gflop
from tests.conftest import REPO
from unet_keras.config import SEED_RECIPE, UNetConfig
from unet_keras.model import build_unet


def test_flops_of_a_tiny_unet_by_hand():
    # depth 1, base 2, 8x8 input, batch norm (no conv biases), 1 output channel:
    #   enc0_conv1 3->2 at 8x8: 2*9*3*2*64 = 6912     enc0_conv2 2->2: 2*9*2*2*64 = 4608
    #   bottleneck at 4x4: 2->4: 2*9*2*4*16 = 2304     4->4: 2*9*4*4*16 = 4608
    #   dec0_up 2x2 transposed 4->2 per input pixel: 2*4*4*2*16 = 1024
    #   dec0_conv1 (2 up + 2 skip)->2 at 8x8: 2*9*4*2*64 = 9216   dec0_conv2 2->2: 4608
    #   probability 1x1 2->1: 2*2*1*64 = 256
    model = build_unet(UNetConfig(depth=1, base_filters=2, image_size=8, out_channels=1))
    rows = {r["name"]: r["conv_flops"] for r in layer_flops(model, 8, 8)}
    assert rows["enc0_conv1"] == 6912
    assert rows["dec0_up"] == 1024
    assert rows["dec0_conv1"] == 9216
    assert sum(rows.values()) == 33536
    # Batch scales linearly; the batch-norm layers are elementwise work, not convolution FLOPs.
    assert sum(r["conv_flops"] for r in layer_flops(model, 8, 8, batch=3)) == 3 * 33536
    assert rows["enc0_bn1"] == 0


def test_seed_unet_is_6_06_gflop_at_256():
    gflop = model_gflop(build_unet(UNetConfig(**SEED_RECIPE)), 256, 256)
    assert gflop["conv_gflop"] == pytest.approx(6.065, abs=0.001)
    # Four times the pixels, four times the work.
    assert model_gflop(build_unet(UNetConfig(**SEED_RECIPE)), 512, 512)["conv_gflop"] == \
        pytest.approx(4 * gflop["conv_gflop"])


def _random_statistics(model, seed=1):
    """Non-trivial batch-norm statistics and biases, so a wrong copy cannot hide."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.2, b.shape),
                               rng.normal(0, 0.2, m.shape), rng.uniform(0.5, 2.0, v.shape)])
        elif isinstance(layer, (keras.layers.Conv2DTranspose, keras.layers.Conv2D)) and layer.use_bias:
            k, b = layer.get_weights()
            layer.set_weights([k, rng.normal(0, 0.2, b.shape)])


@pytest.mark.parametrize("config", [
    UNetConfig(depth=2, base_filters=4, image_size=32),
    UNetConfig(depth=3, base_filters=4, out_channels=2, batch_norm=False, image_size=32),
    UNetConfig(depth=3, base_filters=4, max_filters=12, image_size=32),
])
def test_torch_reference_equals_keras(config, tmp_path):
    pytest.importorskip("torch")
    from benchmarks.torch_unet import (TorchUNet, copy_keras_weights, keras_layer_weights,
                                       load_weights, max_abs_difference, save_weights)

    keras.utils.set_random_seed(0)
    model = build_unet(config)
    _random_statistics(model)
    x = np.random.default_rng(2).random((2, 32, 48, 3), np.float32)
    want = np.asarray(model(x, training=False), np.float64)
    save_weights(keras_layer_weights(model), tmp_path / "w.npz")
    torch_model = copy_keras_weights(load_weights(tmp_path / "w.npz"), TorchUNet(config)).eval()
    assert max_abs_difference(torch_model, want, x) < 1e-4
    # The check can fail: a transposed-convolution kernel flipped in space is caught.
    import torch

    with torch.no_grad():
        torch_model.ups[0].weight.copy_(torch_model.ups[0].weight.flip(2, 3))
    assert max_abs_difference(torch_model, want, x) > 1e-3


def test_torch_loss_matches_keras_loss():
    torch = pytest.importorskip("torch")
    from benchmarks.torch_unet import bce_dice_loss
    from unet_keras.losses import BCEDiceLoss

    rng = np.random.default_rng(3)
    y = (rng.random((2, 8, 8, 1)) > 0.5).astype(np.float32)
    p = rng.uniform(0.01, 0.99, (2, 8, 8, 1)).astype(np.float32)
    want = float(BCEDiceLoss()(y, p))
    got = float(bce_dice_loss(torch.from_numpy(p).permute(0, 3, 1, 2),
                              torch.from_numpy(y).permute(0, 3, 1, 2)))
    assert got == pytest.approx(want, rel=1e-5)
    # Two channels, the nucleus weighted twice (``--nucleus-weight 2``).
    y = (rng.random((2, 8, 8, 2)) > 0.5).astype(np.float32)
    p = rng.uniform(0.01, 0.99, (2, 8, 8, 2)).astype(np.float32)
    want = float(BCEDiceLoss(channel_weights=[1.0, 2.0])(y, p))
    got = float(bce_dice_loss(torch.from_numpy(p).permute(0, 3, 1, 2),
                              torch.from_numpy(y).permute(0, 3, 1, 2), channel_weights=[1.0, 2.0]))
    assert got == pytest.approx(want, rel=1e-5)
    assert got != pytest.approx(float(BCEDiceLoss()(y, p)), rel=1e-3)


def _training_losses(lr_torch: float, steps: int = 6) -> tuple[list[float], list[float]]:
    """Losses of Keras' ``train_on_batch`` and ``TorchTrainer.step`` from the same weights on the
    same synthetic batches (dropout off, so both compute the same function)."""
    import torch

    from benchmarks.torch_unet import TorchTrainer, from_keras
    from unet_keras.data.loading import load_fold
    from unet_keras.data.pipeline import TrainingBatches
    from unet_keras.train import compile_model

    config = UNetConfig(depth=2, base_filters=4, dropout=0.0, image_size=32, batch_size=4,
                        augment=False)
    batches = TrainingBatches(load_fold(config, synthetic=True).train, config, seed=0)
    keras.utils.set_random_seed(0)
    model = build_unet(config)
    compile_model(model, config, len(batches))
    twin = from_keras(model, config).train()
    trainer = TorchTrainer(twin, dataclasses.replace(config, learning_rate=lr_torch))
    ours, theirs = [], []
    for step in range(steps):
        x, y = batches[step % len(batches)]
        ours.append(float(model.train_on_batch(x, y)))
        theirs.append(trainer.step(torch.from_numpy(x).permute(0, 3, 1, 2),
                                   torch.from_numpy(y).permute(0, 3, 1, 2)))
    return ours, theirs


def test_keras_and_the_torch_twin_take_the_same_adam_steps():
    """The training step itself is the same in both frameworks: the losses follow each other
    step by step. With another learning rate the twin's losses part from Keras' (the check can
    fail)."""
    pytest.importorskip("torch")
    ours, theirs = _training_losses(lr_torch=1e-3)
    assert ours[0] == pytest.approx(theirs[0], abs=1e-5)  # same weights, same batch
    assert np.max(np.abs(np.subtract(ours, theirs))) < 5e-4
    ours, theirs = _training_losses(lr_torch=1e-2)
    assert np.max(np.abs(np.subtract(ours, theirs))) > 1e-2


def test_matmul_upsampling_equals_conv_transpose():
    from benchmarks.keras_backend import with_matmul_upsampling

    keras.utils.set_random_seed(0)
    model = build_unet(UNetConfig(depth=2, base_filters=4, image_size=32))
    _random_statistics(model)
    x = np.random.default_rng(4).random((2, 32, 64, 3), np.float32)
    fast = with_matmul_upsampling(model)
    assert [type(l).__name__ for l in fast.layers].count("MatmulUpsampling") == 2
    np.testing.assert_allclose(np.asarray(fast(x)), np.asarray(model(x)), atol=1e-5)


def test_summary_and_paired_speedup():
    s = measure.summary([0.1 * i for i in range(1, 11)])
    assert s["n"] == 10 and s["median"] == pytest.approx(0.55) and s["min"] == pytest.approx(0.1)
    assert s["p10"] == pytest.approx(0.19) and s["p90"] == pytest.approx(0.91)
    # Round medians: reference 2, 4, 6; runtime 1, 1, 4 -> ratios 2, 4, 1.5 -> median 2.
    ref = [[2.0, 2.0], [4.0], [6.0, 6.0, 6.0]]
    mine = [[1.0], [1.0, 1.0], [4.0]]
    assert measure.paired_speedup(ref, mine) == pytest.approx(2.0)


def _fake_results():
    """A results dict as ``benchmarks.run`` writes it, with made-up timings."""
    def timing(ms, rounds=4, runs=5):
        return {"rounds": [[ms / 1000] * runs for _ in range(rounds)],
                "seconds": [ms / 1000] * (rounds * runs)}

    lat = {"ort-tuned": timing(50), "ort-default": timing(60), "torch-eager": timing(85),
           "keras-jax-jit": timing(125)}
    return {
        "meta": {"profile": "quick", "command": "python -m benchmarks.run --quick",
                 "started": "2026-01-01 00:00:00", "duration_s": 1.0},
        "machine": {"cpu": {"model": "Test CPU", "logical_cores": 2, "mhz": 2000.0},
                    "memory_gib": 8, "platform": "linux"},
        "versions": {"keras": "3"},
        "peak": {"before": {"median_gflops": 140.0}, "after": {"median_gflops": 144.0}},
        "model": {"gflop": {"256": {"conv_gflop": 6.0}}, "parameters": 10, "config": {}},
        "runtimes": {n: {"worker": "w"} for n in [*lat, "keras-jax-fit", "torch-train"]},
        "latency": {"256": lat},
        "throughput": {"size": 256, "batches": {"1": lat, "4": {"ort-tuned": timing(180)}}},
        "training": {"keras-jax-fit": timing(2000, runs=1), "torch-train": timing(1600, runs=1)},
        "training_setup": {"size": 128, "batch": 16, "steps_per_round": 2, "rounds": 4,
                           "warmup_steps": 1},
        "accuracy": {"status": "n/a: untrained weights", "runtimes": {}},
        "memory": {"w": {"ready": {"rss_mib": 100}, "after_inference": {"peak_rss_mib": 200}}},
        "errors": {},
    }


def test_report_tables_from_fake_results():
    res = _fake_results()
    lat = summary.latency_tables(res)["256"]
    # 6 GFLOP in 50 ms = 120 GFLOP/s, 84 % of the 142 GFLOP/s peak (median of 140 and 144).
    assert lat["ort-tuned"]["gflops"] == pytest.approx(120.0)
    assert lat["ort-tuned"]["peak_share"] == pytest.approx(120 / 142)
    assert lat["ort-tuned"]["vs_torch"] == pytest.approx(1.7)
    assert lat["ort-tuned"]["vs_keras_jax"] == pytest.approx(2.5)
    train = summary.training_table(res)
    assert train["keras-jax-fit"]["images_per_s"] == pytest.approx(16.0)  # 32 images in 2 s
    assert train["keras-jax-fit"]["vs_torch"] == pytest.approx(0.8)

    targets = {t["target"].split(" at ")[0]: t for t in summary.targets(res)}
    assert targets["best onnxruntime >= 2.5x faster than keras-jax-jit"]["met"] is True
    assert targets["best onnxruntime >= 1.6x faster than torch-eager"]["met"] is True
    share = next(t for t in summary.targets(res) if "SGEMM" in t["target"])
    assert share["met"] is False and "120.0 GFLOP/s" in share["figure"]  # 84.5 % < 85 %
    gpu = [t for t in summary.targets(res) if t["target"].startswith("GPU")]
    assert gpu and all(t["met"] is None for t in gpu)

    text = report.render(res, {"latency": "latency.png"})
    assert "| ort-tuned | 50.0 | 50.0-50.0 | 20 | 120.0 | 85% | 1.70x | 2.50x |" in text
    assert "![latency](latency.png)" in text
    assert "**not met**" in text and "not measured: no GPU in this run" in text
    assert "n/a: untrained weights" in text


def test_peak_share_paired_with_sgemm_in_the_same_rounds():
    res = _fake_results()
    # SGEMM 2 * 2048^3 = 17.18 GFLOP timed at 0.1 s per call in the very rounds of the models:
    # ort-tuned's 120 GFLOP/s is 120 / 171.8 = 69.8 % of it, whatever SGEMM did before or after.
    res["latency"]["256"]["numpy-sgemm"] = {"rounds": [[0.1] * 5] * 4, "seconds": [0.1] * 20}
    lat = summary.latency_tables(res)["256"]
    assert lat["numpy-sgemm"]["gflops"] == pytest.approx(171.8, abs=0.1)
    assert lat["ort-tuned"]["peak_share"] == pytest.approx(120 / 171.80, rel=1e-3)
    share = next(t for t in summary.targets(res) if "SGEMM" in t["target"])
    assert share["met"] is False and "70% of SGEMM 171.8 GFLOP/s" in share["figure"]
    assert "numpy-sgemm" not in report.headline(res)


def test_plots_written(tmp_path):
    from benchmarks import plots

    made = plots.write_all(_fake_results(), tmp_path)
    assert {"latency", "throughput", "training"} <= set(made)
    for name in made.values():
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.benchmark
def test_quick_run_end_to_end(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert {"ort-tuned", "torch-eager", "keras-jax-jit"} <= set(res["latency"]["256"])
    assert (tmp_path / "REPORT.md").is_file() and (tmp_path / "latency.png").is_file()
    assert not math.isnan(summary.sgemm_gflops(res))
