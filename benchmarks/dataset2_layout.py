"""Write a run's held-out test images, enlarged, in the layout of the publication's Dataset 2.

    python -m benchmarks.dataset2_layout RUN --zoom 2.5 --out DIR [--data-dir D]
    unet-keras evaluate --model RUN --data-dir DIR --dataset dataset2 --scale auto --colour auto \\
        --out RUN/eval-dataset2-layout

Dataset 2 (CellaVision, 300x300, masks whose edges carry anti-aliased grey values) is not on
this machine. This stands in for it where the file path matters: the run's test images (never
trained or tuned on) are resized by ``--zoom`` with bilinear interpolation, image and mask alike,
so a 120 px image becomes 300 px and the mask's edges turn to greys between 0, 128 and 255, and
are written as ``DIR/Dataset 2/NNN.bmp`` and ``NNN.png`` with ``DIR/Class Labels of Dataset 2.csv``.
``unet-keras evaluate --dataset dataset2`` then reads them through the same loader (TFDS builder,
grey values to the nearest class) a user's Dataset 2 goes through.

DIR must not exist (nothing is overwritten; it is written whole or not at all), and must lie
outside the project: dataset files are not kept in the repository.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from PIL import Image  # noqa: E402

from unet_keras.config import ConfigError, resolve_run  # noqa: E402
from unet_keras.data.zheng2018 import DataError  # noqa: E402

DATASET2 = "Dataset 2"
LABELS_FILE = "Class Labels of Dataset 2.csv"
MASK_VALUES = (0, 128, 255)  # background, cytoplasm, nucleus, as the publication encodes them


def write_layout(examples: list[dict], zoom: float, out: Path) -> int:
    """Write ``examples`` (image, mask of labels 0/1/2, image_id, label) resized by ``zoom`` to
    ``out`` in Dataset 2's layout; returns how many. ``out`` appears complete or not at all."""
    if not 0.25 <= zoom <= 4:
        raise ValueError(f"--zoom {zoom}: expected a factor from 0.25 to 4")
    if out.exists():
        raise FileExistsError(f"{out}: already exists; expected a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (staging / DATASET2).mkdir()
        lines = ["image ID,class"]
        for e in examples:
            height, width = e["mask"].shape
            size = (max(1, round(width * zoom)), max(1, round(height * zoom)))
            encoded = Image.fromarray(e["mask"].astype("uint8")).point(
                lambda v: MASK_VALUES[v] if v < len(MASK_VALUES) else 0)
            Image.fromarray(e["image"]).resize(size, Image.BILINEAR).save(
                staging / DATASET2 / f"{e['image_id']}.bmp")
            encoded.resize(size, Image.BILINEAR).save(staging / DATASET2 / f"{e['image_id']}.png")
            if int(e.get("label", -1)) >= 0:  # a known cell type, 1..5 in the file
                number = e["image_id"].lstrip("0") if e["image_id"].isdigit() else e["image_id"]
                lines.append(f"{number or 0},{int(e['label']) + 1}")
        (staging / LABELS_FILE).write_text("\n".join(lines) + "\n")
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return len(examples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dataset2_layout",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory (model.keras + config.json): its test part")
    parser.add_argument("--zoom", type=float, default=2.5,
                        help="resize factor (default 2.5: Dataset 1's 120 px to Dataset 2's 300)")
    parser.add_argument("--out", required=True, help="new directory, outside the project")
    parser.add_argument("--data-dir", help="dataset root (default: the standard locations)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    project = Path(__file__).resolve().parent.parent
    if out == project or project in out.parents:
        print(f"error: {out}: inside the project; dataset files are not kept in the repository: "
              "write them elsewhere (/tmp/...)", file=sys.stderr)
        return 1
    try:
        from unet_keras.data.loading import load_test_fold

        _, config = resolve_run(args.run)
        fold = load_test_fold(config, args.data_dir)
        if fold.synthetic:
            raise DataError("no real data found: this writes real test images; pass --data-dir")
        count = write_layout(fold.test, args.zoom, out)
    except (ConfigError, DataError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {count} test images ({config.test_part} of {fold.source}) at {args.zoom}x in "
          f"Dataset 2's layout to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
