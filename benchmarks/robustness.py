"""Scores of trained runs under fixed, controlled domain shifts of their test fold.

    python -m benchmarks.robustness RUN [RUN ...] --labels a,b --out DIR [--data-dir D]
        [--synthetic] [--tta] [--conditions identity,zoom_0.5,...] [--scale-auto]
        [--colour-auto]

For the augmentation ablation (stain jitter and zoom on or off): every run is scored on the same
test images, each transformed by every condition in ``CONDITIONS``, with the model's own tuned
postprocessing (thresholds, minimum cell area, edge cells) and the scoring of
``unet-keras evaluate`` (``unet_keras.evaluate.score_config``).

The perturbations (``benchmarks.shifts``) have no random draws, so they are the same in every
invocation.

Outputs: DIR/robustness.json (every figure, the conditions' parameters, machine, versions),
DIR/ROBUSTNESS.md and DIR/robustness.png. Bad input (a missing run, runs whose test images
differ, unknown labels or conditions) exits 1 naming the path, before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks.robustness_report import render_markdown, write_report  # noqa: E402
from benchmarks.shifts import (  # noqa: E402
    CONDITIONS, EXTRA_CONDITIONS, GROUPS, Condition, RobustnessError, perturb_examples,
    pick_conditions,
)
from unet_keras.config import UNetConfig, resolve_run  # noqa: E402
from unet_keras.colour import fit_reference  # noqa: E402
from unet_keras.rescale import training_cell_diameter  # noqa: E402

SCORE_KEYS = ("whole_cell_dice", "whole_cell_iou", "nucleus_dice", "ap50")


def parse_labels(text: str | None, runs: Sequence[str]) -> list[str]:
    """One distinct label per run; by default the run directories' names."""
    if text is None:
        labels = [Path(r).name if Path(r).is_dir() else Path(r).parent.name for r in runs]
    else:
        labels = [label.strip() for label in text.split(",")]
    if len(labels) != len(runs) or len(set(labels)) != len(labels) or not all(labels):
        raise RobustnessError(f"--labels {text!r}: expected {len(runs)} distinct non-empty "
                              f"labels, comma-separated, one per run ({', '.join(runs)})")
    return labels


def examples_digest(examples: Sequence[dict]) -> str:
    """A digest of the test part's ids, images and masks: equal digests, equal test data."""
    digest = hashlib.sha256()
    for e in examples:
        for part in (str(e["image_id"]).encode(), np.ascontiguousarray(e["image"]),
                     np.ascontiguousarray(e["mask"])):
            digest.update(bytes(part))
    return digest.hexdigest()


def load_shared_test(configs: dict[str, tuple[Path, UNetConfig]], data_dir, synthetic: bool):
    """The test fold all runs share (``load_test_fold`` of each run's config); refuses differing
    ones.

    Runs are compared by their test images themselves, so recipes that differ only outside the
    split (a validation fraction, say) still compare.
    """
    from unet_keras.data.loading import load_test_fold

    loaded: dict[str, object] = {}  # a split's settings -> its FoldData, loaded once
    first = None
    for model_path, config in configs.values():
        split = _split(config)
        if split not in loaded:
            loaded[split] = load_test_fold(config, data_dir, synthetic=synthetic)
        digest = examples_digest(loaded[split].test)
        if first is None:
            first = (model_path, split, digest)
        elif digest != first[2]:
            raise RobustnessError(
                f"{model_path.parent}: its test images ({split}) differ from those of "
                f"{first[0].parent} ({first[1]}); expected runs trained on the same fold")
    return loaded[first[1]]


def _split(config: UNetConfig) -> str:
    part = (f"test images {config.test_ids}" if config.test_ids
            else f"fold {config.fold} of {config.num_folds}")
    return (f"{config.dataset}, {part}, split seed "
            f"{config.split_seed}, validation fraction {config.val_fraction}, seed {config.seed}")


def _scores(probs: list[np.ndarray], examples: list[dict], config: UNetConfig) -> dict:
    """Summary scores with the model's own tuned postprocessing, as ``unet-keras evaluate``."""
    from unet_keras.evaluate import score_config

    return score_config(probs, examples, config)[1]


