"""Batches for ``keras.Model.fit``: a PyDataset over in-memory examples with mask-aligned augmentation."""

from __future__ import annotations

import math
from collections import Counter

import keras
import numpy as np

from unet_keras.config import UNetConfig
from unet_keras.colour import fit_reference
from unet_keras.data.augment import Augmenter
from unet_keras.preprocess import mask_targets

MIN_CLASS_COUNT = 10


class TrainingBatches(keras.utils.PyDataset):
    """Shuffled, augmented (image, target) batches of ``len(examples)`` draws an epoch.

    With ``config.class_balance`` 0 (or examples of one cell type) an epoch visits every example
    once. With a > 0 it draws ``len(examples)`` examples with replacement, each with probability
    proportional to ``n_class ** -a`` (``example["label"]``: a cell type of Dataset 1), so that
    rare types are seen more often: a = 0.5 draws an eosinophil (22 of 300 images) 2.8 times as
    often as a neutrophil (176). Epochs keep their length, hence their cost.

    The same preprocessing as inference applies ([0, 1] float32 RGB); targets are the whole
    cell (and nucleus) channels from ``mask_targets``.
    """

    def __init__(self, examples: list[dict], config: UNetConfig, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if not examples:
            raise ValueError("no training examples")
        self.examples = examples
        self.config = config
        self.augmenter = Augmenter(
            config.image_size, flips=config.augment, rot90=config.augment,
            free_rotation=config.augment,
            scale_range=config.scale_range if config.augment else (1.0, 1.0),
            stain=config.augment and config.stain_augment, colour=config.augment,
            colour_strength=config.colour_strength,
            elastic=config.elastic if config.augment else 0.0, seed=seed,
            colour_transfer=config.colour_transfer if config.augment else 0.0,
            colour_reference=(fit_reference(e["image"] for e in examples)
                              if config.augment and config.colour_transfer else None),
            blur=config.blur if config.augment else 0.0,
        )
        self.rng = np.random.default_rng(seed)
        self.weights = class_weights(examples, config.class_balance)
        self.order = self.draw()

    def __len__(self) -> int:
        return math.ceil(len(self.examples) / self.config.batch_size)

    def __getitem__(self, index: int):
        size, bs = self.config.image_size, self.config.batch_size
        chosen = self.order[index * bs:(index + 1) * bs]
        x = np.empty((len(chosen), size, size, 3), np.float32)
        masks = np.empty((len(chosen), size, size), np.uint8)
        for row, i in enumerate(chosen):
            example = self.examples[i]
            if self.config.augment:
                x[row], masks[row] = self.augmenter(example["image"], example["mask"])
            else:
                x[row], masks[row] = self.augmenter.center(example["image"], example["mask"])
        return x, mask_targets(masks, self.config.out_channels)

    def draw(self) -> np.ndarray:
        n = len(self.examples)
        if self.weights is None:
            return self.rng.permutation(n)
        return self.rng.choice(n, size=n, replace=True, p=self.weights)

    def on_epoch_end(self) -> None:
        self.order = self.draw()

    def get_state(self) -> dict:
        """Everything that decides the coming batches (order, shuffling and augmentation RNG
        states), JSON-serialisable, so a resumed run draws exactly what this one would have."""
        return {"order": self.order.tolist(), "rng": self.rng.bit_generator.state,
                "augmenter_rng": self.augmenter._rng.bit_generator.state,
                "elastic_rng": self.augmenter._elastic_rng.bit_generator.state,
                "transfer_rng": self.augmenter._transfer_rng.bit_generator.state,
                "blur_rng": self.augmenter._blur_rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        """Restore ``get_state``'s result (of a dataset over the same examples)."""
        order = np.asarray(state["order"], dtype=np.int64)
        n = len(self.examples)
        fits = (sorted(order.tolist()) == list(range(n)) if self.weights is None
                else len(order) == n and bool(np.all((order >= 0) & (order < n))))
        if not fits:
            raise ValueError(f"saved batch order covers {len(order)} examples; "
                             f"this dataset has {len(self.examples)}")
        self.order = order
        self.rng.bit_generator.state = state["rng"]
        self.augmenter._rng.bit_generator.state = state["augmenter_rng"]
        for key, rng in (("elastic_rng", self.augmenter._elastic_rng),
                         ("transfer_rng", self.augmenter._transfer_rng),
                         ("blur_rng", self.augmenter._blur_rng)):
            if key in state:  # checkpoints written before these were kept lack them
                rng.bit_generator.state = state[key]


def class_weights(examples: list[dict], exponent: float) -> np.ndarray | None:
    """Drawing probability of each example, proportional to its class count ** -exponent;
    None for a plain shuffle: exponent 0, or examples of one class (data without cell types,
    such as Dataset 2 or a folder of one's own, where there is nothing to balance). A class of
    fewer than ``MIN_CLASS_COUNT`` examples counts as that many, so that one odd image
    (Dataset 1 has one basophil) is not drawn a dozen times an epoch."""
    labels = [example.get("label", -1) for example in examples]
    counts = Counter(labels)
    if exponent == 0 or len(counts) < 2:
        return None
    weights = np.array([max(counts[label], MIN_CLASS_COUNT) ** -exponent for label in labels],
                       dtype=np.float64)
    return weights / weights.sum()
