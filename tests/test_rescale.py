"""Inference at the training magnification (`predict --scale`): unet_keras.rescale."""

import numpy as np
import pytest

from unet_keras import rescale
from unet_keras.rescale import (AUTO_TOLERANCE, ScaledPredictor, ScaleError, parse_scale,
                                predict_at_scale, training_cell_diameter)


def disk_image(size: int, diameter: float, centre=None) -> tuple[np.ndarray, np.ndarray]:
    """A dark disk on a light background: (uint8 RGB image, label map with the disk as 1)."""
    rows, cols = np.mgrid[:size, :size]
    cy, cx = centre or (size / 2, size / 2)
    disk = (rows + 0.5 - cy) ** 2 + (cols + 0.5 - cx) ** 2 <= (diameter / 2) ** 2
    image = np.where(disk[..., None], 60, 230).astype(np.uint8) * np.ones(3, np.uint8)
    return image, disk.astype(np.uint8)


class DarkIsCell:
    """A stand-in model: whole-cell probability 1 on dark pixels; counts its calls and sizes."""

    def __init__(self):
        self.shapes = []

    def __call__(self, image):
        self.shapes.append(image.shape[:2])
        return (np.asarray(image)[..., :1] < 128).astype(np.float32)


@pytest.mark.parametrize("text, expected", [("auto", "auto"), ("2", 2.0), ("0.5", 0.5)])
def test_scale_option_reads_auto_or_a_factor(text, expected):
    assert parse_scale(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "5", "big", "nan"])
def test_scale_option_refuses_other_values_naming_them(text):
    with pytest.raises(ScaleError, match=f"--scale '{text}'"):
        parse_scale(text)


def test_training_cell_diameter_is_the_median_of_cells_clear_of_the_edge():
    masks = [disk_image(120, d)[1] for d in (60, 70, 80)]
    masks.append(disk_image(120, 100, centre=(10, 10))[1])  # cut by the edge: not counted
    assert training_cell_diameter(masks) == pytest.approx(70, abs=1)
    with pytest.raises(ScaleError, match="no cells"):
        training_cell_diameter([np.zeros((8, 8), np.uint8)])


def test_probabilities_at_another_scale_come_back_on_the_image_grid():
    image, disk = disk_image(90, 50)
    fn = DarkIsCell()
    prob = predict_at_scale(fn, image, 2.0)
    assert fn.shapes == [(180, 180)] and prob.shape == (90, 90, 1)
    found = prob[..., 0] > 0.5
    assert (found & (disk > 0)).sum() / (found | (disk > 0)).sum() > 0.97


def test_auto_scale_brings_large_cells_to_the_training_size():
    image, _ = disk_image(300, 150)  # twice the reference: predicted again at 0.5x
    fn = DarkIsCell()
    predictor = ScaledPredictor(fn, "auto", reference=75.0)
    prob = predictor(image)
    assert fn.shapes == [(300, 300), (150, 150)]
    assert predictor.factors == [pytest.approx(0.5, abs=0.01)] and prob.shape == (300, 300, 1)


