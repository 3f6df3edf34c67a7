"""The cross-validation report: cv.json, CV.md and cv_folds.png from ``unet_keras.cv.summarize``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from unet_keras.image_io import atomic_output, atomic_write_text

CV_JSON, CV_MARKDOWN, CV_PLOT = "cv.json", "CV.md", "cv_folds.png"
# Key in metrics.json "test" -> title. Nucleus scores exist for 2-channel models only.
SCORES = {"whole_cell_dice": "whole-cell Dice", "whole_cell_iou": "whole-cell IoU",
          "nucleus_dice": "nucleus Dice", "nucleus_iou": "nucleus IoU",
          "ap50": "AP@0.5", "ap50_95": "AP@[.5:.95]"}
# Key at the top of metrics.json -> title.
TIMINGS = {"train_seconds": "training s", "train_images_per_second": "images/s"}
FORMATS = {"train_seconds": "{:.0f}", "train_images_per_second": "{:.2f}"}


def _cell(key: str, value: float | None) -> str:
    return "n/a" if value is None else FORMATS.get(key, "{:.4f}").format(value)


def _describe(r: dict) -> str:
    return (f"{r['dataset']}, U-Net depth {r['depth']}, {r['base_filters']} base filters"
            f"{f' (at most {cap} a level)' if (cap := r.get('max_filters')) else ''}, "
            f"{r['out_channels']} output channel(s), {r['image_size']} px crops, {r['epochs']} "
            f"epochs, batch {r['batch_size']}, Adam lr {r['learning_rate']:g} "
            f"({r['lr_schedule']}{f', weight EMA {ema:g}' if (ema := r.get('ema')) else ''}"
            f"{f', weight decay {wd:g}' if (wd := r.get('weight_decay')) else ''}), "
            f"{f'Lovasz hinge weight {lw:g}, ' if (lw := r.get('lovasz_weight')) else ''}"
            f"dropout {r['dropout']:g}, augmentation "
            f"{'on' if r['augment'] else 'off'}, seed {r['seed']}; {r['num_folds']} folds "
            f"(split seed {r['split_seed']}, {r['val_fraction']:.0%} of the rest for validation"
            f"{f'; {frac:.0%} of the training part' if (frac := r.get('train_fraction', 1)) < 1 else ''})")


def render_markdown(summary: dict) -> str:
    """CV.md: data source, recipe, one row per fold, then mean ± sd."""
    columns, kind = summary["columns"], "SYNTHETIC" if summary["synthetic"] else "real"
    titles = ["fold", "test images", "best epoch", *(SCORES.get(k) or TIMINGS[k] for k in columns)]
    devices = sorted({row["devices"] for row in summary["folds"]})
    lines = [
        f"# Cross-validation: {summary['n_folds']} of {summary['num_folds']} folds ({kind} data)",
        "",
        f"- Data ({kind}): {summary['data_source']}",
        f"- Recipe: {_describe(summary['recipe'])}; trained on {'/'.join(map(str, devices))} "
        "device(s)",
        f"- Folds: {', '.join(str(row['fold']) for row in summary['folds'])}; fold k is the test "
        "part of the run in fold-k/",
        "",
        "| " + " | ".join(titles) + " |",
        "|" + "---|" * len(titles),
    ]
    for row in summary["folds"]:
        cells = [str(row["fold"]), str(row["n_test"]), str(row["best_epoch"])]
        lines.append("| " + " | ".join(cells + [_cell(k, row[k]) for k in columns]) + " |")
    spread = [f"{_cell(k, summary['mean'][k])} ± {_cell(k, summary['sd'][k])}" for k in columns]
    lines += ["| mean ± sd | | | " + " | ".join(spread) + " |", "",
              "Each fold's scores are means over its test images; the last row is the mean and "
              "sample standard deviation (ddof=1) over folds. Numbers: cv.json.", ""]
    return "\n".join(lines)


def render_plot(summary: dict) -> bytes:
    """cv_folds.png: each fold's test scores as points, the mean as a bar with ± sd."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    keys = [k for k in summary["columns"] if k in SCORES]
    folds = summary["folds"]
    fig = Figure(figsize=(1.4 * len(keys) + 2.5, 4.2))
    ax = fig.subplots()
    offsets = np.linspace(-0.25, 0.15, len(folds)) if len(folds) > 1 else np.zeros(1)
    for n, row in enumerate(folds):
        ax.scatter(np.arange(len(keys)) + offsets[n], [row[k] for k in keys], s=28, zorder=3,
                   color=f"C{n % 10}", label=f"fold {row['fold']}")
    for i, key in enumerate(keys):
        mean, sd = summary["mean"][key], summary["sd"][key]
        ax.hlines(mean, i - 0.32, i + 0.32, color="black", linewidth=2, zorder=2,
                  label="mean ± sd" if i == 0 else None)
        if sd is not None:
            ax.errorbar(i + 0.26, mean, yerr=sd, color="black", capsize=4, linewidth=1, zorder=2)
    ax.set_xticks(range(len(keys)), [SCORES[k] for k in keys], rotation=15)
    ax.set_ylabel("test-fold score (mean over its images)")
    kind = "SYNTHETIC data" if summary["synthetic"] else "real data"
    ax.set_title(f"Cross-validation, {summary['n_folds']} of {summary['num_folds']} folds, {kind}",
                 fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def write_report(out: str | Path, summary: dict) -> list[Path]:
    """Write cv.json, CV.md and cv_folds.png into ``out``, each atomically, all rendered first
    so that a failure leaves the previous report (or none) in place."""
    out = Path(out)
    text = json.dumps(summary, indent=1) + "\n"
    markdown, png = render_markdown(summary), render_plot(summary)
    atomic_write_text(out / CV_JSON, text)
    atomic_write_text(out / CV_MARKDOWN, markdown)
    with atomic_output(out / CV_PLOT) as handle:
        handle.write(png)
    return [out / CV_JSON, out / CV_MARKDOWN, out / CV_PLOT]
