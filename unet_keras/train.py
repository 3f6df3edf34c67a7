"""Training: fit the U-Net on one fold, keep the best model on validation Dice, score the test fold."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from unet_keras.config import CONFIG_FILENAME, UNetConfig
from unet_keras.data.loading import FoldData
from unet_keras.data.pipeline import TrainingBatches
from unet_keras.evaluate import (score_probabilities, tune_thresholds, write_json,
                                 write_per_image_csv)
from unet_keras.inference import predict_probabilities
from unet_keras.losses import BCEDiceLoss
from unet_keras.model import build_unet, load_model

log = logging.getLogger(__name__)

MODEL_FILENAME = "model.keras"


class RunDirError(ValueError):
    """An output directory that cannot be used."""


class ValidationDice(keras.callbacks.Callback):
    """Adds ``val_dice`` / ``val_iou`` (whole cell, mean over images, threshold 0.5) to the logs,
    computed on full validation images with the same numpy metrics as evaluation."""

    def __init__(self, examples: list[dict], config: UNetConfig):
        super().__init__()
        self.examples = examples
        self.config = config

    def on_epoch_end(self, epoch, logs=None):
        probs = predict_probabilities(self.model, [e["image"] for e in self.examples],
                                      self.config.multiple)
        _, summary = score_probabilities(probs, self.examples, (0.5,) * self.config.out_channels)
        if logs is not None:
            logs["val_dice"] = summary["whole_cell_dice"]
            logs["val_iou"] = summary["whole_cell_iou"]
            if self.config.out_channels == 2:
                logs["val_nucleus_dice"] = summary["nucleus_dice"]


def versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {"python": platform.python_version(), "keras_backend": keras.backend.backend()}
    for name in ("keras", "jax", "jaxlib", "tensorflow-cpu", "tensorflow", "torch", "numpy"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


def machine() -> dict[str, object]:
    return {"platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count()}


def compile_model(model: keras.Model, config: UNetConfig, steps_per_epoch: int) -> None:
    lr = config.learning_rate
    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=config.epochs * steps_per_epoch,
                                                    alpha=0.01)
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=BCEDiceLoss(smooth=config.dice_smooth, bce_weight=config.bce_weight,
                         dice_weight=config.dice_weight),
    )


def train(config: UNetConfig, data: FoldData, out: str | Path, verbose: int | str = "auto") -> dict:
    """Train on ``data.train``, select on ``data.val``, score ``data.test``; write the run to ``out``.

    The run is written to ``out.partial`` and renamed to ``out`` only when complete, so an
    interrupted run never looks finished. Returns the metrics written to ``metrics.json``.
    """
    out = Path(out)
    if out.exists():
        raise RunDirError(f"{out}: output directory already exists; choose another --out")
    if not data.train or not data.val:
        raise RunDirError("training needs non-empty train and validation parts")
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        metrics = _train_into(config, data, partial, verbose)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(out)
    return metrics


def _train_into(config: UNetConfig, data: FoldData, run: Path, verbose) -> dict:
    keras.utils.set_random_seed(config.seed)
    batches = TrainingBatches(data.train, config, seed=config.seed)
    model = build_unet(config)
    compile_model(model, config, len(batches))
    callbacks = [
        ValidationDice(data.val, config),
        keras.callbacks.ModelCheckpoint(run / MODEL_FILENAME, monitor="val_dice", mode="max",
                                        save_best_only=True),
        keras.callbacks.CSVLogger(str(run / "history.csv")),
        keras.callbacks.TerminateOnNaN(),
    ]
    if config.lr_schedule == "plateau":
        callbacks.insert(1, keras.callbacks.ReduceLROnPlateau(
            monitor="val_dice", mode="max", factor=0.5, patience=5, min_lr=1e-5))
    log.info("training on %s", data.source)
    start = time.perf_counter()
    history = model.fit(batches, epochs=config.epochs, callbacks=callbacks, verbose=verbose)
    train_seconds = time.perf_counter() - start
    losses = history.history.get("loss", [])
    if not losses or not np.all(np.isfinite(losses)):
        raise FloatingPointError(f"training loss became NaN/Inf (history: {losses[-3:]})")

    best = load_model(run / MODEL_FILENAME)
    val_probs = predict_probabilities(best, [e["image"] for e in data.val], config.multiple)
    config.thresholds = tune_thresholds(val_probs, data.val)
    config.save(run / CONFIG_FILENAME)
    _, val_summary = score_probabilities(val_probs, data.val, config.thresholds)
    test_probs = predict_probabilities(best, [e["image"] for e in data.test], config.multiple)
    test_rows, test_summary = score_probabilities(test_probs, data.test, config.thresholds)
    write_per_image_csv(test_rows, run / "test_per_image.csv")

    val_dice = history.history.get("val_dice", [])
    images_seen = len(data.train) * len(losses)
    metrics = {
        "data_source": data.source,
        "synthetic": data.synthetic,
        "fold": config.fold,
        "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test),
        "epochs_run": len(losses),
        "best_epoch": int(np.argmax(val_dice)) + 1 if val_dice else None,
        "best_val_dice_at_0.5": float(np.max(val_dice)) if val_dice else None,
        "thresholds": list(config.thresholds),
        "train_seconds": round(train_seconds, 1),
        "train_images_per_second": round(images_seen / train_seconds, 2),
        "val": val_summary,
        "test": test_summary,
        "versions": versions(),
        "machine": machine(),
    }
    write_json(metrics, run / "metrics.json")
    return metrics
