"""The PyTorch reference column: ``TorchUNet`` trained with the seed's recipe on the project's folds.

    python -m benchmarks.torch_reference --folds 0,1,2,3,4 --out DIR [--epochs 50] [--threads 2]
        [--recipe seed|default] [--retune]

``--recipe seed`` (the default) trains ``SEED_RECIPE``, the column the project is compared
against; ``--recipe default`` trains the package's default recipe (``UNetConfig()``) without
its deep supervision, which the PyTorch twin does not have, so that PyTorch and Keras
(``unet-keras cv --deep-supervision 0``) can be compared on the very same recipe.

Per fold k, into ``DIR/fold-k`` (written as ``fold-k.partial`` and renamed when complete; a fold
whose ``metrics.json`` exists is skipped, an interrupted one is trained again from the start):
the split of ``unet_keras.data.loading.load_fold``; the very batches of the Keras training
(``TrainingBatches``: same shuffling and numpy augmentation from the same seed); ``TorchUNet``
(PyTorch's default initialisation) with ``TorchTrainer``'s BCE + Dice and Adam (eps 1e-7);
after each epoch the whole-cell Dice at 0.5 on the full validation images drives
ReduceLROnPlateau (factor 0.5, patience 5, min 1e-5, Keras' semantics) and picks the best epoch;
then the postprocessing (thresholds, smallest kept object) is tuned on validation and the
test fold is scored by ``unet_keras.evaluate``, with images padded by ``unet_keras.inference``
as for the Keras runs.

A fold holds ``config.json`` (recipe and tuned thresholds), ``model.pt`` (best state dict),
``history.csv``, ``test_per_image.csv`` and ``metrics.json`` with the keys of
``unet_keras.train`` plus ``framework`` and ``threads``; ``DIR/cv.json``, ``CV.md`` and
``cv_folds.png`` aggregate every complete fold with ``unet_keras.cv.summarize``. As in Keras,
``train_seconds`` counts each epoch's training steps and its validation pass. ``--retune``
trains nothing: it tunes the complete folds' postprocessing again from their ``model.pt`` (as
``unet-keras tune``, for folds tuned before a postprocessing rule changed) and rewrites the report.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from benchmarks.torch_unet import TorchTrainer, TorchUNet, predict_nhwc
from unet_keras.checkpoint import HISTORY_FILENAME, write_history
from unet_keras.config import CONFIG_FILENAME, SEED_RECIPE, UNetConfig
from unet_keras.cv import METRICS_FILENAME, complete_folds, fold_dir, parse_folds, summarize
from unet_keras.cv_report import CV_JSON, CV_MARKDOWN, CV_PLOT, render_markdown, render_plot
from unet_keras.data.loading import FoldData, load_fold
from unet_keras.data.pipeline import TrainingBatches
from unet_keras.evaluate import score_probabilities, write_json
from unet_keras.image_io import atomic_output, atomic_write_text
from unet_keras.inference import predict_probabilities
from unet_keras.run_dir import partial_dir
from unet_keras.train import machine, retune_model, tune_and_score, versions

log = logging.getLogger("benchmarks.torch_reference")

WEIGHTS_FILENAME = "model.pt"
# UNetConfig fields over its defaults. TorchUNet has no deep-supervision heads, so "default" is
# the package's default recipe without them.
RECIPES = {"seed": SEED_RECIPE, "default": {"deep_supervision": 0}}
# unet_keras.train's ReduceLROnPlateau; MIN_DELTA is Keras' default min_delta.
PLATEAU_FACTOR, PLATEAU_PATIENCE, PLATEAU_MIN_LR, MIN_DELTA = 0.5, 5, 1e-5, 1e-4


def framework() -> str:
    return f"pytorch {torch.__version__}"


class TorchPredictor:
    """A ``TorchUNet`` behind Keras' ``predict(x, batch_size, verbose)``, so that
    ``unet_keras.inference.predict_probabilities`` pads, batches and crops for it exactly as
    for a Keras model."""

    def __init__(self, model: TorchUNet):
        self.model = model

    def predict(self, x: np.ndarray, batch_size: int = 16, verbose: int = 0) -> np.ndarray:
        self.model.eval()
        return np.concatenate([predict_nhwc(self.model, x[i:i + batch_size])
                               for i in range(0, len(x), batch_size)])


def probabilities(model: TorchUNet, examples: Sequence[dict], config: UNetConfig) -> list[np.ndarray]:
    return predict_probabilities(TorchPredictor(model), [e["image"] for e in examples],
                                 config.multiple)


def plateau_scheduler(optimizer: torch.optim.Optimizer):
    """ReduceLROnPlateau on a score to maximise, as Keras' callback with patience 5: Keras
    reduces after ``patience`` epochs without an improvement of more than ``min_delta``,
    PyTorch after ``patience + 1``, hence ``patience - 1`` here."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE - 1,
        threshold=MIN_DELTA, threshold_mode="abs", min_lr=PLATEAU_MIN_LR)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit(config: UNetConfig, data: FoldData, run: Path,
        progress: Callable[[str], None] = log.info) -> tuple[TorchUNet, dict]:
    """Train ``config.epochs`` epochs on ``data.train``; returns the model holding the best
    epoch's weights (validation whole-cell Dice at 0.5) and the training state."""
    if config.supervised_levels:
        raise ValueError(f"deep_supervision={config.deep_supervision}: the PyTorch reference "
                         "U-Net has no deep-supervision heads; train it with deep_supervision=0")
    if config.boundary_weight:
        raise ValueError(f"boundary_weight={config.boundary_weight}: the PyTorch reference's "
                         "loss weighs every pixel alike; train it with boundary_weight=0")
    if config.lovasz_weight:
        raise ValueError(f"lovasz_weight={config.lovasz_weight}: the PyTorch reference's loss "
                         "is BCE + Dice alone; train it with lovasz_weight=0")
    if config.weight_decay:
        raise ValueError(f"weight_decay={config.weight_decay}: the PyTorch reference trains with "
                         "plain Adam; train it with weight_decay=0")
    seed_everything(config.seed)
    batches = TrainingBatches(data.train, config, seed=config.seed)
    # Keras' fit draws one batch to build the loss, then restarts the epoch (Keras 3, checked by
    # counting __getitem__ calls); doing the same keeps the batch sequence of the Keras runs.
    batches[0]
    batches.on_epoch_end()
    model = TorchUNet(config)
    trainer = TorchTrainer(model, config)
    scheduler = plateau_scheduler(trainer.optimizer)
    history: list[dict] = []
    state = {"best_score": None, "best_epoch": None, "train_seconds": 0.0, "epochs_done": 0}
    best_weights = None
    for epoch in range(config.epochs):
        started = time.perf_counter()
        model.train()
        loss_sum, seen = 0.0, 0
        for index in range(len(batches)):
            x, y = batches[index]
            loss = trainer.step(torch.from_numpy(x).permute(0, 3, 1, 2),
                                torch.from_numpy(y).permute(0, 3, 1, 2))
            if not np.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch + 1}, step {index + 1}: loss {loss}; "
                                         "the PyTorch reference diverged")
            loss_sum, seen = loss_sum + loss * len(x), seen + len(x)
        batches.on_epoch_end()
        _, val = score_probabilities(probabilities(model, data.val, config), data.val,
                                     (0.5,) * config.out_channels)
        state["train_seconds"] += time.perf_counter() - started
        score = val["whole_cell_dice"]
        history.append({"epoch": epoch, "loss": loss_sum / seen, "val_dice": score,
                        "val_iou": val["whole_cell_iou"],
                        "learning_rate": trainer.optimizer.param_groups[0]["lr"]})
        if state["best_score"] is None or score > state["best_score"]:
            state["best_score"], state["best_epoch"] = score, epoch + 1
            best_weights = copy.deepcopy(model.state_dict())
        scheduler.step(score)
        state["epochs_done"] = epoch + 1
        write_history(history, run / HISTORY_FILENAME)
        progress(f"fold {config.fold} epoch {epoch + 1}/{config.epochs}: loss "
                 f"{history[-1]['loss']:.4f}, val Dice {score:.4f}, "
                 f"{state['train_seconds']:.0f} s")
    model.load_state_dict(best_weights)
    return model.eval(), {**state, "history": history}


