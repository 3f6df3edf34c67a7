"""How closely `predict`'s per-cell measurements match the annotated cells', over the test
parts of trained runs.

    python -m benchmarks.cell_measures RUN_OR_CV_DIR [...] --out DIR
        [--instances watershed|components] [--adapt] [--data-dir D] [--synthetic]

Each argument is a training run (its test part: a fold, or ``--test-ids`` images such as
another acquisition batch) or a cross-validation (every complete ``fold-k`` written by
``unet-keras cv``). The test images are predicted by the plain model, as training scored them
(``--adapt``: through predict's defaults for images from elsewhere, ``--scale auto --colour
auto``), and postprocessed as ``unet-keras predict`` does (``postprocess.label_cells``: the
run's thresholds, smallest object and edge setting; ``--instances``, watershed by default as in
predict). The annotated cells are the 8-connected components of each mask. Both sides are
measured by the same ``postprocess.measure_cells`` (the columns of ``cells.csv``) and paired by
``unet_keras.cell_agreement``: each annotated cell with the predicted cell of highest IoU when
that IoU exceeds 0.5, which makes the pairs one-to-one.

Per cell type (the dataset's class labels) and over all cells: for each measurement the bias
(mean of (predicted - annotated) / annotated), the mean absolute relative error and Pearson's r;
for nucleus parts the share of cells with the annotated count and the table of counts; per
image the predicted cell count against the annotated one; and over all cells whether the
predicted cells' confidences rank their errors (``cell_agreement.confidence_summary``).

Outputs: DIR/cell_measures.json (every pair's measurements, the summaries, machine, versions),
DIR/MEASURES.md and DIR/measures.png (predicted against annotated area, nucleus area and
nucleus:cytoplasm ratio). Nothing is written when a run cannot be read; the error names it and
the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Sequence

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from unet_keras.cell_agreement import (MATCH_IOU, MEASURES, confidence_headline,  # noqa: E402
                                       confidence_summary, count_summary, paired_values,
                                       summarise)
from unet_keras.cv import METRICS_FILENAME, read_fold, required_folds  # noqa: E402
from unet_keras.data.zheng2018 import CLASS_NAMES  # noqa: E402
from unet_keras.evaluate import cell_agreement  # noqa: E402

JSON_NAME, MARKDOWN_NAME, PLOT_NAME = "cell_measures.json", "MEASURES.md", "measures.png"
ALL_CELLS = "all cells"


def score_fold(run: Path, data_dir: str | None, synthetic: bool,
               instances: str = "watershed", adapt: bool = False) -> dict:
    """One run's pairs (with the cell type) and per-image cell counts."""
    from unet_keras.data.loading import load_test_fold
    from unet_keras.domain import DomainAdapter
    from unet_keras.inference import keras_probability_fn, predict_probabilities
    from unet_keras.model import load_model

    _, config = read_fold(run)
    data = load_test_fold(config, data_dir, synthetic=synthetic)
    model = load_model(run / "model.keras")
    images = [e["image"] for e in data.test]
    if adapt:
        adapter = DomainAdapter(keras_probability_fn(model, config.multiple), config)
        probs = [adapter(image) for image in images]
    else:
        probs = predict_probabilities(model, images, config.multiple)
    pairs, counts = cell_agreement(probs, data.test, config, instances)
    labels = {e["image_id"]: e["label"] for e in data.test}
    for pair in pairs:
        label = labels[pair["image_id"]]
        pair.update(fold=config.fold,
                    cell_type=CLASS_NAMES[label if 0 <= label < len(CLASS_NAMES) else -1])
    return {"run": str(run), "fold": config.fold, "test_part": config.test_part,
            "data_source": data.source, "pairs": pairs, "counts": counts}


def runs_of(source: Path) -> list[Path]:
    """A training run itself, or a cross-validation's complete fold runs.

    Raises:
        CVError: neither (the error names the path).
    """
    return [source] if (source / METRICS_FILENAME).is_file() else required_folds(source)


def summaries(pairs: Sequence[dict]) -> dict[str, dict]:
    """``summarise`` over all cells, then each cell type in ``CLASS_NAMES`` order."""
    groups = {ALL_CELLS: list(pairs)}
    for name in CLASS_NAMES:
        chosen = [p for p in pairs if p["cell_type"] == name]
        if chosen:
            groups[name] = chosen
    return {name: summarise(chosen) for name, chosen in groups.items()}


def _pct(value: float, signed: bool = True) -> str:
    if math.isnan(value):
        return "-"
    return f"{100 * value:+.1f} %" if signed else f"{100 * value:.1f} %"


