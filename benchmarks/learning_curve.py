"""Learning curve: cross-validations of one recipe trained on fractions of the training part.

    python -m benchmarks.learning_curve LABEL=CV_DIR [LABEL=CV_DIR ...] --out DIR

Each CV_DIR is a ``unet-keras cv [--train-fraction F]`` output directory (its fold runs, or the
``cv.json`` that aggregated them) of the same recipe and folds, differing only in
``train_fraction`` (1: the whole training part). Per fraction: the training images, the mean ±
sample sd over folds of every score, and the paired difference from the largest fraction over
the folds both have. Then, per score, the change per doubling of the training images: the
least-squares slope of score against log2(fraction) over the fractions, worked out fold by fold
(mean ± sd over the folds every fraction has): how much more annotated data of the same kind
would be worth, where the curve has not flattened.

Outputs: DIR/learning_curve.json, DIR/LEARNING_CURVE.md and DIR/learning_curve.png (whole-cell
and, for two-channel models, nucleus Dice against the fraction, a line per fold and their
mean). Bad input (a missing directory, recipes that differ in more than the fraction, a
fraction given twice, other data or another split) exits 1 naming it, before anything is
written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks.ablation import (finish_panels, format_mean_sd, format_signed, full_recipe, load_cv,
                                 paired, run_cli)
from unet_keras.cv import SCORES, TIMINGS, CVError

JSON_NAME, MARKDOWN_NAME, PLOT_NAME = "learning_curve.json", "LEARNING_CURVE.md", "learning_curve.png"
PLOTTED = ("whole_cell_dice", "nucleus_dice")
FRACTION = "train_fraction"


def _fraction(summary: dict) -> float:
    # A cv.json written before the setting existed trained on the whole training part.
    return float(summary["recipe"].get(FRACTION, 1.0))


def _recipe(summary: dict) -> dict:
    """The recipe less the fraction (older reports' missing settings filled in)."""
    return {k: v for k, v in full_recipe(summary).items() if k != FRACTION}


def slope_per_doubling(points: dict[float, float]) -> float:
    """Least-squares slope of score against log2(fraction): the change per doubling."""
    x = np.log2(np.array(sorted(points), dtype=np.float64))
    y = np.array([points[f] for f in sorted(points)], dtype=np.float64)
    return float(np.polyfit(x, y, 1)[0])


def build(variants: Sequence[tuple[str, Path]]) -> dict:
    """The learning curve of the labelled CVs in ``variants`` (see the module docstring).

    Raises:
        CVError: fewer than two CVs, a fraction given twice, or CVs that differ in anything but
            the fraction (recipe, data, folds' split).
    """
    if len(variants) < 2:
        raise CVError("a learning curve needs at least two cross-validations (fractions)")
    summaries = [(load_cv(path)[0], path, label) for label, path in variants]
    loaded = sorted(((_fraction(s), s, path, label) for s, path, label in summaries),
                    key=lambda item: item[0])
    full_fraction, full, full_path, _ = loaded[-1]
    reference = _recipe(full)
    seen: dict[float, Path] = {}
    for fraction, summary, path, _ in loaded:
        if fraction in seen:
            raise CVError(f"{path}: train fraction {fraction:g} again (also {seen[fraction]}); "
                          "expected one CV per fraction")
        seen[fraction] = path
        other = _recipe(summary)
        differs = sorted(k for k in set(reference) | set(other) if reference.get(k) != other.get(k))
        if differs:
            raise CVError(f"{path}: recipe differs from {full_path}'s in {differs}; expected "
                          "CVs of one recipe that differ only in the train fraction")
        if summary["data_source"] != full["data_source"]:
            raise CVError(f"{path}: data {summary['data_source']!r} differs from "
                          f"{full['data_source']!r} ({full_path})")
    rows = []
    for fraction, summary, path, label in loaded:
        n_train = [row["n_train"] for row in summary["folds"] if row.get("n_train")]
        rows.append({
            "label": label, "train_fraction": fraction, "cv_dir": str(path),
            "folds": [row["fold"] for row in summary["folds"]],
            "n_train": float(np.mean(n_train)) if n_train else None,
            "mean": summary["mean"], "sd": summary["sd"], "per_fold": summary["folds"],
            "vs_largest": ({k: paired(full, summary, k) for k in SCORES}
                           if fraction != full_fraction else None),
        })
    common = sorted(set.intersection(*(set(row["folds"]) for row in rows)))
    doubling = {}
    for key in SCORES:
        by_fold = {row["train_fraction"]: {r["fold"]: r[key] for r in row["per_fold"] if key in r}
                   for row in rows}
        slopes = [slope_per_doubling({f: by_fold[f][fold] for f in by_fold})
                  for fold in common if all(fold in scores for scores in by_fold.values())]
        if slopes:
            doubling[key] = {"folds": len(slopes), "mean": float(np.mean(slopes)),
                             "sd": float(np.std(slopes, ddof=1)) if len(slopes) > 1 else None}
    return {"data_source": full["data_source"], "synthetic": full["synthetic"],
            "recipe": reference, "common_folds": common, "fractions": rows,
            "per_doubling": doubling}


def render_markdown(report: dict) -> str:
    kind = "SYNTHETIC" if report["synthetic"] else "real"
    rows = report["fractions"]
    largest = rows[-1]["train_fraction"]
    keys = [*SCORES, "train_seconds"]
    lines = [f"# Learning curve: {len(rows)} cross-validations of one recipe ({kind} data)", "",
             f"- Data: {report['data_source']}"]
    lines += [f"- {row['label']}: fraction {row['train_fraction']:g} of the training part, "
              f"`{row['cv_dir']}`, folds {row['folds']}" for row in rows]
    lines += ["", "Mean ± sd over each fraction's folds:", "",
              "| variant | fraction | training images | folds | "
              + " | ".join(SCORES.get(k) or TIMINGS[k] for k in keys) + " |",
              "|---|---|---|---|" + "---|" * len(keys)]
    for row in rows:
        images = "-" if row["n_train"] is None else f"{row['n_train']:.0f}"
        cells = [format_mean_sd(row["mean"].get(k), row["sd"].get(k),
                                "{:.0f}" if k in TIMINGS else "{:.4f}") for k in keys]
        lines.append(f"| {row['label']} | {row['train_fraction']:g} | {images} | {len(row['folds'])} | "
                     + " | ".join(cells) + " |")
    lines += ["", f"Paired difference from {rows[-1]['label']} (fraction {largest:g}) over the folds "
              "both have (mean ± sd of the per-fold differences):", "",
              "| variant | " + " | ".join(SCORES.values()) + " |", "|---|" + "---|" * len(SCORES)]
    for row in rows[:-1]:
        cells = [format_signed(row["vs_largest"][k]) for k in SCORES]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    doubling = report["per_doubling"]
    lines += ["", "Change per doubling of the training images (least-squares slope against "
              f"log2 of the fraction, fold by fold, over folds {report['common_folds']}; mean ± "
              "sd over folds):", "",
              "| " + " | ".join(SCORES[k] for k in doubling) + " |", "|" + "---|" * len(doubling),
              "| " + " | ".join(format_signed(d) for d in doubling.values()) + " |",
              "", "Scores are means over each fold's test images (the same images at every "
              "fraction). Numbers: learning_curve.json.", ""]
    return "\n".join(lines)


def render_plot(report: dict) -> bytes:
    from matplotlib.figure import Figure

    keys = [k for k in PLOTTED if all(k in row["mean"] for row in report["fractions"])]
    fig = Figure(figsize=(4.4 * len(keys), 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    fractions = [row["train_fraction"] for row in report["fractions"]]
    for ax, key in zip(axes, keys):
        for n, fold in enumerate(report["common_folds"]):
            values = [next(r[key] for r in row["per_fold"] if r["fold"] == fold)
                      for row in report["fractions"]]
            ax.plot(fractions, values, marker=".", color=f"C{n % 10}", alpha=0.5, lw=1,
                    label=f"fold {fold}")
        means = [row["mean"].get(key) for row in report["fractions"]]
        ax.plot(fractions, means, marker="o", color="k", lw=2, label="mean")
        ax.set_xscale("log", base=2)
        ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
    return finish_panels(fig, axes, [SCORES[key] for key in keys], "fraction of the training part")


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(argv, "python -m benchmarks.learning_curve", __doc__, "CV_DIR",
                   lambda variants, _labels: build(variants),
                   lambda report: (render_markdown(report), render_plot(report)),
                   (JSON_NAME, MARKDOWN_NAME, PLOT_NAME))


if __name__ == "__main__":
    sys.exit(main())
