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

import json
import logging
import sys
from pathlib import Path

import unet_keras  # noqa: F401  (sets the default KERAS_BACKEND before keras is imported)
from unet_keras import compile_cache
from unet_keras.cli_evaluate import cmd_evaluate
from unet_keras.cli_parser import (EXIT_BUSY, EXIT_DIVERGED, EXIT_ERROR, EXIT_INTERRUPTED,
                                   EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, RECIPE_FLAGS, UsageError,
                                   build_parser, recipe_config)
from unet_keras.config import UNetConfig, resolve_run
from unet_keras.dirlock import OutputBusyError
from unet_keras.evaluate import format_scores


def resolve_model(path: str) -> tuple[Path, UNetConfig]:
    """A .keras file or run directory -> (model path, config from the config.json beside it)."""
    return resolve_run(path)


def cmd_train(args) -> int:
    from unet_keras.data.loading import load_fold
    from unet_keras.run_dir import check_new_run, partial_dir, resumable, run_name
    from unet_keras.train import check_devices, train

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
        config = recipe_config(args)
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
    if metrics["test"] is None:
        print(format_scores("validation (no test part)", metrics["val"], data.source))
    else:
        print(format_scores("test", metrics["test"], data.source))
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
        config = recipe_config(args)
        summary = run_cv(config, args.out, parse_folds(args.folds, config.num_folds),
                         args.data_dir, args.synthetic, args.devices, progress=print)
    mean, sd = summary["mean"], summary["sd"]
    print(f"{summary['n_folds']} fold(s) of {summary['num_folds']} ({summary['data_source']}): "
          + ", ".join(f"{k} {mean[k]:.4f}" + (f" ± {sd[k]:.4f}" if sd[k] is not None else "")
                      for k in summary["columns"] if k not in ("train_seconds",
                                                                "train_images_per_second")))
    print(f"written: {', '.join(str(Path(args.out) / n) for n in (CV_JSON, CV_MARKDOWN, CV_PLOT))}")
    return EXIT_OK


def cmd_tune(args) -> int:
    from unet_keras.data.loading import load_fold
    from unet_keras.train import retune

    model_path, config = resolve_model(args.model)
    data = load_fold(config, args.data_dir, synthetic=args.synthetic)
    metrics = retune(model_path.parent, data, recompute_stats=args.recompute_batch_norm)
    print(f"tuned on {len(data.val)} validation images: thresholds {metrics['thresholds']}, "
          f"min_cell_area {metrics['min_cell_area']} px, edge cells {metrics['edge_cells']}")
    if metrics["test"] is not None:
        print(format_scores(f"test {config.test_part}", metrics["test"], data.source))
    return EXIT_OK


def cmd_predict(args) -> int:
    from unet_keras.domain import DomainAdapter
    from unet_keras.predict import collect_inputs, exclusive_output_dir, predict_files
    from unet_keras.rescale import parse_scale

    scale = parse_scale(args.scale) if args.scale else None  # None: auto if the model can
    inputs = collect_inputs(args.inputs)
    if not (args.model or args.onnx):
        from unet_keras.pretrained import pretrained_path

        args.onnx = str(pretrained_path("onnx"))
        print(f"no --model or --onnx: using the shipped pretrained model {args.onnx}")
    model = resolve_model(args.model) if args.model else None  # fail before creating --out
    if model:  # --scale auto or --colour auto of a model without references: refused, saying why
        DomainAdapter(None, model[1], scale, args.colour)
        check_tile(args.tile, model[1])
    elif not Path(args.onnx).is_file():
        from export.runtime import EXPECTED, RuntimeModelError

        raise RuntimeModelError(f"{args.onnx}: ONNX file not found; expected {EXPECTED}")
    # Locked before the model loads, so a second run on one directory is refused at once.
    with exclusive_output_dir(Path(args.out)):
        probability_fn, config = _probability_source(args, model)
        adapter = DomainAdapter(probability_fn, config, scale, args.colour)
        edge_cells = args.edge_cells or config.edge_cells
        if edge_cells == "drop":
            print("cells cut by the image edge are left out where another cell is clear of it "
                  "(--edge-cells keep to measure them)")
        summary = predict_files(inputs, adapter, config.channel_thresholds(),
                                Path(args.out), strict=args.strict,
                                instance_method=args.instances, lock=False,
                                min_cell_area=config.min_cell_area, edge_cells=edge_cells)
    for path, note in summary.notes:
        print(f"converted {path}: {note}")
    for path, reason in summary.refused:
        print(f"refused {path}: {reason}", file=sys.stderr)
    for line in adapter.summary():
        print(line)
    print(f"predicted {len(summary.written)} image(s), {summary.n_cells} cell(s); "
          f"refused {len(summary.refused)}; outputs in {args.out}")
    return EXIT_PARTIAL if summary.refused else EXIT_OK


def _probability_source(args, model: tuple[Path, UNetConfig] | None):
    """(probability function, config) of the --onnx file or the resolved --model."""
    if args.onnx:
        from export.runtime import Segmenter

        try:
            segmenter = Segmenter.from_onnx(args.onnx, tile=args.tile, tta=args.tta)
        except ValueError as err:
            if "tile=" not in str(err):
                raise
            raise UsageError(f"--tile {args.tile}: {err}") from err
        return segmenter.predict_probabilities, segmenter.config
    from unet_keras.model import load_model

    model_path, config = model
    return _keras_probability_fn(load_model(model_path), config, args.tile, args.tta), config


def check_tile(tile: int | None, config: UNetConfig) -> int:
    """``--tile`` for this model (default ``tiling.default_tile``).

    Raises:
        UsageError: not a multiple of the model's 2**depth above its exact tile overlap.
    """
    from export.tiling import default_overlap, default_tile

    if tile is None:
        return default_tile(config.depth)
    multiple, overlap = config.multiple, default_overlap(config.depth)
    if tile <= overlap or tile % multiple:
        raise UsageError(f"--tile {tile}: expected a multiple of {multiple} (2**depth) above the "
                         f"tile overlap {overlap} of a depth-{config.depth} model")
    return tile


def _keras_probability_fn(model, config: UNetConfig, tile: int | None, tta: bool = False):
    """Whole-image Keras inference, or, for images larger than ``tile`` (default
    ``default_tile``), the exact tiled inference the ONNX runtime uses (``export.tiling``), so
    memory stays bounded."""
    from export.tiling import tile_predict
    from unet_keras.inference import keras_batch_fn, keras_probability_fn

    tile, multiple = check_tile(tile, config), config.multiple
    whole, run = keras_probability_fn(model, multiple, tta), keras_batch_fn(model, tta)

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


COMMANDS = {"train": cmd_train, "cv": cmd_cv, "evaluate": cmd_evaluate, "tune": cmd_tune,
            "predict": cmd_predict, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__.splitlines()[0]).parse_args(argv)
    compile_cache.enable()  # before any command imports jax
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
