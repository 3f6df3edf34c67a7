"""Choose the data source (real data through TFDS, or the labelled synthetic fallback) and split it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unet_keras.config import UNetConfig
from unet_keras.data.splits import (all_data_indices, fold_indices, holdout_indices,
                                    select_indices)
from unet_keras.data.zheng2018 import DATA_DIR_ENV, DATASETS, DataError, default_data_dir

log = logging.getLogger(__name__)

SYNTHETIC_IMAGES = 200


@dataclass
class FoldData:
    train: list[dict]
    val: list[dict]
    test: list[dict]
    source: str  # human-readable origin, stated in every output
    synthetic: bool


def load_all(config: UNetConfig, data_dir: str | Path | None = None,
             synthetic: bool = False) -> tuple[list[dict], str, bool]:
    """All examples of the configured dataset, with a description of where they came from.

    ``synthetic`` forces the synthetic set. An explicit ``data_dir`` must be valid (no silent
    fallback). Without one, the default locations are tried, then the synthetic set is used.
    """
    if data_dir is None and not synthetic:
        data_dir = default_data_dir()
    if data_dir is not None and not synthetic:
        from unet_keras.data.tfds_builder import load_examples

        examples = load_examples(data_dir, config.dataset)
        return examples, f"Zheng et al. 2018 {config.dataset} ({len(examples)} images) from {Path(data_dir).resolve()}", False
    from unet_keras.data.synthetic import SYNTHETIC_NOTE, synthetic_dataset

    if not synthetic and config.dataset != "dataset1":
        # The synthetic set stands in for Dataset 1's 120x120 crops only.
        raise DataError(f"{config.dataset}: no data directory found; expected --data-dir (or "
                        f"${DATA_DIR_ENV}) naming the folder that holds '{DATASETS[config.dataset]}/'")
    log.warning("no real data found: using the synthetic set")
    examples = synthetic_dataset(SYNTHETIC_IMAGES, size=120, seed=config.seed)
    return examples, f"{SYNTHETIC_NOTE}, {len(examples)} images", True


def load_fold(config: UNetConfig, data_dir: str | Path | None = None,
              synthetic: bool = False) -> FoldData:
    """Train/val/test examples for ``config.fold``, with ``config.test_ids`` as the test part,
    or with none (``config.all_data``); see ``load_all`` for the data source, ``split_examples``
    for the parts."""
    return split_examples(config, *load_all(config, data_dir, synthetic))


def load_test_fold(config: UNetConfig, data_dir: str | Path | None = None,
                   synthetic: bool = False) -> FoldData:
    """``load_fold`` for scoring a model on its own test part.

    Raises:
        DataError: the model trained with ``all_data``, so it has no test part.
    """
    from unet_keras.data.zheng2018 import DataError

    if config.all_data:
        raise DataError("the model trained with --all-data (every image but its validation "
                        "part): it has no test part of its own; expected a model trained on a "
                        "fold, or images it never saw (evaluate --image-dir, --dataset)")
    return load_fold(config, data_dir, synthetic)


def split_examples(config: UNetConfig, examples: list[dict], source: str,
                   synthetic: bool) -> FoldData:
    """``config``'s train/val/test parts of examples already loaded by ``load_all``.

    Raises:
        DataError: ``config.test_ids`` names no image or every image of the data.
    """
    from unet_keras.data.zheng2018 import DataError

    ids = [e["image_id"] for e in examples]
    if config.all_data:
        parts = all_data_indices(ids, config.split_seed, config.val_fraction)
    elif config.test_ids:
        try:
            parts = holdout_indices(ids, config.test_ids, config.split_seed, config.val_fraction)
        except ValueError as err:
            raise DataError(f"{source}: {err}") from None
    else:
        parts = fold_indices(ids, config.fold, config.num_folds, config.split_seed,
                             config.val_fraction)
    if config.train_fraction < 1.0:
        parts["train"] = subsample(parts["train"], config.train_fraction,
                                   (config.split_seed, config.fold))
    pick = {name: [examples[i] for i in idx] for name, idx in parts.items()}
    return FoldData(pick["train"], pick["val"], pick["test"], source, synthetic)


def subsample(indices: list[int], fraction: float, seed: tuple[int, ...]) -> list[int]:
    """``fraction`` of ``indices`` (at least one), in their order: the first of one seeded
    permutation, so that a smaller fraction's choice lies inside a larger one's."""
    keep = max(1, round(fraction * len(indices)))
    order = np.random.default_rng(list(seed)).permutation(len(indices))
    return [indices[i] for i in sorted(order[:keep])]


def select_examples(spec: str, examples: list[dict], source: str, synthetic: bool) -> FoldData:
    """The examples ``spec`` names (``"all"``, ids, LOW-HIGH ranges) as the test part, with no
    training or validation part: for scoring a model on data it never saw.

    Raises:
        DataError: ``spec`` is malformed or names no image.
    """
    from unet_keras.data.zheng2018 import DataError

    try:
        chosen = select_indices([e["image_id"] for e in examples], spec)
    except ValueError as err:
        raise DataError(f"{source}: {err}") from None
    return FoldData([], [], [examples[i] for i in chosen], source, synthetic)
