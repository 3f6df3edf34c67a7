"""Kill-safe training: one checkpoint per run, replaced atomically after every good epoch.

``checkpoint.npz`` in the run directory holds everything a resumed run needs to continue as if it
had never stopped:

    model_NNNN       every model variable: weights, batch-norm statistics, dropout seed state
    optimizer_NNNN   every optimizer variable: iteration count, learning rate, Adam moments
    best_NNNN        the model variables of the best epoch on validation Dice
    state            JSON: epochs done, per-epoch history, best score and epoch, training
                     seconds, ReduceLROnPlateau counters, the training batches' order and
                     numpy RNG states

It is written under a temporary name and renamed, so a kill at any instant leaves the previous
complete checkpoint and at most the epoch in progress is lost. ``model.keras`` (the best epoch,
for inference: the optimizer state Keras stores in it is incidental) and ``history.csv`` are
derived from it, written the same way, and rewritten from it on resume, so all three agree.

A ``.npz`` of plain arrays rather than Keras' ``BackupAndRestore``: that callback writes its
weights and epoch files in place (a kill mid-write corrupts them, and the two can disagree) and
keeps neither the data order, the augmentation RNG nor the callbacks' state.
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from unet_keras.image_io import atomic_output, atomic_path, atomic_write_csv

CHECKPOINT_FILENAME = "checkpoint.npz"
HISTORY_FILENAME = "history.csv"
MODEL_FILENAME = "model.keras"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model. Names the file."""


@dataclass
class Checkpoint:
    model: list[np.ndarray]
    optimizer: list[np.ndarray]
    best: list[np.ndarray]
    state: dict


def new_state() -> dict:
    return {"epochs_done": 0, "history": [], "best_score": None, "best_epoch": None,
            "train_seconds": 0.0, "resumed_after": [], "plateau": None, "batches": None}


def host_copies(variables) -> list[np.ndarray]:
    """Numpy copies of variables' values, owning their memory (device buffers may be donated)."""
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def write_checkpoint(path: Path, model: keras.Model, best: list[np.ndarray], state: dict) -> None:
    arrays = {f"model_{i:04d}": v for i, v in enumerate(host_copies(model.variables))}
    optimizer = host_copies(model.optimizer.variables)
    arrays.update({f"optimizer_{i:04d}": v for i, v in enumerate(optimizer)})
    arrays.update({f"best_{i:04d}": v for i, v in enumerate(best)})
    arrays["state"] = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
    with atomic_output(path) as handle:
        np.savez(handle, **arrays)


def read_checkpoint(path: Path, state_only: bool = False) -> Checkpoint:
    """Read ``checkpoint.npz``; ``state_only`` skips the arrays (the file is read lazily)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = ["state"] if state_only else npz.files
            arrays = {name: npz[name] for name in names}
        state = json.loads(arrays.pop("state").tobytes())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err}); "
                              "expected the checkpoint.npz written by `unet-keras train`") from err
    parts = {prefix: [arrays[k] for k in sorted(arrays) if k.startswith(prefix + "_")]
             for prefix in ("model", "optimizer", "best")}
    return Checkpoint(parts["model"], parts["optimizer"], parts["best"], state)


def assign(variables, values: list[np.ndarray], what: str, path: Path) -> None:
    """Set ``variables`` to ``values``, refusing a checkpoint of another model."""
    shapes = [tuple(v.shape) for v in variables]
    saved = [tuple(v.shape) for v in values]
    if shapes != saved:
        raise CheckpointError(
            f"{path}: {what} holds {len(saved)} arrays that do not match the {len(shapes)} "
            "variables of the model built from config.json; expected a checkpoint of this run")
    for variable, value in zip(variables, values):
        variable.assign(value)


def save_model(model: keras.Model, path: Path) -> None:
    """``model.save`` under a temporary name (Keras needs the .keras suffix), then renamed."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def write_history(rows: list[dict], path: Path) -> None:
    """Per-epoch logs as CSV (the columns of Keras' CSVLogger), replaced whole each epoch."""
    fields = ["epoch"] + sorted({k for row in rows for k in row} - {"epoch"})
    atomic_write_csv(path, fields, rows)


