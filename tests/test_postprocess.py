"""Postprocessing: thresholds, PNG encoding, instance separation, measurements, overlay, CSV."""

import csv
import math

import numpy as np
import pytest
from skimage.draw import disk

from unet_keras.postprocess import (
    CELL_COLUMNS,
    CONTOUR_COLOUR,
    CYTOPLASM_COLOUR,
    NUCLEUS_COLOUR,
    edge_parts,
    label_cells,
    labels_to_png,
    measure_cells,
    nucleus_fragments_to_cytoplasm,
    overlay,
    png_to_labels,
    probabilities_to_labels,
    write_cells_csv,
)
from unet_keras.separation import separate_instances


def test_one_channel_threshold_is_inclusive():
    prob = np.array([[0.2, 0.5], [0.49, 0.9]], dtype=np.float32)[..., None]
    np.testing.assert_array_equal(probabilities_to_labels(prob, [0.5]), [[0, 1], [0, 1]])
    np.testing.assert_array_equal(probabilities_to_labels(prob, [0.3]), [[0, 1], [1, 1]])
    assert probabilities_to_labels(prob, [0.5]).dtype == np.uint8


def test_two_channel_thresholds():
    # (p_cell, p_nucleus) per pixel, thresholds (0.5, 0.6):
    # background; cell only -> 1; cell and nucleus -> 2; nucleus without cell -> still 2
    # (a nucleus pixel is a cell pixel); nucleus just below 0.6 -> 1.
    prob = np.array([[[0.1, 0.1], [0.7, 0.2], [0.9, 0.8], [0.2, 0.6], [0.9, 0.59]]],
                    dtype=np.float32)
    np.testing.assert_array_equal(probabilities_to_labels(prob, (0.5, 0.6)), [[0, 1, 2, 2, 1]])
    # One threshold serves both channels: (0.2, 0.59) is now a nucleus at 0.55.
    np.testing.assert_array_equal(probabilities_to_labels(prob, [0.55]), [[0, 1, 2, 2, 2]])


def _cell_with_nucleus_and_specks() -> np.ndarray:
    labels = np.zeros((48, 80), np.uint8)
    labels[disk((24, 22), 18)] = 1
    labels[disk((20, 18), 8)] = 2  # the nucleus: 197 px
    labels[disk((32, 28), 5)] = 2  # a second lobe, 81 px: a lobe, kept
    labels[36, 10] = labels[10, 30:33] = 2  # specks of 1 and 3 px: cytoplasm
    labels[disk((24, 60), 15)] = 1  # a second cell whose only nucleus is small: kept
    labels[22:25, 58:61] = 2
    labels[0:8, 20:24] = 1  # the first cell reaches the image edge...
    labels[0:2, 21:23] = 2  # ...where a speck may be a cut-off neighbour's nucleus: kept
    return labels


def test_nucleus_specks_far_smaller_than_their_cells_nucleus_become_cytoplasm():
    labels = _cell_with_nucleus_and_specks()
    want = labels.copy()
    want[36, 10] = want[10, 30:33] = 1
    got = nucleus_fragments_to_cytoplasm(labels.copy(), fraction=0.1)
    np.testing.assert_array_equal(got, want)
    # The whole cell is untouched; a larger fraction takes the lobe as well; 0 takes nothing.
    np.testing.assert_array_equal(got > 0, labels > 0)
    assert nucleus_fragments_to_cytoplasm(labels.copy(), fraction=0.5)[32, 28] == 1
    np.testing.assert_array_equal(nucleus_fragments_to_cytoplasm(labels.copy(), 0.0), labels)
    # Thresholding a two-channel prediction applies the rule.
    prob = np.stack([labels > 0, labels == 2], axis=-1).astype(np.float32)
    np.testing.assert_array_equal(probabilities_to_labels(prob, (0.5, 0.5)), want)


@pytest.mark.parametrize("prob, thresholds, message", [
    (np.zeros((4, 4), np.float32), [0.5], "expected"),
    (np.zeros((4, 4, 3), np.float32), [0.5], "expected"),
    (np.zeros((4, 4, 2), np.float32), [0.5, 0.5, 0.5], "thresholds"),
    (np.zeros((4, 4, 1), np.float32), [1.5], "thresholds"),
    (np.zeros((4, 4, 1), np.uint8), [0.5], "dtype"),
])
def test_probabilities_to_labels_rejects_bad_input(prob, thresholds, message):
    with pytest.raises(ValueError, match=message):
        probabilities_to_labels(prob, thresholds)


