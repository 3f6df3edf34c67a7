"""Seeded synthetic blood smears with exact masks: test fixtures and the no-data training fallback.

Each smear has a pale yellow-to-pink background, red cells (pink discs with a paler centre,
labelled background like in the real ground truth) and white cells: a pale purple cytoplasm
ellipse holding a dark purple nucleus made of one to three elliptic lobes. The label map and
the instance map come from the same ellipses that paint the image, so they are exact.
``touching_cells`` makes masks only (no image) of clusters of overlapping white cells with a
known count and a set overlap, to measure how well instance separation counts them.
numpy and scipy only.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

SYNTHETIC_NOTE = "SYNTHETIC data (generated smears, not real microscopy)"

# The nucleus is clipped to this fraction of the cell's radii, so a rim of cytoplasm always
# surrounds it.
_NUCLEUS_LIMIT = 0.85
# Touching cells overlap their neighbour by 3-12% of the two radii along the line joining them:
# enough for a pixel-connected union at 120 px, little enough to keep both nuclei visible.
_TOUCH_OVERLAP = (0.88, 0.97)
_MAX_TRIES = 300
_CLUSTER_TRIES = 50
_EIGHT = np.ones((3, 3), bool)


@dataclasses.dataclass(frozen=True)
class Ellipse:
    """An ellipse in pixel coordinates; ``angle`` (radians) turns the ``a`` axis from the rows."""

    cy: float
    cx: float
    a: float
    b: float
    angle: float = 0.0

    def radius2(self, yy: np.ndarray, xx: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Squared normalised radius: <= 1 inside the ellipse with semi-axes scaled by ``scale``."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        dy, dx = yy - self.cy, xx - self.cx
        u = (c * dy + s * dx) / (self.a * scale)
        v = (-s * dy + c * dx) / (self.b * scale)
        return u * u + v * v

    def reach(self, dy: float, dx: float) -> float:
        """Distance from the centre to the boundary along the unit direction (dy, dx)."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        u, v = c * dy + s * dx, -s * dy + c * dx
        return float(1.0 / np.hypot(u / self.a, v / self.b))


@dataclasses.dataclass(frozen=True)
class WhiteCell:
    """One white cell: its cytoplasm outline and the lobes whose union is its nucleus."""

    body: Ellipse
    lobes: tuple[Ellipse, ...]


