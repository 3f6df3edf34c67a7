"""Inference on another stain's colours (`predict --colour`): unet_keras.colour."""

import numpy as np
import pytest

from unet_keras.colour import (MAX_GAIN, ColourError, ColourNormaliser, auto_target,
                               colour_features, distance, fit_reference, normalise)
from unet_keras.config import ConfigError, UNetConfig


def smear(rng, background, cell, size=48):
    """A cell-coloured disk on a background, both jittered a little, with pixel noise."""
    rows, cols = np.mgrid[:size, :size]
    disk = (rows - size / 2) ** 2 + (cols - size / 2) ** 2 < (size / 3) ** 2
    bg = np.asarray(background) + rng.normal(0, 6, 3)
    fg = np.asarray(cell) + rng.normal(0, 6, 3)
    image = np.where(disk[..., None], fg, bg) + rng.normal(0, 4, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


YELLOW, BROWN = (235, 225, 150), (120, 80, 90)  # the training batch
WHITE, PURPLE = (245, 240, 245), (110, 60, 150)  # another stain and scanner


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(0)
    return fit_reference(smear(rng, YELLOW, BROWN) for _ in range(40))


def test_reference_gate_separates_another_stain(reference):
    rng = np.random.default_rng(1)
    assert reference["n_images"] == 40 and reference["gate"] > 0
    alike = [distance(colour_features(smear(rng, YELLOW, BROWN)), reference) for _ in range(20)]
    other = [distance(colour_features(smear(rng, WHITE, PURPLE)), reference) for _ in range(5)]
    assert np.mean(np.array(alike) > reference["gate"]) <= 0.1
    assert min(other) > 3 * reference["gate"]


def test_normalise_maps_the_colour_statistics_onto_the_reference(reference):
    image = smear(np.random.default_rng(2), WHITE, PURPLE)
    mapped = normalise(image, reference)
    assert mapped.dtype == np.uint8 and mapped.shape == image.shape
    np.testing.assert_allclose(colour_features(mapped), reference["mean"], atol=1.5)
    assert distance(colour_features(mapped), reference) < reference["gate"]


def test_auto_target_inverts_in_the_gates_sphere(reference):
    mean, gate = np.array(reference["mean"]), reference["gate"]
    direction = np.linalg.cholesky(reference["cov"]) @ np.eye(6)[0]  # Mahalanobis length 1
    assert auto_target(mean + 0.9 * gate * direction, reference) is None  # inside: left alone
    for d in (1.001 * gate, 2 * gate, 10 * gate):
        target = auto_target(mean + d * direction, reference)
        assert distance(target, reference) == pytest.approx(gate**2 / d)
        np.testing.assert_allclose(target, mean + gate**2 / d * direction)
    # Continuous at the gate: an image just past it is barely moved.
    np.testing.assert_allclose(auto_target(mean + 1.001 * gate * direction, reference),
                               mean + gate * direction, atol=0.01 * gate)


class Recorder:
    def __init__(self):
        self.seen = []

    def __call__(self, image):
        self.seen.append(image)
        return np.zeros(image.shape[:2] + (1,), np.float32)


def test_auto_maps_only_images_unlike_the_training_ones(reference):
    rng = np.random.default_rng(3)
    alike, other = smear(rng, YELLOW, BROWN), smear(rng, WHITE, PURPLE)
    fn = Recorder()
    normaliser = ColourNormaliser(fn, "auto", reference)
    normaliser(alike)
    normaliser(other)
    assert normaliser.normalised == [False, True]
    assert fn.seen[0] is alike  # in distribution: the very array, untouched
    np.testing.assert_array_equal(
        fn.seen[1], normalise(other, reference, auto_target(colour_features(other), reference)))
    always, off = ColourNormaliser(None, "always", reference), ColourNormaliser(None, "off", {})
    assert not np.array_equal(always.map(alike), alike) and off.map(other) is other
    assert always.normalised == [True] and off.normalised == [False]


def test_a_model_without_colour_statistics_is_refused_saying_what_to_do():
    with pytest.raises(ColourError, match="unet-keras tune"):
        ColourNormaliser(Recorder(), "auto", {})
    with pytest.raises(ColourError, match="--colour 'sometimes'"):
        ColourNormaliser(Recorder(), "sometimes", {})


def test_too_few_training_images_give_no_reference():
    rng = np.random.default_rng(4)
    assert fit_reference(smear(rng, YELLOW, BROWN) for _ in range(6)) == {}
    # 7 images: each leave-one-out fit has 6 in 6 dimensions, a singular covariance.
    assert fit_reference(smear(rng, YELLOW, BROWN) for _ in range(7)) == {}
    assert fit_reference(smear(rng, YELLOW, BROWN) for _ in range(8))["n_images"] == 8


def test_the_reference_round_trips_in_the_config_and_bad_ones_are_refused(reference, tmp_path):
    UNetConfig(colour_reference=reference).save(tmp_path / "config.json")
    loaded = UNetConfig.load(tmp_path / "config.json")
    assert loaded.colour_reference["gate"] == pytest.approx(reference["gate"])
    np.testing.assert_allclose(loaded.colour_reference["cov"], reference["cov"])
    with pytest.raises(ConfigError, match="colour_reference"):
        UNetConfig(colour_reference={"mean": [0.0] * 3, "cov": [], "gate": 1.0})


def test_large_images_are_measured_on_a_grid_and_mapped_in_bands(reference, monkeypatch):
    from unet_keras import colour

    rng = np.random.default_rng(6)
    image = np.concatenate([smear(rng, WHITE, PURPLE, size=96) for _ in range(4)], axis=0)
    full, mapped = colour_features(image), normalise(image, reference)
    monkeypatch.setattr(colour, "MAX_STAT_PIXELS", image.shape[0] * image.shape[1] // 9)
    monkeypatch.setattr(colour, "_ROWS", 50)  # bands that do not divide the 384 rows
    np.testing.assert_allclose(colour_features(image), full, rtol=0.05, atol=0.5)
    banded = normalise(image, reference)
    assert banded.shape == image.shape and np.abs(banded.astype(int) - mapped).max() <= 2


def test_a_near_blank_field_is_not_stretched_to_full_contrast(reference):
    """Background with a grey level of noise: its spread grows by at most MAX_GAIN, where the
    reference's (tens of L*a*b* units) would turn the noise into structure."""
    rng = np.random.default_rng(3)
    blank = np.clip(np.asarray(WHITE) + rng.normal(0, 1.0, (64, 64, 3)), 0, 255).astype(np.uint8)
    before = colour_features(blank)
    assert (np.asarray(reference["mean"])[3:] / before[3:] > 2 * MAX_GAIN).all()
    after = colour_features(normalise(blank, reference))
    np.testing.assert_allclose(after[3:], MAX_GAIN * before[3:], rtol=0.25)
    np.testing.assert_allclose(after[:3], reference["mean"][:3], atol=1.5)