def score_conditions(model, config: UNetConfig, perturbed: dict[str, list[dict]],
                     scale: float | str = 1.0, colour: str = "off",
                     ) -> tuple[dict[str, dict], dict[str, dict[str, list]]]:
    """Summary scores of one model on each condition's perturbed test examples, and per image
    what was done to it. With ``scale`` "auto" or ``colour`` "auto", images go through
    ``unet-keras predict``'s ``--scale`` and ``--colour`` (``unet_keras.domain.DomainAdapter``,
    with the config's ``cell_diameter`` and ``colour_reference``): the record holds, per
    condition, the factor each image was predicted at ("factors") and whether it was mapped
    ("mapped"); else images go to the model as they are (an empty record)."""
    from unet_keras.domain import DomainAdapter
    from unet_keras.inference import keras_probability_fn, predict_probabilities

    scores: dict[str, dict] = {}
    record: dict[str, dict[str, list]] = {"factors": {}, "mapped": {}}
    for name, examples in perturbed.items():
        images = [e["image"] for e in examples]
        if scale == 1.0 and colour == "off":
            probs = predict_probabilities(model, images, config.multiple)
        else:
            adapter = DomainAdapter(keras_probability_fn(model, config.multiple), config, scale,
                                    colour)
            probs = [adapter(image) for image in images]
            record["factors"][name], record["mapped"][name] = adapter.factors, adapter.mapped
        scores[name] = _scores(probs, examples, config)
    return scores, {k: v for k, v in record.items() if v}


def tta_comparison(model, config: UNetConfig, examples: list[dict]) -> dict:
    """Identity-condition scores with and without 8-view TTA, and warm seconds per image of each.

    Each timed pass follows an untimed one of the same kind, so compilation for every batch
    shape (TTA turns non-square images) is outside the timings; the cold times are kept too.
    """
    from unet_keras.inference import predict_probabilities

    images, out = [e["image"] for e in examples], {}
    for tta in (False, True):
        seconds = []
        for _ in range(2):
            start = time.perf_counter()
            probs = predict_probabilities(model, images, config.multiple, tta=tta)
            seconds.append(time.perf_counter() - start)
        key = "tta" if tta else "plain"
        out[key] = {"scores": _scores(probs, examples, config),
                    "seconds_per_image": seconds[1] / len(images),
                    "cold_seconds_per_image": seconds[0] / len(images)}
    gains = {k: out["tta"]["scores"][k] - out["plain"]["scores"][k]
             for k in SCORE_KEYS if k in out["plain"]["scores"]}
    return {**out, "gain": gains,
            "time_ratio": out["tta"]["seconds_per_image"] / out["plain"]["seconds_per_image"]}


def shifted_means(scores: dict[str, dict], conditions: Sequence[Condition]) -> dict[str, dict]:
    """Mean of the condition means over all shifted conditions, and over each group of them."""
    groups = {"all_shifted": tuple({c.kind for c in conditions} - {"identity"}), **GROUPS}
    means = {}
    for group, kinds in groups.items():
        names = [c.name for c in conditions if c.kind in kinds]
        if names:
            means[group] = {k: float(np.mean([scores[n][k] for n in names]))
                            for k in SCORE_KEYS if k in scores[names[0]]}
            means[group]["conditions"] = names
    return means


