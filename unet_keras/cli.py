"""``unet-keras``: train, cross-validate, evaluate, predict, export.

Exit codes (every failure prints one line naming the file or directory and what was expected):

    0    success
    1    bad input or failed run: unreadable, corrupt or mismatched file, wrong data layout,
         unloadable model, unwritable or full output directory (a batch predict stops at the
         first output it cannot write; files already written are complete)
    2    usage error (unknown option, missing argument, options that cannot go together)
    3    batch predict finished, but some inputs were refused (listed at the end, on stderr)
    4    training stopped because the loss became NaN or Inf; the last good checkpoint is kept
         in RUN.partial
    5    the output is in use by another running process (a `predict --out` directory, or a
         training run's RUN.partial); nothing written
    130  interrupted (Ctrl-C); a training run that completed an epoch keeps RUN.partial and
         continues with --resume RUN

See docs/reliability.md for every bad input and what it produces.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import unet_keras  # noqa: F401  (sets the default KERAS_BACKEND before keras is imported)
from unet_keras.config import (EDGE_CELLS, INITS, LR_SCHEDULES, ConfigError, UNetConfig,
                               resolve_run)
from unet_keras.dirlock import OutputBusyError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL, EXIT_DIVERGED, EXIT_BUSY = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130
DEFAULTS = UNetConfig()
# Training flags that set the recipe (argparse dest -> UNetConfig field); --resume takes the
# recipe from the run's config.json, so they cannot be combined with it.
RECIPE_FLAGS = {
    "dataset": "dataset", "fold": "fold", "epochs": "epochs", "batch_size": "batch_size",
    "lr": "learning_rate", "lr_schedule": "lr_schedule", "image_size": "image_size",
    "depth": "depth", "base_filters": "base_filters", "max_filters": "max_filters",
    "dropout": "dropout",
    "out_channels": "out_channels", "seed": "seed", "scale_range": "scale_range",
    "init": "init", "class_balance": "class_balance", "ema": "ema", "elastic": "elastic",
}


class UsageError(ValueError):
    """Options that cannot go together; exit code 2."""


def _add_training_options(p, fold: bool = True) -> None:
    """The data, recipe and device options of `train`; `cv` shares them (less --fold)."""
    p.add_argument("--data-dir", help="dataset root (default: $WBC_DATA_DIR, ../shared/...)")
    p.add_argument("--synthetic", action="store_true", help="train on the synthetic set")
    p.add_argument("--dataset", choices=["dataset1", "dataset2"],
                   help=f"default {DEFAULTS.dataset}")
    if fold:
        p.add_argument("--fold", type=int, help=f"default {DEFAULTS.fold}")
    p.add_argument("--epochs", type=int, help=f"default {DEFAULTS.epochs}")
    p.add_argument("--batch-size", type=int, help=f"default {DEFAULTS.batch_size}")
    p.add_argument("--lr", type=float, help=f"default {DEFAULTS.learning_rate}")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help=f"default {DEFAULTS.lr_schedule}")
    p.add_argument("--ema", type=float, metavar="M",
                   help="validate and keep an exponential moving average of the weights with "
                        f"momentum M (0.99: over ~100 steps; 0: off); default {DEFAULTS.ema}")
    p.add_argument("--image-size", type=int, help=f"default {DEFAULTS.image_size}")
    p.add_argument("--depth", type=int, help=f"default {DEFAULTS.depth}")
    p.add_argument("--base-filters", type=int, help=f"default {DEFAULTS.base_filters}")
    p.add_argument("--max-filters", type=int,
                   help="cap on any level's filters (0: none; a cap shrinks the deep levels, "
                        f"which hold most parameters); default {DEFAULTS.max_filters}")
    p.add_argument("--dropout", type=float, help=f"default {DEFAULTS.dropout}")
    p.add_argument("--out-channels", type=int, choices=[1, 2],
                   help=f"default {DEFAULTS.out_channels}")
    p.add_argument("--init", choices=INITS,
                   help=f"initial kernels (pytorch: uniform +-1/sqrt(fan_in)); default {DEFAULTS.init}")
    p.add_argument("--class-balance", type=float, metavar="A",
                   help="draw training images with probability ~ (count of their cell type) ** -A "
                        f"(0: each once an epoch; 0.5: rare types more often); default "
                        f"{DEFAULTS.class_balance}")
    p.add_argument("--no-augment", action="store_true", help="no augmentation at all")
    p.add_argument("--stain", action=argparse.BooleanOptionalAction, default=None,
                   help="haematoxylin-eosin-DAB stain jitter on top of the colour jitter "
                        f"(--no-stain: without); default {'on' if DEFAULTS.stain_augment else 'off'}")
    p.add_argument("--scale-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help=f"zoom range of the augmentation (1 1: none); default "
                        f"{DEFAULTS.scale_range[0]} {DEFAULTS.scale_range[1]}")
    p.add_argument("--elastic", type=float, metavar="PX",
                   help="smooth elastic deformation of each training crop: the sd of the "
                        f"displacement in pixels (0: none); default {DEFAULTS.elastic}")
    p.add_argument("--seed", type=int, help=f"default {DEFAULTS.seed}")
    p.add_argument("--devices", type=int, default=1,
                   help="data-parallel training over the first N devices (JAX backend; the "
                        "batch size must divide by N); default 1")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a U-Net on one fold, or resume an interrupted run")
    _add_training_options(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="run directory to create (runs/NAME)")
    target.add_argument("--resume", metavar="RUN",
                        help="continue the interrupted run RUN (runs/NAME, kept as "
                             "runs/NAME.partial) from its last complete epoch, with its recipe")


def _add_cv(sub) -> None:
    p = sub.add_parser("cv", help="k-fold cross-validation: train every fold, report mean ± sd")
    _add_training_options(p, fold=False)
    p.add_argument("--folds", help="comma-separated test folds to train (default: all)")
    p.add_argument("--out", required=True,
                   help="directory for fold-k/ runs and cv.json, CV.md, cv_folds.png")
    p.add_argument("--aggregate-only", action="store_true",
                   help="only re-render the report from the complete folds in --out")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a model on a test fold")
    p.add_argument("--model", required=True, help="model.keras or its run directory")
    p.add_argument("--data-dir")
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--fold", type=int, help="default: the fold in the model's config.json")
    p.add_argument("--out", help="directory for metrics.json and per_image.csv (default: beside the model)")
    p.add_argument("--tta", action="store_true",
                   help="average the 8 flips and 90-degree turns (8x the inference time)")


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="tune a finished run's postprocessing again on its "
                                    "validation images and rescore its test fold")
    p.add_argument("--model", required=True, help="a run directory written by `unet-keras train`")
    p.add_argument("--data-dir")
    p.add_argument("--synthetic", action="store_true")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="segment images and measure each cell")
    p.add_argument("inputs", nargs="+", help="image files or directories")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", help="model.keras or its run directory "
                                        "(default: the shipped pretrained model, as ONNX)")
    source.add_argument("--onnx", help="an ONNX file from `unet-keras export`")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable input")
    p.add_argument("--instances", default="watershed", choices=["watershed", "components"])
    p.add_argument("--edge-cells", choices=EDGE_CELLS,
                   help="drop: leave out cells cut by the image edge when another cell is clear "
                        "of it; keep: measure every cell (default: the model's tuned setting)")
    p.add_argument("--tile", type=int, default=1024,
                   help="images whose padded side exceeds this run tile by tile (default 1024)")
    p.add_argument("--tta", action="store_true",
                   help="with --model: average the 8 flips and 90-degree turns of images up to "
                        "one tile (8x the inference time)")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a .keras model to ONNX, checked against Keras")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--route", default="tf2onnx", choices=["tf2onnx", "jax2onnx"])
    p.add_argument("--opset", type=int)
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    p.add_argument("--data-dir", help="Dataset 1 root, for the int8/fp16 Dice check")


def resolve_model(path: str) -> tuple[Path, UNetConfig]:
    """A .keras file or run directory -> (model path, config from the config.json beside it)."""
    return resolve_run(path)


def _recipe_config(args) -> UNetConfig:
    """The UNetConfig of the recipe flags given (defaults for the others)."""
    recipe = {field: getattr(args, dest) for dest, field in RECIPE_FLAGS.items()
              if getattr(args, dest, None) is not None}
    if args.stain is not None:
        recipe["stain_augment"] = args.stain
    return UNetConfig(**recipe, augment=not args.no_augment)


def cmd_train(args) -> int:
    from unet_keras.data.loading import load_fold
    from unet_keras.train import (check_devices, check_new_run, partial_dir, resumable, run_name,
                                  train)

    if args.resume:
        given = [f"--{dest.replace('_', '-')}" for dest in RECIPE_FLAGS
                 if getattr(args, dest) is not None]
        given += ["--no-augment"] * args.no_augment
        given += [] if args.stain is None else ["--stain" if args.stain else "--no-stain"]
        if given:
            raise UsageError(f"--resume continues the recipe saved in the run's config.json; "
                             f"drop {' '.join(given)}")
        out = run_name(args.resume)
        config, data_args, done = resumable(out)
        data_dir = args.data_dir or data_args.get("data_dir")
        synthetic = args.synthetic or bool(data_args.get("synthetic"))
    else:
        config = _recipe_config(args)
        out = Path(args.out)
        check_new_run(out)  # before the data load, which takes a while
        data_dir, synthetic = args.data_dir, args.synthetic
    check_devices(args.devices, config.batch_size)
    data = load_fold(config, data_dir, synthetic=synthetic)
    print(f"data: {data.source}; train {len(data.train)}, val {len(data.val)}, test {len(data.test)}")
    if args.resume:
        print(f"resuming {partial_dir(out)} after epoch {done} of {config.epochs}")
    data_args = {"data_dir": str(Path(data_dir).resolve()) if data_dir else None,
                 "synthetic": synthetic}
    metrics = train(config, data, out, resume=bool(args.resume), data_args=data_args,
                    devices=args.devices)
    _print_scores("test", metrics["test"], data.source)
    print(f"training: {metrics['train_seconds']} s, {metrics['train_images_per_second']} images/s; "
          f"run written to {out}")
    return EXIT_OK


def cmd_cv(args) -> int:
    from unet_keras.cv import CV_JSON, CV_MARKDOWN, CV_PLOT, aggregate, parse_folds, run_cv

    if args.aggregate_only:
        given = [f"--{d.replace('_', '-')}" for d in (*RECIPE_FLAGS, "folds", "data_dir")
                 if getattr(args, d, None) is not None]
        if given:
            raise UsageError(f"--aggregate-only reports the folds already in --out; drop "
                             f"{' '.join(given)}")
        summary = aggregate(args.out)
    else:
        config = _recipe_config(args)
        summary = run_cv(config, args.out, parse_folds(args.folds, config.num_folds),
                         args.data_dir, args.synthetic, args.devices, progress=print)
    mean, sd = summary["mean"], summary["sd"]
    print(f"{summary['n_folds']} fold(s) of {summary['num_folds']} ({summary['data_source']}): "
          + ", ".join(f"{k} {mean[k]:.4f}" + (f" ± {sd[k]:.4f}" if sd[k] is not None else "")
                      for k in summary["columns"] if k not in ("train_seconds",
                                                                "train_images_per_second")))
    print(f"written: {', '.join(str(Path(args.out) / n) for n in (CV_JSON, CV_MARKDOWN, CV_PLOT))}")
    return EXIT_OK


def cmd_evaluate(args) -> int:
    from unet_keras.data.loading import load_fold
    from unet_keras.evaluate import score_config, write_json, write_per_image_csv
    from unet_keras.inference import predict_probabilities
    from unet_keras.model import load_model

    model_path, config = resolve_model(args.model)
    if args.fold is not None:
        config.fold = args.fold
        config.validate()
    data = load_fold(config, args.data_dir, synthetic=args.synthetic)
    model = load_model(model_path)
    probs = predict_probabilities(model, [e["image"] for e in data.test], config.multiple,
                                  tta=args.tta)
    rows, summary = score_config(probs, data.test, config)
    out = Path(args.out) if args.out else model_path.parent / f"evaluate-fold{config.fold}"
    out.mkdir(parents=True, exist_ok=True)
    import keras

    write_json({"data_source": data.source, "synthetic": data.synthetic, "fold": config.fold,
                "model": str(model_path), "keras_backend": keras.backend.backend(),
                "tta": args.tta,
                "thresholds": list(config.thresholds), "min_cell_area": config.min_cell_area,
                "edge_cells": config.edge_cells, "test": summary}, out / "metrics.json")
    write_per_image_csv(rows, out / "per_image.csv")
    _print_scores(f"test fold {config.fold}", summary, data.source)
    print(f"written: {out / 'metrics.json'}, {out / 'per_image.csv'}")
    return EXIT_OK


def cmd_tune(args) -> int:
    from unet_keras.data.loading import load_fold
    from unet_keras.train import retune

    model_path, config = resolve_model(args.model)
    data = load_fold(config, args.data_dir, synthetic=args.synthetic)
    metrics = retune(model_path.parent, data)
    print(f"tuned on {len(data.val)} validation images: thresholds {metrics['thresholds']}, "
          f"min_cell_area {metrics['min_cell_area']} px, edge cells {metrics['edge_cells']}")
    _print_scores(f"test fold {config.fold}", metrics["test"], data.source)
    return EXIT_OK


def cmd_predict(args) -> int:
    from unet_keras.predict import collect_inputs, exclusive_output_dir, predict_files

    if args.tta and not args.model:
        raise UsageError("--tta needs --model (the ONNX runtime does not average views)")
    inputs = collect_inputs(args.inputs)
    if not (args.model or args.onnx):
        from unet_keras.pretrained import pretrained_path

        args.onnx = str(pretrained_path("onnx"))
        print(f"no --model or --onnx: using the shipped pretrained model {args.onnx}")
    model = resolve_model(args.model) if args.model else None  # fail before creating --out
    # Locked before the model loads, so a second run on one directory is refused at once.
    with exclusive_output_dir(Path(args.out)):
        probability_fn, config = _probability_source(args, model)
        edge_cells = args.edge_cells or config.edge_cells
        if edge_cells == "drop":
            print("cells cut by the image edge are left out where another cell is clear of it "
                  "(--edge-cells keep to measure them)")
        summary = predict_files(inputs, probability_fn, config.channel_thresholds(),
                                Path(args.out), strict=args.strict,
                                instance_method=args.instances, lock=False,
                                min_cell_area=config.min_cell_area, edge_cells=edge_cells)
    for path, note in summary.notes:
        print(f"converted {path}: {note}")
    for path, reason in summary.refused:
        print(f"refused {path}: {reason}", file=sys.stderr)
    print(f"predicted {len(summary.written)} image(s), {summary.n_cells} cell(s); "
          f"refused {len(summary.refused)}; outputs in {args.out}")
    return EXIT_PARTIAL if summary.refused else EXIT_OK


def _probability_source(args, model: tuple[Path, UNetConfig] | None):
    """(probability function, config) of the --onnx file or the resolved --model."""
    if args.onnx:
        from export.runtime import Segmenter

        segmenter = Segmenter.from_onnx(args.onnx, tile=args.tile)
        return segmenter.predict_probabilities, segmenter.config
    from unet_keras.model import load_model

    model_path, config = model
    return _keras_probability_fn(load_model(model_path), config, args.tile, args.tta), config


def _keras_probability_fn(model, config: UNetConfig, tile: int, tta: bool = False):
    """Whole-image Keras inference, or, for images larger than ``tile``, the exact tiled
    inference the ONNX runtime uses (``export.tiling``), so memory stays bounded."""
    import numpy as np

    from export.tiling import default_overlap, tile_predict
    from unet_keras.inference import keras_probability_fn

    multiple, overlap = config.multiple, default_overlap(config.depth)
    if tile <= overlap or tile % multiple:
        raise UsageError(f"--tile {tile}: expected a multiple of {multiple} (2**depth) above the "
                         f"tile overlap {overlap} of a depth-{config.depth} model")
    whole = keras_probability_fn(model, multiple, tta)

    def run(batch):
        return np.asarray(model.predict(batch, verbose=0), np.float32)

    def probability(image):
        if max(-(-side // multiple) * multiple for side in image.shape[:2]) <= tile:
            return whole(image)
        return tile_predict(run, image, config.depth, config.out_channels, tile)

    return probability


def cmd_export(args) -> int:
    from export.onnx_export import export_onnx

    if args.precision == "fp32":
        report = export_onnx(args.model, args.out, route=args.route, opset=args.opset)
    else:
        from export.precision import export_reduced
        from unet_keras.data.loading import load_fold

        # The Dice gate runs on the model's own test fold; calibration uses its training part.
        _, config = resolve_model(args.model)
        data = load_fold(config, args.data_dir)
        if data.synthetic:
            print(f"warning: Dice check on {data.source}", file=sys.stderr)
        report = export_reduced(
            args.model, args.out, args.precision,
            images=[e["image"] for e in data.test], label_maps=[e["mask"] for e in data.test],
            calibration_images=[e["image"] for e in data.train[:32]],
            route=args.route, opset=args.opset,
        )
    print(json.dumps(report, indent=2, default=str))
    return EXIT_OK


def _print_scores(name: str, summary: dict, source: str) -> None:
    keys = [k for k in ("whole_cell_dice", "whole_cell_iou", "nucleus_dice", "nucleus_iou",
                        "ap50", "ap50_95") if k in summary]
    scores = ", ".join(f"{k} {summary[k]:.4f}" for k in keys)
    print(f"{name} ({source}): {scores}")


COMMANDS = {"train": cmd_train, "cv": cmd_cv, "evaluate": cmd_evaluate, "tune": cmd_tune,
            "predict": cmd_predict, "export": cmd_export}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unet-keras", description=__doc__.splitlines()[0],
                                     epilog="Exit codes: 0 ok, 1 bad input or failed run, 2 usage, "
                                            "3 some predict inputs refused, 4 training diverged "
                                            "(NaN), 5 output in use by another run, 130 interrupted.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_cv, _add_evaluate, _add_tune, _add_predict, _add_export):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    prefix = f"unet-keras {args.command}: error:"
    try:
        return COMMANDS[args.command](args)
    except UsageError as err:
        print(f"{prefix} {err}", file=sys.stderr)
        return EXIT_USAGE
    except FloatingPointError as err:  # train.TrainingDiverged (not imported: it pulls in keras)
        print(f"{prefix} {err}", file=sys.stderr)
        return EXIT_DIVERGED
    except OutputBusyError as err:
        print(f"{prefix} {err.strerror}", file=sys.stderr)
        return EXIT_BUSY
    except (ValueError, OSError) as err:
        # DataError, ConfigError, ImageReadError, ModelLoadError, ExportError, RunDirError,
        # CheckpointError and RuntimeModelError are ValueErrors; write failures are OSErrors.
        print(f"{prefix} {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        kept = (" (once an epoch has completed, the run is kept as RUN.partial; continue it with "
                "--resume RUN)" if args.command == "train" else
                " (completed folds are kept; the same command skips them and resumes an "
                "interrupted fold-k.partial)" if args.command == "cv" else "")
        print(f"unet-keras {args.command}: interrupted{kept}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
