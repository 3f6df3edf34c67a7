"""Reduced-precision variants of an exported model, accepted only if Dice holds (keras-free).

* fp16 (for GPU): weights and activations in float16, the ``image`` input and ``probability``
  output kept float32 behind casts, so the serving contract is unchanged.
* int8 (for CPU): onnxruntime static quantization, QDQ format, per-channel int8 weights,
  uint8 activations calibrated on preprocessed images.

``export_variant`` writes a variant only if its whole-cell Dice on the given labelled images
drops by at most ``max_dice_drop`` against the float32 model; the figures go into its metadata.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader

from export.metadata import decode_metadata, set_metadata
from export.runtime import Segmenter
from unet_keras.metrics import pixel_counts, pixel_scores
from unet_keras.postprocess import probabilities_to_labels
from unet_keras.preprocess import pad_to_multiple, to_model_input

PRECISIONS = ("fp16", "int8")
MAX_DICE_DROP = 0.005


class PrecisionError(ValueError):
    """A variant that could not be made or lost too much accuracy; no file was written."""


def make_fp16(onnx_path: str | Path, out_path: str | Path) -> None:
    """Convert to float16 with float32 input and output (Cast nodes at the boundary)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(onnx_path))
    onnx.save(convert_float_to_float16(model, keep_io_types=True), str(out_path))


class _Calibration(CalibrationDataReader):
    def __init__(self, images: Sequence[np.ndarray], multiple: int):
        self._batches = iter([pad_to_multiple(to_model_input(i), multiple)[0][None] for i in images])

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {"image": batch}


def make_int8(onnx_path: str | Path, out_path: str | Path,
              calibration_images: Sequence[np.ndarray], per_channel: bool = True) -> None:
    """Static QDQ int8 quantization calibrated on ``calibration_images`` (uint8 RGB, any size).

    Use training images for calibration, not the images the variant is then checked on.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration_images:
        raise PrecisionError("int8 needs calibration images (preprocessed training images)")
    multiple = Segmenter.from_onnx(onnx_path, ["CPUExecutionProvider"]).config.multiple
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out_path), _Calibration(calibration_images, multiple),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        # uint8 activations with int8 weights: on x86 (AVX2/AVX512-VNNI) this
                        # ran 1.5-2x faster than fp32 here, int8 activations slower than fp32.
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def measure_latency(onnx_path: str | Path, shape=(1, 256, 256, 3), repeats: int = 20,
                    warmup: int = 3, providers: Sequence[str] | None = None) -> dict:
    """Median and spread of ``session.run`` wall time on a fixed random input, in ms."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options,
                                   providers=list(providers or ["CPUExecutionProvider"]))
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(warmup):
        session.run(None, {"image": x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"image": x})
        times.append(1000 * (time.perf_counter() - start))
    return {"shape": list(shape), "repeats": repeats, "median_ms": round(statistics.median(times), 3),
            "min_ms": round(min(times), 3), "max_ms": round(max(times), 3),
            "providers": session.get_providers()}


def dice_scores(onnx_path: str | Path, images: Sequence[np.ndarray],
                label_maps: Sequence[np.ndarray]) -> dict[str, float]:
    """Pooled whole-cell (and nucleus) Dice of a model on labelled images, through ``Segmenter``."""
    segmenter = Segmenter.from_onnx(onnx_path, ["CPUExecutionProvider"])
    cell, nucleus = [], []
    for image, truth in zip(images, label_maps, strict=True):
        labels = probabilities_to_labels(segmenter.predict_probabilities(image), segmenter.thresholds)
        truth = np.asarray(truth)
        cell.append(pixel_counts(labels > 0, truth > 0))
        if segmenter.out_channels == 2:
            nucleus.append(pixel_counts(labels == 2, truth == 2))
    scores = {"whole_cell_dice": pixel_scores(sum(cell))["dice"]}
    if nucleus:
        scores["nucleus_dice"] = pixel_scores(sum(nucleus))["dice"]
    return scores


