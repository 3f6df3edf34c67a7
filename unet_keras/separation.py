"""Touching cells told apart: a whole-cell mask split into cell instances.

``separate_instances`` is the one instance separation of every output (``postprocess.label_cells``,
the tiled ONNX path of ``export.instances``, the edge rule of ``postprocess.edge_parts``):
connected components, or a watershed of the distance transform seeded by the nuclei or by
distance maxima (docs/touching_cells.md measures each on clusters of known counts).

Numpy, scipy and scikit-image only: the keras-free deployment runtime imports this module.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as connected_components
from skimage.morphology import disk, h_maxima
from skimage.segmentation import relabel_sequential, watershed

from unet_keras.config import MIN_CELL_AREA

# Nucleus markers part a cell wherever its nucleus lies in pieces: a neutrophil's lobes often do.
# A cut between two parts wider than this times the smaller part's equivalent diameter crosses
# one cell rather than a neck between two, and the parts join again. An ellipse of aspect q
# (short / long axis) cut through its centre across the long axis gives sqrt(2 q), any cut away
# from the centre more: 1.2 is q = 0.72, and all but 1 of Dataset 1's 300 cells are rounder
# (5th percentile 0.82). Two equal discs overlapping by up to half their diameter meet along
# less than 1 times either part's, and the crescent that an equal disc centred on a disc's edge
# leaves of it along about 1.1 times its own. (It was 1.4, just under a disc's sqrt(2); the
# centre cut of 93 % of Dataset 1's cells falls below that.) docs/touching_cells.md measures it
# on Dataset 1's test images and on synthetic clusters.
WIDE_CUT_RATIO = 1.2
# Directions over which a contact's width is taken (its extent along the widest of them; at
# 16 directions it is at most 0.5 % short of the true largest extent).
_WIDTH_DIRECTIONS = np.stack([np.cos(np.arange(16) * np.pi / 16),
                              np.sin(np.arange(16) * np.pi / 16)], axis=1)


def as_mask(mask: np.ndarray, name: str) -> np.ndarray:
    """``mask`` as a boolean (H, W) array; ValueError naming ``name`` for any other rank."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} of shape {mask.shape}; expected a 2-D (H, W) mask")
    return mask.astype(bool, copy=False)


def _nucleus_markers(cell: np.ndarray, nucleus: np.ndarray, components: np.ndarray,
                     gap_px: int) -> np.ndarray:
    """One marker per nucleus, joining fragments at most about ``gap_px`` apart within the same
    connected component of the cell mask (``components``, 8-connected labels of ``cell``): a
    neighbouring cell's nucleus, grown across the background, never joins another cell's
    fragments, so a cell is split the same whether its neighbours are in view or not."""
    nuclei = nucleus & cell
    radius = math.ceil(gap_px / 2)
    if radius == 0:
        return connected_components(nuclei, connectivity=2)
    grown = np.zeros_like(nuclei)
    footprint = disk(radius)
    for index, box in enumerate(ndi.find_objects(components), start=1):
        if box is None:
            continue
        own = components[box] == index
        seeds = nuclei[box] & own
        if seeds.any():
            grown[box] |= ndi.binary_dilation(seeds, structure=footprint) & own
    # Cell components are not 8-adjacent, so the grown regions of two never touch.
    return connected_components(grown, connectivity=2) * nuclei


