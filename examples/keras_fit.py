"""Train the U-Net from a plain Keras script: the TFDS builder's tf.data, model.fit, model.save.

`unet-keras train` cut down to the pieces a Keras user composes by hand: the tensorflow-datasets
builder reads Dataset 1 from its folder (nothing is downloaded), tf.image ops flip, turn and
colour-jitter the crops, ``build_unet`` and ``BCEDiceLoss`` make the two-channel model (whole
cell, nucleus) and its loss, and ``model.fit`` trains it on the backend KERAS_BACKEND names (jax
when unset). The epoch with the best validation loss is kept and the test fold is scored as the
project scores it (whole-cell and nucleus Dice and IoU, AP; thresholds 0.5). Copy it and change
what you need; the shipped model's recipe (zoom, deep supervision, tuned thresholds, ...) is
`unet-keras train`.

    python examples/keras_fit.py --data-dir ../shared/datasets/wbc-zheng2018 --epochs 30 \\
        --out runs/keras-fit.keras
    KERAS_BACKEND=tensorflow python examples/keras_fit.py --fold 1 --out runs/keras-fit-tf.keras
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import unet_keras  # noqa: F401  (sets KERAS_BACKEND to jax when unset, before keras is imported)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from unet_keras.config import UNetConfig  # noqa: E402
from unet_keras.data.splits import fold_indices  # noqa: E402
from unet_keras.data.tfds_builder import prepared_builder  # noqa: E402
from unet_keras.data.zheng2018 import DataError, default_data_dir  # noqa: E402
from unet_keras.evaluate import format_scores, score_probabilities  # noqa: E402
from unet_keras.inference import predict_probabilities  # noqa: E402
from unet_keras.losses import BCEDiceLoss  # noqa: E402
from unet_keras.model import build_unet, load_model  # noqa: E402


def to_pair(example: dict, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """A TFDS example as (float32 image in [0, 1], float32 targets: whole cell, nucleus), both
    reflect-padded (or centre-cropped) to size x size."""
    image = tf.image.convert_image_dtype(example["image"], tf.float32)
    mask = example["mask"]  # (H, W, 1): 0 background, 1 cytoplasm, 2 nucleus
    targets = tf.concat([tf.cast(mask > 0, tf.float32), tf.cast(mask == 2, tf.float32)], -1)
    both = tf.concat([image, targets], -1)
    height, width = tf.shape(both)[0], tf.shape(both)[1]
    pad_h, pad_w = tf.maximum(size - height, 0), tf.maximum(size - width, 0)
    both = tf.pad(both, [[pad_h // 2, pad_h - pad_h // 2], [pad_w // 2, pad_w - pad_w // 2],
                         [0, 0]], mode="REFLECT")
    both = tf.image.resize_with_crop_or_pad(both, size, size)
    return both[..., :3], both[..., 3:]


def augment(image: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Flips and 90-degree turns of image and targets together; colour jitter of the image."""
    both = tf.concat([image, targets], -1)
    both = tf.image.random_flip_left_right(tf.image.random_flip_up_down(both))
    both = tf.image.rot90(both, tf.random.uniform([], 0, 4, tf.int32))
    image, targets = both[..., :3], both[..., 3:]
    image = tf.image.random_brightness(image, 0.06)
    image = tf.image.random_contrast(image, 0.85, 1.15)
    image = tf.image.random_saturation(tf.image.random_hue(image, 0.03), 0.8, 1.2)
    return tf.clip_by_value(image, 0.0, 1.0), targets


def fold_parts(data_dir: Path, fold: int) -> dict[str, tf.data.Dataset]:
    """Dataset 1's examples as tf.data, split by image id into the project's train / val / test
    parts of ``fold`` (the same images as `unet-keras train --fold`)."""
    builder = prepared_builder(data_dir, "dataset1")
    examples = builder.as_dataset(split="train", shuffle_files=False)
    # The ids alone, without decoding every image and mask for them.
    skip = {"image": tfds.decode.SkipDecoding(), "mask": tfds.decode.SkipDecoding()}
    ids = sorted(i.decode() for i in builder.as_dataset(split="train", decoders=skip)
                 .map(lambda e: e["image_id"]).as_numpy_iterator())
    parts = {}
    for name, indices in fold_indices(ids, fold).items():
        wanted = tf.constant([ids[i] for i in indices])
        parts[name] = examples.filter(
            lambda e, wanted=wanted: tf.reduce_any(tf.equal(e["image_id"], wanted))
        ).apply(tf.data.experimental.assert_cardinality(len(indices)))  # Keras counts the steps
    return parts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="dataset root (default: $WBC_DATA_DIR, ../shared/...)")
    parser.add_argument("--out", required=True, help="the model file to write (NAME.keras)")
    parser.add_argument("--fold", type=int, default=0, help="test fold, 0-4; default 0")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--base-filters", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=128,
                        help="crop side, a multiple of 2**depth; default 128")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".keras":
        parser.error(f"--out {out}: expected a file name ending in .keras")
    data_dir = args.data_dir or default_data_dir()
    if data_dir is None:
        print("error: no --data-dir, no $WBC_DATA_DIR and no ../shared/datasets/wbc-zheng2018: "
              "point --data-dir at a clone of the segmentation_WBC repository", file=sys.stderr)
        return 1
    try:  # UNetConfig checks itself when made (ConfigError, a ValueError)
        config = UNetConfig(depth=args.depth, base_filters=args.base_filters, out_channels=2,
                            image_size=args.image_size, fold=args.fold)
        parts = fold_parts(Path(data_dir), args.fold)
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    size = args.image_size
    train = (parts["train"].map(lambda e: to_pair(e, size)).cache().shuffle(512, seed=0)
             .map(augment, num_parallel_calls=tf.data.AUTOTUNE).batch(args.batch_size)
             .prefetch(tf.data.AUTOTUNE))
    val = parts["val"].map(lambda e: to_pair(e, size)).batch(args.batch_size).cache()

    model = build_unet(config)
    model.compile(optimizer=keras.optimizers.Adam(args.lr), loss=BCEDiceLoss())
    out.parent.mkdir(parents=True, exist_ok=True)
    # shuffle=False: the pipeline above shuffles (fit's own shuffle does not apply to tf.data).
    model.fit(train, validation_data=val, epochs=args.epochs, verbose=2, shuffle=False, callbacks=[
        keras.callbacks.ModelCheckpoint(out, monitor="val_loss", save_best_only=True)])

    best = load_model(out)  # the kept epoch
    test = [{"image": e["image"], "mask": e["mask"][..., 0], "image_id": e["image_id"].decode()}
            for e in tfds.as_numpy(parts["test"])]
    probs = predict_probabilities(best, [e["image"] for e in test], config.multiple)
    _, summary = score_probabilities(probs, test, thresholds=(0.5, 0.5))
    print(format_scores(f"test fold {args.fold}, {len(test)} images", summary,
                        f"{keras.backend.backend()} backend"))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
