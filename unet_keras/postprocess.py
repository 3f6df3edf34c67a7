"""The one postprocessing path: probabilities -> label map -> cell instances -> measurements.

Label maps are uint8 (H, W): 0 background, 1 cytoplasm, 2 nucleus; the whole white cell is
``label > 0``. A 1-channel model has no nucleus and uses label 1 for the whole cell.

Numpy, scipy and scikit-image only: the keras-free deployment runtime imports this module.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as connected_components
from skimage.measure import regionprops
from skimage.segmentation import find_boundaries

from unet_keras.config import EDGE_CELLS, MIN_CELL_AREA
from unet_keras.confidence import CONFIDENCE_COLUMNS, cell_confidences
from unet_keras.image_io import atomic_write_csv
from unet_keras.separation import as_mask, separate_instances

# Grey values of the dataset's mask PNGs for background, cytoplasm and nucleus.
PNG_VALUES = (0, 128, 255)
CELL_COLUMNS = [
    "image", "label", "area", "centroid_y", "centroid_x",
    "bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col",
    "eccentricity", "solidity", "nucleus_area", "cytoplasm_area", "nc_ratio",
    "equivalent_diameter", "perimeter", "circularity", "nucleus_parts", *CONFIDENCE_COLUMNS,
]
CYTOPLASM_COLOUR = (0, 200, 255)  # sky blue, apart from the pink/purple of stained smears
NUCLEUS_COLOUR = (255, 200, 0)  # amber
CONTOUR_COLOUR = (0, 255, 0)
# A nucleus part under this fraction of the largest nucleus part of its cell is cytoplasm: the
# nucleus channel's specks on eosinophil granules and along the membrane (a real nucleus lobe is
# far larger). Chosen on the validation images of five fold models: 0.05-0.2 score alike, 0.3
# starts to take lobes (benchmarks/results/nucleus-fragments).
NUCLEUS_FRAGMENT_FRACTION = 0.1
EIGHT_CONNECTED = np.ones((3, 3), bool)
# An object under this fraction of the image's largest is a platelet or debris, not a white
# cell: the smallest white cell (a small lymphocyte, about 7 um across) has an eighth of the
# largest's area (a monocyte, about 20 um), a platelet (2-3 um) 1-2 %. Unlike min_cell_area (px)
# it holds at any magnification.
SPECK_FRACTION = 0.05


def probabilities_to_labels(prob: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Threshold model probabilities (H, W, C) into a uint8 label map.

    A pixel is "on" in a channel when its probability is >= the channel's threshold.
    C = 1: 1 where on (the whole cell). C = 2: the cell is where either channel is on, since a
    nucleus pixel is a cell pixel even where the whole-cell channel hesitates; label 2 where the
    nucleus channel is on, label 1 on the rest of the cell, and specks of nucleus far smaller
    than their cell's nucleus are cytoplasm (``nucleus_fragments_to_cytoplasm``).

    Args:
        prob: float probabilities, shape (H, W, 1) or (H, W, 2).
        thresholds: one threshold for every channel, or one per channel, each in [0, 1].
    Raises:
        ValueError: wrong rank, channel count, dtype or thresholds.
    """
    prob = np.asarray(prob)
    if prob.ndim != 3 or prob.shape[2] not in (1, 2):
        raise ValueError(f"probabilities of shape {prob.shape}; expected (H, W, 1) or (H, W, 2)")
    if not np.issubdtype(prob.dtype, np.floating):
        raise ValueError(f"probabilities of dtype {prob.dtype}; expected floats in [0, 1]")
    channels = prob.shape[2]
    thresholds = tuple(float(t) for t in thresholds)
    if len(thresholds) not in (1, channels) or not all(0.0 <= t <= 1.0 for t in thresholds):
        raise ValueError(f"thresholds {thresholds}; expected 1 or {channels} values in [0, 1]")
    if len(thresholds) == 1:
        thresholds = thresholds * channels
    # Thresholds in the probabilities' dtype, so a value equal to the threshold is on.
    on = prob >= np.asarray(thresholds, dtype=prob.dtype)
    labels = on[..., 0].astype(np.uint8)
    if channels == 2:
        labels[on[..., 1]] = 2
        labels = nucleus_fragments_to_cytoplasm(labels)
    return labels


