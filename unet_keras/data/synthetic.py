"""Seeded synthetic blood smears with exact masks: test fixtures and the no-data training fallback.

Each smear has a pale yellow-to-pink background, red cells (pink discs with a paler centre,
labelled background like in the real ground truth) and white cells: a pale purple cytoplasm
ellipse holding a dark purple nucleus made of one to three elliptic lobes. The label map and
the instance map come from the same ellipses that paint the image, so they are exact.
Cell shapes and their placement: ``unet_keras.data.cells``; clusters of touching cells with
known counts: ``unet_keras.data.touching``. numpy and scipy only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from unet_keras.data.cells import (NUCLEUS_LIMIT, Ellipse, WhiteCell, image_draws,
                                   nucleus_lobes, place)

SYNTHETIC_NOTE = "SYNTHETIC data (generated smears, not real microscopy)"

# Touching cells overlap their neighbour by 3-12% of the two radii along the line joining them:
# enough for a pixel-connected union at 120 px, little enough to keep both nuclei visible.
_TOUCH_OVERLAP = (0.88, 0.97)


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
    for i, count, image_seed in image_draws(n, seed, n_white, "n_white", least=0):
        image, mask = synthetic_smear(size, count, image_seed)
        examples.append(
            {"image": image, "mask": mask, "label": -1, "image_id": f"synthetic-{i:04d}"}
        )
    return examples


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
        body = place(rng, h, w, shape, bodies, _TOUCH_OVERLAP if touching else None)
        if body is None:
            return None
        bodies.append(body)
    return [WhiteCell(body, nucleus_lobes(rng, body)) for body in bodies]


def _paint_white_cell(
    image: np.ndarray, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cell: WhiteCell
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one cell over ``image``; returns its (whole cell, nucleus) boolean masks."""
    h, w = yy.shape
    r2 = cell.body.radius2(yy, xx)
    body = r2 <= 1.0
    lobe_r2 = np.min([lobe.radius2(yy, xx) for lobe in cell.lobes], axis=0)
    core_r2 = cell.body.radius2(yy, xx, NUCLEUS_LIMIT)
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
        _soft_inside(core_r2, cell.body.b * NUCLEUS_LIMIT),
    )[..., None]
    image += lobe_alpha * (chromatin + clumps - image)
    return body, nucleus
