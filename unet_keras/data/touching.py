"""Masks of clusters of touching, overlapping white cells with a known count and overlap.

``touching_cells`` makes masks only (no image), to measure how well instance separation counts
cells (``examples/touching_cells_report.py``, tests/test_touching.py). numpy and scipy only.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage as ndi

from unet_keras.data.cells import (NUCLEUS_LIMIT, Ellipse, WhiteCell, fits, image_draws,
                                   nucleus_lobes, place)

_CLUSTER_TRIES = 50
_EIGHT = np.ones((3, 3), bool)


@dataclasses.dataclass(frozen=True)
class CellCluster:
    """Touching, overlapping white cells with exact masks; made by ``touching_cells``."""

    label_map: np.ndarray  # uint8 (H, W): 0 background, 1 cytoplasm, 2 nucleus
    instances: np.ndarray  # int32 (H, W): 0 background, 1..count, one id per cell
    cells: tuple[WhiteCell, ...]  # in painting order: a later cell covers an earlier one
    overlap: float

    @property
    def count(self) -> int:
        return len(self.cells)


def touching_cells(
    n_cells: int, overlap: float, size: int = 160, seed: int = 0,
    radius: tuple[float, float] = (14.0, 20.0), aspect: tuple[float, float] = (0.8, 1.0),
    lobe_gap: tuple[float, float] | None = None,
) -> CellCluster:
    """Masks of one cluster of ``n_cells`` white cells, each overlapping a neighbour by ``overlap``.

    The first cell sits near the image centre; each later one is put against a random earlier
    cell, in a random direction, with the centres ``(1 - overlap) * (reach_1 + reach_2)`` apart,
    a reach being the distance from a centre to its cell's edge along the line joining the
    centres; no other cell comes closer than that either. For two discs of radius r, overlap
    0.25 puts the centres 1.5 r apart and 0 makes them tangent. From an overlap of about 0.05
    up the cells form one connected cluster: connected components find one object. Masks are
    digital (no anti-aliasing) and painted in order, a later cell covering an earlier one,
    nucleus included (1-3 lobes, as in ``synthetic_instances``). Every cell keeps at least half
    of its area visible, in one piece, so the image holds exactly ``n_cells`` cells.

    Args:
        n_cells: number of cells, >= 1.
        overlap: in [0, 0.5]; beyond, few layouts qualify (at 0.6 a cell hides half of an
            equal cell it covers).
        size: image side in px.
        seed: the same seed always gives the same cluster.
        radius: (low, high) range of each cell's long semi-axis, px.
        aspect: (low, high) range of short / long semi-axis; (1, 1) gives discs.
        lobe_gap: None (lobes touch), or the (low, high) range of the gaps between a nucleus's
            lobes, times the cell's short semi-axis (``cells.nucleus_lobes``).
    Raises:
        ValueError: arguments out of range, or no layout found (the message says what to change).
    """
    if n_cells < 1 or not 0.0 <= overlap <= 0.5:
        raise ValueError(f"n_cells={n_cells}, overlap={overlap}: expected n_cells >= 1 and "
                         "0 <= overlap <= 0.5 (at 0.6 a cell hides half of an equal one)")
    if not 3.0 <= radius[0] <= radius[1] or not 0.0 < aspect[0] <= aspect[1] <= 1.0:
        raise ValueError(f"radius={radius}, aspect={aspect}: expected 3 <= low <= high px and "
                         "0 < low <= high <= 1")
    if lobe_gap is not None and not 0.0 <= lobe_gap[0] <= lobe_gap[1]:
        raise ValueError(f"lobe_gap={lobe_gap}: expected None or 0 <= low <= high (times the "
                         "cell's short semi-axis)")
    if size < 2 * radius[1] + 4:
        raise ValueError(f"size={size}: expected at least 2 * radius + 4 = {2 * radius[1] + 4:g} px")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    ratios = (1.0 - overlap, 1.0 - overlap)
    for _ in range(_CLUSTER_TRIES):
        bodies: list[Ellipse] = []
        owner = np.zeros((size, size), np.int32)  # which cell shows at each pixel so far
        areas: list[int] = []
        for _ in range(n_cells):
            a = rng.uniform(*radius)
            shape = (a, a * rng.uniform(*aspect), rng.uniform(0, np.pi))
            if bodies:
                body = place(rng, size, size, shape, bodies, ratios,
                              lambda b: _leaves_half_of_each(b, owner, areas, yy, xx))
            else:
                body = Ellipse(*(size / 2 + rng.uniform(-0.05, 0.05, 2) * size), *shape)
                body = body if fits(body, [], size, size, ratios) else None
            if body is None:
                break
            inside = body.radius2(yy, xx) <= 1.0
            owner[inside] = len(bodies) + 1
            areas.append(int(np.count_nonzero(inside)))
            bodies.append(body)
        else:
            cells = tuple(WhiteCell(body, nucleus_lobes(rng, body, lobe_gap))
                          for body in bodies)
            return CellCluster(*_paint_masks(cells, yy, xx), cells, overlap)
    raise ValueError(f"found no layout of {n_cells} cells of radius {radius} px overlapping by "
                     f"{overlap} in a {size}x{size} image after {_CLUSTER_TRIES} tries; use a "
                     "larger size, fewer or smaller cells, or less overlap")


def touching_cells_set(
    n_images: int, overlap: float, seed: int = 0, n_cells: tuple[int, int] = (2, 6), **kwargs
) -> list[CellCluster]:
    """``n_images`` clusters from ``touching_cells`` at one overlap level.

    Image ``i``'s cell count and layout seed depend only on (seed, i), so sets at different
    overlap levels hold the same counts, image by image.

    Args:
        n_cells: inclusive (low, high) range of cells per image.
        kwargs: ``size``, ``radius``, ``aspect``, ``lobe_gap`` of ``touching_cells``.
    """
    return [touching_cells(count, overlap, seed=image_seed, **kwargs)
            for _, count, image_seed in image_draws(n_images, seed, n_cells, "n_cells", least=1)]


def _leaves_half_of_each(body: Ellipse, owner: np.ndarray, areas: list[int], yy: np.ndarray,
                         xx: np.ndarray) -> bool:
    """Whether painting ``body`` over the cells of ``owner`` (ids 1.., full areas ``areas``)
    leaves each of them at least half its area, in one 8-connected piece."""
    under = body.radius2(yy, xx) <= 1.0
    for index in np.unique(owner[under]):
        if index == 0:
            continue
        left = (owner == index) & ~under
        if np.count_nonzero(left) < areas[index - 1] / 2 or ndi.label(left, _EIGHT)[1] != 1:
            return False
    return True


def _paint_masks(
    cells: tuple[WhiteCell, ...], yy: np.ndarray, xx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(label map, instances) of ``cells`` painted in order, a later cell over an earlier one."""
    labels = np.zeros(yy.shape, np.uint8)
    instances = np.zeros(yy.shape, np.int32)
    for index, cell in enumerate(cells, start=1):
        body = cell.body.radius2(yy, xx) <= 1.0
        lobes = np.min([lobe.radius2(yy, xx) for lobe in cell.lobes], axis=0) <= 1.0
        nucleus = lobes & (cell.body.radius2(yy, xx, NUCLEUS_LIMIT) <= 1.0)
        labels[body] = 1
        labels[nucleus] = 2
        instances[body] = index
    return labels, instances
