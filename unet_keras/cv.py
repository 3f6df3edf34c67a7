"""k-fold cross-validation: one training run per test fold, then one report over the folds.

``DIR/fold-k`` is an ordinary run of ``unet_keras.train.train`` whose test part is fold k. A fold
whose ``metrics.json`` exists is complete and skipped; an interrupted ``fold-k.partial`` is
resumed. The report covers every complete fold in DIR, so folds may be trained in several
invocations (``--folds 0,2``, later ``--folds 1,3,4``). The report (``unet_keras.cv_report``):

    cv.json        per fold: test-fold scores, training seconds and images/s (and the tuned
                   thresholds, min_cell_area and edge_cells); the scores' and timings' mean and
                   sample standard deviation (ddof=1; null for a single fold)
    CV.md          the same as a markdown table, with the data source and the recipe
    cv_folds.png   per-fold scores as points, their mean as a bar with the sd

A fold's scores are its ``metrics.json`` ``test`` figures: means over that fold's test images.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from unet_keras.config import CONFIG_FILENAME, UNetConfig
from unet_keras.cv_report import CV_JSON, CV_MARKDOWN, CV_PLOT, SCORES, TIMINGS, write_report

__all__ = ["CV_JSON", "CV_MARKDOWN", "CV_PLOT", "SCORES", "TIMINGS", "CVError", "aggregate",
           "complete_folds", "fold_dir", "parse_folds", "read_fold", "recipe", "run_cv",
           "summarize"]

log = logging.getLogger(__name__)

METRICS_FILENAME = "metrics.json"
REQUIRED_SCORES = ("whole_cell_dice", "whole_cell_iou", "ap50", "ap50_95")
# Config fields that differ between the folds of one cross-validation (the test fold, the
# postprocessing tuned on each fold's validation part, and the cell size and colour statistics
# measured on each fold's training images); all others must agree.
PER_FOLD_FIELDS = ("fold", "thresholds", "min_cell_area", "edge_cells", "cell_diameter",
                   "colour_reference")
FOLD_NAME = re.compile(r"fold-(\d+)")


class CVError(ValueError):
    """A fold directory, fold list or report that cannot be used; the message names the path."""


def fold_dir(out: str | Path, fold: int) -> Path:
    return Path(out) / f"fold-{fold}"


def parse_folds(text: str | None, num_folds: int) -> list[int]:
    """``"0,2"`` -> ``[0, 2]``; ``None`` -> every fold."""
    if text is None:
        return list(range(num_folds))
    try:
        folds = [int(part) for part in text.split(",")]
    except ValueError:
        folds = []
    if not folds or len(set(folds)) != len(folds) or not all(0 <= k < num_folds for k in folds):
        raise CVError(f"--folds {text!r}: expected distinct fold numbers in 0..{num_folds - 1}, "
                      "comma-separated (e.g. 0,2)")
    return sorted(folds)


def recipe(config: UNetConfig) -> dict:
    """The settings every fold of one cross-validation shares."""
    return {k: v for k, v in config.to_dict().items() if k not in PER_FOLD_FIELDS}


def _differences(config: UNetConfig, shared: dict) -> str:
    return ", ".join(sorted(k for k, v in recipe(config).items() if shared[k] != v))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_fold(run: str | Path) -> tuple[dict, UNetConfig]:
    """(metrics.json, config.json) of the complete training run ``run``.

    Raises:
        CVError, ConfigError: a file is missing or unreadable, or lacks a test-fold score.
    """
    path = Path(run) / METRICS_FILENAME
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CVError(f"{path}: cannot read fold metrics ({err}); expected the metrics.json "
                      "of a complete `unet-keras train` run") from err
    test = metrics.get("test") if isinstance(metrics, dict) else None
    if not isinstance(test, dict):
        raise CVError(f"{path}: no \"test\" scores; expected the metrics.json of `unet-keras train`")
    missing = [k for k in REQUIRED_SCORES if not _is_number(test.get(k))]
    missing += [k for k in TIMINGS if not _is_number(metrics.get(k))]
    if missing:
        raise CVError(f"{path}: missing or non-numeric {', '.join(missing)}; expected test-fold "
                      f"scores {', '.join(REQUIRED_SCORES)} and {', '.join(TIMINGS)}")
    return metrics, UNetConfig.load(Path(run) / CONFIG_FILENAME)


def complete_folds(out: str | Path) -> list[Path]:
    """Every ``fold-k`` directory in ``out`` that holds a metrics.json, by fold number."""
    out = Path(out)
    if not out.is_dir():
        raise CVError(f"{out}: not a directory; expected a cross-validation output (fold-k/ runs)")
    found = [p for p in out.iterdir() if FOLD_NAME.fullmatch(p.name) and
             (p / METRICS_FILENAME).is_file()]
    return sorted(found, key=lambda p: int(FOLD_NAME.fullmatch(p.name).group(1)))


def required_folds(out: str | Path) -> list[Path]:
    """``complete_folds``, refusing a directory that holds none (CVError names it)."""
    runs = complete_folds(out)
    if not runs:
        raise CVError(f"{out}: no complete fold-k runs (fold-k/metrics.json)")
    return runs


def summarize(dirs: Sequence[str | Path]) -> dict:
    """Aggregate complete fold runs: per-fold test scores and timings, their mean and sample sd.

    Returns:
        ``{"folds": [per-fold row], "mean": {key: value}, "sd": {key: value or None},
        "columns": [keys], "data_source", "synthetic", "recipe", "n_folds", "num_folds"}``.
    Raises:
        CVError: no directories, an unreadable fold, two runs of one fold, or folds trained
            with different recipes or data.
    """
    if not dirs:
        raise CVError("no complete folds to summarize; expected fold-k directories holding "
                      f"{METRICS_FILENAME} (train some with `unet-keras cv`)")
    runs = [(Path(d), *read_fold(d)) for d in dirs]
    first, first_metrics, first_config = runs[0]
    shared = recipe(first_config)
    seen: dict[int, Path] = {}
    for run, metrics, config in runs:
        if config.fold in seen:
            raise CVError(f"{run}: fold {config.fold} again (also {seen[config.fold]}); "
                          "expected one run per fold")
        seen[config.fold] = run
        differ = _differences(config, shared)
        if differ:
            raise CVError(f"{run / CONFIG_FILENAME}: recipe differs from {first / CONFIG_FILENAME} "
                          f"in {differ}; expected the folds of one recipe")
        if metrics.get("data_source") != first_metrics.get("data_source"):
            raise CVError(f"{run / METRICS_FILENAME}: data source {metrics.get('data_source')!r} "
                          f"differs from {first_metrics.get('data_source')!r} ({first})")
    columns = [k for k in SCORES if all(k in m["test"] for _, m, _ in runs)] + list(TIMINGS)
    rows = sorted(({"fold": c.fold, "run": str(r), "n_train": m.get("n_train"),
                    "n_test": m.get("n_test"),
                    "best_epoch": m.get("best_epoch"), "devices": m.get("devices", 1),
                    "thresholds": list(c.thresholds), "min_cell_area": c.min_cell_area,
                    "edge_cells": c.edge_cells,
                    **{k: float(m["test"][k]) for k in columns if k in SCORES},
                    **{k: float(m[k]) for k in TIMINGS}} for r, m, c in runs),
                  key=lambda row: row["fold"])
    values = {k: np.array([row[k] for row in rows]) for k in columns}
    return {
        "data_source": first_metrics.get("data_source"),
        "synthetic": bool(first_metrics.get("synthetic")),
        "recipe": shared,
        "num_folds": first_config.num_folds,
        "n_folds": len(rows),
        "columns": columns,
        "folds": rows,
        "mean": {k: float(v.mean()) for k, v in values.items()},
        "sd": {k: float(v.std(ddof=1)) if len(v) > 1 else None for k, v in values.items()},
    }


def aggregate(out: str | Path) -> dict:
    """Summarize every complete fold in ``out`` and write the report there."""
    summary = summarize(complete_folds(out))
    write_report(out, summary)
    return summary


def check_folds(out: Path, folds: Sequence[int], config: UNetConfig) -> dict[Path, str | None]:
    """Before any training: complete folds, asked for or not (the report covers every one in
    ``out``), must be readable and of this recipe, interrupted ones resumable with it, and
    nothing else may sit in a fold's place.

    Returns:
        the data source each complete fold trained on, by run directory.
    """
    from unet_keras.run_dir import partial_dir, resumable

    wanted = recipe(config)
    present = [int(FOLD_NAME.fullmatch(run.name).group(1)) for run in complete_folds(out)] \
        if out.is_dir() else []
    sources: dict[Path, str | None] = {}
    for fold in sorted(set(folds) | set(present)):
        run = fold_dir(out, fold)
        if run.exists():
            if not (run / METRICS_FILENAME).is_file():
                raise CVError(f"{run}: exists without {METRICS_FILENAME}; expected a complete "
                              f"run (delete it to train fold {fold} again)")
            metrics, found = read_fold(run)
            sources[run], where = metrics.get("data_source"), run / CONFIG_FILENAME
        elif partial_dir(run).exists():
            found, where = resumable(run)[0], partial_dir(run) / CONFIG_FILENAME
        else:
            continue
        differ = _differences(found, wanted)
        if differ:
            raise CVError(f"{where}: trained with another recipe ({differ} differ from the "
                          "options given); expected the same options, or another --out")
    return sources


def run_cv(config: UNetConfig, out: str | Path, folds: Sequence[int],
           data_dir: str | Path | None = None, synthetic: bool = False, devices: int = 1,
           verbose: int | str = "auto", progress: Callable[[str], None] = log.info) -> dict:
    """Train each fold of ``folds`` into ``out/fold-k`` (skipping complete ones, resuming
    interrupted ones), then write the report over every complete fold in ``out``.

    Returns:
        ``summarize``'s result.
    Raises:
        CVError, DeviceError, RunDirError, DataError, ...: before training where it can be known.
    """
    from unet_keras.data.loading import load_all, split_examples
    from unet_keras.run_dir import partial_dir
    from unet_keras.train import check_devices, train

    out = Path(out)
    if config.all_data:
        raise CVError("all_data: cross-validation tests on each fold in turn; expected a test "
                      "part (train --all-data for the model to ship)")
    if config.test_ids:
        raise CVError(f"test_ids={config.test_ids!r}: cross-validation tests on each fold in "
                      "turn; expected no fixed test images (train --test-ids for one run)")
    if out.exists() and not out.is_dir():
        raise CVError(f"{out}: not a directory; expected a cross-validation output directory")
    check_devices(devices, config.batch_size)
    sources = check_folds(out, folds, config)
    todo = [k for k in folds if not (fold_dir(out, k) / METRICS_FILENAME).is_file()]
    for k in sorted(set(folds) - set(todo)):
        progress(f"fold {k}: complete in {fold_dir(out, k)}; skipped")
    if todo:
        examples, source, synthetic = load_all(config, data_dir, synthetic)
        for run, found in sources.items():
            if found != source:
                raise CVError(f"{run / METRICS_FILENAME}: trained on {found!r}, not {source!r}; "
                              "expected the same data, or another --out")
        data_args = {"data_dir": str(Path(data_dir).resolve()) if data_dir else None,
                     "synthetic": synthetic}
        out.mkdir(parents=True, exist_ok=True)
    for k in todo:
        fold_config = dataclasses.replace(config, fold=k)
        data = split_examples(fold_config, examples, source, synthetic)
        resume = partial_dir(fold_dir(out, k)).exists()
        progress(f"fold {k}: {'resuming' if resume else 'training'} on {source}; train "
                 f"{len(data.train)}, val {len(data.val)}, test {len(data.test)}")
        metrics = train(fold_config, data, fold_dir(out, k), verbose=verbose, resume=resume,
                        data_args=data_args, devices=devices)
        progress(f"fold {k}: whole-cell Dice {metrics['test']['whole_cell_dice']:.4f}, "
                 f"{metrics['train_seconds']} s")
    return aggregate(out)
