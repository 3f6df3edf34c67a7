"""Segment a folder of images with an exported ONNX model: onnxruntime only, no Keras or JAX.

Writes ``<stem>_mask.png`` (0 background, 128 cytoplasm, 255 nucleus; 0/255 for a whole-cell
model) for every image and ``cells.csv``, one row per cell: whole-cell area, nucleus and
cytoplasm areas, nucleus:cytoplasm ratio, centroid, bounding box, eccentricity, solidity,
equivalent diameter, perimeter, circularity and nucleus parts.
Unreadable files are skipped and listed. The model file carries its own thresholds and config
(``unet-keras export --model runs/NAME --out model.onnx`` writes one).

    python examples/serve_onnx.py model.onnx path/to/images --out segmented/ [--tta]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from export.runtime import RuntimeModelError, Segmenter
from unet_keras.image_io import ImageReadError, read_rgb, write_png
from unet_keras.postprocess import write_cells_csv
from unet_keras.predict import InputError, collect_inputs


def serve(model: Path, images: Path, out: Path, method: str = "watershed",
          tta: bool = False) -> tuple[int, int]:
    """Segment every image in ``images`` into ``out``; returns (images written, cells found).
    ``tta``: average the model over each image's 8 flips and 90-degree turns (8x the time)."""
    segmenter = Segmenter.from_onnx(model, tta=tta)
    print(f"{model}: {segmenter.out_channels} output channel(s), thresholds "
          f"{segmenter.thresholds}, providers {segmenter.providers}")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    written = 0
    stems: dict[str, Path] = {}
    for path in collect_inputs([images]):
        if path.stem in stems:  # e.g. a mask 001.png beside 001.bmp: one output per name
            print(f"skipped {path}: output name {path.stem!r} already used by "
                  f"{stems[path.stem].name}", file=sys.stderr)
            continue
        try:
            image, _ = read_rgb(path)
        except ImageReadError as err:
            print(f"skipped {err}", file=sys.stderr)
            continue
        stems[path.stem] = path
        result = segmenter.segment(image, image_name=path.name, instance_method=method)
        write_png(out / f"{path.stem}_mask.png", result.mask_png)
        rows.extend(result.cells)
        written += 1
        print(f"{path.name}: {len(result.cells)} cell(s)")
    if rows or written:
        write_cells_csv(rows, out / "cells.csv")
    return written, len(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="an .onnx file written by `unet-keras export`")
    parser.add_argument("images", type=Path, help="a folder of images (or one image)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--method", choices=["watershed", "components"], default="watershed",
                        help="how touching cells are told apart (default: watershed)")
    parser.add_argument("--tta", action="store_true",
                        help="average the 8 flips and 90-degree turns of each image (8x the time)")
    args = parser.parse_args(argv)
    try:
        written, cells = serve(args.model, args.images, args.out, args.method, args.tta)
    except (RuntimeModelError, InputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{written} image(s), {cells} cell(s): masks and cells.csv in {args.out}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