def nucleus_fragments_to_cytoplasm(labels: np.ndarray, fraction: float | None = None
                                   ) -> np.ndarray:
    """Relabel (in place) as cytoplasm each 8-connected nucleus part smaller than ``fraction``
    (default: ``NUCLEUS_FRAGMENT_FRACTION`` as it is when called) of the largest nucleus part in
    the same cell (8-connected ``labels > 0``), unless it touches the image edge (there it may be
    the cut-off nucleus of a neighbour). The whole cell is unchanged; returns ``labels``."""
    fraction = NUCLEUS_FRAGMENT_FRACTION if fraction is None else fraction
    if fraction <= 0:
        return labels
    parts, count = ndi.label(labels == 2, structure=EIGHT_CONNECTED)
    if count < 2:
        return labels
    cells, cell_count = ndi.label(labels > 0, structure=EIGHT_CONNECTED)
    index = np.arange(1, count + 1)
    area = np.bincount(parts.ravel(), minlength=count + 1)[1:]
    cell_of = np.asarray(ndi.maximum(cells, parts, index)).astype(np.intp)
    largest = np.zeros(cell_count + 1, dtype=area.dtype)
    np.maximum.at(largest, cell_of, area)
    small = area < fraction * largest[cell_of]
    rim = np.unique(np.concatenate([parts[0], parts[-1], parts[:, 0], parts[:, -1]]))
    small[rim[rim > 0] - 1] = False
    labels[np.concatenate([[False], small])[parts]] = 1
    return labels


def labels_to_png(label_map: np.ndarray, out_channels: int) -> np.ndarray:
    """Label map -> uint8 mask in the dataset's encoding.

    2 channels: 0 background, 128 cytoplasm, 255 nucleus. 1 channel: 0 background, 255 cell.
    """
    label_map = np.asarray(label_map)
    if out_channels not in (1, 2):
        raise ValueError(f"out_channels={out_channels}; expected 1 or 2")
    if label_map.ndim != 2 or label_map.size and (label_map.min() < 0 or label_map.max() > 2):
        raise ValueError(f"label map of shape {label_map.shape}; expected (H, W) with values 0..2")
    if out_channels == 1:
        return np.where(label_map > 0, 255, 0).astype(np.uint8)
    return np.asarray(PNG_VALUES, dtype=np.uint8)[label_map.astype(np.intp)]


def png_to_labels(mask_png_values: np.ndarray) -> np.ndarray:
    """Mask grey values (0..255) -> uint8 label map, each value taken to the nearest of 0/128/255.

    Anti-aliased edges hold grey values in between. Ties go to the lower label: 64 -> 0 and
    191.5 -> 1 (integers cannot tie on the upper side: 191 -> 1, 192 -> 2). A 1-channel mask
    (0/255) reads back as 0/2, whose ``label > 0`` is still the whole cell.

    Raises:
        ValueError: values outside 0..255 (the file is not an 8-bit mask).
    """
    values = np.asarray(mask_png_values)
    if values.size and (values.min() < 0 or values.max() > 255):
        raise ValueError(f"mask values span {values.min()}..{values.max()}; expected 0..255")
    # Midpoints of (0, 128) and (128, 255); strict '>' sends ties down.
    return ((values > 64).astype(np.uint8) + (values > 191.5)).astype(np.uint8)


def edge_parts(cell_mask: np.ndarray, min_size: int = MIN_CELL_AREA, h: float = 2.0
               ) -> np.ndarray:
    """Pixels of the cell mask's parts cut by the image edge, provided a part lies clear of it.

    A cell cut by the edge of the field has a truncated area and shape, so morphometry leaves
    it out (ImageJ's "exclude on edges", ``skimage.segmentation.clear_border``); in crops centred
    on one white cell (both Zheng et al. 2018 datasets: none of Dataset 1's 300 annotated cells
    touches the edge) such objects are neighbours nobody annotated. A neighbour often touches
    the centred cell, so each connected component that reaches the edge is first split where
    the ``h``-maxima watershed of its distance transform finds a neck (``separate_instances``
    without nuclei), and the parts that reach the edge are the ones returned. Parts under
    ``min_size`` pixels do not count as cells, nor do specks (under ``SPECK_FRACTION`` of the
    largest object, which ``label_cells`` removes next). When no part of that size is clear of
    the edge, nothing is returned: an image whose only cell is cut off keeps it.

    Returns:
        boolean (H, W), True on the pixels to leave out.
    """
    cell = as_mask(cell_mask, "cell_mask")
    height, width = cell.shape
    components, count = ndi.label(cell, structure=EIGHT_CONNECTED)
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    # A speck clear of the edge is no cell to keep in place of a cut one: the speck rule would
    # then find the speck the largest object left, and keep it.
    cell_size = max(min_size, speck_area(sizes))
    drop = np.zeros_like(cell)
    clear = False
    for index, box in enumerate(ndi.find_objects(components), start=1):
        if box is None:
            continue
        sides = {"top": box[0].start == 0, "bottom": box[0].stop == height,
                 "left": box[1].start == 0, "right": box[1].stop == width}
        if not any(sides.values()):
            clear = clear or sizes[index - 1] >= cell_size
            continue
        # One pixel of background round the box where it is not on the image edge: without it
        # the box's inner sides read as cell to the distance transform, which then finds maxima
        # that split one cell. The grown box's rows and columns on the edge sides are the image's.
        box = grown_box(box, cell.shape)
        mask = components[box] == index
        parts = separate_instances(mask, None, "watershed", min_size, h=h)
        rims = {"top": parts[0], "bottom": parts[-1], "left": parts[:, 0], "right": parts[:, -1]}
        cut = np.unique(np.concatenate([rims[side] for side, on in sides.items() if on]))
        cut = cut[cut > 0]
        part_sizes = np.bincount(parts.ravel())
        part_sizes[np.r_[0, cut]] = 0
        clear = clear or bool((part_sizes >= cell_size).any())
        drop[box] |= np.isin(parts, cut)
    return drop if clear else np.zeros_like(cell)


