"""Batch prediction: images in, masks / overlays / a per-cell table out, bad files skipped and reported.

Reliability contract (see docs/reliability.md):

- An input that cannot be read or converted is refused with a message naming it; the batch goes
  on (``strict`` stops it instead) and the refusals are listed in the summary.
- Every output is written under a temporary name and renamed, so no reader sees a partial file.
  A failed write (disk full, permissions) stops the batch: files already written stay complete,
  the temporary is removed, and ``cells.csv`` (written last) describes only a finished batch.
- One run at a time per output directory: a lock (``.unet-keras-predict.lock``, released by the
  operating system when the process ends, even by a kill; ``unet_keras.dirlock``) makes a second
  run refuse at once with ``OutputBusyError`` rather than interleave files with the first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from unet_keras.dirlock import exclusive_dir
from unet_keras.domain import DomainAdapter
from unet_keras.image_io import (IMAGE_SUFFIXES, ImageReadError, atomic_write_csv, read_rgb,
                                 write_png)
from unet_keras.postprocess import (MIN_CELL_AREA, label_cells, labels_to_png, measure_cells,
                                    overlay, write_cells_csv)

log = logging.getLogger(__name__)

LOCK_FILENAME = ".unet-keras-predict.lock"


class InputError(ValueError):
    """Inputs that cannot be predicted on at all (missing paths, nothing to read)."""


@dataclass
class PredictSummary:
    written: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, conversion)
    n_cells: int = 0


def collect_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and directories (their image files, sorted, not recursive); a file named
    twice (or inside a folder also named) is listed once."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir()
                                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                                and not p.stem.endswith(("_mask", "_overlay"))))
        elif path.exists():
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or directory")
    if not found:
        raise InputError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) found in {list(map(str, paths))}")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def exclusive_output_dir(out_dir: Path):
    """Hold ``out_dir``'s predict lock (creating it if needed); see ``unet_keras.dirlock``."""
    return exclusive_dir(out_dir, LOCK_FILENAME, "`unet-keras predict`")


# images.csv: one row per segmented image.
IMAGE_COLUMNS = ["image", "height", "width", "cells", "scale_factor", "colour_mapped",
                 "conversions"]


def predict_files(inputs: Iterable[Path], probability_fn: Callable[[np.ndarray], np.ndarray],
                  thresholds: Sequence[float], out_dir: Path, strict: bool = False,
                  instance_method: str = "watershed", lock: bool = True,
                  min_cell_area: int = MIN_CELL_AREA, edge_cells: str = "keep"
                  ) -> PredictSummary:
    """Segment each file and write ``<stem>_mask.png``, ``<stem>_overlay.png``, ``cells.csv``
    (one row per cell) and ``images.csv`` (one row per image: its size, its cell count, and what
    was done to it before the model: the scale factor and colour mapping of a
    ``domain.DomainAdapter`` given as ``probability_fn``, and any conversion of its pixels).

    Unreadable files are recorded in the summary and skipped (or, with ``strict``, re-raised).
    Every file is written under a temporary name and renamed, so readers never see a partial file.

    Args:
        min_cell_area, edge_cells: the object filters of ``postprocess.label_cells``.
        lock: hold ``out_dir``'s lock while writing; False when the caller already holds it
            (the CLI takes it before loading the model, so a busy directory is refused at once).
    Raises:
        ImageReadError, InputError: with ``strict``, the first refused input.
        dirlock.OutputBusyError: another run is writing to ``out_dir``.
        OSError: an output cannot be written (the batch stops; message names the file).
    """
    out_dir = Path(out_dir)
    if lock:
        with exclusive_output_dir(out_dir):
            return predict_files(inputs, probability_fn, thresholds, out_dir, strict,
                                 instance_method, lock=False, min_cell_area=min_cell_area,
                                 edge_cells=edge_cells)
    summary = PredictSummary()
    rows: list[dict] = []
    images: list[dict] = []
    stems: dict[str, Path] = {}
    inputs = list(inputs)
    input_files = {path.resolve(): path for path in inputs}
    for path in inputs:
        overwritten = [input_files[out.resolve()] for out in _outputs(out_dir, path.stem)
                       if out.resolve() in input_files]
        if path.stem in stems or overwritten:
            if path.stem in stems:
                reason = (f"{path}: output name {path.stem!r} already used by "
                          f"{stems[path.stem]}; expected one input per file name")
            else:
                reason = (f"{path}: its output would overwrite the input {overwritten[0]}; "
                          "expected an --out where no input lies under an output's name")
            if strict:
                raise InputError(reason)
            log.error("skipped %s", reason)
            summary.refused.append((str(path), reason))
            continue
        try:
            image, notes = read_rgb(path)
            prob = probability_fn(image)
        except ImageReadError as err:
            if strict:
                raise
            log.error("skipped %s", err)
            summary.refused.append((str(path), str(err)))
            continue
        stems[path.stem] = path
        summary.notes.extend((str(path), note) for note in notes)
        labels, instances = label_cells(prob, thresholds, instance_method, min_cell_area,
                                        edge_cells)
        cells = measure_cells(instances, labels, path.name, has_nucleus=prob.shape[-1] == 2,
                              probability=prob, thresholds=thresholds)
        rows.extend(cells)
        summary.n_cells += len(cells)
        adapted = (probability_fn.latest() if isinstance(probability_fn, DomainAdapter)
                   else {"scale_factor": 1.0, "colour_mapped": False})
        images.append({"image": path.name, "height": image.shape[0], "width": image.shape[1],
                       "cells": len(cells), "scale_factor": round(adapted["scale_factor"], 4),
                       "colour_mapped": int(adapted["colour_mapped"]),
                       "conversions": "; ".join(notes)})
        mask_path, overlay_path = _outputs(out_dir, path.stem)
        write_png(mask_path, labels_to_png(labels, prob.shape[-1]))
        write_png(overlay_path, overlay(image, labels, instances=instances))
        summary.written.append(str(path))
    # Written when nothing was predicted too (header only), so the tables describe this run,
    # not an earlier one into the same directory.
    write_cells_csv(rows, out_dir / "cells.csv")
    atomic_write_csv(out_dir / "images.csv", IMAGE_COLUMNS, images)
    return summary


def _outputs(out_dir: Path, stem: str) -> tuple[Path, Path]:
    """An input's mask and overlay paths."""
    return out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png"
