"""tensorflow-datasets builder for the Zheng et al. (2018) WBC data (manual directory, no download).

    builder = WbcZheng2018(config="dataset1", data_dir=CACHE)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=DATA_DIR))
    ds = builder.as_dataset(split="train")   # every example; folds are chosen by image id

``prepared_builder`` does this in a cache keyed on the data's fingerprint, so edited data are
never served stale (``examples/keras_fit.py`` trains from its ``tf.data``); ``load_examples``
returns its examples as numpy.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from unet_keras.config import cache_home
from unet_keras.data import zheng2018
from unet_keras.data.zheng2018 import CLASS_NAMES, DataError
from unet_keras.dirlock import exclusive_dir

CACHE_ENV = "WBC_TFDS_DIR"


class WbcZheng2018(tfds.core.GeneratorBasedBuilder):
    """White blood cell images with nucleus/cytoplasm masks (Zheng et al., Micron 2018)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Dataset 1 (120x120) and Dataset 2 (300x300) from a manual directory."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="dataset1", description="300 images, 120x120, Jiangxi Tecom."),
        tfds.core.BuilderConfig(name="dataset2", description="100 images, 300x300, CellaVision."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Point manual_dir (unet-keras --data-dir, or WBC_DATA_DIR) at a clone of the public "
        "segmentation_WBC repository: it must hold 'Dataset 1/NNN.bmp' with masks 'NNN.png' "
        "(and 'Dataset 2/...' for dataset2). Nothing is downloaded."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="White blood cell segmentation: 0 background, 1 cytoplasm, 2 nucleus.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "mask": tfds.features.Image(shape=(None, None, 1)),
                "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                "image_id": tfds.features.Text(),
            }),
            supervised_keys=("image", "mask"),
            citation=zheng2018.CITATION,
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(Path(dl_manager.manual_dir))}

    def _generate_examples(self, data_dir: Path):
        for example in zheng2018.iter_examples(data_dir, self.builder_config.name):
            example["mask"] = example["mask"][..., None]
            yield example["image_id"], example


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, cache_home() / "tfds"))


def prepared_builder(data_dir: str | Path, dataset: str = "dataset1") -> WbcZheng2018:
    """The builder of ``dataset`` with its TFDS files prepared from ``data_dir`` (the manual
    directory), in a cache keyed on the data's fingerprint so edited data are never served
    stale; ``builder.as_dataset(split="train")`` then gives every example as a ``tf.data``.

    Raises:
        DataError: missing or wrongly laid out directory, unreadable or mismatched files.
    """
    data_dir = Path(data_dir).resolve()
    zheng2018.scan_pairs(data_dir, dataset)  # layout errors surface before TFDS writes anything
    cache = cache_root() / f"{dataset}-{zheng2018.fingerprint(data_dir, dataset)}"
    try:
        # One writer per cache: TFDS builds in a temporary folder and renames it, and a second
        # process preparing at the same moment would fail on the rename; it waits here instead,
        # then finds the cache prepared.
        with exclusive_dir(cache, ".prepare.lock", "dataset preparation", wait=True):
            builder = WbcZheng2018(config=dataset, data_dir=str(cache))
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=str(data_dir))
            )
    except DataError:
        raise
    except Exception as err:
        # TFDS may wrap the generator's DataError; recover the message naming the file.
        cause = err
        while cause is not None and not isinstance(cause, DataError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise DataError(str(cause)) from err
    return builder


def load_examples(data_dir: str | Path, dataset: str = "dataset1") -> list[dict]:
    """Read every example through the TFDS builder as numpy dicts (mask as (H, W) 0/1/2).

    Raises:
        DataError: missing or wrongly laid out directory, unreadable or mismatched files.
    """
    builder = prepared_builder(data_dir, dataset)
    examples = []
    for ex in tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)):
        examples.append({
            "image": np.asarray(ex["image"], dtype=np.uint8),
            "mask": np.asarray(ex["mask"][..., 0], dtype=np.uint8),
            "label": int(ex["label"]),
            "image_id": ex["image_id"].decode(),
        })
    examples.sort(key=lambda e: e["image_id"])
    return examples
