"""Fine-tune a trained U-Net (.keras) on your own folder of images and masks.

Pairs are matched by file stem: IMAGES/cell_07.jpg goes with MASKS/cell_07.png (or
MASKS/cell_07_mask.png). When masks and images share a folder, a mask is STEM_mask.*, or
STEM.png beside an image STEM of another format, as in the Zheng et al. folders. A mask holds
grey 0 (background), 128 (cytoplasm) and 255 (nucleus), like the Zheng et al. data, or class
indices 0/1/2 (also as a palette PNG with coloured entries); a whole-cell model learns
background vs cell from either. A seeded part of
the pairs (--val-fraction) is held out: training keeps the epoch with the best validation Dice,
and the postprocessing (probability thresholds, smallest cell area) is tuned on that part.
OUT gets model.keras, config.json (so `unet-keras predict --model OUT` works) and
finetune.json (which images were held out, Dice before and after).

    python examples/finetune.py --images my/images --masks my/masks --out runs/finetuned
    python examples/finetune.py --model runs/d1-fold0/model.keras --images my/images \\
        --masks my/masks --out runs/finetuned --epochs 30 --lr 1e-4
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

import unet_keras  # sets the default KERAS_BACKEND before keras is imported
from unet_keras.config import CONFIG_FILENAME, resolve_run
from unet_keras.data.folders import load_folder
from unet_keras.data.zheng2018 import DataError

PRETRAINED = Path(unet_keras.__file__).parent / "pretrained" / "wbc_unet.keras"


def split(examples: list[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded (train, validation) parts; at least one example in each."""
    if len(examples) < 2:
        raise DataError(f"{len(examples)} image/mask pair(s); expected at least 2 (one to train, "
                        "one to validate)")
    order = np.random.default_rng(seed).permutation(len(examples))
    n_val = min(max(1, round(val_fraction * len(examples))), len(examples) - 1)
    return [examples[i] for i in order[n_val:]], [examples[i] for i in order[:n_val]]


def finetune(model_path: Path, train: list[dict], val: list[dict], out: Path, epochs: int,
             lr: float, batch_size: int, image_size: int | None, patience: int) -> dict:
    """Fine-tune, keep the best epoch on validation Dice, tune thresholds, write ``out``."""
    import keras

    from unet_keras.callbacks import ValidationDice
    from unet_keras.data.pipeline import TrainingBatches
    from unet_keras.evaluate import edge_convention, score_config, tune_postprocessing, write_json
    from unet_keras.image_io import atomic_path
    from unet_keras.inference import predict_probabilities
    from unet_keras.model import load_model
    from unet_keras.train import compile_model, record_training_statistics

    model_path, base = resolve_run(model_path)  # the config.json (or model card) beside it
    print(f"Keras backend: {keras.backend.backend()}")
    model = load_model(model_path)
    config = dataclasses.replace(base, epochs=epochs, learning_rate=lr, batch_size=batch_size,
                                 image_size=image_size or base.image_size, lr_schedule="cosine",
                                 ema=0.0)  # this short schedule keeps the raw weights

    probs = predict_probabilities(model, [e["image"] for e in val], config.multiple)
    before = score_config(probs, val, base)[1]["whole_cell_dice"]
    keras.utils.set_random_seed(config.seed)
    batches = TrainingBatches(train, config, seed=config.seed)
    compile_model(model, config, len(batches))
    # restore_best_weights puts the best epoch's weights back when training ends, stopped early
    # or not; ValidationDice, listed first, adds the val_dice it watches to the epoch's logs.
    best = keras.callbacks.EarlyStopping(monitor="val_dice", mode="max", patience=patience,
                                         restore_best_weights=True)
    history = model.fit(batches, epochs=epochs, callbacks=[ValidationDice(val, config), best],
                        verbose=2, shuffle=False)
    probs = predict_probabilities(model, [e["image"] for e in val], config.multiple)
    # Thresholds and filters; where validation cannot tell, edge cells as the masks treat them.
    after = tune_postprocessing(probs, val, config, edge_convention(train + val))["whole_cell_dice"]
    # Predict's --scale auto and --colour auto aim at the images this model was tuned to, not
    # at the base model's training images (whose statistics the base config carried).
    record_training_statistics(config, train)

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.keras") as tmp:
        model.save(tmp)
    config.save(out / CONFIG_FILENAME)
    summary = {"base_model": str(model_path), "keras_backend": keras.backend.backend(),
               "epochs_run": len(history.history["loss"]), "thresholds": list(config.thresholds),
               "min_cell_area": config.min_cell_area, "edge_cells": config.edge_cells,
               "val_whole_cell_dice_before": before, "val_whole_cell_dice_after": after,
               "train_images": [e["image_id"] for e in train],
               "val_images": [e["image_id"] for e in val]}
    write_json(summary, out / "finetune.json")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=PRETRAINED,
                        help="the .keras model to start from, its config.json (or model card) "
                             "beside it (default: the shipped pretrained model)")
    parser.add_argument("--images", type=Path, required=True, help="folder of images")
    parser.add_argument("--masks", type=Path, required=True, help="folder of masks (same stems)")
    parser.add_argument("--out", type=Path, required=True, help="output folder, new or empty")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (cosine decay)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, help="training crop side (default: the model's)")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--patience", type=int, default=5,
                        help="stop after this many epochs without a better validation Dice")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    args = parser.parse_args(argv)
    try:
        if not args.model.is_file():
            raise DataError(f"{args.model}: model file not found; expected a .keras file "
                            "(--model runs/NAME/model.keras)")
        if args.out.exists() and any(args.out.iterdir()):
            raise DataError(f"{args.out}: output folder is not empty; expected a new or empty folder")
        examples = load_folder(args.images, args.masks)
        train, val = split(examples, args.val_fraction, args.seed)
        print(f"{len(train)} training and {len(val)} validation image(s) from {args.images}")
        summary = finetune(args.model, train, val, args.out, args.epochs, args.lr,
                           args.batch_size, args.image_size, args.patience)
    except ValueError as err:  # the package's input errors (DataError, ModelLoadError, ...)
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"validation whole-cell Dice {summary['val_whole_cell_dice_before']:.4f} -> "
          f"{summary['val_whole_cell_dice_after']:.4f} after {summary['epochs_run']} epoch(s); "
          f"model and config in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
