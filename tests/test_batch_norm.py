"""Batch-norm statistics measured again after training (``batch_norm_stats="recomputed"``):
every layer's output is zero-mean, unit-variance over the images measured on, as the layer's
definition says it must be; the weights stay those training reached; and `tune
--recompute-batch-norm` on a run that kept the moving averages gives the very model that
training with recomputed statistics keeps."""

import json
import shutil

import keras
import numpy as np
import pytest

from tests.conftest import run_cli
from unet_keras.config import ConfigError, UNetConfig
from unet_keras.model import build_unet, load_model, recompute_batch_norm


def _norms(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def _normalised_outputs(model, images):
    outputs = keras.Model(model.inputs, [layer.output for layer in _norms(model)])
    return [np.asarray(o, np.float64) for o in outputs.predict(images, verbose=0)]


def test_recomputed_statistics_normalise_every_layer_over_the_images():
    # init pytorch: batch-norm epsilon 1e-5, so a normalised variance is var / (var + 1e-5) ~ 1.
    model = build_unet(UNetConfig(depth=2, base_filters=4, image_size=32, init="pytorch"))
    rng = np.random.default_rng(0)
    batches = [rng.random((8, 32, 32, 3), dtype=np.float32) for _ in range(3)]
    images = np.concatenate(batches)
    before = _normalised_outputs(model, images)
    assert max(abs(o.mean(axis=(0, 1, 2))).max() for o in before) > 0.05  # not yet normalised

    assert recompute_batch_norm(model, batches) == len(_norms(model)) == 10  # 5 blocks x 2
    for layer, out in zip(_norms(model), _normalised_outputs(model, images)):
        # gamma 1 and beta 0 as built: the output is (x - mean) / sqrt(var + epsilon).
        np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-4, err_msg=layer.name)
        # Statistics taken as training takes them (dropout on, each layer normalised by its
        # batch) leave variances of 0.56-0.82 from enc1 to dec1 of this model.
        np.testing.assert_allclose(out.var(axis=(0, 1, 2)), 1.0, atol=5e-3, err_msg=layer.name)


def test_the_setting_and_configs_written_before_it():
    assert UNetConfig().batch_norm_stats == "recomputed"
    assert UNetConfig.from_dict({}).batch_norm_stats == "moving"  # a config from before
    assert UNetConfig.from_dict({"batch_norm_stats": "recomputed"}).batch_norm_stats == "recomputed"
    with pytest.raises(ConfigError, match="batch_norm_stats='average'"):
        UNetConfig(batch_norm_stats="average")


def _variables(path):
    model = load_model(path)
    trainable = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    statistics = [keras.ops.convert_to_numpy(v) for layer in _norms(model)
                  for v in (layer.moving_mean, layer.moving_variance)]
    return trainable, statistics


def test_training_and_tune_recompute_the_same_statistics(tmp_path):
    tiny = ["--synthetic", "--epochs", "1", "--depth", "2", "--base-filters", "4",
            "--image-size", "32", "--batch-size", "8"]
    for stats in ("moving", "recomputed"):
        done = run_cli("train", *tiny, "--batch-norm-stats", stats, "--out", str(tmp_path / stats))
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads((tmp_path / stats / "metrics.json").read_text())["batch_norm_stats"] == stats
    moving, recomputed = (_variables(tmp_path / s / "model.keras") for s in ("moving", "recomputed"))
    for a, b in zip(moving[0], recomputed[0]):
        np.testing.assert_array_equal(a, b)  # the same training: only the statistics differ
    assert any(not np.allclose(a, b) for a, b in zip(moving[1], recomputed[1]))

    shutil.copytree(tmp_path / "moving", tmp_path / "tuned")
    done = run_cli("tune", "--synthetic", "--model", str(tmp_path / "tuned"), "--recompute-batch-norm")
    assert done.returncode == 0, done.stderr[-3000:]
    tuned = _variables(tmp_path / "tuned" / "model.keras")
    for a, b in zip(tuned[0] + tuned[1], recomputed[0] + recomputed[1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["batch_norm_stats"] == "recomputed"
    assert config["thresholds"] == json.loads(
        (tmp_path / "recomputed" / "config.json").read_text())["thresholds"]
    assert json.loads((tmp_path / "tuned" / "metrics.json").read_text())["batch_norm_stats"] == "recomputed"