def _contacts(instances: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """Pixel coordinates (n, 2) where two instances touch (4-connected), by (lower id, higher id):
    the first pixel of each touching pair in row-major order."""
    coords, keys = [], []
    for a, b in ((instances[:-1], instances[1:]), (instances[:, :-1], instances[:, 1:])):
        touching = (a != b) & (a > 0) & (b > 0)
        ids = np.stack([a[touching], b[touching]])
        coords.append(np.argwhere(touching))
        keys.append(np.stack([ids.min(axis=0), ids.max(axis=0)], axis=1))
    coords, keys = np.concatenate(coords), np.concatenate(keys)
    pairs, inverse = np.unique(keys, axis=0, return_inverse=True)
    order = np.argsort(inverse.ravel(), kind="stable")
    groups = np.split(coords[order], np.cumsum(np.bincount(inverse.ravel()))[:-1])
    return {(int(p), int(q)): group for (p, q), group in zip(pairs, groups)}


def _width(points: np.ndarray) -> float:
    """Largest extent of a set of pixel coordinates, in px (a single pixel: 1)."""
    projected = points @ _WIDTH_DIRECTIONS.T
    return float((projected.max(axis=0) - projected.min(axis=0)).max()) + 1.0


def _join_wide_cuts(instances: np.ndarray, ratio: float) -> np.ndarray:
    """Join touching instances whose contact is wider than ``ratio`` times the smaller one's
    equivalent diameter, widest (relative to it) first, until no such pair is left."""
    points = _contacts(instances)
    area = np.bincount(instances.ravel()).astype(float)
    owner = np.arange(len(area))

    def score(pair: tuple[int, int]) -> float:
        return _width(points[pair]) / math.sqrt(4 * min(area[pair[0]], area[pair[1]]) / math.pi)

    scores = {pair: score(pair) for pair in points}
    while scores and max(scores.values()) > ratio:
        keep, gone = max(scores, key=scores.get)
        area[keep] += area[gone]
        owner[owner == gone] = keep
        merged: dict[tuple[int, int], np.ndarray] = {}
        for (p, q), where in points.items():
            p, q = (keep if p == gone else p), (keep if q == gone else q)
            if p != q:
                pair = (min(p, q), max(p, q))
                merged[pair] = np.concatenate([merged[pair], where]) if pair in merged else where
        points = merged
        scores = {pair: scores[pair] if keep not in pair else score(pair) for pair in points}
    return owner[instances]


def _watershed(cell: np.ndarray, nucleus: np.ndarray | None, h: float, gap_px: int,
               wide_cut_ratio: float) -> np.ndarray:
    distance = ndi.distance_transform_edt(cell)
    components = connected_components(cell, connectivity=2)
    markers = np.zeros(cell.shape, dtype=np.int32)
    if nucleus is not None:
        markers = _nucleus_markers(cell, nucleus, components, gap_px).astype(np.int32)
    # Cells without any nucleus pixel (or every cell, without a nucleus channel) are seeded by
    # the distance-transform maxima that rise at least h px above the neck joining them.
    seeded = np.zeros(components.max() + 1, dtype=bool)
    seeded[np.unique(components[markers > 0])] = True
    seeded[0] = True
    peaks = h_maxima(distance, h).astype(bool) & ~seeded[components]
    peak_ids = connected_components(peaks, connectivity=2)
    markers[peaks] = peak_ids[peaks] + markers.max()
    instances = watershed(-distance, markers, mask=cell)
    if nucleus is not None and math.isfinite(wide_cut_ratio):
        instances = _join_wide_cuts(instances, wide_cut_ratio)
    return _claim_left_over(cell, instances)


def _claim_left_over(cell: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """The cell pixels the watershed left unlabelled, labelled: its flooding goes through sides
    only, so pieces joined to a cell at a corner (cells are 8-connected) are that cell's; the
    others, components too thin to hold a maximum of height h, are cells of their own."""
    left = connected_components(cell & (instances == 0), connectivity=2)
    count = int(left.max())
    if not count:
        return instances
    neighbour = ndi.grey_dilation(instances, footprint=np.ones((3, 3), bool))
    owner = np.asarray(ndi.maximum(neighbour, left, np.arange(1, count + 1)), dtype=instances.dtype)
    alone = owner == 0
    owner[alone] = instances.max() + np.arange(1, int(alone.sum()) + 1)
    instances[left > 0] = owner[left[left > 0] - 1]
    return instances


def separate_instances(cell_mask: np.ndarray, nucleus_mask: np.ndarray | None = None,
                       method: str = "watershed", min_size: int = MIN_CELL_AREA, *, h: float = 2.0,
                       nucleus_gap_px: int = 4, wide_cut_ratio: float = WIDE_CUT_RATIO
                       ) -> np.ndarray:
    """Split a whole-cell mask into cell instances.

    "components": 8-connected components. "watershed": watershed of the negated distance
    transform, restricted to the cell mask, so touching cells part at the neck between them.
    Markers are the nuclei when a nucleus mask is given: a white cell has one nucleus, and a
    nucleus still tells two cells apart where they touch along a wide front with no neck.
    Lobed nuclei (neutrophils) often come out as several fragments, so fragments at most
    ``nucleus_gap_px`` apart join into one marker; nuclei of neighbouring cells are kept
    further apart by their cytoplasm. Lobes further apart still cut their cell in parts, which
    join again where the cut is wider than ``WIDE_CUT_RATIO`` times the smaller part's
    equivalent diameter: a cut across one cell, not a neck between two. Cells with no nucleus
    pixel, and every cell when no nucleus mask is given, are seeded by h-maxima of the distance
    transform: maxima standing at least ``h`` px above the saddle that joins them to a higher
    one. A small bleb on a cell's edge rises little above its neck and stays part of the cell,
    while two overlapping cells rise by their radius minus the neck half-width. This criterion
    is scale-free, unlike ``peak_local_max`` whose min_distance/footprint would have to match
    the cell size.

    Args:
        cell_mask: boolean (H, W) whole-cell mask.
        nucleus_mask: optional boolean (H, W) nucleus mask.
        method: "watershed" or "components".
        min_size: objects with fewer pixels are removed (set to background).
        h: minimum height, in px, of a distance maximum that seeds its own cell.
        nucleus_gap_px: nucleus fragments about this close or closer are one nucleus.
        wide_cut_ratio: parts whose cut is wider than this times the smaller one's equivalent
            diameter join again (with a nucleus mask); ``math.inf`` keeps every cut.
    Returns:
        int32 (H, W) instance labels 1..N, 0 background.
    """
    cell = as_mask(cell_mask, "cell_mask")
    nucleus = None if nucleus_mask is None else as_mask(nucleus_mask, "nucleus_mask")
    if nucleus is not None and nucleus.shape != cell.shape:
        raise ValueError(f"nucleus_mask shape {nucleus.shape} differs from cell_mask shape "
                         f"{cell.shape}; expected equal shapes")
    if method == "components":
        instances = connected_components(cell, connectivity=2)
    elif method == "watershed":
        instances = _watershed(cell, nucleus, h, nucleus_gap_px, wide_cut_ratio)
    else:
        raise ValueError(f"method={method!r}; expected 'watershed' or 'components'")
    sizes = np.bincount(instances.ravel())
    small = sizes < min_size
    small[0] = False
    instances[small[instances]] = 0
    return relabel_sequential(instances)[0].astype(np.int32)
