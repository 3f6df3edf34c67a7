"""Print the scores of a finished run (`make demo`'s last step)."""

import argparse
import json
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("run", type=Path, help="a finished run directory (with evaluate-fold0/)")
run = parser.parse_args().run
metrics = json.loads((run / "metrics.json").read_text())
evaluated = json.loads((run / "evaluate-fold0" / "metrics.json").read_text())
print(f"\n== {run} ==")
print(f"data: {metrics['data_source']}")
print(f"training: {metrics['epochs_run']} epochs, {metrics['train_seconds']} s, "
      f"{metrics['train_images_per_second']} images/s, thresholds {metrics['thresholds']}")
for name, summary in (("test fold (train)", metrics["test"]), ("test fold (evaluate)", evaluated["test"])):
    keys = [k for k in ("whole_cell_dice", "whole_cell_iou", "nucleus_dice", "ap50", "ap50_95") if k in summary]
    print(f"{name}: " + ", ".join(f"{k} {summary[k]:.4f}" for k in keys))
cells = run.parent / f"{run.name}-predictions" / "cells.csv"
if cells.is_file():
    print(f"per-cell table: {cells} ({len(cells.read_text().splitlines()) - 1} cells)")
