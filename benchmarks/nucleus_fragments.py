"""How small a nucleus part must be to count as cytoplasm: a sweep over a cross-validation.

    python -m benchmarks.nucleus_fragments CV_DIR --out DIR [--fractions 0,0.05,...]

The nucleus channel marks specks on eosinophil granules and along the membrane; thresholding
relabels a nucleus part under ``unet_keras.postprocess.NUCLEUS_FRAGMENT_FRACTION`` of its cell's
largest nucleus part as cytoplasm. For every complete ``CV_DIR/fold-k`` (written by
``unet-keras cv``), the fold's validation and test images are predicted once and scored by
``unet_keras.evaluate.score_config`` (the run's tuned thresholds and object filters) with the
fraction set to each value in turn (0: the rule off). The value is chosen on the validation
columns; the test columns show what it does to unseen images.

Outputs: DIR/fragments.json (per fold, part and fraction: every score) and DIR/FRAGMENTS.md
(mean over folds per fraction, validation and test, and each fold's test difference from 0).
Nothing is written when a fold cannot be read; the error names it and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from unet_keras.cv import read_fold, required_folds  # noqa: E402

JSON_NAME, MARKDOWN_NAME = "fragments.json", "FRAGMENTS.md"
FRACTIONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
KEYS = ("nucleus_dice", "nucleus_iou", "whole_cell_dice", "ap50", "ap50_95")


def score_fold(run: Path, fractions: Sequence[float], data_dir: str | None,
               synthetic: bool) -> dict:
    """One fold's validation and test scores at each fraction."""
    from unet_keras import postprocess
    from unet_keras.data.loading import load_test_fold
    from unet_keras.evaluate import score_config
    from unet_keras.inference import predict_probabilities
    from unet_keras.model import load_model

    _, config = read_fold(run)
    data = load_test_fold(config, data_dir, synthetic=synthetic)
    model = load_model(run / "model.keras")
    row = {"fold": config.fold, "data_source": data.source}
    default = postprocess.NUCLEUS_FRAGMENT_FRACTION
    try:
        for part in ("val", "test"):
            examples = getattr(data, part)
            probs = predict_probabilities(model, [e["image"] for e in examples], config.multiple)
            for fraction in fractions:
                postprocess.NUCLEUS_FRAGMENT_FRACTION = fraction
                _, summary = score_config(probs, examples, config)
                row[f"{part}_{fraction:g}"] = {k: summary[k] for k in KEYS if k in summary}
    finally:
        postprocess.NUCLEUS_FRAGMENT_FRACTION = default
    return row


def render_markdown(rows: Sequence[dict], fractions: Sequence[float], cv_dir: str,
                    machine: dict) -> str:
    def mean(part: str, fraction: float, key: str) -> float:
        return float(np.mean([r[f"{part}_{fraction:g}"][key] for r in rows]))

    folds = ", ".join(str(r["fold"]) for r in rows)
    lines = [f"# Nucleus specks to cytoplasm: {len(rows)} folds of {cv_dir}", "",
             f"- Data: {rows[0]['data_source']}; folds {folds}",
             "- A nucleus part under FRACTION of its cell's largest nucleus part is relabelled "
             "cytoplasm (0: off); every fold's own tuned thresholds and object filters", "",
             "| fraction | val nucleus Dice | test nucleus Dice | test nucleus IoU | "
             "test whole-cell Dice | test AP@0.5 | test AP@[.5:.95] | test nucleus Dice - off, "
             "by fold |",
             "|---|---|---|---|---|---|---|---|"]
    for fraction in fractions:
        diffs = [r[f"test_{fraction:g}"]["nucleus_dice"]
                 - r[f"test_{fractions[0]:g}"]["nucleus_dice"] for r in rows]
        lines.append(
            f"| {fraction:g} | {mean('val', fraction, 'nucleus_dice'):.4f} | "
            + " | ".join(f"{mean('test', fraction, k):.4f}" for k in KEYS)
            + " | " + ", ".join(f"{d:+.4f}" for d in diffs) + " |")
    lines += ["", f"Scores are means over folds of each fold's mean over its images; the "
              f"differences are against fraction {fractions[0]:g}. Machine: "
              f"{machine['cpu_count']} CPUs ({machine['platform']}). Numbers: {JSON_NAME}.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nucleus_fragments",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cv_dir", help="a directory of fold-k runs written by `unet-keras cv`")
    parser.add_argument("--out", required=True, help="directory for fragments.json and FRAGMENTS.md")
    parser.add_argument("--fractions", default=",".join(f"{f:g}" for f in FRACTIONS),
                        help="comma-separated fractions, the first the reference (default "
                             "%(default)s)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--synthetic", action="store_true")
    args = parser.parse_args(argv)
    from unet_keras.image_io import atomic_write_text
    from unet_keras.train import machine, versions

    try:
        fractions = [float(v) for v in args.fractions.split(",")]
        if any(not 0.0 <= f < 1.0 for f in fractions):
            raise ValueError(f"--fractions {args.fractions}: expected values in [0, 1)")
        runs = required_folds(args.cv_dir)
        rows = [score_fold(run, fractions, args.data_dir, args.synthetic) for run in runs]
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    report = {"cv_dir": str(args.cv_dir), "fractions": fractions, "folds": rows,
              "machine": machine(), "versions": versions()}
    text = render_markdown(rows, fractions, args.cv_dir, report["machine"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / JSON_NAME, json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / MARKDOWN_NAME, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