class BreaksLargeCells(DarkIsCell):
    """A stand-in model that, like a real one, meets a cell wider than any it trained on only
    in pieces: an object over ``limit`` px wide in its input comes out as 12 px squares."""

    limit = 150

    def __call__(self, image):
        dark = super().__call__(image)[..., 0] > 0.5
        if dark.sum() > np.pi / 4 * self.limit**2:
            rows, cols = np.mgrid[:dark.shape[0], :dark.shape[1]]
            dark &= (rows // 12 % 2 == 0) & (cols // 12 % 2 == 0)
        return dark[..., None].astype(np.float32)


def test_auto_scale_is_not_fooled_by_fragments_of_a_large_cell():
    image, disk = disk_image(300, 220)  # 2.9x the reference: the first pass sees 12 px pieces
    fn = BreaksLargeCells()
    predictor = ScaledPredictor(fn, "auto", reference=75.0)
    prob = predictor(image)
    # Enlarging (4x) would break it further; of the shrunken views 0.25x and 0.35x show the
    # whole disk (55 and 77 px) within the tolerance of 75 px, 0.35x the closer.
    assert fn.shapes == [(300, 300), (75, 75), (105, 105), (150, 150), (210, 210)]
    assert predictor.factors == [0.35]
    found = prob[..., 0] > 0.5
    assert (found & (disk > 0)).sum() / (found | (disk > 0)).sum() > 0.97


def test_fragments_are_checked_even_where_the_pixel_bound_allows_little_enlargement(monkeypatch):
    # The image is near the pixel bound (1.2x allowed): the fragments' call for 4x was capped
    # to 1.2x before the tolerance test, read as "within tolerance", and the shrunken views
    # that show the whole cell were never tried.
    monkeypatch.setattr(rescale, "MAX_SCALED_PIXELS", int(300 * 300 * 1.2**2))
    image, disk = disk_image(300, 220)
    predictor = ScaledPredictor(BreaksLargeCells(), "auto", reference=75.0)
    prob = predictor(image)
    assert predictor.factors == [0.35]
    found = prob[..., 0] > 0.5
    assert (found & (disk > 0)).sum() / (found | (disk > 0)).sum() > 0.97


class MissesSmallCells(DarkIsCell):
    """A stand-in model that, like a real one, does not see cells far smaller than any it
    trained on: an object under ``limit`` px wide in its input comes out as background."""

    limit = 30

    def __call__(self, image):
        dark = super().__call__(image)
        return dark if dark.sum() >= np.pi / 4 * self.limit**2 else np.zeros_like(dark)


def test_auto_scale_finds_cells_too_small_for_the_first_pass():
    image, disk = disk_image(64, 25)  # a third of the reference: the first pass sees nothing
    fn = MissesSmallCells()
    predictor = ScaledPredictor(fn, "auto", reference=75.0)
    prob = predictor(image)
    # Enlarged 1.4x (35 px) and 2x (50 px) the cell is still more than 1.4x under 75 px;
    # 2.8x (70 px) and 4x (100 px) are within it, 2.8x the closer.
    assert fn.shapes == [(64, 64), (90, 90), (128, 128), (179, 179), (256, 256)]
    assert predictor.factors == [2.8] and prob.shape == (64, 64, 1)
    found = prob[..., 0] > 0.5
    assert (found & (disk > 0)).sum() / (found | (disk > 0)).sum() > 0.9


def test_auto_scale_leaves_cells_within_the_tolerance_alone():
    fn = DarkIsCell()
    predictor = ScaledPredictor(fn, "auto", reference=75.0)
    for diameter in (75 / AUTO_TOLERANCE + 2, 75 * AUTO_TOLERANCE - 2):
        image = disk_image(160, diameter)[0]
        np.testing.assert_array_equal(predictor(image), fn(image))
    blank = np.full((64, 64, 3), 230, np.uint8)  # no cell found: the first pass stands
    predictor(blank)
    assert predictor.factors == [1.0, 1.0, 1.0]


def test_auto_scale_needs_the_models_training_cell_size():
    with pytest.raises(ScaleError, match="unet-keras tune"):
        ScaledPredictor(DarkIsCell(), "auto", reference=0.0)


def test_enlargement_stops_at_the_pixel_bound(monkeypatch, caplog):
    monkeypatch.setattr(rescale, "MAX_SCALED_PIXELS", 200 * 200)
    image, _ = disk_image(100, 20)  # cells a quarter of the reference: 3.75x wanted, 2x allowed
    fn = DarkIsCell()
    predictor = ScaledPredictor(fn, "auto", reference=75.0)
    with caplog.at_level("WARNING", logger="unet_keras.rescale"):
        prob = predictor(image)
    # The shrunken views checked first find the same small cell: the enlargement stands.
    assert fn.shapes == [(100, 100), (25, 25), (35, 35), (50, 50), (70, 70), (200, 200)]
    assert prob.shape == (100, 100, 1)
    assert predictor.factors == [2.0] and "enlarged 2.00x instead" in caplog.text
    fixed = ScaledPredictor(fn, 4.0)
    fixed(image)
    assert fixed.factors == [2.0] and fn.shapes[-1] == (200, 200)
    # No cell found: only the enlarged views within the bound are tried after the first pass
    # (1.4x, and 2x exactly at it; not 2.8x or 4x), and none is reported as lowered.
    caplog.clear()
    blank = np.full((100, 100, 3), 230, np.uint8)
    with caplog.at_level("WARNING", logger="unet_keras.rescale"):
        predictor(blank)
    assert fn.shapes[-3:] == [(100, 100), (140, 140), (200, 200)]
    assert predictor.factors[-1] == 1.0 and "instead" not in caplog.text
    big = np.zeros((300, 300, 3), np.uint8)  # already over the bound: not enlarged at all
    assert rescale.bounded_factor(big.shape, 3.0) == 1.0
    assert rescale.bounded_factor(big.shape, 0.5) == 0.5  # shrinking is never bounded