def run_benchmark(runs: Sequence[str], labels: Sequence[str], data_dir=None,
                  synthetic: bool = False, tta: bool = False,
                  conditions: Sequence[Condition] = CONDITIONS, scale_auto: bool = False,
                  colour_auto: bool = False) -> dict:
    """Every figure of the report, as written to robustness.json. Raises on bad input first.

    With ``scale_auto`` each run is scored a second time, as "LABEL, scale auto", through
    ``unet-keras predict --scale auto``; its reference cell size is the config's
    ``cell_diameter``, or else measured on the fold's training masks (what training records).
    ``colour_auto`` does the same for ``predict --colour auto`` ("LABEL, colour auto"), with the
    config's ``colour_reference`` or else one fitted to the fold's training images. Both together
    add "LABEL, scale + colour auto": what ``predict`` does by default.
    """
    configs = {label: resolve_run(run) for label, run in zip(labels, runs)}
    fold = load_shared_test(configs, data_dir, synthetic)
    import keras

    from benchmarks import machine
    from unet_keras.model import load_model

    started = time.perf_counter()
    perturbed = {c.name: perturb_examples(c, fold.test) for c in conditions}
    models = {}
    for label, (model_path, config) in configs.items():
        model = load_model(model_path)
        scores, _ = score_conditions(model, config, perturbed)
        models[label] = {"run": str(model_path.parent), "config": config.to_dict(),
                         "thresholds": list(config.thresholds),
                         "min_cell_area": config.min_cell_area,
                         "edge_cells": config.edge_cells, "scores": scores,
                         "shifted_means": shifted_means(scores, conditions)}
        if tta:
            models[label]["tta"] = tta_comparison(model, config, fold.test)
        variants = [("scale auto", "auto", "off")] if scale_auto else []
        variants += [("colour auto", 1.0, "auto")] if colour_auto else []
        variants += [("scale + colour auto", "auto", "auto")] if scale_auto and colour_auto else []
        if variants:  # references as training records them, where the config predates them
            config = dataclasses.replace(
                config, cell_diameter=config.cell_diameter or training_cell_diameter(
                    [e["mask"] for e in fold.train], config.min_cell_area),
                colour_reference=config.colour_reference or fit_reference(
                    e["image"] for e in fold.train))
        for suffix, scale, colour in variants:
            scores, record = score_conditions(model, config, perturbed, scale, colour)
            entry = {**models[label], "scores": scores,
                     "shifted_means": shifted_means(scores, conditions)}
            entry.pop("tta", None)
            if scale == "auto":
                entry["scale"] = {"reference_cell_diameter": config.cell_diameter,
                                  "factors": record["factors"]}
            if colour == "auto":
                entry["colour"] = {"gate": config.colour_reference["gate"],
                                   "mapped": record["mapped"]}
            models[f"{label}, {suffix}"] = entry
    any_config = next(iter(configs.values()))[1]
    return {"data_source": fold.source, "synthetic": fold.synthetic, "fold": any_config.fold,
            "n_test_images": len(fold.test), "test_ids": [e["image_id"] for e in fold.test],
            "test_fingerprint_sha256": examples_digest(fold.test),
            "conditions": [dataclasses.asdict(c) for c in conditions], "labels": list(models),
            "models": models, "seconds": round(time.perf_counter() - started, 1),
            "keras_backend": keras.backend.backend(), "machine": machine.describe(),
            "versions": machine.versions()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.robustness",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (model.keras + config.json)")
    parser.add_argument("--labels", help="comma-separated, one per run (default: directory names)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--data-dir", help="dataset root (default: the standard locations)")
    parser.add_argument("--synthetic", action="store_true", help="use the synthetic smear set")
    parser.add_argument("--tta", action="store_true", help="also time and score 8-view TTA")
    parser.add_argument("--conditions", help="subset of " + ", ".join(
        c.name for c in CONDITIONS + EXTRA_CONDITIONS) + f" (default: the first {len(CONDITIONS)})")
    parser.add_argument("--scale-auto", action="store_true",
                        help="also score each run through `unet-keras predict --scale auto`")
    parser.add_argument("--colour-auto", action="store_true",
                        help="also score each run through `unet-keras predict --colour auto` "
                             "(with --scale-auto, through both as well: predict's default)")
    args = parser.parse_args(argv)
    try:
        labels = parse_labels(args.labels, args.runs)
        conditions = pick_conditions(args.conditions)
        result = run_benchmark(args.runs, labels, args.data_dir, args.synthetic, args.tta,
                               conditions, args.scale_auto, args.colour_auto)
        argv = sys.argv[1:] if argv is None else argv
        result["command"] = shlex.join(["python", "-m", "benchmarks.robustness", *argv])
        paths = write_report(result, Path(args.out))
    except (ValueError, OSError) as err:  # RobustnessError, ConfigError, DataError, ModelLoadError
        print(f"benchmarks.robustness: error: {err}", file=sys.stderr)
        return 1
    print(render_markdown(result))
    print("written: " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
