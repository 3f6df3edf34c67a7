"""How well instance separation counts touching cells: connected components vs watershed.

Seeded synthetic clusters of 2-6 white cells with exact masks and a known count
(``unet_keras.data.touching.touching_cells_set``), at several overlap levels. Each method counts
the cells of the exact mask, so the figures are what postprocessing makes of a perfect pixel
prediction. Prints the Markdown table of docs/touching_cells.md:

    python examples/touching_cells_report.py
    python examples/touching_cells_report.py --images 50 --overlaps 0.1 0.3 --radius 30 40 --size 256
"""

from __future__ import annotations

import argparse
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
OVERLAPS = (0.1, 0.2, 0.3, 0.4, 0.5)


def count_errors(overlaps: Sequence[float] = OVERLAPS, n_images: int = 200, seed: int = 0,
                 **cluster_args) -> list[dict]:
    """One row per (overlap, method): mean absolute count error, % exact, mean signed error.

    Args:
        cluster_args: ``size``, ``radius``, ``aspect``, ``n_cells`` of ``touching_cells_set``.
    """
    rows = []
    for overlap in overlaps:
        clusters = touching_cells_set(n_images, overlap, seed, **cluster_args)
        truth = np.array([cluster.count for cluster in clusters])
        for method, separate in METHODS.items():
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
    args = parser.parse_args(argv)
    rows = count_errors(args.overlaps, args.images, args.seed, size=args.size,
                        radius=tuple(args.radius))
    print(f"{args.images} images per overlap level, 2-6 cells each, seed {args.seed}, "
          f"{args.size} px images, cell radius {args.radius[0]:g}-{args.radius[1]:g} px; "
          "mean absolute count error / % of images counted exactly\n")
    print(markdown_table(rows))
    for method in list(METHODS)[1:]:
        print(f"\n% of images counted exactly by {method}, by cells per image\n")
        print(by_count_table(rows, method))
    print("\nmean signed count error (< 0: cells merged, > 0: cells split)\n")
    for row in rows:
        print(f"  overlap {row['overlap']:.2f}  {row['method']:<28} {row['mean_error']:+.3f}")


if __name__ == "__main__":
    main()
