"""Training: fit the U-Net on one fold, keep the best model on validation Dice, score the test fold.

A run is written to ``NAME.partial`` and renamed to ``NAME`` only when complete. ``config.json``
and ``run.json`` (data arguments and split ids) are written first; after every epoch the
checkpoint in ``unet_keras.checkpoint`` is replaced atomically. A killed, interrupted or
diverged (NaN) run keeps its ``.partial`` directory; ``train(..., resume=True)`` continues it
from its last complete epoch. A run that fails before its first checkpoint leaves nothing.

With ``devices=N`` (JAX backend), each training batch is split over the first N devices
(``keras.distribution.DataParallel``; the weights are replicated). Validation and test
predictions run without the split, so images of any count and size are accepted.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
from pathlib import Path

import keras

from unet_keras.callbacks import AveragedWeights, ValidationDice, ZoomSchedule
from unet_keras.checkpoint import (CHECKPOINT_FILENAME, MODEL_FILENAME, EpochCheckpoint, assign,
                                   new_state, read_checkpoint, restore, save_model)
from unet_keras.config import CONFIG_FILENAME, UNetConfig
from unet_keras.data.loading import FoldData
from unet_keras.data.pipeline import TrainingBatches
from unet_keras.distribution import (DeviceError, EvenBatches, check_devices,  # noqa: F401
                                     data_parallel)  # DeviceError: re-exported
from unet_keras.evaluate import (edge_convention, score_config, tune_postprocessing,
                                 write_json, write_per_image_csv)
from unet_keras.image_io import atomic_write_text
from unet_keras.inference import predict_probabilities
from unet_keras.losses import BCEDiceLoss
from unet_keras.model import build_training_model, load_model, recompute_batch_norm
from unet_keras.colour import fit_reference
from unet_keras.rescale import training_cell_diameter
from unet_keras.run_dir import (LOCK_FILENAME, RUN_FILENAME, RunDirError, check_new_run,
                                 check_same_data, partial_dir, resumable, run_lock, run_name,
                                 split_ids)

log = logging.getLogger(__name__)

# Batch-norm statistics are measured over this many passes of augmented training crops (432
# crops for Dataset 1's 216 training images), drawn from their own seed so that the training
# batches, and so the weights, are the same either way.
BATCH_NORM_PASSES = 2
BATCH_NORM_SEED = 1_000_003


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or Inf; the run's last good checkpoint is kept in ``.partial``."""


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
    """Adam (AdamW on the kernels with ``config.weight_decay``) and the BCE-Dice loss; a model
    of ``build_training_model`` whose output holds the deep-supervision heads beside the U-Net's
    is scored head by head (``config.head_weights``)."""
    lr = config.learning_rate
    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=config.epochs * steps_per_epoch,
                                                    alpha=0.01)
    optimizer = keras.optimizers.Adam(lr, use_ema=config.ema > 0, ema_momentum=config.ema or 0.99,
                                      weight_decay=config.weight_decay or None)
    if config.weight_decay:
        # As AdamW is usually run: batch-norm scales and offsets and the biases keep their size.
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    model.compile(
        optimizer=optimizer,
        loss=BCEDiceLoss(smooth=config.dice_smooth, bce_weight=config.bce_weight,
                         dice_weight=config.dice_weight,
                         channel_weights=config.loss_channel_weights(),
                         boundary_weight=config.boundary_weight,
                         lovasz_weight=config.lovasz_weight,
                         head_weights=(config.head_weights()
                                       if model.outputs[0].shape[-1] > config.out_channels
                                       else None)),
    )



def train(config: UNetConfig, data: FoldData, out: str | Path, verbose: int | str = "auto",
          resume: bool = False, data_args: dict | None = None, devices: int = 1) -> dict:
    """Train on ``data.train``, select on ``data.val``, score ``data.test``; write the run to ``out``.

    Args:
        resume: continue the interrupted run in ``out.partial`` (``config`` and ``data`` must
            be the ones it started with: its config.json, and the same split ids).
        data_args: how the data were chosen (``data_dir``, ``synthetic``), saved for resuming.
        devices: train data-parallel over the first ``devices`` devices (JAX backend); run
            metadata (``metrics.json``), not part of the recipe, so a run may resume on another.
    Returns:
        The metrics written to ``metrics.json``.
    Raises:
        RunDirError: ``out`` exists; a ``.partial`` run is in the way (or, resuming, missing);
            the data differ from those the run started with.
        DeviceError: see ``check_devices``.
        OutputBusyError: another process is training into ``out.partial``.
        TrainingDiverged: the loss became NaN/Inf (the last good checkpoint is kept).
    """
    out = run_name(out)
    partial = partial_dir(out)
    if not data.train or not data.val:
        raise RunDirError("training needs non-empty train and validation parts")
    check_devices(devices, config.batch_size)
    splits = split_ids(data)
    if resume:
        resumable(out)
    else:
        check_new_run(out)
        partial.mkdir(parents=True)
    try:
        with run_lock(partial):
            if resume:
                check_same_data(partial, splits)
                for stale in partial.glob(".*.tmp*"):  # temporaries of an interrupted write
                    stale.unlink()
            else:
                config.save(partial / CONFIG_FILENAME)
                run_info = {"data_args": data_args or {}, "data_source": data.source,
                            "splits": splits}
                atomic_write_text(partial / RUN_FILENAME, json.dumps(run_info, indent=1) + "\n")
            try:
                metrics = _train_into(config, data, partial, verbose, resume, devices)
            except BaseException:
                if not (partial / CHECKPOINT_FILENAME).exists():
                    shutil.rmtree(partial, ignore_errors=True)  # nothing worth resuming
                raise
            (partial / LOCK_FILENAME).unlink()
            partial.rename(out)
    except BaseException:
        # A new run that failed before its first checkpoint (a full disk writing config.json,
        # Ctrl-C): nothing to resume, and a half-made .partial would refuse both a resume and
        # a new run.
        if not resume and not (partial / CHECKPOINT_FILENAME).exists():
            shutil.rmtree(partial, ignore_errors=True)
        raise
    (out / CHECKPOINT_FILENAME).unlink()  # resume state only; after the rename, never before
    return metrics



