"""How well instance separation counts touching cells: connected components vs watershed.

Seeded synthetic clusters of 2-6 white cells with exact masks and a known count
(``unet_keras.data.touching.touching_cells_set``), at several overlap levels. Each method counts
the cells of the exact mask, so the figures are what postprocessing makes of a perfect pixel
prediction. Prints the Markdown table of docs/touching_cells.md:

    python examples/touching_cells_report.py
    python examples/touching_cells_report.py --images 50 --overlaps 0.1 0.3 --radius 30 40 --size 256
    python examples/touching_cells_report.py --radius 30 45 --size 320 --lobe-gap 0.05 0.4 \
        --cells 1 6 --cuts-kept

``--lobe-gap`` draws lobed nuclei with their lobes apart, as real neutrophils' often are;
``--cuts-kept`` adds a column without the join of wide cuts (``separate_instances``'s
``wide_cut_ratio``), to show what that join does.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, Sequence

import numpy as np

from unet_keras.data.touching import touching_cells_set
from unet_keras.separation import separate_instances

# Method name -> label map (0 background, 1 cytoplasm, 2 nucleus) -> instance labels.
METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "connected components": lambda labels: separate_instances(labels > 0, method="components"),
    "watershed": lambda labels: separate_instances(labels > 0),
    "watershed, nucleus markers": lambda labels: separate_instances(labels > 0, labels == 2),
}
CUTS_KEPT = "nucleus markers, cuts kept"
OVERLAPS = (0.1, 0.2, 0.3, 0.4, 0.5)


def cuts_kept(labels: np.ndarray) -> np.ndarray:
    """The nucleus-marker watershed without the join of wide cuts."""
    return separate_instances(labels > 0, labels == 2, wide_cut_ratio=math.inf)


def count_errors(overlaps: Sequence[float] = OVERLAPS, n_images: int = 200, seed: int = 0,
                 methods: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None,
                 **cluster_args) -> list[dict]:
    """One row per (overlap, method): mean absolute count error, % exact, mean signed error.

    Args:
        methods: name -> label map -> instances; ``METHODS`` by default.
        cluster_args: ``size``, ``radius``, ``aspect``, ``lobe_gap``, ``n_cells`` of
            ``touching_cells_set``.
    """
    rows = []
    for overlap in overlaps:
        clusters = touching_cells_set(n_images, overlap, seed, **cluster_args)
        truth = np.array([cluster.count for cluster in clusters])
        for method, separate in (methods or METHODS).items():
            found = np.array([separate(cluster.label_map).max() for cluster in clusters])
            rows.append({
                "overlap": overlap, "method": method,
                "mean_abs_error": float(np.mean(np.abs(found - truth))),
                "exact_percent": 100.0 * float(np.mean(found == truth)),
                "mean_error": float(np.mean(found - truth)),  # < 0: cells merged
                "exact_percent_by_count": {int(n): 100.0 * float(np.mean(found[truth == n] == n))
                                           for n in np.unique(truth)},
            })
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Overlap levels down, methods across; each cell 'mean abs error / % exact'."""
    methods = list(dict.fromkeys(row["method"] for row in rows))
    lines = ["| overlap | centre distance, equal discs | " + " | ".join(methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for overlap in dict.fromkeys(row["overlap"] for row in rows):
        cells = {row["method"]: row for row in rows if row["overlap"] == overlap}
        lines.append(f"| {overlap:.2f} | {2 * (1 - overlap):.2f} r | " + " | ".join(
            f"{cells[m]['mean_abs_error']:.2f} / {cells[m]['exact_percent']:.1f} %"
            for m in methods) + " |")
    return "\n".join(lines)


def by_count_table(rows: list[dict], method: str) -> str:
    """Overlap levels down, cells per image across: % counted exactly by ``method``."""
    rows = [row for row in rows if row["method"] == method]
    counts = sorted({n for row in rows for n in row["exact_percent_by_count"]})
    lines = ["| overlap | " + " | ".join(f"{n} cells" for n in counts) + " |",
             "|---|" + "---|" * len(counts)]
    for row in rows:
        lines.append(f"| {row['overlap']:.2f} | " + " | ".join(
            f"{row['exact_percent_by_count'][n]:.0f} %" for n in counts) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="images per overlap level")
    parser.add_argument("--overlaps", type=float, nargs="+", default=list(OVERLAPS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=160, help="image side, px")
    parser.add_argument("--radius", type=float, nargs=2, default=[14.0, 20.0],
                        metavar=("LOW", "HIGH"), help="cell long semi-axis range, px")
    parser.add_argument("--cells", type=int, nargs=2, default=[2, 6], metavar=("LOW", "HIGH"),
                        help="cells per image, inclusive range (1: single cells too)")
    parser.add_argument("--lobe-gap", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="gaps between a nucleus's lobes, times the cell's short semi-axis "
                             "(default: lobes touch)")
    parser.add_argument("--cuts-kept", action="store_true",
                        help=f"add the column '{CUTS_KEPT}' (no join of wide cuts)")
    args = parser.parse_args(argv)
    methods = {**METHODS, CUTS_KEPT: cuts_kept} if args.cuts_kept else METHODS
    rows = count_errors(args.overlaps, args.images, args.seed, methods, size=args.size,
                        radius=tuple(args.radius), n_cells=tuple(args.cells),
                        lobe_gap=tuple(args.lobe_gap) if args.lobe_gap else None)
    lobes = (f"lobe gaps {args.lobe_gap[0]:g}-{args.lobe_gap[1]:g} of the short semi-axis"
             if args.lobe_gap else "lobes touching")
    print(f"{args.images} images per overlap level, {args.cells[0]}-{args.cells[1]} cells each, "
          f"seed {args.seed}, {args.size} px images, cell radius {args.radius[0]:g}-"
          f"{args.radius[1]:g} px, {lobes}; mean absolute count error / % of images counted "
          "exactly\n")
    print(markdown_table(rows))
    for method in list(methods)[1:]:
        print(f"\n% of images counted exactly by {method}, by cells per image\n")
        print(by_count_table(rows, method))
    print("\nmean signed count error (< 0: cells merged, > 0: cells split)\n")
    for row in rows:
        print(f"  overlap {row['overlap']:.2f}  {row['method']:<28} {row['mean_error']:+.3f}")


if __name__ == "__main__":
    main()