def synthetic_instances(
    size: int | tuple[int, int] = 128, n_white: int = 1, seed: int = 0, touching: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic smear with its label map and white-cell instance map.

    Args:
        size: image side, or (height, width); 120-300 px looks most like the real data.
        n_white: number of white cells, all fully inside the image.
        seed: the same seed always gives the same smear.
        touching: place each white cell so it overlaps one earlier cell slightly (their union is
            one connected component); otherwise cells keep at least 2 px apart.

    Returns:
        (image, label_map, instances): uint8 (H, W, 3) RGB; uint8 (H, W) with 0 background,
        1 cytoplasm, 2 nucleus; int32 (H, W) with 0 background and 1..n_white, one id per cell.
        Where cells overlap, the later cell is painted on top and owns the pixels.

    Raises:
        ValueError: a bad size or count, or cells that cannot fit without overlapping.
    """
    h, w = (size, size) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if min(h, w) < 16:
        raise ValueError(f"size={size}: expected at least 16 px per side")
    if n_white < 0:
        raise ValueError(f"n_white={n_white}: expected >= 0")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    image = _background(rng, h, w)
    _paint_red_cells(image, rng, yy, xx)
    cells = _layout(rng, h, w, n_white, touching)
    labels = np.zeros((h, w), np.uint8)
    instances = np.zeros((h, w), np.int32)
    for index, cell in enumerate(cells, start=1):
        body, nucleus = _paint_white_cell(image, rng, yy, xx, cell)
        labels[body] = 1
        labels[nucleus] = 2
        instances[body] = index

    # Optics soften every edge a little; the camera adds grain.
    image = ndi.gaussian_filter(image, sigma=(0.6, 0.6, 0))
    image += rng.normal(0.0, 0.012, image.shape)
    image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return image, labels, instances


def synthetic_smear(
    size: int | tuple[int, int] = 128, n_white: int = 1, seed: int = 0, touching: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(image, label_map) of ``synthetic_instances`` with the same arguments."""
    image, labels, _ = synthetic_instances(size, n_white, seed, touching)
    return image, labels


def synthetic_dataset(
    n: int, size: int | tuple[int, int] = 128, seed: int = 0, n_white: tuple[int, int] = (1, 1)
) -> list[dict]:
    """``n`` examples shaped like the real data's: image, mask, label (-1) and image_id.

    Example ``i`` depends only on (seed, i), so a longer set starts with the shorter one.

    Args:
        n_white: inclusive (low, high) range of white cells per image.
    """
    examples = []
    for i, count, image_seed in _image_draws(n, seed, n_white, "n_white", least=0):
        image, mask = synthetic_smear(size, count, image_seed)
        examples.append(
            {"image": image, "mask": mask, "label": -1, "image_id": f"synthetic-{i:04d}"}
        )
    return examples


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
    Raises:
        ValueError: arguments out of range, or no layout found (the message says what to change).
    """
    if n_cells < 1 or not 0.0 <= overlap <= 0.5:
        raise ValueError(f"n_cells={n_cells}, overlap={overlap}: expected n_cells >= 1 and "
                         "0 <= overlap <= 0.5 (at 0.6 a cell hides half of an equal one)")
    if not 3.0 <= radius[0] <= radius[1] or not 0.0 < aspect[0] <= aspect[1] <= 1.0:
        raise ValueError(f"radius={radius}, aspect={aspect}: expected 3 <= low <= high px and "
                         "0 < low <= high <= 1")
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
                body = _place(rng, size, size, shape, bodies, ratios,
                              lambda b: _leaves_half_of_each(b, owner, areas, yy, xx))
            else:
                body = Ellipse(*(size / 2 + rng.uniform(-0.05, 0.05, 2) * size), *shape)
                body = body if _fits(body, [], size, size, ratios) else None
            if body is None:
                break
            inside = body.radius2(yy, xx) <= 1.0
            owner[inside] = len(bodies) + 1
            areas.append(int(np.count_nonzero(inside)))
            bodies.append(body)
        else:
            cells = tuple(WhiteCell(body, _nucleus(rng, body)) for body in bodies)
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
        kwargs: ``size``, ``radius``, ``aspect`` of ``touching_cells``.
    """
    return [touching_cells(count, overlap, seed=image_seed, **kwargs)
            for _, count, image_seed in _image_draws(n_images, seed, n_cells, "n_cells", least=1)]


def _image_draws(n: int, seed: int, counts: tuple[int, int], name: str,
                 least: int) -> list[tuple[int, int, int]]:
    """(index, cell count, image seed) of each image of a set, drawn from (seed, index) alone."""
    low, high = counts
    if not least <= low <= high:
        raise ValueError(f"{name}={counts}: expected {least} <= low <= high")
    draws = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        draws.append((i, int(rng.integers(low, high + 1)), int(rng.integers(2**31))))
    return draws


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
        nucleus = lobes & (cell.body.radius2(yy, xx, _NUCLEUS_LIMIT) <= 1.0)
        labels[body] = 1
        labels[nucleus] = 2
        instances[body] = index
    return labels, instances


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Yellowish-to-pinkish plasma with a slow illumination gradient, float (H, W, 3) in [0, 1]."""
    yellow, pink = np.array([0.99, 0.96, 0.72]), np.array([0.97, 0.89, 0.88])
    colour = yellow + rng.uniform(0.0, 1.0) * (pink - yellow)
    shading = ndi.gaussian_filter(rng.normal(0.0, 1.0, (h, w)), sigma=min(h, w) / 6)
    shading *= 0.025 / max(float(np.abs(shading).max()), 1e-9)
    return np.clip(colour[None, None, :] + shading[..., None], 0.0, 1.0)


def _soft_inside(r2: np.ndarray, radius: float) -> np.ndarray:
    """Anti-aliased coverage: 1 inside, 0 outside, a one-pixel ramp centred on the boundary."""
    return np.clip((1.0 - np.sqrt(r2)) * radius + 0.5, 0.0, 1.0)


def _paint_red_cells(
    image: np.ndarray, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray
) -> None:
    h, w = yy.shape
    radius = min(h, w) * rng.uniform(0.09, 0.12)
    count = int(rng.uniform(0.2, 0.45) * h * w / (np.pi * radius**2))
    tint = np.array([0.90, 0.60, 0.60]) + rng.uniform(-0.04, 0.04, 3)
    for _ in range(count):
        centre = rng.uniform(-radius, h + radius), rng.uniform(-radius, w + radius)
        axes = radius * rng.uniform(0.9, 1.1), radius * rng.uniform(0.85, 1.0)
        disc = Ellipse(*centre, *axes, rng.uniform(0, np.pi))
        r2 = disc.radius2(yy, xx)
        # Biconcave discs are thinner in the middle, so less stain shows there (central pallor).
        density = 0.55 * _soft_inside(r2, disc.b) * (0.45 + 0.55 * np.clip(r2, 0.0, 1.0))
        image += density[..., None] * (tint - image)


def _layout(rng: np.random.Generator, h: int, w: int, n: int, touching: bool) -> list[WhiteCell]:
    """Place ``n`` white cells inside the image, shrinking them until a placement is found."""
    shrink = 1.0
    for _ in range(20):
        cells = _try_layout(rng, h, w, n, touching, shrink)
        if cells is not None:
            return cells
        shrink *= 0.9
    raise ValueError(
        f"cannot fit {n} white cells in a {h}x{w} image; use a larger size or fewer cells"
    )


def _try_layout(
    rng: np.random.Generator, h: int, w: int, n: int, touching: bool, shrink: float
) -> list[WhiteCell] | None:
    bodies: list[Ellipse] = []
    mean_radius = shrink * min(h, w) * 0.26 / np.sqrt(max(n, 1))
    for _ in range(n):
        a = max(mean_radius * rng.uniform(0.85, 1.1), 5.0)
        shape = (a, a * rng.uniform(0.8, 1.0), rng.uniform(0, np.pi))
        body = _place(rng, h, w, shape, bodies, _TOUCH_OVERLAP if touching else None)
        if body is None:
            return None
        bodies.append(body)
    return [WhiteCell(body, _nucleus(rng, body)) for body in bodies]


def _place(
    rng: np.random.Generator, h: int, w: int, shape: tuple[float, float, float],
    bodies: list[Ellipse], ratios: tuple[float, float] | None,
    accept: Callable[[Ellipse], bool] | None = None,
) -> Ellipse | None:
    """A cell of ``shape`` (a, b, angle) placed among ``bodies`` (and passing ``accept``), or
    None after _MAX_TRIES proposals."""
    for _ in range(_MAX_TRIES):
        body = _propose(rng, h, w, shape, bodies, ratios)
        if _fits(body, bodies, h, w, ratios) and (accept is None or accept(body)):
            return body
    return None


def _propose(
    rng: np.random.Generator, h: int, w: int, shape: tuple[float, float, float],
    bodies: list[Ellipse], ratios: tuple[float, float] | None,
) -> Ellipse:
    """Anywhere in the image, or (``ratios`` given) against a random earlier cell, at a centre
    distance of ``ratios`` (low, high) times the sum of the two centre-to-edge reaches."""
    a, b, angle = shape
    if ratios is None or not bodies:
        return Ellipse(rng.uniform(a + 1, h - a - 2), rng.uniform(a + 1, w - a - 2), a, b, angle)
    parent = bodies[rng.integers(len(bodies))]
    theta = rng.uniform(0, 2 * np.pi)
    dy, dx = np.sin(theta), np.cos(theta)
    probe = Ellipse(0.0, 0.0, a, b, angle)
    distance = (parent.reach(dy, dx) + probe.reach(-dy, -dx)) * rng.uniform(*ratios)
    return Ellipse(parent.cy + distance * dy, parent.cx + distance * dx, a, b, angle)


def _fits(body: Ellipse, bodies: list[Ellipse], h: int, w: int,
          ratios: tuple[float, float] | None) -> bool:
    """Inside the image; apart from every earlier cell or, with ``ratios``, no closer to any
    than ``ratios[0]`` times the sum of their reaches along the line joining them."""
    if not (body.a + 1 <= body.cy <= h - body.a - 2 and body.a + 1 <= body.cx <= w - body.a - 2):
        return False
    for other in bodies:
        dy, dx = body.cy - other.cy, body.cx - other.cx
        distance = float(np.hypot(dy, dx))
        if ratios is not None:
            if distance == 0.0:
                return False
            uy, ux = dy / distance, dx / distance
            reach = other.reach(uy, ux) + body.reach(-uy, -ux)
            if distance < ratios[0] * reach - 1e-9:
                return False
        elif distance < body.a + other.a + 2.0:
            # Bounding circles 2 px apart: no two cells' pixels touch, even diagonally.
            return False
    return True


def _nucleus(rng: np.random.Generator, body: Ellipse) -> tuple[Ellipse, ...]:
    """One round lobe (lymphocyte-like), two (band/monocyte-like) or three (neutrophil-like)."""
    r = body.b
    count = int(rng.choice([1, 2, 3], p=[0.4, 0.3, 0.3]))
    if count == 1:
        off, turn = rng.uniform(0, 0.2 * r), rng.uniform(0, 2 * np.pi)
        size = r * rng.uniform(0.55, 0.72)
        return (Ellipse(body.cy + off * np.sin(turn), body.cx + off * np.cos(turn), size,
                        size * rng.uniform(0.8, 1.0), rng.uniform(0, np.pi)),)
    base, spread = rng.uniform(0, 2 * np.pi), rng.uniform(1.2, 1.8)
    ring = r * rng.uniform(0.3, 0.42)
    lobes = []
    for j in range(count):
        phi = base + (j - (count - 1) / 2) * spread * 2 / count
        long_axis = r * rng.uniform(0.3, 0.42)
        # Lobes lie along the ring (tangential), like a segmented nucleus.
        lobes.append(Ellipse(body.cy + ring * np.sin(phi), body.cx + ring * np.cos(phi), long_axis,
                             long_axis * rng.uniform(0.6, 0.85), phi + np.pi / 2))
    return tuple(lobes)


def _paint_white_cell(
    image: np.ndarray, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cell: WhiteCell
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one cell over ``image``; returns its (whole cell, nucleus) boolean masks."""
    h, w = yy.shape
    r2 = cell.body.radius2(yy, xx)
    body = r2 <= 1.0
    lobe_r2 = np.min([lobe.radius2(yy, xx) for lobe in cell.lobes], axis=0)
    core_r2 = cell.body.radius2(yy, xx, _NUCLEUS_LIMIT)
    nucleus = (lobe_r2 <= 1.0) & (core_r2 <= 1.0)

    cytoplasm = np.array([0.80, 0.72, 0.88]) + rng.uniform(-0.05, 0.05, 3)
    granules = ndi.gaussian_filter(rng.normal(0.0, 1.0, (h, w)), 1.0)[..., None] * 0.06
    rim = np.clip((np.sqrt(r2) - 0.9) / 0.1, 0.0, 1.0)[..., None] * 0.08  # darker membrane
    alpha = _soft_inside(r2, cell.body.b)[..., None]
    image += alpha * (cytoplasm + granules - rim - image)

    chromatin = np.array([0.42, 0.20, 0.52]) + rng.uniform(-0.06, 0.06, 3)
    clumps = ndi.gaussian_filter(rng.normal(0.0, 1.0, (h, w)), 1.5)[..., None] * 0.12
    # Coverage of the clipped lobes: the softer of the lobe edge and the clipping edge.
    lobe_alpha = np.minimum(
        _soft_inside(lobe_r2, min(lobe.b for lobe in cell.lobes)),
        _soft_inside(core_r2, cell.body.b * _NUCLEUS_LIMIT),
    )[..., None]
    image += lobe_alpha * (chromatin + clumps - image)
    return body, nucleus