def _train_into(config: UNetConfig, data: FoldData, run: Path, verbose, resume: bool,
                devices: int) -> dict:
    with data_parallel(devices):
        training, model, state, saver = _fit(config, data, run, verbose, resume, devices)
    if saver.diverged is not None:
        kept = (f"the last good checkpoint (epoch {state['epochs_done']}) is kept in {run}"
                if state["epochs_done"] else "no epoch completed, so nothing is kept")
        raise TrainingDiverged(
            f"training stopped: the loss became NaN/Inf at {saver.diverged}; {kept}. Start a new "
            "run with a lower --lr (resuming replays the same batches and would diverge again)")

    # The best epoch's variables, as saved in model.keras: assigned, not loaded back from the
    # file, because deserialising compiles every initializer again (tens of seconds on CPU).
    assign(training.variables, saver.best, "best", run / CHECKPOINT_FILENAME)
    if config.batch_norm_stats == "recomputed":
        recompute_statistics(model, config, data, run)
    val_summary, test_summary = tune_and_score(model, config, data, run)

    epochs_run = state["epochs_done"]
    seconds = max(state["train_seconds"], 1e-9)
    metrics = {
        "data_source": data.source,
        "synthetic": data.synthetic,
        "fold": config.fold, "test_ids": config.test_ids, "all_data": config.all_data,
        "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test),
        "epochs_run": epochs_run,
        "resumed_after_epochs": state["resumed_after"],
        "best_epoch": state["best_epoch"],
        "best_val_dice_at_0.5": _best_epoch_log(state, "val_dice"),
        "best_val_nucleus_dice_at_0.5": _best_epoch_log(state, "val_nucleus_dice"),
        "checkpoint_metric": config.checkpoint_metric,
        "batch_norm_stats": config.batch_norm_stats,
        "thresholds": list(config.thresholds),
        "min_cell_area": config.min_cell_area,
        "edge_cells": config.edge_cells,
        "train_seconds": round(state["train_seconds"], 1),
        "train_images_per_second": round(len(data.train) * epochs_run / seconds, 2),
        "val": val_summary,
        "test": test_summary,
        "versions": versions(),
        "machine": machine(),
        "devices": devices,
    }
    write_json(metrics, run / "metrics.json")
    return metrics


def _best_epoch_log(state: dict, name: str) -> float | None:
    """The kept epoch's value of log entry ``name`` (None where it was not logged)."""
    kept = [row for row in state["history"] if row["epoch"] + 1 == state["best_epoch"]]
    return kept[-1].get(name) if kept else None


def _fit(config: UNetConfig, data: FoldData, run: Path, verbose, resume: bool, devices: int):
    """Build, compile and fit the model (resuming from the checkpoint if asked), under the
    current distribution; returns (the model fitted, the U-Net in it (the same model without
    deep supervision), checkpoint state, the checkpoint callback)."""
    keras.utils.set_random_seed(config.seed)
    batches = (EvenBatches(data.train, config, config.seed, devices) if devices > 1
               else TrainingBatches(data.train, config, seed=config.seed))
    training, model = build_training_model(config)
    compile_model(training, config, len(batches))
    training.optimizer.build(training.trainable_variables)
    state, best = new_state(), None
    if resume and (run / CHECKPOINT_FILENAME).is_file():
        checkpoint = read_checkpoint(run / CHECKPOINT_FILENAME)
        restore(training, checkpoint, run, saved=model)
        state, best = checkpoint.state, checkpoint.best
        state["resumed_after"].append(state["epochs_done"])
        log.info("resuming %s after epoch %d of %d", run, state["epochs_done"], config.epochs)
    plateau = None
    if config.lr_schedule == "plateau":
        plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_dice", mode="max", factor=0.5,
                                                    patience=5, min_lr=1e-5)
    averaged = AveragedWeights() if config.ema else None
    monitor = "val_mean_dice" if config.checkpoint_metric == "mean" else "val_dice"
    saver = EpochCheckpoint(run, batches, plateau, state, best, averaged, monitor, saved=model)
    callbacks = [ZoomSchedule(batches, config), *([averaged] if averaged else []),
                 ValidationDice(data.val, config, model),
                 *([plateau] if plateau else []), saver]
    log.info("training on %s", data.source)
    # shuffle=False: TrainingBatches reshuffles the examples every epoch from its own RNG, which
    # the checkpoint saves; Keras' extra shuffling of batch indices draws from the global RNG,
    # which it does not, and would make a resumed run see batches in another order.
    training.fit(batches, epochs=config.epochs, initial_epoch=state["epochs_done"],
                 callbacks=callbacks, verbose=verbose, shuffle=False)
    return training, model, state, saver


