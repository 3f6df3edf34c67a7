"""Keras inference through the shared preprocessing: images in, probability maps out."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import numpy as np

from unet_keras.preprocess import crop_to, pad_to_multiple, to_model_input

ProbabilityFn = Callable[[np.ndarray], np.ndarray]


def dihedral(batch: np.ndarray, k: int, inverse: bool = False) -> np.ndarray:
    """The k-th of the 8 flips/90-degree rotations of an NHWC batch (or its inverse)."""
    flip, turns = divmod(k, 4)
    if inverse:
        batch = np.rot90(batch, -turns, axes=(1, 2))
        return batch[:, :, ::-1] if flip else batch
    batch = batch[:, :, ::-1] if flip else batch
    return np.rot90(batch, turns, axes=(1, 2))


def dihedral_mean(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray) -> np.ndarray:
    """``run``'s output (N, h, w, C) for an NHWC batch averaged over the batch's 8 flips and
    90-degree rotations, each view's output turned back first: test-time augmentation for any
    fully convolutional runner (Keras, onnxruntime, a tile of either)."""
    return sum(dihedral(np.asarray(run(np.ascontiguousarray(dihedral(batch, k))), np.float32),
                        k, inverse=True)
               for k in range(8)) / np.float32(8)


def keras_batch_fn(model, tta: bool = False, batch_size: int = 16
                   ) -> Callable[[np.ndarray], np.ndarray]:
    """A Keras model as a batch function: float32 NHWC in, float32 (N, h, w, C) out; with
    ``tta``, averaged over the 8 views (``dihedral_mean``)."""
    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(batch, batch_size=batch_size, verbose=0), np.float32)

    return (lambda batch: dihedral_mean(run, batch)) if tta else run


def predict_probabilities(model, images: Sequence[np.ndarray], multiple: int,
                          batch_size: int = 16, tta: bool = False) -> list[np.ndarray]:
    """Probability maps (H, W, C) float32 for each image, batching images of equal size.

    Each image goes through ``to_model_input`` and ``pad_to_multiple``; outputs are cropped
    back, so any image size is accepted. With ``tta`` the probabilities are averaged over the
    8 flips and 90-degree rotations (8x the compute).
    """
    run = keras_batch_fn(model, tta, batch_size)
    by_shape: dict[tuple, list[int]] = defaultdict(list)
    prepared = [to_model_input(image) for image in images]
    for i, x in enumerate(prepared):
        by_shape[x.shape].append(i)
    out: list[np.ndarray | None] = [None] * len(prepared)
    for indices in by_shape.values():
        batch, size = pad_to_multiple(np.stack([prepared[i] for i in indices]), multiple)
        probs = crop_to(run(batch), size)
        for row, i in enumerate(indices):
            out[i] = probs[row]
    return out  # type: ignore[return-value]


def keras_probability_fn(model, multiple: int, tta: bool = False) -> ProbabilityFn:
    """One-image probability function over a Keras model, for ``predict``."""
    return lambda image: predict_probabilities(model, [image], multiple, tta=tta)[0]