def restore(model: keras.Model, checkpoint: Checkpoint, run: Path,
            saved: keras.Model | None = None) -> None:
    """Load a checkpoint into a compiled model and rewrite the files derived from it;
    ``saved``: the model written to model.keras when it is not ``model`` itself but a part of
    it (deep supervision: ``model.build_training_model``)."""
    path = run / CHECKPOINT_FILENAME
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    if checkpoint.best:
        assign(model.variables, checkpoint.best, "best", path)
        save_model(saved or model, run / MODEL_FILENAME)
    assign(model.variables, checkpoint.model, "model", path)
    assign(model.optimizer.variables, checkpoint.optimizer, "optimizer", path)
    write_history(checkpoint.state["history"], run / HISTORY_FILENAME)


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch with a finite loss: ``model.keras`` when the validation score
    ``monitor`` (a log entry of ``ValidationDice``) improved,
    then ``checkpoint.npz`` and ``history.csv``. A non-finite loss stops training at once and
    nothing of that epoch is saved (see ``diverged``).

    Must come after ``ValidationDice`` and ``ReduceLROnPlateau`` in the callback list: it
    records their results, and restores the plateau counters after their reset at train begin.
    ``saved``: the model written to model.keras when it is a part of the fitted model (deep
    supervision); the checkpoint holds the fitted model's variables.
    """

    def __init__(self, run: Path, batches, plateau=None, state: dict | None = None,
                 best: list[np.ndarray] | None = None, averaged=None, monitor: str = "val_dice",
                 saved: keras.Model | None = None):
        super().__init__()
        self.saved = saved
        self.monitor = monitor  # the log entry whose highest value picks the kept epoch
        self.averaged = averaged  # callbacks.AveragedWeights, when the epoch's model is an average
        self.run = Path(run)
        self.batches = batches
        self.plateau = plateau
        self.state = state if state is not None else new_state()
        self.best = best or []
        self.diverged: str | None = None
        self._epoch = 0
        self._started = 0.0

    def on_train_begin(self, logs=None):
        # After fit has peeked at the data (which draws from the RNGs) and reset the plateau.
        if self.state["batches"] is not None:
            self.batches.set_state(self.state["batches"])
        if self.plateau is not None and self.state["plateau"] is not None:
            for name, value in self.state["plateau"].items():
                setattr(self.plateau, name, value)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)) and self.diverged is None:
            self.diverged = f"epoch {self._epoch + 1}, step {batch + 1}: loss {float(loss)}"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs = {name: float(value) for name, value in (logs or {}).items()}
        if self.diverged is None and not np.isfinite(logs.get("loss", 0.0)):
            self.diverged = f"epoch {epoch + 1}: loss {logs['loss']}"
        if self.diverged is not None:
            self.model.stop_training = True
            if self.averaged is not None:
                self.averaged.raw()
            return
        state = self.state
        state["train_seconds"] += time.perf_counter() - self._started
        state["history"].append({"epoch": epoch, **logs})
        score = logs.get(self.monitor)
        if score is not None and (state["best_score"] is None or score > state["best_score"]):
            state["best_score"], state["best_epoch"] = score, epoch + 1
            self.best = host_copies(self.model.variables)
            save_model(self.saved or self.model, self.run / MODEL_FILENAME)
        if self.averaged is not None:
            self.averaged.raw()  # the state to continue from holds the trained weights
        state["epochs_done"] = epoch + 1
        state["batches"] = self.batches.get_state()
        if self.plateau is not None:
            best = self.plateau.best
            state["plateau"] = {"wait": int(self.plateau.wait),
                                "best": None if best is None else float(best),
                                "cooldown_counter": int(self.plateau.cooldown_counter)}
        write_checkpoint(self.run / CHECKPOINT_FILENAME, self.model, self.best, state)
        write_history(state["history"], self.run / HISTORY_FILENAME)
