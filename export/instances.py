"""Instances and measurements of a large label map, one connected component at a time.

``separation.separate_instances`` on a whole 8000 x 8000 label map needs several GB (distance
transform, h-maxima reconstruction and watershed over 64 M pixels: 7.4 GB measured). Its result
for a cell depends only on the 8-connected component of the cell mask that holds it (markers,
maxima and the watershed stay inside the mask; each distance is to background within one pixel
of the component's bounding box), so calling the same ``separate_instances`` and
``measure_cells`` on each component's bounding box, grown by that pixel of background where the
box does not reach the image edge, gives the same cells with a small working set. (Without the
margin, the crop's border read as cell and a neck there could go unsplit or a cell be split
in two.) Two differences from a whole-image call: labels are numbered
component by component (raster order of each component's first pixel), and where two touching
cells are equally far from both seeds the watershed may give a boundary pixel to the other cell
(its ties follow marker numbering): a few pixels per touching pair, never a different count.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from unet_keras.postprocess import (EIGHT_CONNECTED, MIN_CELL_AREA, drop_edge_parts,
                                    grown_box, measure_cells, speck_labels)
from unet_keras.separation import separate_instances

# Columns of measure_cells that are positions: shifted from the crop to the image.
ROW_COLUMNS = ("centroid_y", "bbox_min_row", "bbox_max_row")
COL_COLUMNS = ("centroid_x", "bbox_min_col", "bbox_max_col")


def instances_by_component(label_map: np.ndarray, image_name: str, has_nucleus: bool,
                           method: str = "watershed", min_cell_area: int = MIN_CELL_AREA,
                           edge_cells: str = "keep", probability: np.ndarray | None = None,
                           thresholds: Sequence[float] = (0.5,)
                           ) -> tuple[np.ndarray, list[dict]]:
    """``separate_instances`` + ``measure_cells`` per connected component of ``label_map > 0``,
    without the parts that ``postprocess.edge_parts`` finds cut by the image edge when
    ``edge_cells`` is "drop" (``label_map`` itself is left as it is). Given the model's
    ``probability`` and ``thresholds``, each row's confidences are measured too.

    Returns:
        (instances int32 (H, W) labelled 1..N, one ``measure_cells`` row per instance).
    """
    label_map = np.asarray(label_map)
    if edge_cells != "keep":
        label_map = drop_edge_parts(label_map.copy(), min_cell_area, edge_cells)
    # The component map becomes the instance map in place: instance ids are written negated so
    # they cannot be mistaken for component ids still to be read, then flipped at the end.
    work = np.empty(label_map.shape, np.int32)
    count = ndi.label(label_map > 0, structure=EIGHT_CONNECTED, output=work)
    small = speck_labels(np.bincount(work.ravel(), minlength=count + 1))  # as label_cells
    rows: list[dict] = []
    next_id = 0
    for component, box in enumerate(ndi.find_objects(work, max_label=count), start=1):
        if box is None:
            continue
        if small[component]:
            crop = work[box]
            crop[crop == component] = 0
            continue
        box = grown_box(box, work.shape)
        crop = work[box]
        mask = crop == component
        labels = np.where(mask, label_map[box], 0).astype(np.uint8)
        cells = separate_instances(mask, labels == 2 if has_nucleus else None, method=method,
                                   min_size=min_cell_area)
        crop[mask] = np.where(cells[mask] > 0, -(cells[mask] + next_id), 0)
        r0, c0 = box[0].start, box[1].start
        crop_probability = None if probability is None else probability[box]
        for row in measure_cells(cells, labels, image_name, has_nucleus=has_nucleus,
                                 probability=crop_probability, thresholds=thresholds):
            row["label"] += next_id
            for key in ROW_COLUMNS:
                row[key] += r0
            for key in COL_COLUMNS:
                row[key] += c0
            rows.append(row)
        next_id += int(cells.max(initial=0))
    np.negative(work, out=work)
    return work, rows
