"""Deterministic k-fold splits by image id, with a validation part carved from the training folds."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def fold_indices(image_ids: Sequence[str], fold: int, num_folds: int = 5, seed: int = 42,
                 val_fraction: float = 0.1) -> dict[str, list[int]]:
    """Split examples into train / val / test index lists.

    The order depends only on the sorted image ids and the seed, so the same data always gives
    the same folds whatever order they were read in. Test = fold ``fold`` of ``num_folds``;
    val = the first ``val_fraction`` of the remaining examples (in permuted order).
    """
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold {fold} out of range 0..{num_folds - 1}")
    if len(set(image_ids)) != len(image_ids):
        raise ValueError("duplicate image ids; fold assignment needs unique ids")
    order = sorted(range(len(image_ids)), key=lambda i: image_ids[i])
    perm = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    chunks = np.array_split(np.array(perm, dtype=int), num_folds)
    test = chunks[fold].tolist()
    rest = [i for k, chunk in enumerate(chunks) if k != fold for i in chunk.tolist()]
    n_val = int(round(val_fraction * len(rest)))
    return {"train": rest[n_val:], "val": rest[:n_val], "test": test}
