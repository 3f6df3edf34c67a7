"""Write a few images of the fold-0 test part (real data if found, else synthetic) into a folder,
for `make demo` to run `unet-keras predict` on."""

import argparse
from pathlib import Path

import unet_keras  # noqa: F401
from unet_keras.config import UNetConfig
from unet_keras.data.loading import load_fold
from unet_keras.image_io import write_png


def main(out: str, count: int = 4) -> None:
    data = load_fold(UNetConfig(fold=0))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for example in data.test[:count]:
        write_png(folder / f"{example['image_id']}.png", example["image"])
    print(f"wrote {min(count, len(data.test))} test-fold images from {data.source} to {folder}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write the images into")
    parser.add_argument("--count", type=int, default=4, help="how many images (default 4)")
    args = parser.parse_args()
    main(args.out, args.count)