def test_png_encoding_round_trip():
    label_map = np.array([[0, 1, 2]], dtype=np.uint8)
    np.testing.assert_array_equal(labels_to_png(label_map, 2), [[0, 128, 255]])
    np.testing.assert_array_equal(labels_to_png(label_map, 1), [[0, 255, 255]])
    assert labels_to_png(label_map, 2).dtype == np.uint8
    np.testing.assert_array_equal(png_to_labels(labels_to_png(label_map, 2)), label_map)
    # A 1-channel PNG reads back as 0/2: label > 0 is still the whole cell.
    np.testing.assert_array_equal(png_to_labels(labels_to_png(label_map, 1)), [[0, 2, 2]])
    with pytest.raises(ValueError, match="out_channels"):
        labels_to_png(label_map, 3)
    with pytest.raises(ValueError, match="0..2"):
        labels_to_png(label_map + 1, 2)


def test_png_grey_values_go_to_nearest_level():
    # Nearest of 0 / 128 / 255: 60 -> 0, 100 -> 128, 200 -> 255, 191 -> 128 (63 vs 64),
    # 192 -> 255 (64 vs 63). 64 is equally far from 0 and 128: ties go to the lower label.
    grey = np.array([[0, 60, 64, 65, 100, 128, 191, 192, 200, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(png_to_labels(grey), [[0, 0, 0, 1, 1, 1, 1, 2, 2, 2]])
    assert png_to_labels(grey).dtype == np.uint8
    np.testing.assert_array_equal(png_to_labels(np.array([191.5, 191.6])), [1, 2])
    with pytest.raises(ValueError, match="0..255"):
        png_to_labels(np.array([0, 300]))


def _two_disks(radius=15, gap=22, shape=(60, 80)):
    """Two disks of the given radius whose centres (30, 25) and (30, 25 + gap) overlap."""
    mask = np.zeros(shape, dtype=bool)
    centres = [(30, 25), (30, 25 + gap)]
    for centre in centres:
        mask[disk(centre, radius, shape=shape)] = True
    return mask, centres


def test_watershed_splits_overlapping_disks():
    # Centres 22 px apart, radius 15: the neck is 2 * sqrt(15^2 - 11^2) = 20.4 px wide, so the
    # distance transform has two peaks of 15 over a saddle of ~10: two cells.
    mask, (c1, c2) = _two_disks()
    assert separate_instances(mask, method="components").max() == 1
    instances = separate_instances(mask)
    assert instances.dtype == np.int32 and instances.max() == 2
    assert instances[c1] != instances[c2]
    np.testing.assert_array_equal(instances > 0, mask)  # no pixel lost
    # By symmetry the cut is the midline column 36: everything left of it is the first cell.
    assert np.all(instances[:, :36][mask[:, :36]] == instances[c1])
    assert np.all(instances[:, 37:][mask[:, 37:]] == instances[c2])


def test_watershed_keeps_a_single_disk_whole():
    for radius in (6, 12, 25):
        mask = np.zeros((64, 64), dtype=bool)
        mask[disk((32, 32), radius)] = True
        instances = separate_instances(mask, min_size=1)
        assert instances.max() == 1, radius
        np.testing.assert_array_equal(instances > 0, mask)


def test_shallow_bleb_is_not_a_cell():
    # A radius-5 bleb centred 18 px from the centre of a radius-15 cell: the circles cross at
    # x = (225 - 25 + 18^2) / 36 = 14.56, y = sqrt(225 - 14.56^2) = 3.6, so the bleb's distance
    # peak (~5) rises only ~1.4 px above the neck: below h = 2, above h = 0.5.
    mask = np.zeros((64, 64), dtype=bool)
    mask[disk((32, 32), 15)] = True
    mask[disk((32, 50), 5)] = True
    assert separate_instances(mask, min_size=1).max() == 1
    assert separate_instances(mask, min_size=1, h=0.5).max() == 2


def test_watershed_from_nuclei_splits_cells_without_a_neck():
    # A 20x40 rectangle is two 20x20 cells side by side: no neck, one distance ridge.
    cell = np.zeros((30, 50), dtype=bool)
    cell[5:25, 5:45] = True
    nucleus = np.zeros_like(cell)
    nucleus[12:18, 10:16] = True
    nucleus[12:18, 34:40] = True
    assert separate_instances(cell).max() == 1
    instances = separate_instances(cell, nucleus)
    assert instances.max() == 2
    assert instances[15, 12] != instances[15, 37]


def test_specks_under_a_twentieth_of_the_largest_object_go_whatever_their_size():
    """A 20 x 20 cell (400 px): an object of 19 px (4.75 %) is a speck, one of 20 px (5 %) is
    kept, although both pass min_cell_area; the ONNX path's component-wise postprocessing
    drops the same."""
    from export.instances import instances_by_component

    prob = np.zeros((40, 40, 2), np.float32)
    prob[2:22, 2:22, 0] = 1.0
    prob[30, 2:21, 0] = 1.0  # 19 px
    prob[35, 2:22, 0] = 1.0  # 20 px
    labels, instances = label_cells(prob, (0.5, 0.5), "components", min_cell_area=1)
    assert instances.max() == 2 and labels[30].sum() == 0 and labels[35].sum() == 20
    parts, rows = instances_by_component(probabilities_to_labels(prob, (0.5, 0.5)), "x", True,
                                         min_cell_area=1)
    np.testing.assert_array_equal(parts > 0, instances > 0)
    assert sorted(r["area"] for r in rows) == [20, 400]


def test_component_wise_instances_match_the_whole_image_where_a_box_edge_is_cell():
    """A 60 x 100 block with a one-pixel notch in its bottom row: one cell in the whole image.
    Split inside its bounding box alone, the box's border read as cell and the notch's shallow
    neck split it in two; the ONNX path's large-image postprocessing must find the same cells."""
    from export.instances import instances_by_component

    labels = np.zeros((120, 160), np.uint8)
    labels[30:90, 30:130] = 1
    labels[89, 79:81] = 0
    _, whole = label_cells(labels[..., None].astype(np.float32), (0.5,), "watershed",
                           min_cell_area=50)
    parts, rows = instances_by_component(labels, "x", False, "watershed", min_cell_area=50)
    assert whole.max() == parts.max() == len(rows) == 1
    np.testing.assert_array_equal(parts, whole)
    # A component cut by the image edge has no margin there, as in the whole image.
    edge = labels[:, 60:]
    _, whole = label_cells(edge[..., None].astype(np.float32), (0.5,), "watershed",
                           min_cell_area=50)
    parts, _ = instances_by_component(edge, "x", False, min_cell_area=50)
    np.testing.assert_array_equal(parts, whole)


def test_lobed_nucleus_fragments_stay_one_cell():
    # One round cell whose nucleus came out as three lobes 3 px apart (gaps: columns 23-25 and
    # 30-32). Joining fragments makes one marker; without it, and without joining parts cut
    # across the cell (``wide_cut_ratio``), it would be cut into three cells.
    cell = np.zeros((60, 60), dtype=bool)
    cell[disk((30, 30), 20)] = True
    nucleus = np.zeros_like(cell)
    nucleus[27:34, 18:23] = nucleus[27:34, 26:30] = nucleus[27:34, 33:38] = True
    assert separate_instances(cell, nucleus).max() == 1
    assert separate_instances(cell, nucleus, wide_cut_ratio=np.inf).max() == 1
    assert separate_instances(cell, nucleus, nucleus_gap_px=0, wide_cut_ratio=np.inf).max() == 3
    assert separate_instances(cell, nucleus, nucleus_gap_px=0).max() == 1


def test_a_neighbours_nucleus_does_not_join_another_cells_nucleus_pieces():
    # Cell B (a bar) holds two nucleus pieces 5 px apart, more than nucleus_gap_px: two markers.
    # Cell A, one background row below, has nucleus pixels on its top edge right under B's gap.
    # Grown across the background, A's nucleus joined B's pieces into one marker, so B's split
    # depended on its neighbour, and the per-component deployment path counted differently.
    cell = np.zeros((40, 50), bool)
    nucleus = np.zeros_like(cell)
    cell[4:11, 2:48] = True
    nucleus[8:11, 18:21] = nucleus[8:11, 26:29] = True
    cell[12:30, 10:40] = True
    nucleus[16:24, 20:30] = True
    alone = nucleus.copy()
    nucleus[12:16, 23] = True
    split = separate_instances(cell, nucleus)
    assert split.max() == separate_instances(cell, alone).max() == 3
    assert len(np.unique(split[4:11][cell[4:11]])) == 2  # B in two cells
    from export.instances import instances_by_component

    prob = np.stack([cell, nucleus], -1).astype(np.float32)
    parts, _ = instances_by_component(probabilities_to_labels(prob, (0.5, 0.5)), "x", True,
                                      min_cell_area=10)
    _, whole = label_cells(prob, (0.5, 0.5), min_cell_area=10)
    assert parts.max() == whole.max() == 3


def test_cell_without_nucleus_falls_back_to_distance_peaks():
    # Overlapping disks without a nucleus mask pixel are still split by distance peaks, while
    # a separate cell with a nucleus is seeded by it.
    mask, (c1, c2) = _two_disks(shape=(60, 120))
    mask[disk((30, 100), 10)] = True
    nucleus = np.zeros_like(mask)
    nucleus[28:33, 98:103] = True
    instances = separate_instances(mask, nucleus)
    assert instances.max() == 3
    assert len({instances[c1], instances[c2], instances[30, 100]}) == 3


def test_small_objects_are_removed():
    mask = np.zeros((40, 40), dtype=bool)
    mask[5:15, 5:15] = True  # 100 px
    mask[30:35, 30:35] = True  # 25 px < 30
    for method in ("components", "watershed"):
        instances = separate_instances(mask, method=method, min_size=30)
        assert instances.max() == 1 and np.count_nonzero(instances) == 100
    with pytest.raises(ValueError, match="method"):
        separate_instances(mask, method="magic")


def test_measure_square_cell_with_square_nucleus():
    # A 10x10 cell (rows 2-11, cols 3-12) with a 4x4 nucleus: area 100, nucleus 16,
    # cytoplasm 84, nc ratio 16/84 = 4/21; centroid (6.5, 7.5); a square has eccentricity 0.
    label_map = np.zeros((20, 20), dtype=np.uint8)
    label_map[2:12, 3:13] = 1
    label_map[5:9, 6:10] = 2
    instances = separate_instances(label_map > 0, method="components")
    (row,) = measure_cells(instances, label_map, "cell.bmp")
    assert list(row) == CELL_COLUMNS
    assert row["image"] == "cell.bmp" and row["label"] == 1
    assert (row["area"], row["nucleus_area"], row["cytoplasm_area"]) == (100, 16, 84)
    assert row["nc_ratio"] == pytest.approx(4 / 21)
    assert (row["centroid_y"], row["centroid_x"]) == pytest.approx((6.5, 7.5))
    assert (row["bbox_min_row"], row["bbox_min_col"], row["bbox_max_row"],
            row["bbox_max_col"]) == (2, 3, 12, 13)
    assert row["eccentricity"] == pytest.approx(0.0, abs=1e-6)
    assert row["solidity"] == pytest.approx(1.0)
    # A disk of area 100 has diameter sqrt(400 / pi); the 10 x 10 square's perimeter is near 40.
    assert row["equivalent_diameter"] == pytest.approx(math.sqrt(400 / math.pi))
    assert row["perimeter"] == pytest.approx(40.0, rel=0.1)
    assert row["circularity"] == pytest.approx(4 * math.pi * 100 / row["perimeter"] ** 2)
    assert row["nucleus_parts"] == 1

    (unknown,) = measure_cells(instances, label_map, "cell.bmp", has_nucleus=False)
    assert math.isnan(unknown["nc_ratio"]) and math.isnan(unknown["nucleus_area"])
    assert math.isnan(unknown["nucleus_parts"]) and unknown["perimeter"] == row["perimeter"]


@pytest.mark.parametrize("radii, rotation", [((37.5, 37.5), 0.0), ((20.0, 20.0), 0.0),
                                             ((40.0, 25.0), 0.4), ((30.0, 20.0), 1.1)])
def test_perimeter_and_circularity_of_disks_and_ellipses_match_their_true_values(radii, rotation):
    """Within 1 % of the true perimeter (Ramanujan's for an ellipse) and 0.01 of the true
    circularity; the length along the outer pixels' centres read a cell-sized disk's
    circularity as 0.92."""
    from skimage.draw import ellipse

    a, b = radii
    mask = np.zeros((100, 100), np.int32)
    mask[ellipse(50.3, 50.1, a, b, rotation=rotation)] = 1
    (row,) = measure_cells(mask, mask.astype(np.uint8), "x")
    h = ((a - b) / (a + b)) ** 2
    true_perimeter = math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
    assert row["perimeter"] == pytest.approx(true_perimeter, rel=0.01)
    assert row["circularity"] == pytest.approx(4 * math.pi**2 * a * b / true_perimeter**2, abs=0.01)


def test_circularity_of_tiny_shapes_stays_at_most_one():
    from skimage.draw import disk

    mask = np.zeros((12, 12), np.int32)
    mask[disk((6, 6), 3.2)] = 1  # 37 px: 4 pi A / P^2 is 1.06 on the pixel grid
    (row,) = measure_cells(mask, mask.astype(np.uint8), "x")
    assert 4 * math.pi * row["area"] / row["perimeter"] ** 2 > 1.0
    assert row["circularity"] == 1.0


def test_nucleus_parts_count_the_lobes_apart_in_each_cell():
    # Cell 1 holds three nucleus pieces, two of them touching at a corner (one 8-connected
    # part): 2 parts. Cell 2, apart, holds one: its pieces are not cell 1's.
    label_map = np.zeros((30, 40), dtype=np.uint8)
    label_map[2:20, 2:20] = 1
    label_map[4:8, 4:8] = 2
    label_map[8:10, 8:10] = 2  # touches the first at the corner (7, 7)-(8, 8)
    label_map[12:16, 12:16] = 2
    label_map[5:25, 25:38] = 1
    label_map[10:14, 28:32] = 2
    instances = separate_instances(label_map > 0, method="components")
    first, second = measure_cells(instances, label_map, "x.png")
    assert (first["nucleus_parts"], second["nucleus_parts"]) == (2, 1)
    assert first["nucleus_area"] == 16 + 4 + 16


def test_measure_disk_and_all_nucleus_cell():
    # A digital disk of radius 5 holds the 69 lattice points with y^2 + x^2 < 25
    # (columns x = 0, ±1, ±2, ±3, ±4 hold 9, 9, 9, 7, 5 points: 9 + 18 + 18 + 14 + 10).
    label_map = np.zeros((30, 30), dtype=np.uint8)
    label_map[disk((10, 10), 5)] = 2  # all nucleus, no cytoplasm
    label_map[20:24, 20:26] = 1
    instances = separate_instances(label_map > 0, method="components", min_size=1)
    disk_row, rect_row = measure_cells(instances, label_map, "x.png")
    assert disk_row["area"] == 69 and disk_row["nucleus_area"] == 69
    assert (disk_row["centroid_y"], disk_row["centroid_x"]) == pytest.approx((10.0, 10.0))
    assert math.isnan(disk_row["nc_ratio"])  # cytoplasm area 0
    assert rect_row["area"] == 24 and rect_row["nc_ratio"] == 0.0
    assert rect_row["eccentricity"] > 0.5  # a 4x6 rectangle is elongated


def test_overlay_tints_and_contours():
    image = np.full((12, 12, 3), 100, dtype=np.uint8)
    label_map = np.zeros((12, 12), dtype=np.uint8)
    label_map[2:10, 2:10] = 1
    label_map[5:7, 5:7] = 2
    out = overlay(image, label_map, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # background untouched
    np.testing.assert_array_equal(out[2, 2], CONTOUR_COLOUR)  # inner boundary of the cell
    # Halfway between grey 100 and each colour, rounded half to even.
    np.testing.assert_array_equal(out[3, 3], np.round((100 + np.array(CYTOPLASM_COLOUR)) / 2))
    np.testing.assert_array_equal(out[5, 5], np.round((100 + np.array(NUCLEUS_COLOUR)) / 2))
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, label_map, alpha=2.0)
    with pytest.raises(ValueError, match="uint8"):
        overlay(image.astype(np.float32), label_map)


def test_write_cells_csv(tmp_path):
    label_map = np.zeros((20, 20), dtype=np.uint8)
    label_map[2:12, 3:13] = 1
    label_map[5:9, 6:10] = 2
    label_map[15:18, 15:18] = 2  # no cytoplasm: nc ratio NaN
    instances = separate_instances(label_map > 0, method="components", min_size=1)
    rows = measure_cells(instances, label_map, "a.bmp")
    path = tmp_path / "cells.csv"
    write_cells_csv(rows, path)
    assert b"\r" not in path.read_bytes()  # one newline per row on POSIX, not csv's "\r\n"
    with path.open(newline="") as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == CELL_COLUMNS
    assert [r["label"] for r in read] == ["1", "2"]
    assert float(read[0]["nc_ratio"]) == pytest.approx(4 / 21)
    assert read[1]["nc_ratio"] == "nan"
    assert [p.name for p in tmp_path.iterdir()] == ["cells.csv"]  # no temporary left behind
    with pytest.raises(ValueError):
        write_cells_csv([{"bogus": 1}], tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


@pytest.mark.parametrize("edge_cells, cells", [("keep", 2), ("drop", 1)])
def test_predict_leaves_out_cells_cut_by_the_edge_only_when_asked(tmp_path, edge_cells, cells):
    from PIL import Image

    from unet_keras.predict import predict_files

    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "field.png")

    def probability(image):  # a cell in the middle, another cut by the left edge
        prob = np.zeros(image.shape[:2] + (1,), np.float32)
        prob[disk((32, 36), 10, shape=prob.shape[:2])] = 1.0
        prob[disk((32, 0), 8, shape=prob.shape[:2])] = 1.0
        return prob

    out = tmp_path / "out"
    summary = predict_files([tmp_path / "field.png"], probability, (0.5,), out,
                            instance_method="components", edge_cells=edge_cells)
    assert summary.n_cells == cells
    with open(out / "cells.csv") as handle:
        assert len(list(csv.DictReader(handle))) == cells
    mask = np.asarray(Image.open(out / "field_mask.png"))
    assert (mask[:, 0] > 0).any() == (edge_cells == "keep")


def _disks(shape, *disks):
    mask = np.zeros(shape, bool)
    for centre, radius in disks:
        mask[disk(centre, radius, shape=shape)] = True
    return mask


def test_edge_parts_split_a_cut_neighbour_from_the_centred_cell_at_their_neck():
    centred = _disks((64, 64), ((30, 32), 14))
    mask = centred | _disks((64, 64), ((54, 32), 12))  # overlaps the centred cell, cut by the edge
    assert separate_instances(mask, method="components").max() == 1
    drop = edge_parts(mask)
    assert drop[63].any() and not (drop & ~mask).any()
    assert np.count_nonzero(centred & ~drop) >= 0.95 * np.count_nonzero(centred)
    assert np.count_nonzero(drop) >= 0.8 * np.count_nonzero(mask & ~centred)


@pytest.mark.parametrize("extra, dropped", [
    (None, False),  # the cut cell alone: kept
    (((40, 40), 2), False),  # beside a speck under min_size: kept
    (((40, 40), 8), True),  # beside a cell clear of the edge: left out, whole
])
def test_edge_parts_leave_out_cut_cells_only_beside_a_cell_clear_of_the_edge(extra, dropped):
    cut = _disks((64, 64), ((0, 12), 10))
    mask = cut | _disks((64, 64), extra) if extra else cut
    drop = edge_parts(mask, min_size=30)
    np.testing.assert_array_equal(drop, cut if dropped else np.zeros_like(cut))


def test_edge_parts_split_a_cut_component_with_background_round_its_box():
    # One cell cut by the right edge, with a lobe up and to the left: on its bare bounding box
    # the box's inner sides read as cell, the distance transform rises in the lobe and the
    # cell was split in two, its 72 px lobe kept as the image's cell and the rest dropped.
    rows, cols = np.mgrid[:50, :50]
    cell = (rows - 27) ** 2 + (cols - 45) ** 2 <= 81
    cell[16:26, 33:42] = True
    assert separate_instances(cell).max() == 1
    assert not edge_parts(cell).any()
    _, instances = label_cells(cell[..., None].astype(np.float32), (0.5,), edge_cells="drop")
    np.testing.assert_array_equal(instances > 0, cell)


def test_a_speck_clear_of_the_edge_does_not_replace_the_only_cell_cut_by_it():
    # A 900 px cell cut by the corner and a 36 px speck (4 % of it, over min_cell_area 30):
    # the cut cell is the image's cell, the speck goes.
    prob = np.zeros((60, 60, 1), np.float32)
    prob[0:30, 0:30, 0] = 1.0
    prob[45:51, 45:51, 0] = 1.0
    for method in ("components", "watershed"):
        _, instances = label_cells(prob, (0.5,), method, min_cell_area=30, edge_cells="drop")
        expected = np.zeros((60, 60), bool)
        expected[0:30, 0:30] = True
        np.testing.assert_array_equal(instances > 0, expected)
