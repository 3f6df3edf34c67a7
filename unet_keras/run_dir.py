"""The run directory: where a training run lives while it is written, and what resuming reads.

A run named ``runs/NAME`` is written to ``runs/NAME.partial`` (``config.json``, ``run.json`` with
the data arguments and split ids, the per-epoch checkpoint) and renamed when complete, so a
directory without ``.partial`` is always a finished run. These helpers name, check and lock
those directories for ``unet_keras.train``, ``unet-keras train --resume`` and ``unet-keras cv``.
"""

from __future__ import annotations

import json
from pathlib import Path

from unet_keras.checkpoint import CHECKPOINT_FILENAME, read_checkpoint
from unet_keras.config import CONFIG_FILENAME, UNetConfig
from unet_keras.data.loading import FoldData
from unet_keras.dirlock import exclusive_dir

RUN_FILENAME = "run.json"
LOCK_FILENAME = ".unet-keras-train.lock"


class RunDirError(ValueError):
    """An output directory that cannot be used, or a run that cannot be resumed."""



def partial_dir(out: str | Path) -> Path:
    """Where a run named ``out`` lives until it is complete."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def run_name(path: str | Path) -> Path:
    """``runs/NAME`` for either ``runs/NAME`` or ``runs/NAME.partial``."""
    path = Path(path)
    return path.with_name(path.name[:-len(".partial")]) if path.name.endswith(".partial") else path


def resumable(out: str | Path) -> tuple[UNetConfig, dict, int]:
    """The recipe, data arguments and completed epochs of the interrupted run ``out``.

    Raises:
        RunDirError: ``out`` is complete, or has no ``.partial`` directory with a config.
        CheckpointError, ConfigError: unreadable files (named in the message).
    """
    out = run_name(out)
    partial = partial_dir(out)
    if out.exists():
        raise RunDirError(f"{out}: this run is complete; nothing to resume")
    if not (partial / CONFIG_FILENAME).is_file() or not (partial / RUN_FILENAME).is_file():
        raise RunDirError(f"{partial}: no interrupted run to resume; expected a directory with "
                          f"{CONFIG_FILENAME} and {RUN_FILENAME} left by `unet-keras train`")
    config = UNetConfig.load(partial / CONFIG_FILENAME)
    run_info = json.loads((partial / RUN_FILENAME).read_text())
    done = 0
    if (partial / CHECKPOINT_FILENAME).is_file():
        done = read_checkpoint(partial / CHECKPOINT_FILENAME, state_only=True).state["epochs_done"]
    return config, run_info.get("data_args", {}), done


def check_new_run(out: str | Path) -> None:
    """Refuse to start a run named ``out`` before any work is done.

    Raises:
        RunDirError: ``out`` exists, or ``out.partial`` holds an interrupted run.
        OutputBusyError: ``out.partial`` is being written by a running ``unet-keras train``.
    """
    out = run_name(out)
    partial = partial_dir(out)
    if out.exists():
        raise RunDirError(f"{out}: output directory already exists; choose another --out")
    if partial.exists():
        with run_lock(partial):
            pass
        raise RunDirError(f"{partial}: holds an interrupted run; continue it with "
                          f"`unet-keras train --resume {out}`, or delete it to start afresh")


def run_lock(partial: Path):
    return exclusive_dir(partial, LOCK_FILENAME, "`unet-keras train`")


def split_ids(data: FoldData) -> dict[str, list]:
    return {name: [e["image_id"] for e in getattr(data, name)] for name in ("train", "val", "test")}


def check_same_data(partial: Path, splits: dict) -> None:
    started = json.loads((partial / RUN_FILENAME).read_text()).get("splits")
    for name, ids in splits.items():
        if started is not None and started.get(name) != ids:
            raise RunDirError(
                f"{partial}: the {name} images differ from those the run started with "
                f"({len(started.get(name, []))} then, {len(ids)} now); resume with the same data")