def train_fold(config: UNetConfig, data: FoldData, out: Path,
               progress: Callable[[str], None] = log.info) -> dict:
    """Train, tune and score one fold into ``out`` (via ``out.partial``); returns its metrics."""
    partial = partial_dir(out)
    if partial.exists():
        progress(f"{partial}: left by an interrupted run; training fold {config.fold} afresh")
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    model, state = fit(config, data, partial, progress)
    with atomic_output(partial / WEIGHTS_FILENAME) as handle:
        torch.save(model.state_dict(), handle)
    config = dataclasses.replace(config)
    val_summary, test_summary = tune_and_score(TorchPredictor(model), config, data, partial)
    seconds = max(state["train_seconds"], 1e-9)
    metrics = {
        "framework": framework(),
        "threads": torch.get_num_threads(),
        "data_source": data.source,
        "synthetic": data.synthetic,
        "fold": config.fold,
        "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test),
        "epochs_run": state["epochs_done"],
        "resumed_after_epochs": [],
        "best_epoch": state["best_epoch"],
        "best_val_dice_at_0.5": state["best_score"],
        "thresholds": list(config.thresholds),
        "min_cell_area": config.min_cell_area,
        "edge_cells": config.edge_cells,
        "train_seconds": round(state["train_seconds"], 1),
        "train_images_per_second": round(len(data.train) * state["epochs_done"] / seconds, 2),
        "val": val_summary,
        "test": test_summary,
        "versions": versions(),
        "machine": machine(),
        "devices": 1,
    }
    write_json(metrics, partial / METRICS_FILENAME)
    partial.rename(out)
    return metrics


