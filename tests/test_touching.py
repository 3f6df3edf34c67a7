"""Touching cells: the seeded cluster generator, and counting cells by components vs watershed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk

from tests.conftest import REPO
from tests.test_examples import load_example
from unet_keras.data.touching import touching_cells, touching_cells_set
from unet_keras.separation import separate_instances

EIGHT_CONNECTED = np.ones((3, 3), bool)
report = load_example("touching_cells_report")


def counts(label_map: np.ndarray) -> tuple[int, int, int]:
    """Cells found by components, watershed, and watershed from nucleus markers."""
    return tuple(int(separate(label_map).max()) for separate in report.METHODS.values())


def two_discs(distance: int, nucleus_radius: int, radii: tuple[int, int] = (16, 14)) -> np.ndarray:
    """Label map of two discs whose centres, on row 40, are ``distance`` apart, each with a
    round nucleus at its centre."""
    labels = np.zeros((80, 40 + distance + 40), np.uint8)
    centres = [(40, 40), (40, 40 + distance)]
    for centre, radius in zip(centres, radii):
        labels[disk(centre, radius, shape=labels.shape)] = 1
    for centre in centres:
        labels[disk(centre, nucleus_radius, shape=labels.shape)] = 2
    return labels


# Discs of radius 16 and 14: distance-transform peaks of 16 and 14. The circles cross at
# x = (16^2 - 14^2 + d^2) / 2d from the first centre, half a neck sqrt(16^2 - x^2) away from the
# line of centres; the distance transform's saddle is about that half-neck. The smaller disc
# seeds its own cell when its peak rises h = 2 px above the saddle.
@pytest.mark.parametrize("distance, nucleus_radius, expected", [
    # 34 px: the discs (|dx| <= 15 and <= 13 about their centres) leave a 5-column gap.
    (34, 5, (2, 2, 2)),
    # 22 px (overlap 0.27): x = 12.4, half-neck 10.2; the peak of 14 rises 3.8 px above it.
    (22, 5, (1, 2, 2)),
    # 16 px (overlap 0.47): x = 9.9, half-neck 12.6; the peak rises only 1.4 px: one cell by
    # distance. Nuclei of radius 3 (|dx| <= 2), grown by nucleus_gap_px / 2 = 2 px, span -4..4
    # and 12..20: apart, two markers, two cells.
    (16, 3, (1, 1, 2)),
    # 6 px: the grown nuclei (-4..4 and 2..10) merge into one marker; every method sees one cell.
    (6, 3, (1, 1, 1)),
])
def test_hand_checked_counts_of_two_overlapping_discs(distance, nucleus_radius, expected):
    assert counts(two_discs(distance, nucleus_radius)) == expected


def test_a_cell_cut_across_by_its_lobes_joins_again():
    """A neutrophil's lobes, 8 px apart (beyond nucleus_gap_px), seed two parts split down the
    middle of the cell: a cut as wide as the cell. Without the join the cell counts twice."""
    labels = np.zeros((80, 80), np.uint8)
    labels[disk((40, 40), 30)] = 1
    labels[disk((40, 28), 8)] = 2
    labels[disk((40, 52), 8)] = 2
    assert counts(labels)[2] == 1
    assert separate_instances(labels > 0, labels == 2, wide_cut_ratio=np.inf).max() == 2


def test_only_cuts_wide_for_the_smaller_part_join():
    """Two rectangles of 20 rows side by side meet along a 20 px cut. Beside a 5-column part
    (100 px, equivalent diameter sqrt(400 / pi) = 11.3) the cut is 1.77 of it: joined; beside a
    12-column part (240 px, diameter 17.5) 1.14: kept apart. Apart, nothing joins."""
    from unet_keras.separation import WIDE_CUT_RATIO, _join_wide_cuts

    for width, expected in ((5, 1), (12, 2)):
        instances = np.zeros((24, 40), np.int32)
        instances[2:22, 2:2 + width] = 1
        instances[2:22, 2 + width:30] = 2
        assert len(np.unique(_join_wide_cuts(instances, WIDE_CUT_RATIO))) - 1 == expected
    instances[:, 2 + 12] = 0  # a column of background between them
    assert len(np.unique(_join_wide_cuts(instances, WIDE_CUT_RATIO))) - 1 == 2


def test_equal_distance_peaks_both_seed_however_shallow_the_saddle():
    # h_maxima keeps a peak unless it is joined to a *higher* one by a saddle less than h below
    # it. Equal discs of radius 16, centres 12 px apart: peaks 16 and 16, saddle 15. Neither
    # peak is higher, so both seed a cell although the saddle is only 1 px below them.
    # With radii 16 and 14 (above), the same distance gives one cell.
    assert counts(two_discs(12, 3, radii=(16, 16)))[:2] == (1, 2)
    assert counts(two_discs(12, 3, radii=(16, 14)))[:2] == (1, 1)


def test_watershed_cuts_touching_discs_at_the_midline():
    labels = two_discs(24, 5, radii=(16, 16))
    instances = separate_instances(labels > 0)
    left, right = instances[40, 40], instances[40, 64]
    assert {left, right} == {1, 2}
    # Symmetric about column 52: every cell pixel left of it is the left cell's.
    cell = labels > 0
    assert np.all(instances[:, :52][cell[:, :52]] == left)
    assert np.all(instances[:, 53:][cell[:, 53:]] == right)


def test_generator_puts_disc_centres_at_the_set_overlap():
    # Discs of radius 16 overlapping by 0.25: centres (1 - 0.25) * (16 + 16) = 24 px apart.
    for seed in range(5):
        cluster = touching_cells(2, 0.25, radius=(16.0, 16.0), aspect=(1.0, 1.0), seed=seed)
        first, second = (cell.body for cell in cluster.cells)
        assert np.hypot(first.cy - second.cy, first.cx - second.cx) == pytest.approx(24.0)
        assert counts(cluster.label_map)[:2] == (1, 2)


@pytest.mark.parametrize("overlap", [0.0, 0.3, 0.5])
def test_every_cell_touches_an_earlier_one_and_none_comes_closer(overlap):
    ratio = 1.0 - overlap
    for cluster in touching_cells_set(10, overlap, seed=3):
        bodies = [cell.body for cell in cluster.cells]
        for k, body in enumerate(bodies[1:], start=1):
            ratios = []
            for other in bodies[:k]:
                dy, dx = body.cy - other.cy, body.cx - other.cx
                d = np.hypot(dy, dx)
                ratios.append(d / (other.reach(dy / d, dx / d) + body.reach(-dy / d, -dx / d)))
            assert min(ratios) == pytest.approx(ratio) and min(ratios) >= ratio - 1e-9


def test_clusters_hold_exactly_their_count_of_visible_cells():
    for cluster in touching_cells_set(20, 0.4, seed=1):
        labels, instances = cluster.label_map, cluster.instances
        assert labels.dtype == np.uint8 and instances.dtype == np.int32
        assert set(np.unique(labels)) == {0, 1, 2} and 2 <= cluster.count <= 6
        assert set(np.unique(instances)) == set(range(cluster.count + 1))
        np.testing.assert_array_equal(labels > 0, instances > 0)
        assert ndi.label(labels > 0, EIGHT_CONNECTED)[1] == 1  # one cluster
        yy, xx = np.mgrid[0:labels.shape[0], 0:labels.shape[1]]
        for index, cell in enumerate(cluster.cells, start=1):
            visible = instances == index
            assert ndi.label(visible, EIGHT_CONNECTED)[1] == 1
            assert visible.sum() >= (cell.body.radius2(yy, xx) <= 1).sum() / 2


def test_same_seed_same_cluster_and_counts_shared_across_overlaps():
    a, b = touching_cells(4, 0.3, seed=7), touching_cells(4, 0.3, seed=7)
    np.testing.assert_array_equal(a.label_map, b.label_map)
    np.testing.assert_array_equal(a.instances, b.instances)
    assert not np.array_equal(a.label_map, touching_cells(4, 0.3, seed=8).label_map)
    low = [c.count for c in touching_cells_set(30, 0.1)]
    assert low == [c.count for c in touching_cells_set(30, 0.5)]
    assert set(low) == {2, 3, 4, 5, 6}


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_cells=0, overlap=0.2), "n_cells=0"),
    (dict(n_cells=2, overlap=0.6), "0 <= overlap <= 0.5"),
    (dict(n_cells=2, overlap=0.2, radius=(10.0, 5.0)), "radius"),
    (dict(n_cells=2, overlap=0.2, size=30), r"size=30: expected at least 2 \* radius \+ 4 = 44 px"),
    (dict(n_cells=6, overlap=0.0, size=44, radius=(20.0, 20.0)), "found no layout of 6 cells"),
    (dict(n_cells=1, overlap=0.2, lobe_gap=(0.3, 0.1)), r"lobe_gap=\(0.3, 0.1\)"),
])
def test_impossible_requests_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        touching_cells(**kwargs)


def test_lobes_drawn_apart_lie_in_pieces_the_drawn_gap_apart():
    """``lobe_gap`` (times the short semi-axis b): a 2- or 3-lobed nucleus in that many pieces,
    each within about the drawn range of its nearest neighbour (digital outlines: +-1.5 px);
    the nucleus inside its cell; a round nucleus stays one piece."""
    low, high = 0.15, 0.3
    lobed = 0
    for seed in range(30):
        cluster = touching_cells(1, 0.2, size=200, seed=seed, radius=(30.0, 40.0),
                                 lobe_gap=(low, high))
        cell, nucleus = cluster.cells[0], cluster.label_map == 2
        pieces, count = ndi.label(nucleus, EIGHT_CONNECTED)
        assert count == len(cell.lobes) and (cluster.instances[nucleus] == 1).all()
        if count < 2:
            continue
        lobed += 1
        for piece in range(1, count + 1):
            nearest = ndi.distance_transform_edt(pieces != piece)[(pieces > 0) & (pieces != piece)]
            gap = nearest.min() - 1
            assert low * cell.body.b - 1.5 <= gap <= high * cell.body.b + 1.5
    assert lobed >= 10


def test_lobes_apart_cut_single_cells_unless_wide_cuts_join():
    """Single cells whose lobes lie apart: the nucleus markers cut many in parts, and the join
    of wide cuts makes them whole again; connected components count each once."""
    rows = report.count_errors(overlaps=(0.2,), n_images=30, n_cells=(1, 1), size=200,
                               radius=(30.0, 40.0), lobe_gap=(0.15, 0.4),
                               methods={**report.METHODS, report.CUTS_KEPT: report.cuts_kept})
    exact = {row["method"]: row["exact_percent"] for row in rows}
    assert exact["connected components"] == 100.0
    assert exact[report.CUTS_KEPT] <= 70.0  # 50 % measured
    assert exact["watershed, nucleus markers"] >= exact[report.CUTS_KEPT] + 25.0  # 90 %


def test_report_prints_the_cuts_kept_column_for_lobes_apart(capsys):
    report.main(["--images", "4", "--overlaps", "0.2", "--cells", "1", "2", "--lobe-gap", "0.1",
                 "0.3", "--cuts-kept"])
    out = capsys.readouterr().out
    assert "1-2 cells each" in out and "lobe gaps 0.1-0.3 of the short semi-axis" in out
    header = next(line for line in out.splitlines() if line.startswith("| overlap |"))
    assert header.endswith(f"| {report.CUTS_KEPT} |")
    assert f"by {report.CUTS_KEPT}, by cells per image" in out


def test_count_errors_components_vs_watershed():
    rows = report.count_errors(overlaps=(0.1, 0.3, 0.5), n_images=40,
                               methods={**report.METHODS, report.CUTS_KEPT: report.cuts_kept})
    truth = np.mean([c.count for c in touching_cells_set(40, 0.1)])
    by = {(row["overlap"], row["method"]): row["mean_abs_error"] for row in rows}
    exact = {(row["overlap"], row["method"]): row["exact_percent"] for row in rows}
    bias = {(row["overlap"], row["method"]): row["mean_error"] for row in rows}
    for overlap in (0.1, 0.3, 0.5):
        # Every cluster is one component of >= 2 cells: components always count 1.
        assert exact[overlap, "connected components"] == 0.0
        assert by[overlap, "connected components"] == pytest.approx(truth - 1)
        assert by[overlap, "watershed, nucleus markers"] <= by[overlap, "watershed"]
    # Slight overlaps: the distance watershed counts almost every cluster right.
    assert exact[0.1, "watershed"] >= 85.0 and exact[0.1, "watershed, nucleus markers"] >= 85.0
    assert by[0.3, "watershed"] < by[0.3, "connected components"] / 2
    # Deep overlaps: necks too shallow for h = 2 merge cells; the nuclei still tell most of them
    # apart, and the join of wide cuts gives some back (crescents of hidden cells join).
    assert bias[0.5, "watershed"] < -1.0
    assert by[0.5, report.CUTS_KEPT] < by[0.5, "watershed"] / 2
    assert by[0.5, report.CUTS_KEPT] < by[0.5, "watershed, nucleus markers"]


@pytest.mark.slow
def test_the_doc_table_is_what_the_report_prints():
    table = report.markdown_table(report.count_errors())
    assert table in (REPO / "docs" / "touching_cells.md").read_text()


def test_watershed_keeps_pixels_joined_to_a_cell_only_at_a_corner():
    # Cells are 8-connected, as "components" says, so the watershed floods across corners too:
    # a pixel and a 5x5 block that meet a cell (seeded by its nucleus) only at a corner are
    # part of it, not left over as objects of their own.
    cell = np.zeros((30, 30), bool)
    cell[1:11, 1:11] = True
    cell[11:16, 11:16] = True
    cell[0, 11] = True
    nucleus = np.zeros_like(cell)
    nucleus[4:7, 4:7] = True
    instances = separate_instances(cell, nucleus, min_size=30)
    assert instances.max() == 1
    np.testing.assert_array_equal(instances > 0, cell)
    # Without a nucleus the block, whose distance peak rises h above the corner, is a cell of
    # its own (dropped under min_size), but the lone pixel still joins its neighbour.
    single = np.zeros((12, 12), bool)
    single[1:8, 1:8] = True
    single[8, 8] = True
    np.testing.assert_array_equal(separate_instances(single, None, min_size=30) > 0, single)
