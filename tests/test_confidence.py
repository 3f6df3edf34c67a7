"""Per-cell confidence: the threshold margin worked out by hand, its rim and nucleus averages
on drawn cells, and the same figures from every path that measures cells."""

import math

import numpy as np
import pytest

from unet_keras.confidence import RIM_WIDTH, cell_confidences, decision_margin
from unet_keras.postprocess import measure_cells


def test_decision_margin_is_zero_at_the_threshold_and_one_at_either_end():
    p = np.array([0.0, 0.25, 0.5, 0.75, 1.0], np.float32)
    np.testing.assert_allclose(decision_margin(p, 0.5), [1.0, 0.5, 0.0, 0.5, 1.0])
    # An off-centre threshold scales each side by its own length: 0.25 below, 0.75 above.
    np.testing.assert_allclose(decision_margin(p, 0.25), [1.0, 0.0, 1 / 3, 2 / 3, 1.0], atol=1e-6)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            decision_margin(p, bad)


def two_squares() -> tuple[np.ndarray, np.ndarray]:
    """Two 10 x 10 cells. Cell 1: certain everywhere. Cell 2: its whole-cell probability 0.75
    on the rim (the 84 pixels outside its central 4 x 4 once eroded 3 times by the cross),
    its nucleus probability 0.5 in its left half."""
    instances = np.zeros((20, 40), np.int32)
    instances[5:15, 5:15], instances[5:15, 25:35] = 1, 2
    probability = np.zeros((20, 40, 2), np.float32)
    probability[..., 0][instances > 0] = 1.0
    probability[5:15, 25:35, 0] = 0.75
    probability[8:12, 28:32, 0] = 1.0  # the centre that erosion keeps
    probability[5:15, 25:30, 1] = 0.5
    return instances, probability


def test_cell_confidences_average_the_rim_and_the_nucleus_channel():
    assert RIM_WIDTH == 3  # the drawing above assumes it
    instances, probability = two_squares()
    got = cell_confidences(instances, probability, (0.5, 0.5))
    assert got[1] == {"outline_confidence": 1.0, "nucleus_confidence": 1.0}
    assert got[2] == {"outline_confidence": 0.5, "nucleus_confidence": 0.5}
    # One threshold serves both channels; a one-channel model has no nucleus confidence.
    assert cell_confidences(instances, probability, (0.5,)) == got
    one = cell_confidences(instances, probability[..., :1], (0.5,))
    assert one[2]["outline_confidence"] == 0.5 and math.isnan(one[2]["nucleus_confidence"])
    with pytest.raises(ValueError, match="over the same pixels"):
        cell_confidences(instances[:10], probability, (0.5,))


def test_a_cell_the_nucleus_channel_alone_made_is_as_sure_as_that_channel():
    # Whole-cell channel 0 everywhere (sure it is background), nucleus channel 0.75 on a square:
    # the cell exists through the nucleus channel, its outline is that channel's margin, 0.5,
    # not the whole-cell channel's 1.0. Signed margins: -1 at 0, 0 at t, 1 at 1.
    instances = np.zeros((12, 12), np.int32)
    instances[1:11, 1:11] = 1
    probability = np.zeros((12, 12, 2), np.float32)
    probability[1:11, 1:11, 1] = 0.75
    got = cell_confidences(instances, probability, (0.5, 0.5))
    assert got[1]["outline_confidence"] == 0.5
    np.testing.assert_allclose(decision_margin(np.array([0.0, 0.5, 1.0]), 0.5, signed=True),
                               [-1.0, 0.0, 1.0])


def test_measure_cells_writes_confidences_only_with_a_probability():
    instances, probability = two_squares()
    labels = (instances > 0).astype(np.uint8)
    with_probability = measure_cells(instances, labels, "x", probability=probability,
                                     thresholds=(0.5, 0.5))
    assert [r["outline_confidence"] for r in with_probability] == [1.0, 0.5]
    annotated = measure_cells(instances, labels, "x")
    assert all(math.isnan(r["outline_confidence"]) and math.isnan(r["nucleus_confidence"])
               for r in annotated)


def test_component_wise_measurement_gives_the_same_confidences():
    """The tiled runtime measures each connected component in its bounding box: a cell's rim
    lies inside its own box, so its confidences equal the whole image's."""
    from export.instances import instances_by_component
    from unet_keras.postprocess import probabilities_to_labels
    from unet_keras.separation import separate_instances

    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:120, :160]
    probability = np.zeros((120, 160, 2), np.float32)
    for y, x in ((30, 30), (30, 110), (90, 60), (85, 130)):
        d = np.hypot(yy - y, xx - x)
        probability[..., 0] = np.maximum(probability[..., 0], np.clip(1.2 - d / 18, 0, 1))
        probability[..., 1] = np.maximum(probability[..., 1], np.clip(1.1 - d / 9, 0, 1))
    probability += rng.uniform(0, 0.05, probability.shape).astype(np.float32)
    probability = np.clip(probability, 0, 1)
    labels = probabilities_to_labels(probability, (0.5, 0.5))
    whole = separate_instances(labels > 0, labels == 2)
    whole_rows = measure_cells(whole, labels, "x", probability=probability, thresholds=(0.5, 0.5))
    _, rows = instances_by_component(labels, "x", True, probability=probability,
                                     thresholds=(0.5, 0.5))
    key = lambda r: (r["bbox_min_row"], r["bbox_min_col"])  # noqa: E731
    pairs = list(zip(sorted(whole_rows, key=key), sorted(rows, key=key), strict=True))
    assert len(pairs) == 4
    for a, b in pairs:
        assert a["outline_confidence"] == b["outline_confidence"]
        assert a["nucleus_confidence"] == b["nucleus_confidence"]
        assert 0.0 < a["outline_confidence"] < 1.0