def recompute_statistics(model, config: UNetConfig, data: FoldData, run: Path) -> None:
    """``recompute_batch_norm`` on ``BATCH_NORM_PASSES`` passes of augmented crops of
    ``data.train`` (as training draws them), then the model into the run's model.keras."""
    batches = TrainingBatches(data.train, config, seed=config.seed + BATCH_NORM_SEED)
    crops = []
    for _ in range(BATCH_NORM_PASSES):
        crops += [batches[i][0] for i in range(len(batches))]
        batches.on_epoch_end()
    if recompute_batch_norm(model, crops):
        save_model(model, run / MODEL_FILENAME)
        log.info("batch-norm statistics measured again on %d training crops",
                 sum(len(c) for c in crops))


def retune(run: str | Path, data: FoldData, recompute_stats: bool = False) -> dict:
    """Tune a finished run's postprocessing (thresholds, object filters) on ``data.val``
    again and rescore ``data.test`` with it, as training ends; for runs trained before a
    postprocessing setting existed. Rewrites config.json, metrics.json and test_per_image.csv
    (each atomically) and returns the new metrics. ``recompute_stats``: first
    ``recompute_statistics`` (model.keras rewritten), for runs that kept the moving averages.

    Raises:
        RunDirError: ``run`` is not a finished run, or ``data`` is not the data it was trained on.
    """
    run = Path(run)
    config_path, metrics_path = run / CONFIG_FILENAME, run / "metrics.json"
    if not (run / MODEL_FILENAME).is_file() or not config_path.is_file() or not metrics_path.is_file():
        raise RunDirError(f"{run}: expected a finished run directory (model.keras, "
                          f"{CONFIG_FILENAME}, metrics.json)")
    check_same_data(run, split_ids(data))
    model, config = load_model(run / MODEL_FILENAME), UNetConfig.load(config_path)
    if recompute_stats:
        recompute_statistics(model, config, data, run)
        config.batch_norm_stats = "recomputed"
    return retune_model(model, config, data, run)


def retune_model(model, config: UNetConfig, data: FoldData, run: Path) -> dict:
    """``retune`` for a model already loaded with the run's ``config`` (any model with Keras'
    ``predict``, such as the PyTorch reference's): ``tune_and_score``, then the tuned settings
    and new summaries into the run's metrics.json; returns the metrics."""
    val_summary, test_summary = tune_and_score(model, config, data, run)
    metrics_path = run / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics.update(thresholds=list(config.thresholds), min_cell_area=config.min_cell_area,
                   edge_cells=config.edge_cells, batch_norm_stats=config.batch_norm_stats,
                   val=val_summary, test=test_summary, retuned=True)
    write_json(metrics, metrics_path)
    return metrics


def record_training_statistics(config: UNetConfig, train: list[dict]) -> None:
    """The training cells' size and colour statistics, in ``config``, for ``predict --scale
    auto`` and ``--colour auto`` (after ``min_cell_area`` is tuned: the size leaves smaller
    objects out)."""
    config.cell_diameter = round(training_cell_diameter([e["mask"] for e in train],
                                                        config.min_cell_area), 2)
    config.colour_reference = fit_reference(e["image"] for e in train)


def tune_and_score(model, config: UNetConfig, data: FoldData,
                   run: Path) -> tuple[dict, dict | None]:
    """How a run ends: tune the postprocessing on ``data.val`` (into ``config``, saved as the
    run's config.json), score ``data.test`` with it (test_per_image.csv); returns the val and
    test summaries (None for a run with no test part). ``model``: anything with Keras'
    ``predict(x, batch_size, verbose)``.
    The training cells' size and colour statistics go into the config too, for ``predict
    --scale auto`` and ``--colour auto``."""
    val_probs = predict_probabilities(model, [e["image"] for e in data.val], config.multiple)
    val_summary = tune_postprocessing(val_probs, data.val, config,
                                      edge_convention(data.train + data.val))
    record_training_statistics(config, data.train)
    config.save(run / CONFIG_FILENAME)
    if not data.test:  # config.all_data: nothing held out to score
        return val_summary, None
    test_probs = predict_probabilities(model, [e["image"] for e in data.test], config.multiple)
    test_rows, test_summary = score_config(test_probs, data.test, config)
    write_per_image_csv(test_rows, run / "test_per_image.csv")
    return val_summary, test_summary
