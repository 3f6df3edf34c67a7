"""Reader for the Zheng et al. (2018) WBC data, laid out exactly as its public repository.

    DATA_DIR/Dataset 1/001.bmp, 001.png, ...        (120x120; masks 0/128/255)
    DATA_DIR/Dataset 2/001.bmp, 001.png, ...        (300x300; masks with anti-aliased greys)
    DATA_DIR/Class Labels of Dataset 1.csv          ("image ID,class label", 1..5)
    DATA_DIR/Class Labels of Dataset 2.csv          ("image ID,class", 1..5)

This module validates and decodes files (numpy + Pillow); the TFDS builder in ``tfds_builder``
turns the examples into a tensorflow-datasets dataset.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from unet_keras.image_io import ImageReadError, read_gray, read_rgb
from unet_keras.postprocess import png_to_labels

DATASETS = {"dataset1": "Dataset 1", "dataset2": "Dataset 2"}
EXPECTED_SIZE = {"dataset1": (120, 120), "dataset2": (300, 300)}
CLASS_NAMES = ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil", "unknown")
UNKNOWN_CLASS = len(CLASS_NAMES) - 1
DATA_DIR_ENV = "WBC_DATA_DIR"
# Dataset 1 masks are exactly 0/128/255; Dataset 2 adds anti-aliased greys along edges only.
MAX_OFF_LEVEL_FRACTION = 0.1
CITATION = (
    "X. Zheng, Y. Wang, G. Wang, J. Liu. Fast and robust segmentation of white blood cell images "
    "by self-supervised learning. Micron 107:55-71, 2018. doi:10.1016/j.micron.2018.01.010"
)


class DataError(ValueError):
    """A data directory or file that does not match the expected layout. Names the path."""


@dataclass(frozen=True)
class Pair:
    image_id: str
    image_path: Path
    mask_path: Path


def default_data_dir() -> Path | None:
    """``$WBC_DATA_DIR``, else ``../shared/datasets/wbc-zheng2018`` (from the working directory
    or from the repository checkout), else None."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    for candidate in (Path.cwd() / "../shared/datasets/wbc-zheng2018",
                      repo / "../shared/datasets/wbc-zheng2018"):
        if (candidate / DATASETS["dataset1"]).is_dir():
            return candidate.resolve()
    return None


def scan_pairs(data_dir: str | Path, dataset: str = "dataset1") -> list[Pair]:
    """List image/mask pairs, checking the layout. Raises DataError naming what is wrong."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found")
    folder = data_dir / DATASETS[dataset]
    if not folder.is_dir():
        raise DataError(
            f"{folder}: folder not found; expected '{DATASETS[dataset]}/NNN.bmp' with masks "
            f"'NNN.png' inside {data_dir} (the layout of the public segmentation_WBC repository)"
        )
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".bmp", ".jpg", ".jpeg", ".tif", ".tiff"))
    if not images:
        raise DataError(f"{folder}: no images (NNN.bmp) found")
    pairs, seen = [], {}
    for image_path in images:
        image_id = image_path.stem
        if image_id in seen:
            raise DataError(f"{image_path}: duplicate image id {image_id!r} (also {seen[image_id]})")
        seen[image_id] = image_path
        mask_path = image_path.with_suffix(".png")
        if not mask_path.is_file():
            raise DataError(f"{image_path}: no mask; expected {mask_path.name} beside it")
        pairs.append(Pair(image_id, image_path, mask_path))
    return pairs


def read_class_labels(data_dir: str | Path, dataset: str = "dataset1") -> dict[str, int]:
    """Map image id ('001') to a 0-based class index; absent file -> empty dict."""
    number = DATASETS[dataset].split()[-1]
    path = Path(data_dir) / f"Class Labels of Dataset {number}.csv"
    if not path.is_file():
        return {}
    labels = {}
    expected = f"expected rows 'image ID,class' with integers, classes 1..{UNKNOWN_CLASS}"
    try:
        with path.open(newline="") as handle:
            rows = csv.reader(handle)
            next(rows, None)  # header: "image ID,class label" or "image ID,class"
            for line, row in enumerate(rows, start=2):
                if len(row) >= 2 and row[0].strip():
                    label = int(row[1])
                    if not 1 <= label <= UNKNOWN_CLASS:
                        raise DataError(f"{path}: line {line}: class {label}; {expected}")
                    labels[f"{int(row[0]):03d}"] = label - 1
    except DataError:
        raise
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: {expected} ({err})") from err
    return labels


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """Decode one pair: (uint8 RGB image, uint8 label map 0/1/2). Raises DataError."""
    try:
        image, _ = read_rgb(pair.image_path)
        mask = read_gray(pair.mask_path)
    except ImageReadError as err:
        raise DataError(str(err)) from err
    if mask.shape != image.shape[:2]:
        raise DataError(
            f"{pair.mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but image "
            f"{pair.image_path.name} is {image.shape[1]}x{image.shape[0]}; expected equal sizes"
        )
    if mask.dtype != np.uint8:
        raise DataError(f"{pair.mask_path}: mask dtype {mask.dtype}; expected 8-bit grey 0/128/255")
    _check_mask_values(mask, pair.mask_path)
    return image, png_to_labels(mask)


def _check_mask_values(mask: np.ndarray, path: Path) -> None:
    """Refuse masks that would silently read as something else.

    Values between 0, 128 and 255 are anti-aliased edges (Dataset 2) and go to the nearest
    class, but a 0/1/2 label map would read as all background, and a photo or JPEG-damaged mask
    has grey everywhere, not only along edges.
    """
    if mask.max() < 64 and mask.any():
        raise DataError(f"{path}: mask values {np.unique(mask)[:6].tolist()} all read as "
                        "background; expected grey 0 (background), 128 (cytoplasm), 255 (nucleus), "
                        "not class indices 0/1/2")
    off_level = float(np.mean((mask != 0) & (mask != 128) & (mask != 255)))
    if off_level > MAX_OFF_LEVEL_FRACTION:
        raise DataError(f"{path}: {off_level:.0%} of mask pixels are not 0, 128 or 255 (at most "
                        f"{MAX_OFF_LEVEL_FRACTION:.0%} expected, on anti-aliased edges); "
                        "expected a mask in grey 0/128/255")


def iter_examples(data_dir: str | Path, dataset: str = "dataset1") -> Iterator[dict]:
    """Yield validated examples: image, mask (0/1/2), label (class index), image_id."""
    labels = read_class_labels(data_dir, dataset)
    for pair in scan_pairs(data_dir, dataset):
        image, mask = read_pair(pair)
        yield {
            "image": image,
            "mask": mask,
            "label": labels.get(pair.image_id, UNKNOWN_CLASS),
            "image_id": pair.image_id,
        }


def fingerprint(data_dir: str | Path, dataset: str = "dataset1") -> str:
    """A short hash of the data directory and its files' names and contents, so a cache is
    rebuilt when the data change. Contents, not sizes and times: most of Dataset 1's images have
    one size, and a rename or an unpacked archive keeps or sets every time alike, so two
    images swapped would otherwise be served from the old cache with each other's masks."""
    digest = hashlib.sha1(f"{dataset}:{Path(data_dir).resolve()}".encode())
    folder = Path(data_dir) / DATASETS[dataset]
    for path in sorted(folder.iterdir()) + sorted(Path(data_dir).glob("*.csv")):
        digest.update(path.name.encode())
        if path.is_file():
            digest.update(hashlib.sha1(path.read_bytes()).digest())
    return digest.hexdigest()[:12]
