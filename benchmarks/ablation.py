"""Side by side: several cross-validations of the same folds, each against the first.

    python -m benchmarks.ablation LABEL=CV_DIR [LABEL=CV_DIR ...] --out DIR

Each CV_DIR holds the ``fold-k`` runs of one recipe (``unet-keras cv``, or
``python -m benchmarks.torch_reference``), or, where the runs are gone, the ``cv.json`` that
aggregated them (a committed report in ``benchmarks/results``); the first is the baseline. Per
variant: the recipe settings that differ from the baseline's, the mean ± sample sd over its
complete folds (``unet_keras.cv.summarize``), and the paired difference from the baseline over
the folds both have (mean ± sd of the per-fold differences: the folds' own difficulty cancels
out).

When the data's class-label file is found (``--data-dir``, default the usual search), a second
table breaks whole-cell and nucleus Dice down by cell type, over the test folds every variant
has (``test_per_image.csv`` of each fold run), so that all variants are scored on the same images;
a variant read from its ``cv.json`` alone has no per-image scores and is left out of that table.

Outputs: DIR/ablation.json, DIR/ABLATION.md and DIR/ablation.png (per-fold scores, one line
per variant). Bad input (a missing or empty directory, folds of mixed recipes, a label given
twice, test folds of another split) exits 1 naming it, before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from unet_keras.config import LEGACY_DEFAULTS, UNetConfig
from unet_keras.cv import CV_JSON, SCORES, TIMINGS, CVError, complete_folds, recipe, summarize

JSON_NAME, MARKDOWN_NAME, PLOT_NAME = "ablation.json", "ABLATION.md", "ablation.png"
PLOTTED = ("whole_cell_dice", "nucleus_dice", "ap50")
# Recipe keys that say how a run was split and scored rather than how it was trained.
SPLIT_KEYS = ("dataset", "num_folds", "split_seed", "val_fraction")


def parse_variants(items: Sequence[str], what: str = "CV_DIR") -> list[tuple[str, Path]]:
    variants, seen = [], set()
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise CVError(f"{item!r}: expected LABEL={what}")
        if label in seen:
            raise CVError(f"label {label!r} given twice")
        seen.add(label)
        variants.append((label, Path(path)))
    return variants


def paired(base: dict, other: dict, key: str) -> dict | None:
    """Mean and sd of ``other - base`` over the folds both scored ``key`` on."""
    left = {row["fold"]: row[key] for row in base["folds"] if key in row}
    right = {row["fold"]: row[key] for row in other["folds"] if key in row}
    folds = sorted(set(left) & set(right))
    if not folds:
        return None
    diffs = np.array([right[f] - left[f] for f in folds], dtype=np.float64)
    return {"folds": folds, "mean": float(diffs.mean()),
            "sd": float(diffs.std(ddof=1)) if len(diffs) > 1 else None}


def load_cv(path: Path) -> tuple[dict, bool]:
    """(summary, whether it comes from fold runs) of a CV directory: ``summarize`` over its
    complete fold runs, or else its ``cv.json``."""
    folds = complete_folds(path)
    if folds:
        return summarize(folds), True
    report = path / CV_JSON
    if not report.is_file():
        raise CVError(f"{path}: no complete fold runs and no {CV_JSON}; expected a "
                      "`unet-keras cv` output directory")
    try:
        summary = json.loads(report.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CVError(f"{report}: cannot read the CV report ({err})") from err
    needed = {"folds", "mean", "sd", "recipe", "data_source", "synthetic"}
    missing = needed - set(summary) if isinstance(summary, dict) else needed
    if missing:
        raise CVError(f"{report}: expected a cv.json of `unet-keras cv` (missing {sorted(missing)})")
    return summary, False


def by_cell_type(report: dict, labels: dict[str, int]) -> dict:
    """Mean whole-cell and nucleus Dice per cell type over the folds all variants with fold
    runs share (a variant read from its cv.json alone has no per-image scores)."""
    from unet_keras.data.zheng2018 import CLASS_NAMES

    variants = [v for v in report["variants"] if v["has_runs"]]
    if not variants:
        return {"folds": [], "variants": {}}
    common = sorted(set.intersection(*(set(v["folds"]) for v in variants)))
    table = {"folds": common, "variants": {}}
    for v in variants:
        scores: dict[str, dict[str, list[float]]] = {}
        for row in v["per_fold"]:
            if row["fold"] not in common:
                continue
            path = Path(row["run"]) / "test_per_image.csv"
            try:
                with path.open(newline="") as handle:
                    images = list(csv.DictReader(handle))
            except OSError as err:
                raise CVError(f"{path}: cannot read the per-image scores ({err})") from err
            for image in images:
                name = CLASS_NAMES[labels.get(image["image_id"], len(CLASS_NAMES) - 1)]
                for key in ("whole_cell_dice", "nucleus_dice"):
                    if image.get(key):
                        scores.setdefault(name, {}).setdefault(key, []).append(float(image[key]))
        table["variants"][v["label"]] = {
            name: {"n_images": len(found["whole_cell_dice"]),
                   **{k: float(np.mean(values)) for k, values in found.items()}}
            for name, found in scores.items()}
    return table


def full_recipe(summary: dict) -> dict:
    """A CV summary's recipe, each setting missing from a report written before it existed
    filled in with what training did then (``LEGACY_DEFAULTS``, else today's default)."""
    return {**recipe(UNetConfig()), **LEGACY_DEFAULTS, **summary["recipe"]}


def build(variants: Sequence[tuple[str, Path]]) -> dict:
    summaries = [(label, *load_cv(path), path) for label, path in variants]
    base_label, base, _, base_path = summaries[0]
    base_recipe = full_recipe(base)
    rows = []
    for label, summary, has_runs, path in summaries:
        split = {k: summary["recipe"][k] for k in SPLIT_KEYS}
        if split != {k: base["recipe"][k] for k in SPLIT_KEYS}:
            raise CVError(f"{path}: split {split} differs from {base_path}'s; the folds are not "
                          "the same images")
        if summary["data_source"] != base["data_source"]:
            raise CVError(f"{path}: data {summary['data_source']!r} differs from "
                          f"{base['data_source']!r} ({base_path})")
        # Both sides completed: an older report lacking a setting the baseline has still
        # differs from it where that setting's old value does.
        variant_recipe = full_recipe(summary)
        differs = {k: variant_recipe.get(k) for k in [*variant_recipe, *base_recipe.keys()
                                                      - variant_recipe.keys()]
                   if base_recipe.get(k) != variant_recipe.get(k)}
        rows.append({
            "label": label, "cv_dir": str(path), "has_runs": has_runs,
            "differs_from_baseline": differs,
            "folds": [row["fold"] for row in summary["folds"]],
            "mean": summary["mean"], "sd": summary["sd"], "per_fold": summary["folds"],
            "vs_baseline": {k: paired(base, summary, k) for k in SCORES} if rows else None,
        })
    return {"baseline": base_label, "data_source": base["data_source"],
            "synthetic": base["synthetic"], "variants": rows}


def format_mean_sd(mean: float | None, sd: float | None, fmt: str = "{:.4f}") -> str:
    """"0.9768 ± 0.0015"; the mean alone when there is no sd (one fold), "-" without a mean."""
    if mean is None:
        return "-"
    return fmt.format(mean) + ("" if sd is None else " ± " + fmt.format(sd))


def format_signed(diff: dict | None) -> str:
    """A paired difference ``{"mean", "sd"}``: "+0.0012 ± 0.0009"; "-" without one."""
    if diff is None:
        return "-"
    sd = "" if diff["sd"] is None else f" ± {diff['sd']:.4f}"
    return f"{diff['mean']:+.4f}{sd}"


def _type_cell(scores: dict | None) -> str:
    if scores is None:
        return "-"
    nucleus = scores.get("nucleus_dice")
    return f"{scores['whole_cell_dice']:.3f} / " + ("-" if nucleus is None else f"{nucleus:.3f}")


def render_markdown(report: dict) -> str:
    kind = "SYNTHETIC" if report["synthetic"] else "real"
    lines = [f"# Ablation: {len(report['variants'])} cross-validations of the same folds "
             f"({kind} data)", "", f"- Data: {report['data_source']}",
             f"- Baseline: {report['baseline']}", ""]
    for v in report["variants"]:
        differs = ", ".join(f"{k} {v}" for k, v in v["differs_from_baseline"].items()) or "-"
        source = "" if v.get("has_runs", True) else f" ({CV_JSON} only)"
        lines.append(f"- {v['label']}: `{v['cv_dir']}`{source}, folds {v['folds']}; "
                     f"differs in: {differs}")
    keys = [*SCORES, "train_seconds"]
    titles = [SCORES.get(k) or TIMINGS[k] for k in keys]
    lines += ["", "Mean ± sd over each variant's folds:", "",
              "| variant | folds | " + " | ".join(titles) + " |", "|---|---|" + "---|" * len(keys)]
    for v in report["variants"]:
        cells = [format_mean_sd(v["mean"].get(k), v["sd"].get(k), "{:.0f}" if k in TIMINGS else "{:.4f}")
                 for k in keys]
        lines.append(f"| {v['label']} | {len(v['folds'])} | " + " | ".join(cells) + " |")
    lines += ["", f"Paired difference from {report['baseline']} over the folds both have "
              "(mean ± sd of the per-fold differences):", "",
              "| variant | folds | " + " | ".join(SCORES.values()) + " |",
              "|---|---|" + "---|" * len(SCORES)]
    for v in report["variants"][1:]:
        common = next((d["folds"] for d in v["vs_baseline"].values() if d), [])
        cells = [format_signed(v["vs_baseline"][k]) for k in SCORES]
        lines.append(f"| {v['label']} | {len(common)} | " + " | ".join(cells) + " |")
    types = report.get("by_cell_type")
    if types and types["folds"]:
        from unet_keras.data.zheng2018 import CLASS_NAMES

        # The dataset's own order of cell types (a set's order would change between runs).
        names = [n for n in CLASS_NAMES if any(n in f for f in types["variants"].values())]
        lines += ["", f"By cell type, test folds {types['folds']} (the folds every variant has): "
                  "whole-cell Dice / nucleus Dice, mean over the type's test images:", "",
                  "| variant | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for label, found in types["variants"].items():
            cells = [_type_cell(found.get(n)) for n in names]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        counts = next(iter(types["variants"].values()))
        lines += ["", "Images per type: " + ", ".join(
            f"{n} {counts[n]['n_images']}" for n in names if n in counts) + "."]
        left_out = [v["label"] for v in report["variants"] if not v.get("has_runs", True)]
        if left_out:
            lines += ["", f"Not in this table (a {CV_JSON} without per-image scores): "
                      + ", ".join(left_out) + "."]
    lines += ["", "Scores are means over each fold's test images. Numbers: ablation.json.", ""]
    return "\n".join(lines)


def render_plot(report: dict) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(PLOTTED), 3.8))
    axes = fig.subplots(1, len(PLOTTED))
    for ax, key in zip(axes, PLOTTED):
        for n, v in enumerate(report["variants"]):
            points = [(row["fold"], row[key]) for row in v["per_fold"] if key in row]
            if points:
                folds, values = zip(*points)
                ax.plot(folds, values, marker="o", color=f"C{n % 10}", label=v["label"])
    return finish_panels(fig, axes, [SCORES[key] for key in PLOTTED], "test fold")


