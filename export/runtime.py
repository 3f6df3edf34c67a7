"""The deployment runtime: an exported ONNX file served by onnxruntime, without keras/jax/tf.

Imports numpy, onnxruntime and the package's numpy modules only (image conversion,
preprocessing, postprocessing), so a serving image needs neither deep learning framework; a test
runs it in a process where importing keras, jax or tensorflow fails. Everything needed to serve
(depth, output channels, thresholds) comes from the ONNX file's metadata.

    segmenter = Segmenter.from_onnx("model.onnx")
    result = segmenter.segment(image)  # probability, label_map, mask_png, instances, cells
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from export.instances import instances_by_component
from export.metadata import REQUIRED_KEYS, decode_metadata
from export.tiling import default_overlap, default_tile, tile_predict
from unet_keras.config import UNetConfig
from unet_keras.domain import DomainAdapter
from unet_keras.image_io import to_uint8_rgb
from unet_keras.inference import dihedral_mean
from unet_keras.postprocess import (label_cells, labels_to_png, measure_cells,
                                    probabilities_to_labels)
from unet_keras.preprocess import crop_to, pad_to_multiple, to_model_input

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "image", "probability"
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
EXPECTED = (f"one float32 input {INPUT_NAME!r} of shape [batch, height, width, 3] (NHWC RGB in "
            f"[0, 1]) and one float32 output {OUTPUT_NAME!r} [batch, height, width, 1 or 2], with "
            "unet_keras metadata: a file written by `unet-keras export`")


class RuntimeModelError(ValueError):
    """An ONNX file this runtime cannot serve; the message names the file and what was expected."""


@dataclasses.dataclass
class SegmentResult:
    probability: np.ndarray  # float32 (H, W, C): whole cell[, nucleus]
    label_map: np.ndarray  # uint8 (H, W): 0 background, 1 cytoplasm (or cell), 2 nucleus
    mask_png: np.ndarray  # uint8 (H, W) in the dataset's mask encoding
    instances: np.ndarray  # int32 (H, W): cell labels 1..N
    cells: list[dict]  # one measurement row per cell (postprocess.CELL_COLUMNS)
    notes: list[str]  # conversions applied to the input image


def _describe(value) -> str:
    dims = ["?" if d is None else d for d in value.shape] if value.shape is not None else "?"
    return f"{value.name!r} {value.type} {dims}"


def choose_providers(available: Sequence[str] | None = None) -> list[str]:
    """TensorRT and CUDA when this onnxruntime build offers them, then CPU."""
    available = ort.get_available_providers() if available is None else available
    return [p for p in PREFERRED_PROVIDERS if p in available] or ["CPUExecutionProvider"]


def _validate(path: Path, session: ort.InferenceSession) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()

    def fits(values, name: str, last: tuple) -> bool:
        value = values[0] if len(values) == 1 else None
        return (value is not None and value.name == name and value.type == "tensor(float)"
                and len(value.shape) == 4 and (value.shape[3] in last or not isinstance(value.shape[3], int)))

    # [N, 3, H, W]: channels first, whatever the input is named and however H, W are given.
    channels_first = (len(inputs) == 1 and len(inputs[0].shape) == 4 and inputs[0].shape[1] == 3
                      and inputs[0].shape[3] != 3)
    problems = []
    if channels_first or not fits(inputs, INPUT_NAME, (3,)):
        problems.append("inputs " + ", ".join(_describe(i) for i in inputs))
        if channels_first:
            problems[-1] += " (channels first: NCHW)"
    if not fits(outputs, OUTPUT_NAME, (1, 2)):
        problems.append("outputs " + ", ".join(_describe(o) for o in outputs))
    if problems:
        raise RuntimeModelError(f"{path}: has {'; '.join(problems)}; expected {EXPECTED}")


class Segmenter:
    """Probabilities, masks and measured cells from an exported ONNX U-Net."""

    def __init__(self, session: ort.InferenceSession, metadata: dict, source: str = "<onnx>",
                 tile: int | None = None, overlap: int | None = None, tta: bool = False):
        self.session = session
        self.tta = tta
        self.metadata = metadata
        self.source = source
        self.config = UNetConfig.from_dict(metadata["config"])
        self.thresholds = tuple(float(t) for t in metadata["thresholds"])
        self.tile = default_tile(self.config.depth) if tile is None else tile
        self.overlap = default_overlap(self.config.depth) if overlap is None else overlap
        if (self.tile % self.config.multiple or self.overlap % self.config.multiple
                or not 0 <= self.overlap < self.tile):
            raise ValueError(f"{source}: tile={self.tile}, overlap={self.overlap}; expected "
                             f"multiples of {self.config.multiple} with 0 <= overlap < tile "
                             f"for this depth-{self.config.depth} model")

    @classmethod
    def from_onnx(cls, path: str | Path, providers: Sequence[str] | None = None,
                  tile: int | None = None, overlap: int | None = None, tta: bool = False
                  ) -> "Segmenter":
        """Load and check an ONNX file from ``unet-keras export``.

        Args:
            path: the ``.onnx`` file.
            providers: onnxruntime execution providers; default TensorRT, CUDA when
                available, else CPU.
            tile: images whose padded sides exceed this are predicted tile by tile; default
                ``tiling.default_tile`` (1024 px up to depth 5).
            overlap: tile overlap; default the smallest that keeps tiling exact.
            tta: average the model's outputs over the 8 flips and 90-degree turns of each
                image or tile (test-time augmentation, 8x the inference time).
        Raises:
            RuntimeModelError: missing, unreadable or foreign ONNX file (says what it has).
        """
        path = Path(path)
        if not path.is_file():
            raise RuntimeModelError(f"{path}: ONNX file not found; expected {EXPECTED}")
        providers = list(providers) if providers is not None else choose_providers()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Without the CPU arena, a depth-4 model on a 1024 px tile peaks at 0.56 GB and returns
        # to 0.22 GB; with it, 0.96 GB stays held. Measured cost: about 10-15% slower.
        options.enable_cpu_mem_arena = False
        try:
            session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # onnxruntime raises several types for unreadable files
            if providers == ["CPUExecutionProvider"]:
                raise RuntimeModelError(f"{path}: not a loadable ONNX model ({err}); "
                                        f"expected {EXPECTED}") from err
            log.warning("%s: providers %s failed (%s); using CPU", path, providers, err)
            return cls.from_onnx(path, ["CPUExecutionProvider"], tile, overlap, tta)
        _validate(path, session)
        try:
            metadata = decode_metadata(session.get_modelmeta().custom_metadata_map)
            missing = [k for k in REQUIRED_KEYS if k not in metadata]
            if missing:
                raise ValueError(f"metadata lacks {missing}")
            UNetConfig.from_dict(metadata["config"])
            tuple(map(float, metadata["thresholds"]))  # raises on non-numbers
        except (ValueError, TypeError, KeyError) as err:
            raise RuntimeModelError(f"{path}: unusable unet_keras metadata ({err}); "
                                    f"expected {EXPECTED}") from err
        segmenter = cls(session, metadata, str(path), tile, overlap, tta)
        channels = session.get_outputs()[0].shape[3]
        if len(segmenter.thresholds) != segmenter.out_channels or \
                isinstance(channels, int) and channels != segmenter.out_channels:
            raise RuntimeModelError(f"{path}: output has {channels} channels, metadata "
                                    f"{segmenter.out_channels} with thresholds "
                                    f"{segmenter.thresholds}; expected equal counts")
        return segmenter

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    @property
    def out_channels(self) -> int:
        return self.config.out_channels

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model: float32 (N, h, w, 3), h and w multiples of 2**depth -> (N, h, w, C);
        with ``tta``, the mean over the batch's 8 flips and turns (``dihedral_mean``)."""
        if self.tta:
            return dihedral_mean(self._run_once, batch)
        return self._run_once(batch)

    def _run_once(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def predict_probabilities(self, image: np.ndarray) -> np.ndarray:
        """Probabilities (H, W, C) float32 of one image of any size, dtype or channel count.

        Images up to ``tile`` (after padding) run whole: ``to_model_input``, ``pad_to_multiple``,
        the model, ``crop_to`` -- the Keras path's functions. Larger ones go to ``tile_predict``.
        """
        image = np.asarray(image)
        rgb, _ = to_uint8_rgb(image, source=f"input array {image.dtype} {image.shape}")
        return self._probabilities(rgb)

    def tile_predict(self, image: np.ndarray, tile: int | None = None,
                     overlap: int | None = None) -> np.ndarray:
        """Probabilities (H, W, C) predicted tile by tile; see ``export.tiling.tile_predict``."""
        rgb, _ = to_uint8_rgb(np.asarray(image))
        return tile_predict(self.run, rgb, self.config.depth, self.out_channels,
                            self.tile if tile is None else tile,
                            self.overlap if overlap is None else overlap)

    def segment(self, image: np.ndarray, image_name: str = "image",
                instance_method: str = "watershed", edge_cells: str | None = None,
                scale: float | str | None = None, colour: str | None = None) -> SegmentResult:
        """Probabilities, label map, dataset-encoded mask, cell instances and measurements.

        ``edge_cells`` ("keep" or "drop" cells cut by the image edge; see
        ``postprocess.edge_parts``) defaults to the model's tuned setting. ``scale`` is
        ``unet-keras predict --scale`` (``unet_keras.rescale``): "auto", a factor, or None for
        "auto" when the model records its training cell size, else 1. ``colour`` is
        ``predict --colour`` (``unet_keras.colour``): "auto", "always", "off", or None for
        "auto" when the model records its training colours, else "off". Images larger than
        a tile are postprocessed one connected component at a time (``export.instances``): the
        same cells, numbered component by component.
        """
        image = np.asarray(image)
        rgb, notes = to_uint8_rgb(image, source=f"input array {image.dtype} {image.shape}")
        adapter = DomainAdapter(self.predict_probabilities, self.config, scale, colour)
        probability = adapter(rgb)
        if any(adapter.mapped):
            notes = [*notes, "colours mapped towards the training images' (--colour)"]
        has_nucleus = self.out_channels == 2
        min_area = self.config.min_cell_area
        edge_cells = edge_cells or self.config.edge_cells
        if probability[..., 0].size > self.tile**2:  # whole-image postprocessing: several GB
            labels = probabilities_to_labels(probability, self.thresholds)
            instances, cells = instances_by_component(labels, image_name, has_nucleus,
                                                      instance_method, min_area, edge_cells,
                                                      probability=probability,
                                                      thresholds=self.thresholds)
            labels[instances == 0] = 0  # as label_cells: the mask shows the kept cells only
        else:
            labels, instances = label_cells(probability, self.thresholds, instance_method,
                                            min_area, edge_cells)
            cells = measure_cells(instances, labels, image_name, has_nucleus=has_nucleus,
                                  probability=probability, thresholds=self.thresholds)
        return SegmentResult(probability, labels, labels_to_png(labels, self.out_channels),
                             instances, cells, notes)

    def _probabilities(self, rgb: np.ndarray) -> np.ndarray:
        multiple = self.config.multiple
        if max(-(-s // multiple) * multiple for s in rgb.shape[:2]) > self.tile:
            return self.tile_predict(rgb)
        x, size = pad_to_multiple(to_model_input(rgb), multiple)
        return crop_to(self.run(x[None])[0], size)