def grown_box(box: tuple[slice, slice], shape: tuple[int, ...]) -> tuple[slice, slice]:
    """A bounding box grown by one pixel on every side that stays inside the image."""
    return tuple(slice(max(side.start - 1, 0), min(side.stop + 1, size))
                 for side, size in zip(box, shape))  # type: ignore[return-value]


def drop_edge_parts(labels: np.ndarray, min_cell_area: int = MIN_CELL_AREA,
                    edge_cells: str = "drop") -> np.ndarray:
    """A label map without its ``edge_parts`` (set to background, in place) when ``edge_cells``
    is "drop"; unchanged when it is "keep"."""
    if edge_cells not in EDGE_CELLS:
        raise ValueError(f"edge_cells={edge_cells!r}; expected one of {', '.join(EDGE_CELLS)}")
    if edge_cells == "drop":
        labels[edge_parts(labels > 0, min_cell_area)] = 0
    return labels


def speck_area(sizes: np.ndarray) -> float:
    """The area under which an object is a speck: ``SPECK_FRACTION`` of the largest of
    ``sizes`` (0 for none)."""
    return SPECK_FRACTION * float(np.max(sizes, initial=0))


def speck_labels(sizes: np.ndarray) -> np.ndarray:
    """Which components are specks, by label: under ``speck_area`` of the objects (``sizes[k]``:
    component k's pixels; label 0, the background, never is)."""
    sizes = np.array(sizes)
    sizes[0] = 0
    small = sizes < speck_area(sizes)
    small[0] = False
    return small


def specks(cell: np.ndarray) -> np.ndarray:
    """The 8-connected objects of a boolean cell mask that ``speck_labels`` calls specks, as a
    boolean mask."""
    components, count = ndi.label(cell, structure=EIGHT_CONNECTED)
    return speck_labels(np.bincount(components.ravel(), minlength=count + 1))[components]


