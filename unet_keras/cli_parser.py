"""The ``unet-keras`` command line: its subcommands' options, and the recipe they set.

``unet_keras.cli`` runs the commands; this module only says what each accepts, so that the
options and their defaults (read from ``UNetConfig``) sit in one place.
"""

from __future__ import annotations

import argparse

from unet_keras.config import (BATCH_NORM_STATS, CHECKPOINT_METRICS, COLOUR_MODES, EDGE_CELLS,
                               FINAL_SCALE_RANGE, INITS, LR_SCHEDULES, MASK_KINDS,
                               UNetConfig)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL, EXIT_DIVERGED, EXIT_BUSY = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130  # the meaning of each: unet_keras.cli's docstring

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
    "colour_strength": "colour_strength", "colour_transfer": "colour_transfer",
    "test_ids": "test_ids", "checkpoint_metric": "checkpoint_metric",
    "batch_norm_stats": "batch_norm_stats", "nucleus_weight": "nucleus_weight",
    "final_zoom_epochs": "final_zoom_epochs", "deep_supervision": "deep_supervision",
    "boundary_weight": "boundary_weight", "train_fraction": "train_fraction",
    "all_data": "all_data", "weight_decay": "weight_decay",
    "lovasz_weight": "lovasz_weight", "blur": "blur",
}



class UsageError(ValueError):
    """Options that cannot go together; exit code 2."""


COLOUR_HELP = ("'auto': map an image whose colour statistics lie outside the model's training "
               "images' (another stain or scanner) onto their average before the model "
               "(Reinhard, in L*a*b*), others as they are; 'always': map every image; 'off'. "
               "Default: auto when the model records its training colours (the shipped one "
               "does), else off")


