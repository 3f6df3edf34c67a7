"""Train the U-Net under another Keras backend, chosen by KERAS_BACKEND, and save the run.

The library does not depend on JAX: the same config, data and ``train`` call run under
TensorFlow or PyTorch, and the saved run (model.keras, config.json, metrics.json, ...) loads
under every backend. Without KERAS_BACKEND this example uses tensorflow; the backend must be
chosen before keras is first imported, so set it in the environment, not in code that runs later.

    KERAS_BACKEND=tensorflow python examples/train_other_backend.py --out runs/tf-fold0
    KERAS_BACKEND=torch python examples/train_other_backend.py --synthetic --epochs 2 \\
        --limit 32 --out runs/torch-try
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Sequence

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402  (after the backend is chosen)

from unet_keras.config import UNetConfig  # noqa: E402
from unet_keras.data.loading import load_fold  # noqa: E402
from unet_keras.train import train  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="run directory to create (runs/NAME)")
    parser.add_argument("--data-dir", help="dataset root (default: $WBC_DATA_DIR, ../shared/...)")
    parser.add_argument("--synthetic", action="store_true", help="train on the synthetic set")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out-channels", type=int, choices=[1, 2], default=1)
    parser.add_argument("--limit", type=int,
                        help="use at most this many training images (a quick try); validation "
                             "and test parts are cut to a quarter of it")
    args = parser.parse_args(argv)

    backend = keras.backend.backend()
    print(f"Keras backend: {backend} (keras {keras.__version__})")
    try:  # UNetConfig checks itself when made (ConfigError, a ValueError)
        config = UNetConfig(epochs=args.epochs, depth=args.depth, base_filters=args.base_filters,
                            image_size=args.image_size, batch_size=args.batch_size,
                            out_channels=args.out_channels)
        data = load_fold(config, args.data_dir, args.synthetic)
        if args.limit:
            keep = max(1, args.limit // 4)
            data = dataclasses.replace(data, train=data.train[:args.limit], val=data.val[:keep],
                                       test=data.test[:keep])
        print(f"training on {len(data.train)} images of {data.source}")
        metrics = train(config, data, args.out, verbose=2,
                        data_args={"data_dir": args.data_dir, "synthetic": args.synthetic})
    except ValueError as err:  # the package's input errors name the file and what was expected
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"trained under {metrics['versions']['keras_backend']}: test whole-cell Dice "
          f"{metrics['test']['whole_cell_dice']:.4f}; saved {args.out}/model.keras and config.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
