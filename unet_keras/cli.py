"""``unet-keras``: train, evaluate, predict, export.

Exit codes: 0 success; 1 bad input or failed run (message names the file); 2 usage error;
3 batch predict finished but some inputs were refused (listed in the summary).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import unet_keras  # noqa: F401  (sets the default KERAS_BACKEND before keras is imported)
from unet_keras.config import CONFIG_FILENAME, ConfigError, UNetConfig

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
DEFAULTS = UNetConfig()


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a U-Net on one fold")
    p.add_argument("--data-dir", help="dataset root (default: $WBC_DATA_DIR, ../shared/...)")
    p.add_argument("--synthetic", action="store_true", help="train on the synthetic set")
    p.add_argument("--dataset", default=DEFAULTS.dataset, choices=["dataset1", "dataset2"])
    p.add_argument("--fold", type=int, default=DEFAULTS.fold)
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--lr", type=float, default=DEFAULTS.learning_rate)
    p.add_argument("--lr-schedule", default=DEFAULTS.lr_schedule, choices=["plateau", "cosine"])
    p.add_argument("--image-size", type=int, default=DEFAULTS.image_size)
    p.add_argument("--depth", type=int, default=DEFAULTS.depth)
    p.add_argument("--base-filters", type=int, default=DEFAULTS.base_filters)
    p.add_argument("--dropout", type=float, default=DEFAULTS.dropout)
    p.add_argument("--out-channels", type=int, default=DEFAULTS.out_channels, choices=[1, 2])
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--out", required=True, help="run directory to create (runs/NAME)")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a model on a test fold")
    p.add_argument("--model", required=True, help="model.keras or its run directory")
    p.add_argument("--data-dir")
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--fold", type=int, help="default: the fold in the model's config.json")
    p.add_argument("--out", help="directory for metrics.json and per_image.csv (default: beside the model)")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="segment images and measure each cell")
    p.add_argument("inputs", nargs="+", help="image files or directories")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", help="model.keras or its run directory")
    source.add_argument("--onnx", help="an ONNX file from `unet-keras export`")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable input")
    p.add_argument("--instances", default="watershed", choices=["watershed", "components"])


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
    model_path = Path(path)
    if model_path.is_dir():
        model_path = model_path / "model.keras"
    config_path = model_path.parent / CONFIG_FILENAME
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: model file not found; expected a .keras file or a run directory")
    if not config_path.is_file():
        raise ConfigError(f"{config_path}: missing; expected the config.json written beside the model")
    return model_path, UNetConfig.load(config_path)


def cmd_train(args) -> int:
    from unet_keras.data.loading import load_fold
    from unet_keras.train import train

    config = UNetConfig(
        dataset=args.dataset, fold=args.fold, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, lr_schedule=args.lr_schedule, image_size=args.image_size,
        depth=args.depth, base_filters=args.base_filters, dropout=args.dropout,
        out_channels=args.out_channels, augment=not args.no_augment, seed=args.seed,
    )
    if Path(args.out).exists():
        raise FileExistsError(f"{args.out}: output directory already exists; choose another --out")
    data = load_fold(config, args.data_dir, synthetic=args.synthetic)
    print(f"data: {data.source}; train {len(data.train)}, val {len(data.val)}, test {len(data.test)}")
    metrics = train(config, data, args.out)
    _print_scores("test", metrics["test"], data.source)
    print(f"training: {metrics['train_seconds']} s, {metrics['train_images_per_second']} images/s; "
          f"run written to {args.out}")
    return EXIT_OK


def cmd_evaluate(args) -> int:
    from unet_keras.data.loading import load_fold
    from unet_keras.evaluate import score_probabilities, write_json, write_per_image_csv
    from unet_keras.inference import predict_probabilities
    from unet_keras.model import load_model

    model_path, config = resolve_model(args.model)
    if args.fold is not None:
        config.fold = args.fold
        config.validate()
    data = load_fold(config, args.data_dir, synthetic=args.synthetic)
    model = load_model(model_path)
    probs = predict_probabilities(model, [e["image"] for e in data.test], config.multiple)
    rows, summary = score_probabilities(probs, data.test, config.thresholds)
    out = Path(args.out) if args.out else model_path.parent / f"evaluate-fold{config.fold}"
    out.mkdir(parents=True, exist_ok=True)
    import keras

    write_json({"data_source": data.source, "synthetic": data.synthetic, "fold": config.fold,
                "model": str(model_path), "keras_backend": keras.backend.backend(),
                "thresholds": list(config.thresholds), "test": summary}, out / "metrics.json")
    write_per_image_csv(rows, out / "per_image.csv")
    _print_scores(f"test fold {config.fold}", summary, data.source)
    print(f"written: {out / 'metrics.json'}, {out / 'per_image.csv'}")
    return EXIT_OK


def cmd_predict(args) -> int:
    from unet_keras.predict import collect_inputs, predict_files

    inputs = collect_inputs(args.inputs)
    if args.onnx:
        from export.runtime import Segmenter

        segmenter = Segmenter.from_onnx(args.onnx)
        probability_fn, thresholds = segmenter.predict_probabilities, segmenter.thresholds
    else:
        from unet_keras.inference import keras_probability_fn
        from unet_keras.model import load_model

        if not args.model:
            raise ConfigError("predict needs --model or --onnx")
        model_path, config = resolve_model(args.model)
        probability_fn = keras_probability_fn(load_model(model_path), config.multiple)
        thresholds = config.thresholds
    summary = predict_files(inputs, probability_fn, thresholds, Path(args.out), strict=args.strict,
                            instance_method=args.instances)
    for path, note in summary.notes:
        print(f"converted {path}: {note}")
    for path, reason in summary.refused:
        print(f"refused {path}: {reason}", file=sys.stderr)
    print(f"predicted {len(summary.written)} image(s), {summary.n_cells} cell(s); "
          f"refused {len(summary.refused)}; outputs in {args.out}")
    return EXIT_PARTIAL if summary.refused else EXIT_OK


def cmd_export(args) -> int:
    from export.onnx_export import export_onnx

    report = export_onnx(args.model, args.out, route=args.route, opset=args.opset)
    print(json.dumps(report, indent=2, default=str))
    return EXIT_OK


def _print_scores(name: str, summary: dict, source: str) -> None:
    keys = [k for k in ("whole_cell_dice", "whole_cell_iou", "nucleus_dice", "nucleus_iou",
                        "ap50", "ap50_95") if k in summary]
    scores = ", ".join(f"{k} {summary[k]:.4f}" for k in keys)
    print(f"{name} ({source}): {scores}")


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unet-keras", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_evaluate, _add_predict, _add_export):
        add(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError) as err:
        # DataError, ConfigError, ImageReadError, ModelLoadError, ExportError are ValueErrors.
        print(f"unet-keras {args.command}: error: {err}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
