"""Test-time augmentation over a cross-validation: its gain and its cost on every fold.

    python -m benchmarks.tta_cv CV_DIR --out DIR [--data-dir D] [--synthetic]

For every complete ``CV_DIR/fold-k`` (written by ``unet-keras cv``): the fold's test images
are predicted once plainly and once averaged over the 8 flips and 90-degree turns
(``unet_keras.inference.predict_probabilities(tta=True)``), both scored with the run's own tuned
postprocessing by ``unet_keras.evaluate.score_config``, and both timed (wall seconds per
test image, after one untimed pass over the same images that compiles the model for their
batch shapes).

Outputs: DIR/tta.json (per fold and mean ± sample sd of each score, plain and with TTA, the
difference, seconds per image; machine and versions) and DIR/TTA.md. Nothing is written when a
fold cannot be read; the error names it and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks.ablation import format_mean_sd  # noqa: E402
from unet_keras.cv import SCORES, read_fold, required_folds  # noqa: E402

JSON_NAME, MARKDOWN_NAME = "tta.json", "TTA.md"


def timed_probabilities(model, images, multiple: int, tta: bool) -> tuple[list, float]:
    from unet_keras.inference import predict_probabilities

    # Once untimed: XLA compiles a program per batch shape (16 and the remainder) on first use.
    predict_probabilities(model, images, multiple, tta=tta)
    started = time.perf_counter()
    probs = predict_probabilities(model, images, multiple, tta=tta)
    return probs, (time.perf_counter() - started) / len(images)


def score_fold(run: Path, data_dir: str | None, synthetic: bool) -> dict:
    """One fold's test scores plainly and with TTA, and the seconds per image of each."""
    from unet_keras.data.loading import load_test_fold
    from unet_keras.evaluate import score_config
    from unet_keras.model import load_model

    _, config = read_fold(run)
    data = load_test_fold(config, data_dir, synthetic=synthetic)
    model = load_model(run / "model.keras")
    images = [e["image"] for e in data.test]
    row = {"fold": config.fold, "n_test": len(images), "data_source": data.source}
    for name, tta in (("plain", False), ("tta", True)):
        probs, seconds = timed_probabilities(model, images, config.multiple, tta)
        _, summary = score_config(probs, data.test, config)
        row[name] = {k: summary[k] for k in SCORES if k in summary}
        row[name]["seconds_per_image"] = seconds
    return row


def summarize(rows: Sequence[dict]) -> dict:
    keys = [k for k in (*SCORES, "seconds_per_image") if k in rows[0]["plain"]]
    out = {"folds": list(rows), "mean": {}, "sd": {}}
    for name in ("plain", "tta"):
        for key in keys:
            values = np.array([r[name][key] for r in rows], dtype=np.float64)
            out["mean"][f"{name}_{key}"] = float(values.mean())
            out["sd"][f"{name}_{key}"] = float(values.std(ddof=1)) if len(values) > 1 else None
    for key in keys:
        gains = np.array([r["tta"][key] - r["plain"][key] for r in rows], dtype=np.float64)
        out["mean"][f"gain_{key}"] = float(gains.mean())
        out["sd"][f"gain_{key}"] = float(gains.std(ddof=1)) if len(gains) > 1 else None
    out["keys"] = keys
    return out


def _pm(summary: dict, key: str) -> str:
    return format_mean_sd(summary["mean"][key], summary["sd"][key])


def render_markdown(summary: dict, cv_dir: str) -> str:
    keys = summary["keys"]
    titles = [SCORES.get(k, "s / image") for k in keys]
    lines = [f"# Test-time augmentation over {len(summary['folds'])} folds of {cv_dir}", "",
             f"- Data: {summary['folds'][0]['data_source']}",
             "- TTA: mean of the 8 flips and 90-degree turns; postprocessing as tuned for each "
             "run (without TTA)", "",
             "| fold | " + " | ".join(f"{t} plain | {t} TTA" for t in titles) + " |",
             "|---|" + "---|---|" * len(keys)]
    for row in summary["folds"]:
        cells = [f"{row['plain'][k]:.4f} | {row['tta'][k]:.4f}" for k in keys]
        lines.append(f"| {row['fold']} | " + " | ".join(cells) + " |")
    lines += ["", "| mean ± sd | plain | TTA | TTA - plain |", "|---|---|---|---|"]
    for key, title in zip(keys, titles):
        lines.append(f"| {title} | {_pm(summary, 'plain_' + key)} | {_pm(summary, 'tta_' + key)} "
                     f"| {_pm(summary, 'gain_' + key)} |")
    lines += ["", "Scores are means over each fold's test images; ± is the sample sd over folds. "
              f"Seconds per image on {summary['machine']['cpu_count']} CPUs "
              f"({summary['machine']['platform']}). Numbers: {JSON_NAME}.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tta_cv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cv_dir", help="a directory of fold-k runs written by `unet-keras cv`")
    parser.add_argument("--out", required=True, help="directory for tta.json and TTA.md")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--synthetic", action="store_true")
    args = parser.parse_args(argv)
    from unet_keras.image_io import atomic_write_text
    from unet_keras.train import machine, versions

    try:
        runs = required_folds(args.cv_dir)
        rows = [score_fold(run, args.data_dir, args.synthetic) for run in runs]
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    summary = summarize(rows)
    summary.update(cv_dir=str(args.cv_dir), machine=machine(), versions=versions())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / JSON_NAME, json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / MARKDOWN_NAME, render_markdown(summary, args.cv_dir))
    print(render_markdown(summary, args.cv_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
