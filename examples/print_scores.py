"""Print the scores of a finished run (`make demo`'s last step)."""

import json
import sys
from pathlib import Path

run = Path(sys.argv[1])
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
