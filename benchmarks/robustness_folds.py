"""Robustness reports of several folds, paired: ``benchmarks.robustness --colour-auto`` (or
``--scale-auto``) run once per fold into DIR/fold-k, summarised across the folds.

    python -m benchmarks.robustness_folds DIR [--variant "default, colour auto"]

Per condition and group of conditions: the mean over the folds of the plain run and of the
variant, and their difference paired by fold (mean ± sample sd); for ``--colour-auto`` the
images mapped, summed over the folds. Writes DIR/SUMMARY.md and prints it. Exits 1 naming the
file when a fold report is missing the plain run or the variant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

KEYS = ("whole_cell_dice", "nucleus_dice")


def load(root: Path) -> dict[int, dict]:
    reports = {}
    for path in sorted(root.glob("fold-*/robustness.json")):
        try:
            reports[int(path.parent.name.split("-", 1)[1])] = json.loads(path.read_text())
        except (ValueError, OSError) as err:
            raise ValueError(f"{path}: not a robustness report ({err})") from err
    if len(reports) < 2:
        raise ValueError(f"{root}: {len(reports)} fold report(s) (fold-k/robustness.json); "
                         "expected two or more")
    return reports


def summarise(reports: dict[int, dict], base: str, variant: str) -> str:
    folds = sorted(reports)
    for k in folds:
        missing = {base, variant} - set(reports[k]["models"])
        if missing:
            raise ValueError(f"fold-{k}/robustness.json: no {sorted(missing)}; expected the "
                             f"runs {base!r} and {variant!r}")
    models = {k: (reports[k]["models"][base], reports[k]["models"][variant]) for k in folds}

    def cells(get) -> list[str]:
        out = []
        for key in KEYS:
            pairs = np.array([[get(a, key), get(b, key)] for a, b in models.values()])
            if np.isnan(pairs).any():
                out += ["-"] * 3
                continue
            diff = pairs[:, 1] - pairs[:, 0]
            out += [f"{pairs[:, 0].mean():.4f}", f"{pairs[:, 1].mean():.4f}",
                    f"{diff.mean():+.4f} ± {diff.std(ddof=1):.4f}"]
        return out

    score = lambda name: lambda m, key: m["scores"][name].get(key, np.nan)  # noqa: E731
    lines = [f"# {variant} against {base}, folds {', '.join(map(str, folds))}", "",
             f"Data: {reports[folds[0]]['data_source']}. Mean over the folds' test parts; the "
             "difference is paired by fold (mean ± sample sd over folds).", "",
             "| condition | whole-cell Dice | " + variant + " | difference | nucleus Dice | "
             + variant + " | difference | images mapped |", "|---|" + "---|" * 7]
    for condition in (c["name"] for c in reports[folds[0]]["conditions"]):
        mapped = [b.get("colour", {}).get("mapped", {}).get(condition) for _, b in models.values()]
        count = (f"{sum(map(sum, mapped))}/{sum(map(len, mapped))}"
                 if all(m is not None for m in mapped) else "")
        lines.append(f"| {condition} | " + " | ".join(cells(score(condition)) + [count]) + " |")
    for group in reports[folds[0]]["models"][base]["shifted_means"]:
        row = cells(lambda m, key: m["shifted_means"][group].get(key, np.nan))
        lines.append(f"| **mean, {group.replace('_', ' ')}** | " + " | ".join(row + [""]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.robustness_folds",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="directory of fold-k/robustness.json reports")
    parser.add_argument("--base", default="default", help="the plain run's label")
    parser.add_argument("--variant", default="default, colour auto", help="the variant's label")
    args = parser.parse_args(argv)
    from unet_keras.image_io import atomic_write_text

    try:
        text = summarise(load(Path(args.dir)), args.base, args.variant)
    except ValueError as err:
        print(f"benchmarks.robustness_folds: error: {err}", file=sys.stderr)
        return 1
    atomic_write_text(Path(args.dir) / "SUMMARY.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
