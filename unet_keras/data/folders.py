"""A user's own folder of images and masks, paired by file stem, read as dataset examples.

Pairs are matched by stem: IMAGES/cell_07.jpg goes with MASKS/cell_07.png (or
MASKS/cell_07_mask.png). When masks and images share a folder, a mask is STEM_mask.*, or, as in
the Zheng et al. folders themselves (001.bmp beside its mask 001.png), STEM.png beside an image
STEM of another format. A mask
holds grey 0 (background), 128 (cytoplasm) and 255 (nucleus), like the Zheng et al. data, or
class indices 0/1/2 (kind "cell-nucleus"); or, from a laboratory that drew whole cells only,
background 0 and cell 255 or 1 (kind "cell": nucleus not scored). ``unet-keras
evaluate --image-dir`` and ``examples/finetune.py`` read folders through here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unet_keras.config import MASK_KINDS
from unet_keras.data.zheng2018 import DataError, Pair, read_pair
from unet_keras.image_io import IMAGE_SUFFIXES, ImageReadError, read_gray, read_rgb
from unet_keras.predict import collect_inputs

MASK_SUFFIX = "_mask"
EXPECTED_MASK = "grey 0/128/255 (background/cytoplasm/nucleus) or class indices 0/1/2"


def find_pairs(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths matched by stem, in image-name order.

    Raises:
        DataError: an image without a mask (named), a stem with two masks or two images, or a
            missing folder.
    """
    if not masks.is_dir():
        raise DataError(f"{masks}: mask folder not found")
    same_folder = images.resolve() == masks.resolve()
    by_stem: dict[str, Path] = {}
    for path in sorted(masks.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        named_mask = path.stem.endswith(MASK_SUFFIX)
        if same_folder and not named_mask:
            continue  # an image, or a mask beside its image (below)
        stem = path.stem[:-len(MASK_SUFFIX)] if named_mask else path.stem
        if stem in by_stem:
            raise DataError(f"{path}: a second mask for {stem!r} (also {by_stem[stem].name}); "
                            "expected one mask per image")
        by_stem[stem] = path
    inputs = collect_inputs([images])
    if same_folder:
        inputs = _masks_beside_images(inputs, by_stem)
    pairs, seen = [], {}
    for image in inputs:
        if image.stem in seen:
            raise DataError(
                f"{image}: a second image for {image.stem!r} (also {seen[image.stem].name}); "
                f"expected one image per stem in {images}"
                + ("" if same_folder else " (masks kept beside the images: give --mask-dir the "
                                          "image folder itself, or leave it out)"))
        seen[image.stem] = image
        if image.stem not in by_stem:
            expected = (f"{masks / image.stem}{MASK_SUFFIX}.png (or {image.stem}.png beside a "
                        "non-PNG image)" if same_folder
                        else f"{masks / image.stem}.png (or {image.stem}{MASK_SUFFIX}.png)")
            raise DataError(f"{image}: no mask; expected {expected} in {masks}, {EXPECTED_MASK}")
        pairs.append((image, by_stem[image.stem]))
    return pairs


def _masks_beside_images(files: list[Path], by_stem: dict[str, Path]) -> list[Path]:
    """The images among one folder's ``files``: a PNG beside an image of its stem in another
    format, and without a ``STEM_mask`` file, is that image's mask (added to ``by_stem``)."""
    other_formats = {f.stem for f in files if f.suffix.lower() != ".png"}
    for f in files:
        if f.suffix.lower() == ".png" and f.stem in other_formats and f.stem not in by_stem:
            by_stem[f.stem] = f
    masks = set(by_stem.values())
    return [f for f in files if f not in masks]


def read_example(image_path: Path, mask_path: Path, kind: str = "cell-nucleus") -> dict:
    """An example like the dataset reader's: image (uint8 RGB), mask (0/1/2 labels), image_id.

    Args:
        kind: "cell-nucleus" (grey 0/128/255 or labels 0/1/2), or "cell": a whole-cell mask,
            pixels above half its largest value are cell (0/255, 0/1 or anti-aliased greys);
            the example then has label 1 for the cell and ``nucleus_annotated`` False.
    Raises:
        DataError: unreadable files, sizes that differ, or mask values in neither encoding.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"mask kind {kind!r}; expected one of {MASK_KINDS}")
    try:
        mask = read_gray(mask_path)
        if kind == "cell-nucleus" and mask.max() > 2:
            # The dataset's grey levels: its reader checks and converts them.
            image, labels = read_pair(Pair(image_path.stem, image_path, mask_path))
        else:
            image, _ = read_rgb(image_path)
            # Whole cells: every labelled pixel of a 0/1(/2) label map; above half the largest
            # value of a grey mask (0/255, anti-aliased edges).
            cell = mask > 0 if mask.max() <= 2 else mask.astype(np.int64) * 2 > int(mask.max())
            labels = (cell if kind == "cell" else mask).astype(np.uint8)
    except ImageReadError as err:
        raise DataError(str(err)) from err
    if labels.shape != image.shape[:2]:
        raise DataError(f"{mask_path}: mask is {labels.shape[1]}x{labels.shape[0]} but image "
                        f"{image_path.name} is {image.shape[1]}x{image.shape[0]}; expected equal sizes")
    return {"image": image, "mask": labels, "label": -1, "image_id": image_path.stem,
            "nucleus_annotated": kind == "cell-nucleus"}


def check_both_classes(examples: list[dict], masks: Path) -> None:
    """Refuse cell-and-nucleus masks in which one of the two classes never occurs.

    Whole-cell masks (0/255 or 0/1) would otherwise read as all nucleus or all cytoplasm, and
    the nucleus scores (or a fine-tuned nucleus channel) would be silently wrong.

    Raises:
        DataError: no mask of the folder holds cytoplasm, or none holds nucleus.
    """
    present = set()
    for example in examples:
        present.update(np.unique(example["mask"]).tolist())
    missing = [name for label, name in ((1, "cytoplasm"), (2, "nucleus")) if label not in present]
    if examples and missing:
        raise DataError(f"{masks}: no mask holds {' or '.join(missing)}; expected "
                        f"{EXPECTED_MASK}. Masks of whole cells only (0/255 or 0/1) are scored "
                        "with `unet-keras evaluate --masks cell` (nucleus not scored)")


def load_folder(images: Path, masks: Path | None = None, kind: str = "cell-nucleus") -> list[dict]:
    """Every (image, mask) pair of ``images`` and ``masks`` (default: the same folder, masks
    named ``STEM_mask``) as examples, in image-name order; ``kind`` as ``read_example``'s.

    Raises:
        DataError: see ``find_pairs``, ``read_example`` and ``check_both_classes``.
        InputError: no image files in ``images``.
    """
    images = Path(images)
    masks = Path(masks) if masks is not None else images
    if not images.is_dir():
        raise DataError(f"{images}: image folder not found")
    examples = [read_example(*pair, kind) for pair in find_pairs(images, masks)]
    if kind == "cell-nucleus":
        check_both_classes(examples, masks)
    return examples