def finish_panels(fig, axes, titles: Sequence[str], x_label: str) -> bytes:
    """Title, label and grid each panel, a legend on the first; the figure as PNG bytes."""
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def run_cli(argv: Sequence[str] | None, prog: str, doc: str, what: str,
            make: Callable[[list[tuple[str, Path]], dict[str, int]], dict],
            render: Callable[[dict], tuple[str, bytes]], names: tuple[str, str, str]) -> int:
    """The command line of a side-by-side report: ``LABEL=WHAT ... --out DIR [--data-dir D]``.

    ``make(variants, class labels)`` builds the report (raising ``ValueError``/``OSError`` on
    bad input, before anything is written), ``render`` its markdown and plot; ``names`` are the
    JSON, markdown and plot file names. Returns the exit code.
    """
    parser = argparse.ArgumentParser(prog=prog, description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", metavar=f"LABEL={what}",
                        help="the baseline first, then each variant")
    parser.add_argument("--out", required=True, help="directory for the report")
    parser.add_argument("--data-dir", default=None,
                        help="where the class-label CSV is (default: $WBC_DATA_DIR, ../shared/...)")
    args = parser.parse_args(argv)
    from unet_keras.data.zheng2018 import default_data_dir, read_class_labels
    from unet_keras.image_io import atomic_output, atomic_write_text

    try:
        variants = parse_variants(args.variants, what)
        data_dir = args.data_dir or default_data_dir()
        labels = {} if data_dir is None else read_class_labels(data_dir)
        report = make(variants, labels)
        markdown, plot = render(report)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / names[0], json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / names[1], markdown)
    with atomic_output(out / names[2]) as handle:
        handle.write(plot)
    print(markdown)
    return 0


def _make(variants: list[tuple[str, Path]], labels: dict[str, int]) -> dict:
    report = build(variants)
    if labels and not report["synthetic"]:
        report["by_cell_type"] = by_cell_type(report, labels)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(argv, "python -m benchmarks.ablation", __doc__, "CV_DIR", _make,
                   lambda report: (render_markdown(report), render_plot(report)),
                   (JSON_NAME, MARKDOWN_NAME, PLOT_NAME))


if __name__ == "__main__":
    sys.exit(main())