def positive_int(text: str) -> int:
    """An argparse type: a whole number above 0 (a usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number above 0")
    return value


def _add_training_options(p, fold: bool = True) -> None:
    """The data, recipe and device options of `train`; `cv` shares them (less --fold)."""
    p.add_argument("--data-dir", help="dataset root (default: $WBC_DATA_DIR, ../shared/...)")
    p.add_argument("--synthetic", action="store_true", help="train on the synthetic set")
    p.add_argument("--dataset", choices=["dataset1", "dataset2"],
                   help=f"default {DEFAULTS.dataset}")
    if fold:
        p.add_argument("--fold", type=int, help=f"default {DEFAULTS.fold}")
        p.add_argument("--test-ids", metavar="IDS",
                       help="test on these image ids instead of a fold (201-300: Dataset 1's "
                            "white-background batch; ids and LOW-HIGH ranges, comma-separated); "
                            "validation comes from the other images as for a fold")
        p.add_argument("--all-data", action="store_true", default=None,
                       help="no test part: train on every image but the validation part (the "
                            "model to ship once `unet-keras cv` has measured its recipe)")
    p.add_argument("--train-fraction", type=float, metavar="F",
                   help="train on this fraction of the training part only (validation and test "
                        "unchanged; smaller fractions' images lie inside larger ones'): a "
                        f"learning curve; default {DEFAULTS.train_fraction}")
    p.add_argument("--epochs", type=int, help=f"default {DEFAULTS.epochs}")
    p.add_argument("--batch-size", type=int, help=f"default {DEFAULTS.batch_size}")
    p.add_argument("--lr", type=float, help=f"default {DEFAULTS.learning_rate}")
    p.add_argument("--weight-decay", type=float, metavar="WD",
                   help="decoupled weight decay (AdamW) of the convolution kernels: each step "
                        "multiplies them by 1 - lr * WD (batch-norm parameters and biases left "
                        f"alone; 0: plain Adam); default {DEFAULTS.weight_decay}")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help=f"default {DEFAULTS.lr_schedule}")
    p.add_argument("--checkpoint-metric", choices=CHECKPOINT_METRICS,
                   help="the validation score that picks the kept epoch: whole-cell Dice, or "
                        "the mean of whole-cell and nucleus Dice (two outputs); default "
                        f"{DEFAULTS.checkpoint_metric}")
    p.add_argument("--batch-norm-stats", choices=BATCH_NORM_STATS,
                   help="recomputed: after training, measure each batch-norm layer's statistics "
                        "again on augmented training crops with dropout off (as the model "
                        "predicts); moving: keep the moving averages of training; default "
                        f"{DEFAULTS.batch_norm_stats}")
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
    p.add_argument("--nucleus-weight", type=float, metavar="W",
                   help="weight of the nucleus channel's BCE-Dice loss against the whole cell's "
                        f"1 (two outputs); default {DEFAULTS.nucleus_weight}")
    p.add_argument("--boundary-weight", type=float, metavar="B",
                   help="weigh each pixel's cross-entropy 1 + B within 2 px of a mask's boundary "
                        f"(0: every pixel alike); default {DEFAULTS.boundary_weight}")
    p.add_argument("--lovasz-weight", type=float, metavar="L",
                   help="add L times the Lovasz hinge (a surrogate of 1 - IoU) to each channel's "
                        f"loss (0: off); default {DEFAULTS.lovasz_weight}")
    p.add_argument("--deep-supervision", type=int, metavar="N",
                   help="train N decoder levels below the top (1/2, 1/4, ... resolution) through "
                        "their own 1x1 heads too, weighted 2**-level in the loss; the saved model "
                        f"keeps the one output (0: off); default {DEFAULTS.deep_supervision}")
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
    p.add_argument("--colour-strength", type=float, metavar="K",
                   help="widen (K > 1) or narrow the brightness, contrast, gamma, hue and "
                        "saturation jitter ranges K times (2: hue +-22 degrees, contrast "
                        f"0.7-1.3); default {DEFAULTS.colour_strength}")
    p.add_argument("--colour-transfer", type=float, metavar="K",
                   help="give half the training crops another stain's colours first: L*a*b* "
                        "mean and sd drawn from a Gaussian K times as wide as the training "
                        f"images' (0: off); default {DEFAULTS.colour_transfer}")
    p.add_argument("--scale-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help=f"zoom range of the augmentation (1 1: none); default "
                        f"{DEFAULTS.scale_range[0]} {DEFAULTS.scale_range[1]}")
    p.add_argument("--final-zoom-epochs", type=int, metavar="N",
                   help="the last N epochs zoom within {:g}-{:g}x only (inside --scale-range); "
                        "default {}".format(*FINAL_SCALE_RANGE, DEFAULTS.final_zoom_epochs))
    p.add_argument("--blur", type=float, metavar="PX",
                   help="blur half the training crops by a Gaussian of sd drawn in 0..PX pixels "
                        f"(soft focus; 0: none); default {DEFAULTS.blur}")
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
    p = sub.add_parser("evaluate", help="score a model on its test fold, or on chosen images of "
                                        "any dataset in the public layout")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", help="model.keras or its run directory (default: the shipped "
                                        "pretrained model; then --out is needed)")
    source.add_argument("--onnx", help="an exported .onnx file, run by onnxruntime (what "
                                       "predict serves) instead of Keras")
    p.add_argument("--data-dir")
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--dataset", choices=["dataset1", "dataset2"],
                   help="which of the publication's datasets under --data-dir (default: the "
                        "model's); another than the model's scores all of its images")
    p.add_argument("--images", metavar="SPEC",
                   help="score these images instead of the test fold: 'all', or ids and "
                        "LOW-HIGH ranges, comma-separated (for data the model never trained on)")
    p.add_argument("--fold", type=int, help="default: the fold in the model's config.json")
    p.add_argument("--image-dir", help="score your own folder of images instead, each with a "
                                       "mask of the same stem (grey 0/128/255 or labels 0/1/2)")
    p.add_argument("--mask-dir", help="the masks' folder (default: --image-dir, masks named "
                                      "STEM_mask, or STEM.png beside a non-PNG image)")
    p.add_argument("--masks", choices=MASK_KINDS,
                   help="what --image-dir's masks hold: cell-nucleus (the default: grey "
                        "0/128/255 or labels 0/1/2) or cell (whole cells only, 0/255 or 0/1; "
                        "the nucleus is not scored)")
    p.add_argument("--out", help="directory for metrics.json and per_image.csv (default: beside the model)")
    p.add_argument("--tta", action="store_true",
                   help="average the 8 flips and 90-degree turns (8x the inference time)")
    p.add_argument("--colour", choices=COLOUR_MODES,
                   help="as predict --colour (default: off, the plain model, on the model's own "
                        "test part; predict's default on images from elsewhere: --image-dir, "
                        "--images, another dataset)")
    p.add_argument("--scale", help="as predict --scale: 'auto' or a factor (default: 1 on the "
                                   "model's own test part; predict's default, auto, on images "
                                   "from elsewhere); --scale 1 --colour off scores the plain "
                                   "model, --scale auto --colour auto what predict does")


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="tune a finished run's postprocessing again on its "
                                    "validation images and rescore its test fold")
    p.add_argument("--model", required=True, help="a run directory written by `unet-keras train`")
    p.add_argument("--data-dir")
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--recompute-batch-norm", action="store_true",
                   help="first measure the batch-norm statistics again as training now ends "
                        "(train --batch-norm-stats recomputed), for a run that kept the moving "
                        "averages; rewrites its model.keras")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="segment images and measure each cell")
    p.add_argument("inputs", nargs="+", help="image files or directories")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", help="model.keras or its run directory "
                                        "(default: the shipped pretrained model, as ONNX)")
    source.add_argument("--onnx", help="an ONNX file from `unet-keras export`")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable input")
    p.add_argument("--instances", default="watershed", choices=["watershed", "components"],
                   help="how touching cells are told apart in cells.csv: watershed (default; "
                        "seeded by the nuclei with a nucleus channel, a cell cut across by its "
                        "lobes kept whole) or components (each connected blob one cell)")
    p.add_argument("--edge-cells", choices=EDGE_CELLS,
                   help="drop: leave out cells cut by the image edge when another cell is clear "
                        "of it; keep: measure every cell (default: the model's tuned setting)")
    p.add_argument("--tile", type=positive_int,
                   help="images whose padded side exceeds this run tile by tile (default 1024; "
                        "twice the exact tile overlap for models of depth 6 and 7)")
    p.add_argument("--tta", action="store_true",
                   help="average the model's outputs over the 8 flips and 90-degree turns of "
                        "each image (or tile): 8x the inference time")
    p.add_argument("--scale",
                   help="'auto': where the cells found are more than 1.4x off the size of the "
                        "model's training cells (another magnification), predict again with "
                        "them brought to it; or a factor to resample every image by before the "
                        "model, the result going back to the image's grid (2: cells drawn twice "
                        "as large; 1: as they are). Default: auto when the model records its "
                        "training cell size (the shipped one does), else 1")
    p.add_argument("--colour", choices=COLOUR_MODES, help=COLOUR_HELP)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a .keras model to ONNX, checked against Keras")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--route", default="tf2onnx", choices=["tf2onnx", "jax2onnx"])
    p.add_argument("--opset", type=int)
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    p.add_argument("--data-dir", help="Dataset 1 root, for the int8/fp16 Dice check")



def recipe_config(args) -> UNetConfig:
    """The UNetConfig of the recipe flags given (defaults for the others)."""
    recipe = {field: getattr(args, dest) for dest, field in RECIPE_FLAGS.items()
              if getattr(args, dest, None) is not None}
    if args.stain is not None:
        recipe["stain_augment"] = args.stain
    return UNetConfig(**recipe, augment=not args.no_augment)


def build_parser(description: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unet-keras", description=description,
                                     epilog="Exit codes: 0 ok, 1 bad input or failed run, 2 usage, "
                                            "3 some predict inputs refused, 4 training diverged "
                                            "(NaN), 5 output in use by another run, 130 interrupted.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_cv, _add_evaluate, _add_tune, _add_predict, _add_export):
        add(sub)
    return parser
