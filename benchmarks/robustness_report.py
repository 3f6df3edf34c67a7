"""The report of ``benchmarks.robustness``: robustness.json, ROBUSTNESS.md, robustness.png."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

JSON_NAME, MARKDOWN_NAME, PLOT_NAME = "robustness.json", "ROBUSTNESS.md", "robustness.png"


def _cell(scores: dict) -> str:
    nucleus = f" ({scores['nucleus_dice']:.3f})" if "nucleus_dice" in scores else ""
    return f"{scores['whole_cell_dice']:.3f}{nucleus}"


def _params_text(condition: dict) -> str:
    """``k=v, ...``; a compound condition's steps joined by " + "."""
    return ", ".join(f"{k}={' + '.join(v) if k == 'steps' else v}"
                     for k, v in condition["params"].items()) or "-"


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [f"| {' | '.join(columns)} |", "|" + "---|" * len(columns),
            *(f"| {' | '.join(row)} |" for row in rows), ""]


def _test_part(result: dict) -> str:
    """"images 201-300" for a run trained with ``--test-ids``, else "fold K"."""
    test_ids = next(iter(result["models"].values()))["config"].get("test_ids")
    return f"images {test_ids}" if test_ids else f"fold {result['fold']}"


def _factors(factors: Sequence[float]) -> str:
    moved = [f for f in factors if f != 1.0]
    return f"{len(moved)}/{len(factors)}, {np.median(moved) if moved else 1.0:.2f}x"


def render_markdown(result: dict) -> str:
    labels, models = result["labels"], result["models"]
    conditions = result["conditions"]
    dice = [[c["name"], _params_text(c), *(_cell(models[m]["scores"][c["name"]]) for m in labels)]
            for c in conditions]
    dice += [[f"**mean, {group.replace('_', ' ')}**", "",
              *(_cell(models[m]["shifted_means"][group]) for m in labels)]
             for group in models[labels[0]]["shifted_means"]]
    iou_ap = [[c["name"], *(f"{s['whole_cell_iou']:.3f} / {s['ap50']:.3f}"
                             for s in (models[m]["scores"][c["name"]] for m in labels))]
              for c in conditions]
    lines = ["# Robustness under controlled domain shift", "",
             f"Data: {result['data_source']}; test part: {_test_part(result)} "
             f"({result['n_test_images']} images). Each model uses its own tuned thresholds, "
             f"minimum cell area and edge-cell setting. Keras backend {result['keras_backend']}; "
             f"{result['machine']['cpu']['model']}; scoring took {result['seconds']} s.", "",
             "Whole-cell Dice (nucleus Dice for 2-channel models), mean over test images:", "",
             *_table(["condition", "parameters", *labels], dice),
             "Whole-cell IoU / AP@0.5:", "", *_table(["condition", *labels], iou_ap)]
    scaled = [m for m in labels if "scale" in models[m]]
    if scaled:
        rows = [[c["name"], *(_factors(models[m]["scale"]["factors"][c["name"]]) for m in scaled)]
                for c in conditions]
        references = ", ".join(f"{m}: {models[m]['scale']['reference_cell_diameter']:.1f} px"
                               for m in scaled)
        lines += ["`--scale auto` (`unet_keras.rescale`): images resampled out of all, and the "
                  "median factor among them (1.00: none), by condition; training cell diameter "
                  f"{references}:", "", *_table(["condition", *scaled], rows)]
    coloured = [m for m in labels if "colour" in models[m]]
    if coloured:
        rows = [[c["name"], *(f"{sum(models[m]['colour']['mapped'][c['name']])}/"
                              f"{len(models[m]['colour']['mapped'][c['name']])}" for m in coloured)]
                for c in conditions]
        gates = ", ".join(f"{m}: {models[m]['colour']['gate']:.2f}" for m in coloured)
        lines += ["`--colour auto` (`unet_keras.colour`): images mapped towards the training "
                  f"colours out of all, by condition; gate {gates}:", "",
                  *_table(["condition", *coloured], rows)]
    timed = [m for m in labels if "tta" in models[m]]
    if timed:
        rows = [[m, _cell(t["plain"]["scores"]), _cell(t["tta"]["scores"]),
                 f"{t['gain']['whole_cell_dice']:+.4f}", f"{t['plain']['seconds_per_image']:.4f}",
                 f"{t['tta']['seconds_per_image']:.4f}", f"{t['time_ratio']:.1f}"]
                for m, t in ((m, models[m]["tta"]) for m in timed)]
        lines += ["8-view TTA on the identity condition (seconds per image after a warm-up pass, "
                  "same machine):", "",
                  *_table(["model", "Dice", "Dice with TTA", "gain", "s/image", "s/image TTA",
                           "time x"], rows)]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from unet_keras.image_io import atomic_path

    names = [c["name"] for c in result["conditions"]]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) + 2), 4.5))
    for label in result["labels"]:
        scores = result["models"][label]["scores"]
        line, = ax.plot(names, [scores[n]["whole_cell_dice"] for n in names], marker="o",
                        label=f"{label} whole cell")
        if "nucleus_dice" in scores[names[0]]:
            ax.plot(names, [scores[n]["nucleus_dice"] for n in names], marker="s", linestyle=":",
                    color=line.get_color(), label=f"{label} nucleus")
    ax.set_ylabel("Dice (mean over test images)")
    ax.set_title(f"Dice per condition, test part: {_test_part(result)}")
    ax.tick_params(axis="x", labelrotation=45)
    plt.setp(ax.get_xticklabels(), ha="right")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_report(result: dict, out: Path) -> list[Path]:
    from unet_keras.evaluate import write_json
    from unet_keras.image_io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / JSON_NAME, out / MARKDOWN_NAME, out / PLOT_NAME]
    write_json(result, paths[0])
    atomic_write_text(paths[1], render_markdown(result))
    plot(result, paths[2])
    return paths
