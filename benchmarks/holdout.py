"""Side by side: runs tested on the same held-out images (``unet-keras train --test-ids``).

    python -m benchmarks.holdout LABEL=RUN [LABEL=RUN ...] --out DIR [--data-dir D]

For a test set chosen by what its images are rather than by chance: Dataset 1's images 201-300
are a batch with a white background and a purple stain, 1-200 a yellow one, so a run trained on
one batch and tested on the other meets a colour domain it never saw, as a model meets another
laboratory's slides. Each RUN is a finished run directory (``metrics.json``, ``config.json``,
``test_per_image.csv``) or the ``--out`` of ``unet-keras evaluate`` on one (``per_image.csv``;
``evaluate --colour auto`` scores through ``predict --colour auto``); the first is the
baseline. Per run: the recipe settings that differ from the baseline's, the test scores, and the
paired difference from the baseline over the test images (mean ± its standard error). That error is over images only: it leaves out the
run-to-run spread of training (0.002-0.004 whole-cell Dice on one fold of Dataset 1).

A second table breaks whole-cell and nucleus Dice down by cell type when the data's class-label
file is found. Outputs: DIR/holdout.json, DIR/HOLDOUT.md, DIR/holdout.png (per-image whole-cell
Dice of each run). Bad input (a missing run, runs tested on different images or data, a label
given twice) exits 1 naming it, before anything is written.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks.ablation import run_cli
from unet_keras.config import CONFIG_FILENAME, UNetConfig, resolve_run
from unet_keras.cv import SCORES, CVError, recipe

JSON_NAME, MARKDOWN_NAME, PLOT_NAME = "holdout.json", "HOLDOUT.md", "holdout.png"
PER_IMAGE = "test_per_image.csv"
PAIRED = ("whole_cell_dice", "whole_cell_iou", "nucleus_dice", "nucleus_iou")


def load_run(path: Path) -> dict:
    """metrics.json, the config and the per-image test scores of a finished run, or of an
    ``unet-keras evaluate --out`` directory (its config is the evaluated model's)."""
    try:
        metrics = json.loads((path / "metrics.json").read_text())
        if (path / PER_IMAGE).is_file():
            config, per_image = UNetConfig.load(path / CONFIG_FILENAME), path / PER_IMAGE
        else:
            model, config = resolve_run(metrics.get("model", path))
            per_image, trained = path / "per_image.csv", model.parent / "metrics.json"
            if trained.is_file():  # the evaluated run's own figures
                metrics.setdefault("n_train", json.loads(trained.read_text()).get("n_train"))
        with per_image.open(newline="") as handle:
            images = list(csv.DictReader(handle))
    except (OSError, ValueError) as err:
        raise CVError(f"{path}: cannot read the run ({err}); expected a finished "
                      "`unet-keras train` run or `unet-keras evaluate` output directory") from err
    if "test" not in metrics or not images:
        raise CVError(f"{path}: metrics.json has no test scores; expected a finished run")
    return {"metrics": metrics, "config": config, "images": images}


def paired(base: list[dict], other: list[dict], key: str) -> dict | None:
    """Mean and standard error of ``other - base`` per test image (same images, same order)."""
    pairs = [(float(b[key]), float(o[key])) for b, o in zip(base, other) if b.get(key) and o.get(key)]
    if not pairs:
        return None
    diffs = np.array([o - b for b, o in pairs])
    se = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else None
    return {"n_images": len(diffs), "mean": float(diffs.mean()), "se": se,
            "better": int((diffs > 0).sum()), "worse": int((diffs < 0).sum())}


def build(variants: Sequence[tuple[str, Path]]) -> tuple[dict, dict[str, list[dict]]]:
    """The report, and each run's per-image test scores by label."""
    runs = [(label, path, load_run(path)) for label, path in variants]
    base_label, base_path, base = runs[0]
    base_ids = [row["image_id"] for row in base["images"]]
    base_recipe = recipe(base["config"])
    rows = []
    for label, path, run in runs:
        ids = [row["image_id"] for row in run["images"]]
        if ids != base_ids:
            raise CVError(f"{path}: tested on other images than {base_path} ({len(ids)} against "
                          f"{len(base_ids)}); expected runs with the same --test-ids")
        if run["metrics"]["data_source"] != base["metrics"]["data_source"]:
            raise CVError(f"{path}: data {run['metrics']['data_source']!r} differs from "
                          f"{base['metrics']['data_source']!r} ({base_path})")
        this = recipe(run["config"])
        differs = {k: v for k, v in this.items() if base_recipe.get(k) != v}
        for option, plain in (("colour", "off"), ("scale", 1.0)):  # evaluate --colour, --scale
            if run["metrics"].get(option, plain) != base["metrics"].get(option, plain):
                differs[f"predict --{option}"] = run["metrics"].get(option, plain)
        rows.append({
            "label": label, "run": str(path), "differs_from_baseline": differs,
            "test_ids": run["config"].test_ids, "n_train": run["metrics"].get("n_train"),
            "train_seconds": run["metrics"].get("train_seconds"),
            "test": {k: run["metrics"]["test"][k] for k in SCORES if k in run["metrics"]["test"]},
            "vs_baseline": ({k: paired(base["images"], run["images"], k) for k in PAIRED}
                            if rows else None),
            "per_image_whole_cell_dice": [float(r["whole_cell_dice"]) for r in run["images"]],
        })
    return {"baseline": base_label, "data_source": base["metrics"]["data_source"],
            "test_ids": base["config"].test_ids, "test_image_ids": base_ids,
            "n_test": len(base_ids), "runs": rows}, {r[0]: r[2]["images"] for r in runs}


def by_cell_type(per_image: dict[str, list[dict]], labels: dict[str, int]) -> dict:
    """Mean whole-cell and nucleus Dice per cell type and run."""
    from unet_keras.data.zheng2018 import CLASS_NAMES

    table = {}
    for label, images in per_image.items():
        scores: dict[str, dict[str, list[float]]] = {}
        for image in images:
            name = CLASS_NAMES[labels.get(image["image_id"], len(CLASS_NAMES) - 1)]
            for key in ("whole_cell_dice", "nucleus_dice"):
                if image.get(key):
                    scores.setdefault(name, {}).setdefault(key, []).append(float(image[key]))
        table[label] = {name: {"n_images": len(found["whole_cell_dice"]),
                               **{k: float(np.mean(v)) for k, v in found.items()}}
                        for name, found in scores.items()}
    return table


def _signed(diff: dict | None) -> str:
    if diff is None:
        return "-"
    se = "" if diff["se"] is None else f" ± {diff['se']:.4f}"
    return f"{diff['mean']:+.4f}{se} ({diff['better']} up, {diff['worse']} down)"


def render_markdown(report: dict) -> str:
    keys = [k for k in SCORES if any(k in r["test"] for r in report["runs"])]
    lines = ["# Held-out images", "",
             f"Data: {report['data_source']}; test images {report['test_ids']} "
             f"({report['n_test']}), the same for every run. Baseline: {report['baseline']}.", "",
             "| run | differs from the baseline | train images | " + " | ".join(
                 SCORES[k] for k in keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    for r in report["runs"]:
        differs = ", ".join(f"{k}={v}" for k, v in r["differs_from_baseline"].items()) or "-"
        lines.append(f"| {r['label']} | {differs} | {r['n_train']} | " + " | ".join(
            f"{r['test'][k]:.4f}" if k in r["test"] else "-" for k in keys) + " |")
    lines += ["", "Paired over the test images against the baseline (mean ± standard error; "
              "images better / worse; the error leaves out training's run-to-run spread):", "",
              "| run | " + " | ".join(SCORES[k] for k in PAIRED) + " |", "|---|" + "---|" * len(PAIRED)]
    for r in report["runs"][1:]:
        lines.append(f"| {r['label']} | " + " | ".join(_signed(r["vs_baseline"][k]) for k in PAIRED) + " |")
    table = report.get("by_cell_type")
    if table:
        types = sorted({t for scores in table.values() for t in scores})
        lines += ["", "Whole-cell / nucleus Dice by cell type (images):", "",
                  "| run | " + " | ".join(
                      f"{t} ({next(iter(table.values())).get(t, {}).get('n_images', 0)})"
                      for t in types) + " |", "|---|" + "---|" * len(types)]
        for label, scores in table.items():
            cells = [f"{scores[t]['whole_cell_dice']:.3f} / "
                     + (f"{scores[t]['nucleus_dice']:.3f}" if "nucleus_dice" in scores[t] else "-")
                     if t in scores else "-" for t in types]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_plot(report: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(runs), 4))
    ax.boxplot([r["per_image_whole_cell_dice"] for r in runs], showmeans=True)
    ax.set_xticks(range(1, len(runs) + 1), [r["label"] for r in runs], rotation=15)
    ax.set_ylabel("whole-cell Dice per test image")
    ax.set_title(f"test images {report['test_ids']} ({report['n_test']})")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _make(variants: list[tuple[str, Path]], labels: dict[str, int]) -> dict:
    report, per_image = build(variants)
    if labels and "SYNTHETIC" not in report["data_source"]:
        report["by_cell_type"] = by_cell_type(per_image, labels)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(argv, "python -m benchmarks.holdout", __doc__, "RUN", _make,
                   lambda report: (render_markdown(report), render_plot(report)),
                   (JSON_NAME, MARKDOWN_NAME, PLOT_NAME))


if __name__ == "__main__":
    sys.exit(main())
