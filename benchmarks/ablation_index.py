"""One table of every ablation report: each variant's paired difference from its baseline.

    python -m benchmarks.ablation_index [RESULTS_DIR] [--out FILE]

Reads every ``*/ablation.json`` below RESULTS_DIR (default ``benchmarks/results``), as written
by ``python -m benchmarks.ablation``, and writes FILE (default RESULTS_DIR/ABLATIONS.md): one row
per variant with its report, its baseline, the recipe settings that differ, the folds both
have, and the paired difference (mean ± sd over those folds) of whole-cell Dice, nucleus Dice and
AP@0.5; then the variants whose own 5-fold mean whole-cell Dice is highest. Each report's
baseline is the recipe of its day, so rows of different reports compare with their own
baseline only. A folder without reports or an unreadable report exits 1 naming it, and nothing
is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from benchmarks.ablation import JSON_NAME
from unet_keras.cv import CVError
from unet_keras.image_io import atomic_write_text

INDEX_NAME = "ABLATIONS.md"
DIFFERENCES = (("whole_cell_dice", "whole-cell Dice"), ("nucleus_dice", "nucleus Dice"),
               ("ap50", "AP@0.5"))
TOP = 5  # variants listed by their own 5-fold mean whole-cell Dice


def read_reports(results: Path) -> tuple[list[dict], list[tuple]]:
    """Every report below ``results``, sorted by folder name, as (one row per variant against
    its baseline, one (whole-cell Dice, nucleus Dice, label, report) per 5-fold entry)."""
    paths = sorted(results.glob(f"*/{JSON_NAME}"))
    if not paths:
        raise CVError(f"{results}: no */{JSON_NAME} found; expected a folder of "
                      "`python -m benchmarks.ablation` reports")
    rows, five_fold = [], []
    for path in paths:
        try:
            report = json.loads(path.read_text())
            for variant in report["variants"]:
                mean = variant.get("mean") or {}
                if len(variant.get("folds", [])) == 5 and "whole_cell_dice" in mean:
                    five_fold.append((mean["whole_cell_dice"], mean.get("nucleus_dice"),
                                      variant["label"], path.parent.name))
            rows += [{"report": path.parent, "baseline": report["baseline"],
                      "label": variant["label"], "settings": _settings(variant),
                      "folds": variant["vs_baseline"]["whole_cell_dice"]["folds"],
                      "differences": [_difference(variant, key) for key, _ in DIFFERENCES]}
                     for variant in report["variants"][1:]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CVError(f"{path}: cannot read the ablation report ({err!r}); expected "
                          "`python -m benchmarks.ablation` output") from err
    return rows, five_fold


def _difference(variant: dict, key: str) -> str:
    paired = variant["vs_baseline"].get(key)
    if not paired or paired.get("mean") is None:
        return "-"
    if len(paired["folds"]) < 2:
        return f"{paired['mean']:+.4f}"
    return f"{paired['mean']:+.4f} ± {paired['sd']:.4f}"


def _settings(variant: dict) -> str:
    differs = variant.get("differs_from_baseline") or {}
    return ", ".join(f"{k} {v}" for k, v in differs.items()) or "-"


def render(rows: list[dict], five_fold: list[tuple], out: Path) -> str:
    table = []
    for row in rows:
        link = Path(os.path.relpath(row["report"] / "ABLATION.md", out.parent)).as_posix()
        table.append(f"| [{row['report'].name}]({link}) | {row['baseline']} | {row['label']} | "
                     f"{row['settings']} | {','.join(map(str, row['folds']))} | "
                     + " | ".join(row["differences"]) + " |")
    lines = [
        "# Every ablation, one row per variant",
        "",
        "Written by `python -m benchmarks.ablation_index` from the `ablation.json` of each "
        "report below this folder. Each difference is paired fold by fold against the report's "
        "own baseline (mean ± sd over the folds both have); baselines are the recipe of their "
        "day, so compare a row with its own baseline only.",
        "",
        "| report | baseline | variant | settings that differ | folds | "
        + " | ".join(f"paired {title}" for _, title in DIFFERENCES) + " |",
        "|---|---|---|---|---|" + "---|" * len(DIFFERENCES),
        *table,
        "",
        f"Highest 5-fold mean whole-cell Dice of any variant or baseline ({len(five_fold)} "
        "5-fold entries; the same cross-validation can appear in several reports):",
        "",
        "| whole-cell Dice | nucleus Dice | variant | report |",
        "|---|---|---|---|",
    ]
    seen = set()
    for dice, nucleus, label, name in sorted(five_fold, reverse=True):
        if (round(dice, 6), label) in seen:
            continue
        seen.add((round(dice, 6), label))
        nucleus_text = "-" if nucleus is None else f"{nucleus:.4f}"
        lines.append(f"| {dice:.4f} | {nucleus_text} | {label} | {name} |")
        if len(seen) == TOP:
            break
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="benchmarks/results",
                        help="folder of ablation reports; default benchmarks/results")
    parser.add_argument("--out", help=f"the table to write; default RESULTS/{INDEX_NAME}")
    args = parser.parse_args(argv)
    results = Path(args.results).resolve()
    out = Path(args.out).resolve() if args.out else results / INDEX_NAME
    try:
        text = render(*read_reports(results), out)
    except CVError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