def label_cells(prob: np.ndarray, thresholds: Sequence[float], method: str = "watershed",
                min_cell_area: int = MIN_CELL_AREA, edge_cells: str = "keep"
                ) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities -> (label map, cell instances): the one postprocessing of every output.

    The label map keeps only pixels of kept instances, so a mask, its cell table and its
    scores all describe the same cells: objects under ``min_cell_area`` pixels or under
    ``SPECK_FRACTION`` of the largest object's area (``specks``), and with ``edge_cells="drop"``
    the parts of ``edge_parts``, are gone from all three.
    """
    labels = drop_edge_parts(probabilities_to_labels(prob, thresholds), min_cell_area, edge_cells)
    labels[specks(labels > 0)] = 0
    nucleus = labels == 2 if prob.shape[-1] == 2 else None
    instances = separate_instances(labels > 0, nucleus, method=method, min_size=min_cell_area)
    labels[instances == 0] = 0
    return labels, instances


def measure_cells(instances: np.ndarray, label_map: np.ndarray, image_name: str,
                  has_nucleus: bool = True, probability: np.ndarray | None = None,
                  thresholds: Sequence[float] = (0.5,)) -> list[dict]:
    """One row of ``CELL_COLUMNS`` per cell instance, in label order.

    Bounding boxes follow regionprops: min inclusive, max exclusive. ``nc_ratio`` is nucleus
    area / cytoplasm area, NaN when the cell has no cytoplasm pixel. ``equivalent_diameter`` is
    that of a disk of the cell's area; ``perimeter`` the Crofton estimate of the outline's length
    (regionprops' ``perimeter_crofton``; holes' outlines included), within 1 % of a disk's or
    ellipse's true perimeter from 4 px radius up at any rotation, where the length along the
    outer pixels' centres (regionprops' ``perimeter``) is 4 % long at a cell's size;
    ``circularity`` 4 pi area / perimeter^2 capped at 1 (1.00 for a disk of a cell's size, less
    for a ragged or elongated outline; pixel effects can push tiny shapes above 1).
    ``nucleus_parts`` counts the 8-connected pieces of nucleus in the cell: the lobes the
    segmentation shows apart (lobes joined by a filament count once). With
    ``has_nucleus=False`` (a 1-channel model) nucleus_area, cytoplasm_area, nc_ratio and
    nucleus_parts are NaN: unknown, not zero.
    Given the model's ``probability`` (H, W, C) and its ``thresholds``, ``outline_confidence``
    and ``nucleus_confidence`` are ``confidence.cell_confidences``; without it (annotated
    cells) they are NaN.
    """
    instances, label_map = np.asarray(instances), np.asarray(label_map)
    if instances.shape != label_map.shape or instances.ndim != 2:
        raise ValueError(f"instances {instances.shape} and label map {label_map.shape}; "
                         "expected equal 2-D shapes")
    n = int(instances.max(initial=0)) + 1
    nucleus_area = np.bincount(instances.ravel(), weights=(label_map == 2).ravel(), minlength=n)
    cytoplasm_area = np.bincount(instances.ravel(), weights=(label_map == 1).ravel(), minlength=n)
    unknown = dict.fromkeys(CONFIDENCE_COLUMNS, math.nan)
    confidences = ({} if probability is None
                   else cell_confidences(instances, probability, thresholds))
    rows = []
    for region in regionprops(instances):
        min_row, min_col, max_row, max_col = region.bbox
        nucleus, cytoplasm = int(nucleus_area[region.label]), int(cytoplasm_area[region.label])
        if has_nucleus:
            ratio = nucleus / cytoplasm if cytoplasm else math.nan
            in_cell = region.image & (label_map[region.slice] == 2)
            parts = int(ndi.label(in_cell, structure=EIGHT_CONNECTED)[1])
        else:
            nucleus = cytoplasm = ratio = parts = math.nan
        perimeter = float(region.perimeter_crofton)
        rows.append({
            "image": image_name, "label": int(region.label), "area": int(region.area),
            "centroid_y": float(region.centroid[0]), "centroid_x": float(region.centroid[1]),
            "bbox_min_row": int(min_row), "bbox_min_col": int(min_col),
            "bbox_max_row": int(max_row), "bbox_max_col": int(max_col),
            "eccentricity": float(region.eccentricity), "solidity": float(region.solidity),
            "nucleus_area": nucleus, "cytoplasm_area": cytoplasm, "nc_ratio": ratio,
            "equivalent_diameter": float(region.equivalent_diameter_area),
            "perimeter": perimeter,
            "circularity": min(4 * math.pi * region.area / perimeter**2, 1.0) if perimeter
                           else math.nan,
            "nucleus_parts": parts, **confidences.get(region.label, unknown),
        })
    return rows


def overlay(image: np.ndarray, label_map: np.ndarray, alpha: float = 0.4,
            instances: np.ndarray | None = None) -> np.ndarray:
    """Tint cytoplasm and nucleus over a uint8 RGB image and draw instance contours.

    Args:
        image: uint8 (H, W, 3).
        label_map: uint8 (H, W) label map.
        alpha: tint opacity in [0, 1].
        instances: instance labels whose contours are drawn; by default the 8-connected
            components of ``label_map > 0``.
    Returns:
        uint8 (H, W, 3), to save as ``<stem>_overlay.png``.
    """
    image, label_map = np.asarray(image), np.asarray(label_map)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image {image.dtype} {image.shape}; expected uint8 (H, W, 3)")
    if label_map.shape != image.shape[:2]:
        raise ValueError(f"label map {label_map.shape}; expected {image.shape[:2]} like the image")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha}; expected a value in [0, 1]")
    out = image.astype(np.float64)
    for value, colour in ((1, CYTOPLASM_COLOUR), (2, NUCLEUS_COLOUR)):
        where = label_map == value
        out[where] = (1.0 - alpha) * out[where] + alpha * np.asarray(colour, dtype=np.float64)
    if instances is None:
        instances = connected_components(label_map > 0, connectivity=2)
    out[find_boundaries(instances, mode="inner")] = CONTOUR_COLOUR
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def write_cells_csv(rows: list[dict], path: str | Path) -> None:
    """Write ``measure_cells`` rows (of one or many images) as CSV, atomically.

    Raises:
        ValueError: a row has a key outside ``CELL_COLUMNS``.
    """
    atomic_write_csv(path, CELL_COLUMNS, rows)
