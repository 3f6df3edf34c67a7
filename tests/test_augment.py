"""Mask-aligned augmentation: exact dihedral moves, padding, alignment, colour-only changes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.color import hed2rgb, rgb2hed

from unet_keras.data.augment import (
    ELASTIC_GRID,
    AugmentParams,
    Augmenter,
    colour_jitter,
    fit_to_size,
    stain_jitter,
)
from unet_keras.data.synthetic import synthetic_smear
from unet_keras.preprocess import to_model_input

GEOMETRY_ONLY = dict(stain=False, colour=False)


@pytest.fixture(scope="module")
def smear():
    return synthetic_smear(120, n_white=2, seed=11)


def test_output_shapes_range_and_labels_for_120_to_128(smear):
    image, mask = smear
    augmenter = Augmenter(128, seed=0)
    for _ in range(8):
        x, y = augmenter(image, mask)
        assert x.shape == (128, 128, 3) and x.dtype == np.float32
        assert y.shape == (128, 128) and y.dtype == np.uint8
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert set(np.unique(y)) <= {0, 1, 2}


def test_nearest_sampling_never_invents_labels():
    # Bilinear sampling of a 0/2 mask would make 1s along every edge.
    mask = np.zeros((64, 64), np.uint8)
    mask[20:44, 16:40] = 2
    image = np.zeros((64, 64, 3), np.uint8)
    augmenter = Augmenter(64, seed=1, **GEOMETRY_ONLY)
    for _ in range(5):
        _, y = augmenter(image, mask)
        assert set(np.unique(y)) == {0, 2}


def test_same_seed_same_sequence_other_seed_differs(smear):
    image, mask = smear
    a, b, c = Augmenter(128, seed=7), Augmenter(128, seed=7), Augmenter(128, seed=8)
    for _ in range(3):
        xa, ya = a(image, mask)
        xb, yb = b(image, mask)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a(image, mask)[0], c(image, mask)[0])


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_flips_and_turns_equal_numpy_exactly(smear, flip, turns):
    image, mask = (a[:96, 10:106] for a in smear)  # square, not symmetric
    x, y = Augmenter(96).apply(image, mask, AugmentParams(flip=flip, rot90=turns))
    expected_image = np.rot90(np.fliplr(image) if flip else image, turns)
    expected_mask = np.rot90(np.fliplr(mask) if flip else mask, turns)
    np.testing.assert_array_equal(x, to_model_input(expected_image))
    np.testing.assert_array_equal(y, expected_mask)


def test_dihedral_only_sampling_gives_exact_dihedral_copies(smear):
    image, mask = (a[:96, 10:106] for a in smear)
    copies = [np.rot90(f, k) for f in (mask, np.fliplr(mask)) for k in range(4)]
    augmenter = Augmenter(96, free_rotation=False, scale_range=(1, 1), seed=2, **GEOMETRY_ONLY)
    seen = set()
    for _ in range(10):
        _, y = augmenter(image, mask)
        matches = [i for i, c in enumerate(copies) if np.array_equal(y, c)]
        assert len(matches) == 1
        seen.update(matches)
    assert len(seen) > 1


def test_fit_to_size_reflect_pads_120_by_4_each_side(smear):
    image, mask = smear
    x, y = fit_to_size(image, mask, 128)
    np.testing.assert_array_equal(x[4:124, 4:124], to_model_input(image))
    np.testing.assert_array_equal(y[4:124, 4:124], mask)
    # numpy "reflect" mirrors about the edge pixel: padded row 0 is input row 4, row 127 is 115.
    np.testing.assert_array_equal(y[0, 4:124], mask[4])
    np.testing.assert_array_equal(y[127, 4:124], mask[115])
    np.testing.assert_array_equal(y[4:124, 0], mask[:, 4])


def test_fit_to_size_crops_and_pads_per_axis():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 117, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (300, 117), dtype=np.uint8)
    x, y = fit_to_size(image, mask, 128)
    # Rows: crop from (300 - 128 + 1) // 2 = 86. Columns: 11 short, padded 5 before, 6 after.
    np.testing.assert_array_equal(y[:, 5:122], mask[86:214])
    np.testing.assert_array_equal(x[:, 5:122], to_model_input(image[86:214]))
    np.testing.assert_array_equal(y[:, 0], mask[86:214, 5])
    np.testing.assert_array_equal(y[:, 127], mask[86:214, 110])


@pytest.mark.parametrize("shape", [(120, 120), (117, 131), (300, 200), (5, 7)])
def test_identity_params_equal_fit_to_size(shape):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    mask = rng.integers(0, 3, shape, dtype=np.uint8)
    size = 16 if shape == (5, 7) else 128  # (5, 7) -> 16 reflects more than once
    expected = fit_to_size(image, mask, size)
    got = Augmenter(size).apply(image, mask, AugmentParams())
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    center = Augmenter(size, seed=9).center(image, mask)
    np.testing.assert_array_equal(center[1], expected[1])


@pytest.mark.parametrize("elastic", [0.0, 4.0])
def test_mask_stays_on_the_pixels_it_labels(smear, elastic):
    image, mask = smear
    marked = image.copy()
    marked[mask == 2] = (0, 255, 0)  # a colour nothing else in the smear has
    augmenter = Augmenter(128, seed=3, elastic=elastic, **GEOMETRY_ONLY)
    for _ in range(6):
        x, y = augmenter(marked, mask)
        green = np.linalg.norm(x - np.array([0, 1, 0], np.float32), axis=2) < 0.5
        nucleus = y == 2
        ring = np.ones((3, 3))
        border = ndi.binary_dilation(nucleus, ring) & ~ndi.binary_erosion(nucleus, ring)
        assert nucleus.sum() > 100
        assert not ((green ^ nucleus) & ~border).any()


@pytest.mark.parametrize("elastic", [0.0, 4.0])
def test_mask_and_image_centroids_agree_to_a_fraction_of_a_pixel(smear, elastic):
    # Finer than the 1 px border above: reading the mask at the floor of each coordinate, not
    # the nearest pixel, moves it by ~0.6 px on average; correct sampling stays near 0.1 px.
    _, mask = smear
    indicator = np.repeat((mask == 2)[..., None] * 255, 3, axis=2).astype(np.uint8)
    augmenter = Augmenter(128, seed=3, elastic=elastic, **GEOMETRY_ONLY)
    gaps = []
    for _ in range(10):
        x, y = augmenter(indicator, mask)
        gap = np.subtract(ndi.center_of_mass(x[..., 0]), ndi.center_of_mass(y == 2))
        gaps.append(np.abs(gap).max())
    assert np.mean(gaps) < 0.2


def test_zoom_by_two_quadruples_a_centred_disc():
    yy, xx = np.mgrid[:128, :128]
    mask = ((yy - 63.5) ** 2 + (xx - 63.5) ** 2 <= 10**2).astype(np.uint8)
    image = np.repeat(mask[..., None] * 255, 3, axis=2).astype(np.uint8)
    _, y = Augmenter(128).apply(image, mask, AugmentParams(scale=2.0))
    area = np.pi * 20**2  # radius 10 drawn twice as large: about 1257 px
    assert abs(int(y.sum()) - area) < 0.05 * area


def test_elastic_lattice_of_one_offset_translates_exactly(smear):
    # The interpolation weights sum to 1, so the same displacement at every lattice point
    # moves every output pixel by it: +3 rows, -2 cols reads the input 3 rows down, 2 left.
    image, mask = smear
    shifted = (3.0,) * ELASTIC_GRID**2 + (-2.0,) * ELASTIC_GRID**2
    x, y = Augmenter(120).apply(image, mask, AugmentParams(elastic=shifted))
    np.testing.assert_array_equal(y[:-3, 2:], mask[3:, :-2])
    np.testing.assert_allclose(x[:-3, 2:], to_model_input(image)[3:, :-2], atol=1e-6)
    zero = Augmenter(120).apply(image, mask, AugmentParams(elastic=(0.0,) * 2 * ELASTIC_GRID**2))
    np.testing.assert_array_equal(zero[1], mask)


def test_elastic_bends_cells_without_moving_the_other_draws(smear):
    image, mask = smear
    plain, bent = Augmenter(128, seed=5), Augmenter(128, seed=5, elastic=4.0)
    for _ in range(3):
        a, b = plain.sample(mask.shape), bent.sample(mask.shape)
        assert a.elastic == () and len(b.elastic) == 2 * ELASTIC_GRID**2
        assert dataclasses.replace(b, elastic=()) == a
        sd = float(np.std(b.elastic))
        assert 2.0 < sd < 6.0  # about the 4 px asked for, from 32 draws
        y_plain, y_bent = plain.apply(image, mask, a)[1], bent.apply(image, mask, b)[1]
        changed = np.mean(y_plain != y_bent)
        assert 0.005 < changed < 0.2  # outlines move, the cells stay where they were
        # Same labels, and about the same cell area (no cell torn or swallowed).
        assert set(np.unique(y_bent)) == set(np.unique(y_plain))
        assert abs(int((y_bent > 0).sum()) - int((y_plain > 0).sum())) < 0.15 * (y_plain > 0).sum()


def test_blur_softens_half_the_crops_without_moving_the_other_draws(smear):
    image, mask = smear
    plain = Augmenter(128, seed=5, **GEOMETRY_ONLY)
    soft = Augmenter(128, seed=5, blur=1.5, **GEOMETRY_ONLY)
    sigmas = []
    for _ in range(40):
        a, b = plain.sample(mask.shape), soft.sample(mask.shape)
        assert a.blur == 0.0 and 0.0 <= b.blur <= 1.5
        assert dataclasses.replace(b, blur=0.0) == a
        sigmas.append(b.blur)
    assert 10 <= sum(s > 0 for s in sigmas) <= 30  # about half of 40
    # The image is the unblurred crop through a Gaussian of that sigma; the mask is untouched.
    params = dataclasses.replace(a, blur=1.2)
    x_plain, y_plain = plain.apply(image, mask, a)
    x_soft, y_soft = soft.apply(image, mask, params)
    np.testing.assert_array_equal(y_soft, y_plain)
    np.testing.assert_allclose(x_soft, ndi.gaussian_filter(x_plain, (1.2, 1.2, 0), mode="reflect"),
                               atol=1e-6)
    assert np.abs(np.diff(x_soft, axis=0)).mean() < 0.8 * np.abs(np.diff(x_plain, axis=0)).mean()


def test_colour_changes_the_image_but_not_the_mask(smear):
    image, mask = smear
    plain = Augmenter(128, seed=4, stain=False, colour=False)
    coloured = Augmenter(128, seed=4, stain=True, colour=True)
    for _ in range(3):
        x_plain, y_plain = plain(image, mask)
        x_col, y_col = coloured(image, mask)
        np.testing.assert_array_equal(y_plain, y_col)
        assert np.abs(x_plain - x_col).mean() > 0.005


def test_stain_jitter_matches_skimage_hed_round_trip():
    rng = np.random.default_rng(0)
    # Colours made from positive stain amounts, so rgb2hed's clamp of negative stains stays idle.
    image = hed2rgb(rng.uniform(0.01, 0.08, (16, 16, 3))).astype(np.float32)
    scale, shift = (1.08, 0.93, 1.02), (0.01, -0.005, 0.0)
    expected = hed2rgb(rgb2hed(image) * np.array(scale) + np.array(shift))
    np.testing.assert_allclose(stain_jitter(image, scale, shift), expected, atol=1e-4)
    assert np.abs(expected - image).max() > 0.02  # the jitter is visible at this tolerance
    np.testing.assert_allclose(stain_jitter(image, (1, 1, 1), (0, 0, 0)), image, atol=1e-5)


def test_colour_jitter_worked_values():
    red = np.zeros((2, 2, 3), np.float32)
    red[..., 0] = 1.0
    # A third of a turn about the grey axis sends red to green.
    turned = colour_jitter(red, AugmentParams(hue=1 / 3))
    np.testing.assert_allclose(turned[0, 0], [0, 1, 0], atol=1e-6)
    # No saturation leaves the luma: 0.299 for pure red.
    grey_red = colour_jitter(red, AugmentParams(saturation=0.0))
    np.testing.assert_allclose(grey_red[0, 0], [0.299] * 3, atol=1e-6)
    grey = np.full((2, 2, 3), 0.5, np.float32)
    np.testing.assert_allclose(colour_jitter(grey, AugmentParams(brightness=0.1)), 0.6, atol=1e-6)
    np.testing.assert_allclose(colour_jitter(grey, AugmentParams(gamma=2.0)), 0.25, atol=1e-6)
    # Contrast pivots on the mean luma (0.5 here): 0.25 and 0.75 move to 0.125 and 0.875.
    halves = np.concatenate([np.full((1, 2, 3), 0.25), np.full((1, 2, 3), 0.75)]).astype(np.float32)
    out = colour_jitter(halves, AugmentParams(contrast=1.5))
    np.testing.assert_allclose(out[:, 0, 0], [0.125, 0.875], atol=1e-6)


def test_disabled_options_leave_identity_params():
    augmenter = Augmenter(128, flips=False, rot90=False, free_rotation=False, scale_range=(1, 1),
                          stain=False, colour=False, seed=0)
    params = augmenter.sample((128, 128))
    assert params == dataclasses.replace(AugmentParams(), shift=params.shift)
    assert params.shift == (0.0, 0.0)  # 128 px image, 128 px window: nothing to crop or pad


def test_colour_strength_scales_each_colour_draw_about_the_identity():
    draws = {k: [Augmenter(128, seed=4, colour_strength=k).sample((120, 120)) for _ in range(20)]
             for k in (0.0, 1.0, 2.0)}
    for none, one, two in zip(*draws.values()):
        assert dataclasses.replace(two, **_colour_of(one)) == one  # geometry and stain: same draws
        for name, value in _colour_of(one).items():
            identity = getattr(AugmentParams(), name)
            if name == "gamma":
                assert np.log(_colour_of(two)[name]) == pytest.approx(2 * np.log(value))
            else:
                assert _colour_of(two)[name] - identity == pytest.approx(2 * (value - identity))
            assert _colour_of(none)[name] == pytest.approx(identity)


def _colour_of(params: AugmentParams) -> dict:
    return {name: getattr(params, name)
            for name in ("brightness", "contrast", "gamma", "hue", "saturation")}


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="colour_strength"):
        Augmenter(128, colour_strength=5.0)
    with pytest.raises(ValueError, match="scale_range"):
        Augmenter(128, scale_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="elastic"):
        Augmenter(128, elastic=-1.0)
    with pytest.raises(ValueError, match="blur"):
        Augmenter(128, blur=-0.5)
    with pytest.raises(ValueError, match="mask shape"):
        Augmenter(128)(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 11), np.uint8))


def _reference(images) -> dict:
    from unet_keras.colour import fit_reference

    return fit_reference(images)


def test_colour_transfer_maps_half_the_crops_onto_drawn_statistics(smear):
    from unet_keras.colour import colour_features, normalise
    from unet_keras.data.synthetic import synthetic_dataset

    image, mask = smear
    reference = _reference(e["image"] for e in synthetic_dataset(12, size=64, seed=2))
    plain = Augmenter(128, seed=6)
    moved = Augmenter(128, seed=6, colour_transfer=2.0, colour_reference=reference)
    draws = [(plain.sample(mask.shape), moved.sample(mask.shape)) for _ in range(400)]
    # The other draws stay the same; about half the samples get a target.
    assert all(dataclasses.replace(b, colour_target=()) == a for a, b in draws)
    targets = np.array([b.colour_target for _, b in draws if b.colour_target])
    assert 160 < len(targets) < 240 and targets.shape[1] == 6
    # Drawn around the reference, twice its spread: the sd of each statistic's draws.
    spread = targets.std(0) / np.sqrt(np.diag(np.asarray(reference["cov"])))
    assert np.all((spread[:3] > 1.6) & (spread[:3] < 2.4)) and targets[:, 3:].min() >= 1.0
    # Applied: the geometry as without, then Reinhard onto the target with the whole image's
    # statistics, before the colour jitter (off here).
    a, b = next((a, b) for a, b in draws if b.colour_target)
    geometry = Augmenter(128, stain=False, colour=False, colour_transfer=2.0,
                         colour_reference=reference)
    no_jitter = dict(brightness=0.0, contrast=1.0, gamma=1.0, hue=0.0, saturation=1.0,
                     stain_scale=(1.0, 1.0, 1.0), stain_shift=(0.0, 0.0, 0.0))
    x_plain, y_plain = geometry.apply(image, mask, dataclasses.replace(a, **no_jitter))
    params = dataclasses.replace(b, **no_jitter)
    x_moved, y_moved = geometry.apply(image, mask, params)
    np.testing.assert_array_equal(y_moved, y_plain)
    expected = normalise(np.round(x_plain * 255).astype(np.uint8), {},
                         np.asarray(b.colour_target), colour_features(image)) / 255.0
    np.testing.assert_allclose(x_moved, expected, atol=1e-6)
    assert np.abs(x_moved - x_plain).mean() > 0.01


def test_colour_transfer_needs_a_reference():
    with pytest.raises(ValueError, match="colour_transfer=1.0"):
        Augmenter(128, colour_transfer=1.0)
    with pytest.raises(ValueError, match="colour_transfer=-1"):
        Augmenter(128, colour_transfer=-1)