def retune_fold(run: Path, data_dir: str | Path | None = None, synthetic: bool = False) -> dict:
    """Tune a complete fold's postprocessing again with its kept weights and rescore its test
    fold, as ``unet-keras tune`` does for a Keras run; rewrites config.json, metrics.json and
    test_per_image.csv and returns the metrics."""
    config = UNetConfig.load(run / CONFIG_FILENAME)
    model = TorchUNet(config)
    model.load_state_dict(torch.load(run / WEIGHTS_FILENAME, map_location="cpu"))
    return retune_model(TorchPredictor(model), config, load_fold(config, data_dir, synthetic), run)


def write_report(out: Path) -> dict:
    """cv.json, CV.md and cv_folds.png over every complete fold in ``out``."""
    summary = summarize(complete_folds(out))
    folds = [json.loads((Path(row["run"]) / METRICS_FILENAME).read_text())
             for row in summary["folds"]]
    for key in ("framework", "threads"):
        summary[key] = sorted({str(m.get(key, "?")) for m in folds})
    header = (f"# PyTorch reference U-Net ({', '.join(summary['framework'])}, "
              f"{'/'.join(summary['threads'])} threads)\n\n"
              "Trained by `python -m benchmarks.torch_reference` on the folds of `unet-keras cv`, "
              "scored by `unet_keras.evaluate`.\n\n")
    markdown = header + "#" + render_markdown(summary)  # its title becomes a section
    png = render_plot(summary)
    atomic_write_text(out / CV_JSON, json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / CV_MARKDOWN, markdown)
    with atomic_output(out / CV_PLOT) as handle:
        handle.write(png)
    return summary


def run_reference(config: UNetConfig, out: str | Path, folds: Sequence[int], threads: int,
                  data_dir: str | Path | None = None, synthetic: bool = False,
                  progress: Callable[[str], None] = log.info) -> dict:
    """Train every fold of ``folds`` not yet complete in ``out``; write the report; return it."""
    out = Path(out)
    torch.set_num_threads(threads)
    for k in folds:
        run = fold_dir(out, k)
        if (run / METRICS_FILENAME).is_file():
            progress(f"fold {k}: complete in {run}; skipped")
            continue
        fold_config = dataclasses.replace(config, fold=k)
        data = load_fold(fold_config, data_dir, synthetic)
        progress(f"fold {k}: training on {data.source} with {framework()}, "
                 f"{torch.get_num_threads()} threads; train {len(data.train)}, "
                 f"val {len(data.val)}, test {len(data.test)}")
        metrics = train_fold(fold_config, data, run, progress)
        progress(f"fold {k}: test whole-cell Dice {metrics['test']['whole_cell_dice']:.4f}, "
                 f"{metrics['train_seconds']} s, {metrics['train_images_per_second']} images/s")
    return write_report(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_reference",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory (fold-k/ runs, cv.json)")
    parser.add_argument("--folds", default=None, help="comma-separated test folds (default: all)")
    parser.add_argument("--epochs", type=int, default=UNetConfig.epochs)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="seed",
                        help="seed: the seed's recipe (SEED_RECIPE); default: UNetConfig()'s")
    parser.add_argument("--data-dir", default=None,
                        help="Zheng et al. 2018 data (default: $WBC_DATA_DIR or ../shared/...)")
    parser.add_argument("--synthetic", action="store_true", help="train on the synthetic set")
    parser.add_argument("--retune", action="store_true",
                        help="train nothing: tune the complete folds' postprocessing again and "
                             "rescore them (as `unet-keras tune`), then rewrite the report")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    # init="pytorch": TorchUNet keeps PyTorch's default initialisation, and the config says so.
    config = UNetConfig(**{**RECIPES[args.recipe], "epochs": args.epochs, "init": "pytorch"})
    try:
        folds = parse_folds(args.folds, config.num_folds)
        if args.retune:
            torch.set_num_threads(args.threads)
            for k in folds:
                if (fold_dir(args.out, k) / METRICS_FILENAME).is_file():
                    retune_fold(fold_dir(args.out, k), args.data_dir, args.synthetic)
            summary = write_report(Path(args.out))
        else:
            summary = run_reference(config, args.out, folds, args.threads, args.data_dir,
                                    args.synthetic)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"folds": [row["fold"] for row in summary["folds"]],
                      "mean": summary["mean"], "sd": summary["sd"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
