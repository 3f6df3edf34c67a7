"""Training batches: the class-balanced drawing (frequencies worked out by hand), its saved
state, which a resumed run restores, and the narrower zoom of the last epochs."""

import logging
from collections import Counter

import numpy as np
import pytest

from unet_keras.callbacks import ZoomSchedule
from unet_keras.config import ConfigError, UNetConfig
from unet_keras.data.pipeline import TrainingBatches, class_weights

# Dataset 1's cell types over its 300 images (neutrophil .. basophil).
COUNTS = {1: 176, 2: 53, 3: 48, 4: 22, 5: 1}


def examples():
    rng = np.random.default_rng(0)
    return [{"image": rng.integers(0, 255, (24, 24, 3), dtype=np.uint8),
             "mask": np.zeros((24, 24), np.uint8), "label": label}
            for label, n in COUNTS.items() for _ in range(n)]


def test_plain_shuffle_visits_each_example_once():
    batches = TrainingBatches(examples(), UNetConfig(image_size=16, depth=2))
    assert class_weights(batches.examples, 0.0) is None
    assert sorted(batches.order.tolist()) == list(range(300))


def test_balanced_draw_frequencies():
    ex = examples()
    weights = class_weights(ex, 0.5)
    # Per class: n * n ** -0.5 = sqrt(n), the basophil counted as 10 (10 ** -0.5 for 1 image).
    share = {label: float(sum(w for w, e in zip(weights, ex) if e["label"] == label))
             for label in COUNTS}
    total = sum(np.sqrt(n) for n in (176, 53, 48, 22)) + 10 ** -0.5
    for label, n in COUNTS.items():
        expected = (np.sqrt(n) if n >= 10 else n * 10 ** -0.5) / total
        assert share[label] == pytest.approx(expected)
    batches = TrainingBatches(ex, UNetConfig(image_size=16, depth=2, class_balance=0.5), seed=3)
    seen = Counter()
    for _ in range(300):
        assert len(batches.order) == 300
        seen.update(ex[i]["label"] for i in batches.order)
        batches.on_epoch_end()
    assert seen[4] / 300 == pytest.approx(300 * share[4], rel=0.05)  # eosinophils: ~41 an epoch
    assert seen[1] / 300 == pytest.approx(300 * share[1], rel=0.05)


def test_balanced_state_round_trip_and_refusal():
    config = UNetConfig(image_size=16, depth=2, class_balance=0.5)
    first = TrainingBatches(examples(), config, seed=1)
    first.on_epoch_end()
    state = first.get_state()
    second = TrainingBatches(examples(), config, seed=99)
    second.set_state(state)
    assert second.order.tolist() == first.order.tolist()
    first.on_epoch_end(), second.on_epoch_end()
    assert second.order.tolist() == first.order.tolist()
    with pytest.raises(ValueError, match="saved batch order covers 299"):
        second.set_state({**state, "order": state["order"][:-1]})


def test_one_class_is_a_plain_shuffle():
    """Data without cell types (every label the same) has nothing to balance: each example
    once an epoch, as with class_balance 0."""
    ex = [{**e, "label": -1} for e in examples()]
    assert class_weights(ex, 0.5) is None
    batches = TrainingBatches(ex, UNetConfig(image_size=16, depth=2, class_balance=0.5), seed=3)
    assert sorted(batches.order.tolist()) == list(range(len(ex)))


def test_class_balance_outside_0_1_is_refused():
    with pytest.raises(ConfigError, match="class_balance=1.5"):
        UNetConfig(class_balance=1.5)


def test_elastic_and_blur_reach_the_augmenter_only_with_augmentation():
    recipe = dict(depth=2, image_size=24, batch_size=4, elastic=3.0, blur=1.5)
    augmenter = TrainingBatches(examples(), UNetConfig(**recipe)).augmenter
    assert augmenter.elastic == 3.0 and augmenter.blur == 1.5
    plain = TrainingBatches(examples(), UNetConfig(**recipe, augment=False)).augmenter
    assert plain.elastic == 0.0 and plain.blur == 0.0
    with pytest.raises(ConfigError, match=r"blur=-1.0 \(expected a standard deviation >= 0"):
        UNetConfig(blur=-1.0)


def test_colour_transfer_state_round_trip_draws_the_same_batches():
    config = UNetConfig(image_size=16, depth=2, batch_size=8, colour_transfer=1.0, elastic=1.0,
                        blur=1.0)
    first = TrainingBatches(examples()[:40], config, seed=1)
    assert first.augmenter.colour_reference["n_images"] == 40
    first[0]
    state = first.get_state()
    second = TrainingBatches(examples()[:40], config, seed=7)
    second.set_state(state)
    for index in (1, 2):
        np.testing.assert_array_equal(second[index][0], first[index][0])


def test_final_zoom_epochs_narrow_the_zoom_of_the_last_epochs_only():
    config = UNetConfig(depth=2, image_size=24, epochs=10, final_zoom_epochs=3)
    assert [config.zoom_range(e) for e in (0, 6)] == [(0.5, 2.0)] * 2
    assert [config.zoom_range(e) for e in (7, 9)] == [(0.8, 1.25)] * 2
    # Within the run's own range: never wider than it, and no zoom stays no zoom.
    def last_epoch(scale_range):
        return UNetConfig(epochs=10, final_zoom_epochs=3, scale_range=scale_range).zoom_range(9)

    assert last_epoch((1.0, 1.5)) == (1.0, 1.25)
    assert last_epoch((1.0, 1.0)) == (1.0, 1.0)
    assert last_epoch((1.5, 2.0)) == (1.5, 2.0)  # no overlap: the run's own range
    assert UNetConfig(epochs=10).zoom_range(9) == (0.5, 2.0)
    with pytest.raises(ConfigError, match=r"final_zoom_epochs=11 \(expected 0..epochs=10\)"):
        UNetConfig(epochs=10, final_zoom_epochs=11)


def test_zoom_schedule_sets_the_range_the_crops_are_drawn_from(caplog):
    config = UNetConfig(depth=2, image_size=24, epochs=4, final_zoom_epochs=1)
    batches = TrainingBatches(examples(), config)
    schedule = ZoomSchedule(batches, config)
    caplog.set_level(logging.INFO, logger="unet_keras.callbacks")
    scales = {}
    for epoch in range(4):
        schedule.on_epoch_begin(epoch)
        scales[epoch] = [batches.augmenter.sample((24, 24)).scale for _ in range(300)]
    for epoch in range(3):
        assert 0.5 <= min(scales[epoch]) < 0.8 and 1.25 < max(scales[epoch]) <= 2.0
    assert 0.8 <= min(scales[3]) and max(scales[3]) <= 1.25
    assert [r.getMessage() for r in caplog.records] == ["epoch 4 on: zoom 0.8-1.25x"]
    # A resumed run starts from its next epoch: the schedule sets the range afresh.
    schedule.on_epoch_begin(0)
    assert batches.augmenter.scale_range == (0.5, 2.0)
