"""Everything the runtimes are given, made once per run from one ``.keras`` file.

The trained model given with ``--model`` (``config.json`` beside it), or else the seed U-Net
(``UNetConfig()`` defaults) built with a fixed seed; its ONNX export (the ``export`` package's
tf2onnx route, parity-gated against Keras-JAX), the int8 variant, the weights as ``.npz`` for the
PyTorch reference with Keras-JAX outputs to check it against, and the preprocessed test images.
Runs in the coordinator under ``KERAS_BACKEND=jax``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from unet_keras.config import CONFIG_FILENAME, UNetConfig
from unet_keras.preprocess import pad_to_multiple, to_model_input

SEED = 0
PARITY_BATCH = (3, 96, 160)  # batch, height, width: non-square, several images


class ArtifactError(RuntimeError):
    """A model, export or data set the benchmark cannot use; the message says which and why."""


@dataclasses.dataclass
class Artifacts:
    model_path: Path
    config: UNetConfig
    trained: bool
    onnx: Path | None = None
    int8: Path | None = None
    fp16: Path | None = None
    weights: Path | None = None
    parity_inputs: Path | None = None
    parity_reference: Path | None = None
    test_inputs: list | None = None  # [(.npy of one padded shape, indices into test_examples)]
    test_examples: list = dataclasses.field(default_factory=list)
    test_sizes: list = dataclasses.field(default_factory=list)
    data_source: str = ""
    reference_probabilities: list | None = None  # Keras-JAX's, set by the accuracy pass
    notes: dict = dataclasses.field(default_factory=dict)


def prepare_model(model: str | None, work: Path) -> Artifacts:
    """The given trained model, or the seed U-Net saved under ``work/seed-model``."""
    if model:
        path = Path(model)
        if path.is_dir():
            path = path / "model.keras"
        config_path = path.parent / CONFIG_FILENAME
        if not path.is_file() or not config_path.is_file():
            raise ArtifactError(f"{path}: expected a .keras file with {CONFIG_FILENAME} beside it "
                                "(a run directory written by `unet-keras train`)")
        return Artifacts(path.resolve(), UNetConfig.load(config_path), trained=True)
    import keras

    from unet_keras.model import build_unet

    config = UNetConfig()
    keras.utils.set_random_seed(SEED)
    target = work / "seed-model"
    target.mkdir(parents=True, exist_ok=True)
    build_unet(config).save(target / "model.keras")
    config.save(target / CONFIG_FILENAME)
    return Artifacts(target / "model.keras", config, trained=False,
                     notes={"model": f"seed U-Net, UNetConfig() defaults, keras seed {SEED}, "
                                     "untrained"})


def write_torch_inputs(art: Artifacts, keras_model, work: Path) -> None:
    """Weights as .npz and Keras-JAX outputs on fixed inputs, for the PyTorch reference."""
    from benchmarks.torch_unet import keras_layer_weights, save_weights

    art.weights = work / "weights.npz"
    save_weights(keras_layer_weights(keras_model), art.weights)
    n, h, w = PARITY_BATCH
    m = art.config.multiple
    shape = (n, -(-h // m) * m, -(-w // m) * m, 3)
    x = np.random.default_rng(SEED).random(shape, np.float32)
    art.parity_inputs, art.parity_reference = work / "parity_inputs.npy", work / "parity_reference.npy"
    np.save(art.parity_inputs, x)
    np.save(art.parity_reference, np.asarray(keras_model(x, training=False), np.float32))


def load_test_data(art: Artifacts, work: Path, data_dir: str | None,
                   calibration_count: int) -> list[np.ndarray]:
    """Preprocessed test images to ``work/test_inputs_*.npy``; returns calibration images.

    The test part of the model's own fold (``config.fold``) of its dataset, through
    ``unet_keras.data.loading.load_test_fold``; calibration images come from the training part.
    """
    from unet_keras.data.loading import load_test_fold

    fold = load_test_fold(art.config, data_dir)
    art.data_source = fold.source + (" [SYNTHETIC]" if fold.synthetic else "")
    art.test_examples = fold.test
    # As unet_keras.inference.predict_probabilities: pad each image to a multiple of 2**depth
    # and batch images of equal padded shape; one .npy per shape.
    prepared = [pad_to_multiple(to_model_input(e["image"]), art.config.multiple) for e in fold.test]
    art.test_sizes = [size for _, size in prepared]
    groups: dict[tuple, list[int]] = {}
    for i, (x, _) in enumerate(prepared):
        groups.setdefault(x.shape, []).append(i)
    art.test_inputs = []
    for k, (shape, indices) in enumerate(sorted(groups.items())):
        path = work / f"test_inputs_{k}_{shape[0]}x{shape[1]}.npy"
        np.save(path, np.stack([prepared[i][0] for i in indices]))
        art.test_inputs.append((path, indices))
    return [e["image"] for e in fold.train[:calibration_count]]


def export_all(art: Artifacts, work: Path, calibration: list[np.ndarray], fp16: bool) -> None:
    """ONNX fp32 through ``export.onnx_export``, int8 (and fp16) through ``export.precision``."""
    from export.onnx_export import ExportError, export_onnx
    from export.precision import make_fp16, make_int8

    start = time.perf_counter()
    art.onnx = work / "model.onnx"
    try:
        report = export_onnx(art.model_path, art.onnx, config=art.config)
    except ExportError as err:
        raise ArtifactError(f"ONNX export failed: {err}") from err
    art.notes["onnx_export"] = {"route": report["route"], "opset": report["opset"],
                                "nodes": report["nodes"], "parity": report["parity"]["max_abs_diff"],
                                "seconds": round(time.perf_counter() - start, 1)}
    start = time.perf_counter()
    if calibration:
        art.int8 = work / "model.int8.onnx"
        try:
            make_int8(art.onnx, art.int8, calibration)
            art.notes["int8"] = {"calibration_images": len(calibration),
                                 "seconds": round(time.perf_counter() - start, 1)}
        except Exception as err:  # quantisation raises many types; int8 is then left out
            art.int8 = None
            art.notes["int8"] = {"error": f"{type(err).__name__}: {err}"}
    else:
        art.notes["int8"] = {"error": "no calibration images (no training data loaded)"}
    if fp16:
        art.fp16 = work / "model.fp16.onnx"
        make_fp16(art.onnx, art.fp16)