def render_markdown(report: dict) -> str:
    folds, groups = report["folds"], report["summaries"]
    counts = [c for f in folds for c in f["counts"]]
    counted = count_summary(counts)
    how = ("through predict's defaults (`--scale auto --colour auto`)" if report["adapt"]
           else "by the plain model")
    lines = [f"# Per-cell measurements against the annotations: {', '.join(report['sources'])}",
             "",
             f"- Data: {folds[0]['data_source']}; test parts: "
             f"{'; '.join(f['test_part'] for f in folds)} ({len(counts)} images)",
             f"- Predicted {how} and postprocessed as `unet-keras predict` does (each run's "
             f"thresholds, smallest object, edge setting; {report['instances']} instances), "
             "measured by the same `measure_cells` as the annotated masks' 8-connected cells",
             f"- Pairs: an annotated cell and the predicted cell of highest IoU, when over "
             f"{MATCH_IOU}: {counted['matched']} of {counted['annotated']} annotated cells",
             f"- Cell count per image equal to the annotated count: {counted['counted_right']} "
             f"of {len(counts)} images", "",
             "Bias: mean of (predicted - annotated) / annotated; error: mean absolute relative "
             "error; r: Pearson's correlation across cells.", "",
             "| cells | n | area bias / error | nucleus area bias / error | N:C ratio bias / "
             "error | N:C ratio r | equivalent diameter error | circularity error | nucleus "
             "parts as annotated |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, g in groups.items():
        parts = g["nucleus_parts"]["agreement"]
        lines.append(
            f"| {name} | {g['n_cells']} | {_pct(g['area']['bias'])} / "
            f"{_pct(g['area']['mean_abs_error'], signed=False)} | {_pct(g['nucleus_area']['bias'])} / "
            f"{_pct(g['nucleus_area']['mean_abs_error'], signed=False)} | {_pct(g['nc_ratio']['bias'])} / "
            f"{_pct(g['nc_ratio']['mean_abs_error'], signed=False)} | {g['nc_ratio']['pearson_r']:.3f} | "
            f"{_pct(g['equivalent_diameter']['mean_abs_error'], signed=False)} | "
            f"{_pct(g['circularity']['mean_abs_error'], signed=False)} | "
            + ("-" if math.isnan(parts) else f"{100 * parts:.1f} %") + " |")
    overall = groups[ALL_CELLS]
    lines += ["", "All cells, every measurement:", "",
              "| measurement | annotated mean | predicted mean | bias | error | r |",
              "|---|---|---|---|---|---|"]
    for key in MEASURES:
        m = overall[key]
        lines.append(f"| {key} | {m['annotated_mean']:.3f} | {m['predicted_mean']:.3f} | "
                     f"{_pct(m['bias'])} | {_pct(m['mean_abs_error'], signed=False)} | "
                     f"{m['pearson_r']:.3f} |")
    lines += ["", "Whether each predicted cell's confidence (`cells.csv`'s outline_confidence, "
              "nucleus_confidence) points at its error, all cells: "
              + confidence_headline(report["confidence"]).removeprefix("cell confidence: ")]
    lines += ["", "Nucleus parts (8-connected pieces of nucleus in the cell), annotated -> "
              "predicted: " + ", ".join(f"{k}: {v}" for k, v in
                                        overall["nucleus_parts"]["table"].items()), "",
              f"Machine: {report['machine']['cpu_count']} CPUs ({report['machine']['platform']}). "
              f"Numbers and every pair: {JSON_NAME}; plot: {PLOT_NAME}.", ""]
    return "\n".join(lines)


def write_plot(pairs: Sequence[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (("area", "cell area (px)"), ("nucleus_area", "nucleus area (px)"),
            ("nc_ratio", "nucleus:cytoplasm ratio"))
    fig, axes = plt.subplots(1, len(keys), figsize=(13, 4.2))
    for ax, (key, title) in zip(axes, keys):
        for name in CLASS_NAMES:
            truth, pred = paired_values([p for p in pairs if p["cell_type"] == name], key)
            if len(truth):
                ax.scatter(truth, pred, s=9, alpha=0.7, label=name)
        low, high = ax.get_xlim()
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
        ax.set_xlabel(f"annotated {title}")
        ax.set_ylabel(f"predicted {title}")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cell_measures",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="training runs, or cross-validations (directories "
                                                "of fold-k runs written by `unet-keras cv`)")
    parser.add_argument("--out", required=True,
                        help=f"directory for {JSON_NAME}, {MARKDOWN_NAME} and {PLOT_NAME}")
    parser.add_argument("--instances", default="watershed", choices=["watershed", "components"],
                        help="how touching cells are separated, as predict --instances")
    parser.add_argument("--adapt", action="store_true",
                        help="predict through predict's defaults for images from elsewhere "
                             "(--scale auto --colour auto) instead of the plain model")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--synthetic", action="store_true")
    args = parser.parse_args(argv)
    from unet_keras.image_io import atomic_write_text
    from unet_keras.train import machine, versions

    try:
        runs = [run for source in args.runs for run in runs_of(Path(source))]
        folds = [score_fold(run, args.data_dir, args.synthetic, args.instances, args.adapt)
                 for run in runs]
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    pairs = [p for f in folds for p in f["pairs"]]
    report = {"sources": args.runs, "instances": args.instances, "adapt": args.adapt,
              "match_iou": MATCH_IOU, "folds": folds,
              "summaries": summaries(pairs), "confidence": confidence_summary(pairs),
              "machine": machine(), "versions": versions()}
    text = render_markdown(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / JSON_NAME, json.dumps(report, indent=2, default=float) + "\n")
    atomic_write_text(out / MARKDOWN_NAME, text)
    write_plot(pairs, out / PLOT_NAME)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
