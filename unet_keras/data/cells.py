"""Shapes of synthetic white cells: elliptic bodies, lobed nuclei, and their placement.

Shared by the synthetic smears (``unet_keras.data.synthetic``) and the touching-cell clusters
(``unet_keras.data.touching``). numpy only.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

# The nucleus is clipped to this fraction of the cell's radii, so a rim of cytoplasm always
# surrounds it.
NUCLEUS_LIMIT = 0.85
MAX_TRIES = 300  # placement proposals per cell


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


def place(
    rng: np.random.Generator, h: int, w: int, shape: tuple[float, float, float],
    bodies: list[Ellipse], ratios: tuple[float, float] | None,
    accept: Callable[[Ellipse], bool] | None = None,
) -> Ellipse | None:
    """A cell of ``shape`` (a, b, angle) placed among ``bodies`` (and passing ``accept``), or
    None after MAX_TRIES proposals."""
    for _ in range(MAX_TRIES):
        body = _propose(rng, h, w, shape, bodies, ratios)
        if fits(body, bodies, h, w, ratios) and (accept is None or accept(body)):
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


def fits(body: Ellipse, bodies: list[Ellipse], h: int, w: int,
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


def nucleus_lobes(rng: np.random.Generator, body: Ellipse,
                  lobe_gap: tuple[float, float] | None = None) -> tuple[Ellipse, ...]:
    """One round lobe (lymphocyte-like), two (band/monocyte-like) or three (neutrophil-like).

    By default the lobes of a 2- or 3-lobed nucleus touch or overlap. With ``lobe_gap`` (low,
    high) they lie apart, as a segmented neutrophil's often do: smaller lobes on a wider ring,
    each gap to the next lobe along the ring drawn in that range, in units of the cell's short
    semi-axis (Dataset 1's lobed nuclei: about 0.05-0.4; a gap the ring cannot hold is narrowed).
    """
    r = body.b
    count = int(rng.choice([1, 2, 3], p=[0.4, 0.3, 0.3]))
    if count == 1:
        off, turn = rng.uniform(0, 0.2 * r), rng.uniform(0, 2 * np.pi)
        size = r * rng.uniform(0.55, 0.72)
        return (Ellipse(body.cy + off * np.sin(turn), body.cx + off * np.cos(turn), size,
                        size * rng.uniform(0.8, 1.0), rng.uniform(0, np.pi)),)
    if lobe_gap is not None:
        return _lobes_apart(rng, body, count, lobe_gap)
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


def _lobes_apart(rng: np.random.Generator, body: Ellipse, count: int,
                 lobe_gap: tuple[float, float]) -> tuple[Ellipse, ...]:
    """``count`` lobes along a ring, each ``lobe_gap`` (times the short semi-axis) from the next.

    A lobe's long axis lies along the ring, so two neighbours' centres lie, as a chord of the
    ring, their reaches along the chord plus the gap apart; the chord turns from each lobe's
    axis by half the angle it spans, found by a few fixed-point steps. The ring and the lobes
    together stay within 0.8 of the short semi-axis, inside ``NUCLEUS_LIMIT``.
    """
    r = body.b
    ring = r * rng.uniform(0.4, 0.5)
    longs = r * rng.uniform(0.2, 0.3, count)
    shapes = [Ellipse(0.0, 0.0, a, a * aspect) for a, aspect in
              zip(longs, rng.uniform(0.6, 0.85, count))]
    gaps = r * rng.uniform(*lobe_gap, count - 1)
    steps = []
    for j in range(count - 1):
        step = 0.0
        for _ in range(4):
            turn = step / 2
            along = (np.cos(turn), np.sin(turn))  # turn radians from the lobes' long axes
            chord = shapes[j].reach(*along) + shapes[j + 1].reach(*along) + gaps[j]
            step = min(2 * np.arcsin(min(1.0, chord / (2 * ring))), 2 * np.pi / count)
        steps.append(step)
    angles = rng.uniform(0, 2 * np.pi) + np.concatenate([[0.0], np.cumsum(steps)])
    angles -= (angles[-1] - angles[0]) / 2
    return tuple(Ellipse(body.cy + ring * np.sin(phi), body.cx + ring * np.cos(phi), shape.a,
                         shape.b, phi + np.pi / 2) for phi, shape in zip(angles, shapes))


def image_draws(n: int, seed: int, counts: tuple[int, int], name: str,
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