def check_variant(reference_onnx: str | Path, variant_onnx: str | Path, images: Sequence[np.ndarray],
                  label_maps: Sequence[np.ndarray], max_dice_drop: float = MAX_DICE_DROP,
                  latency_shape=(1, 256, 256, 3), providers: Sequence[str] | None = None) -> dict:
    """Dice and latency of a variant against its float32 reference.

    Returns:
        {"reference": {...}, "variant": {...}, "whole_cell_dice_drop", "max_dice_drop", "passed"},
        each side with its Dice scores and ``measure_latency`` figures.
    """
    if not images or len(images) != len(label_maps):
        raise PrecisionError(f"{len(images)} images and {len(label_maps)} label maps; "
                             "expected equal, non-zero counts")
    report = {}
    for name, path in (("reference", reference_onnx), ("variant", variant_onnx)):
        report[name] = {**dice_scores(path, images, label_maps),
                        "latency": measure_latency(path, latency_shape, providers=providers)}
    drop = report["reference"]["whole_cell_dice"] - report["variant"]["whole_cell_dice"]
    report.update(whole_cell_dice_drop=drop, max_dice_drop=max_dice_drop,
                  images=len(images), passed=bool(drop <= max_dice_drop))
    return report


def export_variant(reference_onnx: str | Path, out_path: str | Path, precision: str,
                   images: Sequence[np.ndarray], label_maps: Sequence[np.ndarray],
                   calibration_images: Sequence[np.ndarray] | None = None,
                   max_dice_drop: float = MAX_DICE_DROP,
                   providers: Sequence[str] | None = None) -> dict:
    """Make an fp16 or int8 variant, check it, and write it only if its Dice holds.

    Args:
        reference_onnx: a float32 file from ``export_onnx``.
        out_path: the variant's ``.onnx`` path.
        precision: "fp16" or "int8".
        images, label_maps: the labelled check set (e.g. the Dataset 1 test fold), uint8.
        calibration_images: int8 only: images for activation ranges (training images).
        max_dice_drop: largest accepted whole-cell Dice drop.
        providers: execution providers for the latency figures (fp16 is meant for CUDA).
    Returns:
        ``check_variant``'s report plus the output path.
    Raises:
        PrecisionError: unknown precision, failed conversion, or a Dice drop over the limit
            (the message holds both Dice values); nothing is written then.
    """
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision={precision!r}; expected one of {list(PRECISIONS)}")
    out_path = Path(out_path)
    try:
        fd, work = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
        os.close(fd)
    except OSError as err:
        raise PrecisionError(f"{out_path}: cannot write there ({err.strerror or err})") from err
    try:
        try:
            if precision == "fp16":
                make_fp16(reference_onnx, work)
            else:
                make_int8(reference_onnx, work, calibration_images or [])
        except PrecisionError:
            raise
        except Exception as err:  # converters raise many types
            raise PrecisionError(f"{reference_onnx}: {precision} conversion failed "
                                 f"({type(err).__name__}: {err})") from err
        report = check_variant(reference_onnx, work, images, label_maps, max_dice_drop,
                               providers=providers)
        if not report["passed"]:
            raise PrecisionError(
                f"{out_path}: not written: {precision} whole-cell Dice "
                f"{report['variant']['whole_cell_dice']:.4f} vs {report['reference']['whole_cell_dice']:.4f} "
                f"(drop {report['whole_cell_dice_drop']:.4f} > {max_dice_drop}) on {len(images)} images")
        model = onnx.load(work)
        reference_meta = {p.key: p.value for p in onnx.load(str(reference_onnx)).metadata_props}
        meta = decode_metadata(reference_meta)
        # The float32 file's gate against Keras is not this file's: kept under its own name.
        if "parity" in meta:
            meta["source_parity"] = meta.pop("parity")
        meta.update(precision=precision, variant_check=report)
        set_metadata(model, meta, drop=("parity",))
        onnx.save(model, work)
        os.chmod(work, 0o644)
        os.replace(work, out_path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(work)
    return {**report, "out": str(out_path), "precision": precision}


def export_reduced(model_path: str | Path, out_path: str | Path, precision: str,
                   images: Sequence[np.ndarray], label_maps: Sequence[np.ndarray],
                   calibration_images: Sequence[np.ndarray] | None = None,
                   route: str = "tf2onnx", opset: int | None = None,
                   max_dice_drop: float = MAX_DICE_DROP) -> dict:
    """``export_onnx`` to a temporary float32 file beside ``out_path``, then ``export_variant``.

    For ``unet-keras export --precision fp16|int8``; needs keras (JAX backend) like the export.
    Returns ``{"fp32": export report, "variant": export_variant report}``.
    """
    from export.onnx_export import export_onnx

    out_path = Path(out_path)
    fp32 = out_path.with_name(f".{out_path.stem}.fp32.{os.getpid()}.onnx")
    try:
        exported = export_onnx(model_path, fp32, route=route, opset=opset)
        variant = export_variant(fp32, out_path, precision, images, label_maps,
                                 calibration_images, max_dice_drop)
    finally:
        with contextlib.suppress(OSError):
            fp32.unlink()
    return {"fp32": exported, "variant": variant}
