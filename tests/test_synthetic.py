"""The synthetic smear generator: determinism, exact masks, cell counts and touching layouts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from unet_keras.data.synthetic import (
    SYNTHETIC_NOTE,
    synthetic_dataset,
    synthetic_instances,
    synthetic_smear,
)

EIGHT_CONNECTED = np.ones((3, 3), bool)


def test_same_seed_same_smear_and_other_seed_differs():
    first = synthetic_instances(128, n_white=2, seed=5)
    again = synthetic_instances(128, n_white=2, seed=5)
    other = synthetic_instances(128, n_white=2, seed=6)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[1], other[1])


def test_shapes_dtypes_and_label_values():
    image, labels, instances = synthetic_instances((96, 144), n_white=1, seed=0)
    assert image.shape == (96, 144, 3) and image.dtype == np.uint8
    assert labels.shape == (96, 144) and labels.dtype == np.uint8
    assert instances.shape == (96, 144) and instances.dtype == np.int32
    assert set(np.unique(labels)) == {0, 1, 2}


def test_smear_is_the_first_two_outputs_of_instances():
    image, labels = synthetic_smear(120, n_white=2, seed=3)
    image_i, labels_i, _ = synthetic_instances(120, n_white=2, seed=3)
    np.testing.assert_array_equal(image, image_i)
    np.testing.assert_array_equal(labels, labels_i)


@pytest.mark.parametrize("seed", range(6))
def test_every_nucleus_has_a_rim_of_cytoplasm(seed):
    _, labels, _ = synthetic_instances(120, n_white=2, seed=seed)
    nucleus = labels == 2
    # Clipping lobes to 0.85 of the cell's radii leaves >= 1 px of cytoplasm round the nucleus.
    inner = ndi.binary_erosion(labels > 0, EIGHT_CONNECTED)
    assert nucleus.any()
    assert not (nucleus & ~inner).any()


@pytest.mark.parametrize("n_white", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_separate_cells_are_separate_components(n_white, seed):
    _, labels, instances = synthetic_instances(160, n_white=n_white, seed=seed)
    _, components = ndi.label(labels > 0, EIGHT_CONNECTED)
    assert components == n_white
    assert sorted(np.unique(instances)) == list(range(n_white + 1))
    np.testing.assert_array_equal(instances > 0, labels > 0)


@pytest.mark.parametrize("seed", range(5))
def test_touching_cells_form_one_component_with_n_instances(seed):
    _, labels, instances = synthetic_instances(160, n_white=3, seed=seed, touching=True)
    _, components = ndi.label(labels > 0, EIGHT_CONNECTED)
    assert components == 1
    assert sorted(np.unique(instances)) == [0, 1, 2, 3]
    np.testing.assert_array_equal(instances > 0, labels > 0)
    for cell in (1, 2, 3):
        # Overlaps are slight: every cell keeps part of its nucleus in view.
        assert (labels[instances == cell] == 2).any()


def test_colours_order_like_a_stained_smear():
    image, labels = synthetic_smear(200, n_white=3, seed=2)
    brightness = image.astype(float).mean(axis=2)
    nucleus, cytoplasm, background = (brightness[labels == v].mean() for v in (2, 1, 0))
    assert nucleus < cytoplasm < background
    # Purple nucleus: blue and red above green.
    r, g, b = image[labels == 2].astype(float).mean(axis=0)
    assert b > g and r > g


def test_cells_that_cannot_fit_raise():
    with pytest.raises(ValueError, match="cannot fit 40 white cells"):
        synthetic_smear(32, n_white=40, seed=0)
    with pytest.raises(ValueError, match="size=8"):
        synthetic_smear(8)


def test_dataset_examples_look_like_real_examples():
    examples = synthetic_dataset(3, size=120, seed=1)
    ids = [e["image_id"] for e in examples]
    assert ids == ["synthetic-0000", "synthetic-0001", "synthetic-0002"]
    for example in examples:
        assert example["label"] == -1
        assert example["image"].shape == (120, 120, 3) and example["image"].dtype == np.uint8
        assert example["mask"].shape == (120, 120) and example["mask"].dtype == np.uint8


def test_dataset_is_prefix_stable_and_seeded():
    short = synthetic_dataset(2, size=64, seed=4)
    long = synthetic_dataset(4, size=64, seed=4)
    for a, b in zip(short, long):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["mask"], b["mask"])
    assert not np.array_equal(long[0]["image"], synthetic_dataset(1, size=64, seed=5)[0]["image"])


def test_dataset_cell_counts_stay_in_the_inclusive_range():
    examples = synthetic_dataset(12, size=160, seed=0, n_white=(1, 3))
    counts = [ndi.label(e["mask"] > 0, EIGHT_CONNECTED)[1] for e in examples]
    assert set(counts) == {1, 2, 3}


def test_note_says_synthetic():
    assert SYNTHETIC_NOTE.startswith("SYNTHETIC")


def test_data_modules_import_no_deep_learning_framework():
    # A fresh interpreter: other tests in this process may have imported keras already.
    code = (
        "import sys, unet_keras.data.synthetic, unet_keras.data.augment; "
        "print(sorted(m for m in ('keras', 'jax', 'tensorflow', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
