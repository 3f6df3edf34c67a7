"""Make the shipped pretrained model from a finished training run.

    python -m export.ship runs/NAME [--cv runs/CV] [--out unet_keras/pretrained]
    python -m export.ship runs/NAME --cv runs/CV --update-cv   # the card's CV figures only

Writes ``wbc_unet.keras`` (the run's model, without optimizer state), ``wbc_unet.onnx`` (exported through the parity gate
of ``export.onnx_export``) and ``wbc_unet.json``, the model card: config with tuned thresholds,
training recipe and time, the run's test-fold figures (none for a run trained with
``--all-data``, the usual model to ship), the cross-validation summary when
``--cv`` names a ``unet-keras cv`` directory, the ONNX parity figures, and the data citation.
All three are written to temporary names and renamed together; the set must stay within
``--max-mb`` (10 MB by default) so the package stays small.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from unet_keras.config import resolve_run

NAMES = ("wbc_unet.keras", "wbc_unet.onnx", "wbc_unet.json")
CITATION = ("Zheng X, Wang Y, Wang G, Liu J. Fast and robust segmentation of white blood cell "
            "images by self-supervised learning. Micron 107:55-71, 2018. Dataset 1 (300 images, "
            "120x120), https://github.com/zxaoyou/segmentation_WBC")
FIGURES = ("whole_cell_dice", "whole_cell_iou", "nucleus_dice", "nucleus_iou", "ap50", "ap50_95")


class ShipError(ValueError):
    """A run that cannot be shipped; nothing is written."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ShipError(f"{path}: cannot read JSON ({err}); expected a finished run's file") from err


def model_card(run: Path, parity: dict, cv: dict | None) -> dict:
    """The card's fields from a finished run's config, metrics and the export report."""
    _, config = resolve_run(run)
    metrics = _read_json(run / "metrics.json")
    test = metrics.get("test") or {}  # none for a run trained with all_data
    return {
        "name": "wbc_unet",
        "description": "U-Net for white blood cells in stained blood smears: channel 0 whole "
                       "cell, channel 1 nucleus (cytoplasm = cell minus nucleus)",
        "config": config.to_dict(),
        "thresholds": list(config.channel_thresholds()),
        "input": "image: float32 NHWC RGB in [0, 1], any height and width (padded inside to a "
                 f"multiple of {config.multiple})",
        "output": "probability: float32 NHWC, channels whole cell then nucleus",
        "training": {"all_data": config.all_data,
                     "fold": None if config.all_data else metrics.get("fold"),
                     **{key: metrics.get(key) for key in
                        ("data_source", "n_train", "n_val", "n_test", "epochs_run", "best_epoch",
                         "batch_norm_stats", "train_seconds", "train_images_per_second",
                         "machine", "versions")}},
        # The run's own test part; None when it trained on all the data, whose figures are
        # then the recipe's cross-validation's.
        "test_fold": {key: test.get(key) for key in FIGURES if key in test} or None,
        "cross_validation": cv,
        "onnx_parity": parity,
        "data_citation": CITATION,
    }


def ship(run: str | Path, out: str | Path, cv_dir: str | Path | None = None,
         max_mb: float = 10.0) -> dict:
    """Write the three shipped files from ``run`` into ``out``; returns the model card."""
    from export.onnx_export import export_onnx
    from unet_keras.model import load_model

    run, out = Path(run), Path(out)
    model_path, _ = resolve_run(run)
    cv = _read_json(Path(cv_dir) / "cv.json") if cv_dir else None
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".ship-") as tmp:
        work = Path(tmp)
        # Loaded without compiling, the model saves without its optimizer state (2x the weights).
        load_model(model_path).save(work / NAMES[0])
        report = export_onnx(run, work / NAMES[1])
        parity = {key: report[key] for key in ("route", "opset", "parity") if key in report}
        card = model_card(run, parity, cv)
        (work / NAMES[2]).write_text(json.dumps(card, indent=1) + "\n")
        total = sum((work / name).stat().st_size for name in NAMES) / 1e6
        if total > max_mb:
            raise ShipError(f"{run}: the shipped files would take {total:.1f} MB (limit "
                            f"{max_mb} MB); train a smaller model (--base-filters)")
        card["size_mb"] = round(total, 2)
        (work / NAMES[2]).write_text(json.dumps(card, indent=1) + "\n")
        for name in NAMES:
            (work / name).replace(out / name)
    return card


def update_card_cv(out: str | Path, cv_dir: str | Path) -> dict:
    """Put a finished ``unet-keras cv`` summary into the shipped card, leaving the model files
    as they are (the card's fold-0 run is one of the folds)."""
    from unet_keras.image_io import atomic_write_text

    card_path = Path(out) / NAMES[2]
    card = _read_json(card_path)
    card["cross_validation"] = _read_json(Path(cv_dir) / "cv.json")
    atomic_write_text(card_path, json.dumps(card, indent=1) + "\n")
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.ship", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a finished run directory (model.keras, config.json, metrics.json)")
    parser.add_argument("--cv", help="a `unet-keras cv` directory whose cv.json goes into the card")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "unet_keras" / "pretrained"))
    parser.add_argument("--max-mb", type=float, default=10.0)
    parser.add_argument("--update-cv", action="store_true",
                        help="only put --cv's summary into the card already in --out")
    args = parser.parse_args(argv)
    try:
        if args.update_cv:
            if not args.cv:
                parser.error("--update-cv needs --cv")
            update_card_cv(args.out, args.cv)
            print(f"{Path(args.out) / NAMES[2]}: cross-validation summary from {args.cv}")
            return 0
        card = ship(args.run, args.out, args.cv, args.max_mb)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    held_out = card["test_fold"] or "none (all data: the recipe's CV figures stand for it)"
    print(f"shipped {args.run} -> {args.out} ({card['size_mb']} MB); test part: {held_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
