"""Export a ``.keras`` U-Net to ONNX, gated on parity with Keras-JAX on fixed inputs.

Two routes produce the graph:

* ``tf2onnx`` (default): the ``.keras`` file is reloaded under the TensorFlow backend in a
  subprocess (``python -m export._tf_export``) and converted by tf2onnx.
* ``jax2onnx``: the model is traced in this process on the JAX backend by jax2onnx, then
  ``export.graph_fixes`` rewrites the pooling nodes onnxruntime cannot run.

Either way the graph is run by onnxruntime on ``parity_inputs`` (batch 3, non-square and smallest
sizes) and compared with the Keras-JAX model, the training backend. Over the tolerance the export
fails with ``ExportError`` carrying the figures, and no ``.onnx`` file is left. A passing file
gets the config, thresholds, preprocessing contract, versions and parity figures in its
metadata, and only then is renamed onto the output path.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from export.graph_fixes import (cancel_transpose_pairs, fix_nhwc_pooling, op_counts,
                                rename_io_dims)
from export.metadata import set_metadata
from unet_keras.config import ConfigError, UNetConfig, resolve_run
from unet_keras.preprocess import PREPROCESSING_CONTRACT

ROUTES = ("tf2onnx", "jax2onnx")
INPUT_NAME, OUTPUT_NAME = "image", "probability"
DEFAULT_TOLERANCE = 1e-4
VERSION_PACKAGES = ("unet-keras", "keras", "jax", "jaxlib", "tensorflow-cpu", "tensorflow", "onnx",
                    "onnxruntime", "onnxruntime-gpu", "tf2onnx", "jax2onnx", "numpy")


class ExportError(ValueError):
    """An export that failed or did not match Keras; no output file was written."""


def package_versions() -> dict[str, str]:
    versions = {}
    for name in VERSION_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def resolve_model(model_path: str | Path, config: UNetConfig | None = None) -> tuple[Path, UNetConfig]:
    """A ``.keras`` file or run directory -> (model file, config from the config.json beside it)."""
    path = Path(model_path)
    if config is not None:  # the caller's config: no config.json needed beside the model
        path = path / "model.keras" if path.is_dir() else path
        if not path.is_file():
            raise ExportError(f"{path}: model file not found; expected a .keras file or a run directory")
        return path, config
    try:
        return resolve_run(model_path)
    except ConfigError as err:
        raise ExportError(str(err)) from err


def parity_inputs(multiple: int) -> dict[str, np.ndarray]:
    """Fixed float32 NHWC inputs in [0, 1]: batch 3 non-square, a cell-like image, the smallest."""
    def up(n: int) -> int:
        return -(-n // multiple) * multiple

    rng = np.random.default_rng(20240601)
    h, w = up(128), up(128)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cells = np.full((h, w, 3), (0.85, 0.75, 0.8), np.float32)
    for cy, cx, r in ((0.3, 0.3, 0.18), (0.65, 0.7, 0.22), (0.8, 0.2, 0.1)):
        disk = ((yy - cy * h) ** 2 + (xx - cx * w) ** 2) < (r * h) ** 2
        cells[disk] = (0.45, 0.2, 0.55)
    cells = np.clip(cells + rng.normal(0, 0.03, cells.shape), 0, 1).astype(np.float32)
    return {
        f"batch3_{up(96)}x{up(160)}": rng.random((3, up(96), up(160), 3), dtype=np.float32),
        f"batch1_cells_{h}x{w}": cells[None],
        f"batch2_{multiple}x{2 * multiple}": rng.random((2, multiple, 2 * multiple, 3),
                                                        dtype=np.float32),
    }


def check_parity(onnx_model: bytes | str | Path, inputs: dict[str, np.ndarray],
                 reference: dict[str, np.ndarray], tolerance: float) -> dict:
    """Run the ONNX model on CPU and compare with reference outputs, input by input."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    model = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    try:
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises several types for graphs it cannot load
        raise ExportError(f"onnxruntime cannot load the converted graph ({err})") from err
    figures = {}
    for name, x in inputs.items():
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        want = reference[name]
        if got.shape != want.shape:
            raise ExportError(f"parity input {name}: ONNX output shape {got.shape}, Keras {want.shape}")
        diff = np.abs(got.astype(np.float64) - want)
        figures[name] = {"shape": list(x.shape), "max_abs_diff": float(diff.max()),
                         "mean_abs_diff": float(diff.mean())}
    # np.max, not max(): a NaN output on any input must fail the gate (max() skips a NaN
    # that is not first, since every comparison with it is false).
    worst = float(np.max([f["max_abs_diff"] for f in figures.values()]))
    return {"tolerance": tolerance, "max_abs_diff": worst,
            "passed": bool(np.isfinite(worst) and worst <= tolerance),
            "reference": "keras-jax", "runtime": "onnxruntime CPUExecutionProvider",
            "inputs": figures}


def _convert_tf2onnx(model_path: Path, workfile: Path, opset: int | None) -> tuple[onnx.ModelProto, dict]:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "export._tf_export", str(model_path), str(workfile)]
    if opset is not None:
        command += ["--opset", str(opset)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        reason = [line for line in lines if line.startswith("tf2onnx export failed")] or lines[-15:]
        raise ExportError(f"{model_path}: tf2onnx route failed (exit {done.returncode}): "
                          + "\n".join(reason))
    return onnx.load(str(workfile)), {}


def _convert_jax2onnx(model, multiple: int, opset: int | None) -> tuple[onnx.ModelProto, dict]:
    import jax2onnx

    # Height and width as multiples of 2**depth: with free symbols, JAX cannot prove that the
    # upsampled decoder tensors match their skip connections and tracing fails in Concatenate.
    shape = ("batch", f"{multiple}*height", f"{multiple}*width", 3)
    kwargs = {} if opset is None else {"opset": opset}
    proto = jax2onnx.to_onnx(lambda image: model(image, training=False), inputs=[shape],
                             input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                             model_name=model.name, return_mode="proto", **kwargs)
    fixes = {"pooling_rewritten": fix_nhwc_pooling(proto),
             "transpose_pairs_cancelled": cancel_transpose_pairs(proto)}
    return proto, fixes


def _convert(route: str, model, model_path: Path, config: UNetConfig, opset: int | None,
             workfile: Path) -> tuple[onnx.ModelProto, dict]:
    if route == "tf2onnx":
        return _convert_tf2onnx(model_path, workfile, opset)
    return _convert_jax2onnx(model, config.multiple, opset)


def _check_interface(proto: onnx.ModelProto, out_channels: int) -> None:
    weights = {init.name for init in proto.graph.initializer}  # listed as inputs before IR 4
    inputs = [i.name for i in proto.graph.input if i.name not in weights]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise ExportError(f"converted graph has inputs {inputs} and outputs {outputs}; "
                          f"expected [{INPUT_NAME!r}] and [{OUTPUT_NAME!r}]")
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    if len(dims) != 4 or dims[3].dim_value not in (0, out_channels):
        raise ExportError(f"converted output has dims {[str(d).strip() for d in dims]}; "
                          f"expected (batch, height, width, {out_channels})")


def export_onnx(model_path: str | Path, out_path: str | Path, route: str = "tf2onnx",
                opset: int | None = None, parity_tolerance: float = DEFAULT_TOLERANCE,
                config: UNetConfig | None = None) -> dict:
    """Export, check against Keras-JAX, embed metadata, write ``out_path`` atomically.

    Args:
        model_path: a ``.keras`` file (with ``config.json`` beside it) or its run directory.
        out_path: the ``.onnx`` file to write; its directory must exist and be writable.
        route: "tf2onnx" or "jax2onnx".
        opset: ONNX opset; None takes the converter's default (tf2onnx 15, jax2onnx 23).
        parity_tolerance: largest accepted max abs difference of probabilities.
        config: overrides the config.json beside the model.
    Returns:
        A report: route, opset, op counts, Transpose count, graph fixes, parity figures,
        seconds, versions, paths.
    Raises:
        ExportError: bad arguments, a failed conversion or parity over the tolerance (the
            message holds the figures); nothing is written.
    """
    start = time.perf_counter()
    if route not in ROUTES:
        raise ExportError(f"route={route!r}; expected one of {list(ROUTES)}")
    model_path, config = resolve_model(model_path, config)
    out_path = Path(out_path)
    if out_path.is_dir():
        raise ExportError(f"{out_path}: is a directory; expected the path of a .onnx file")
    try:
        fd, work = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
        os.close(fd)
    except OSError as err:
        raise ExportError(f"{out_path}: cannot write there ({err.strerror or err}); "
                          "expected a writable directory") from err
    workfile = Path(work)
    try:
        import keras

        from unet_keras.model import ModelLoadError, load_model

        if keras.backend.backend() != "jax":
            raise ExportError(f"keras backend is {keras.backend.backend()!r}; the parity reference "
                              "is the training backend: set KERAS_BACKEND=jax")
        try:
            model = load_model(model_path)
        except ModelLoadError as err:
            raise ExportError(str(err)) from err
        inputs = parity_inputs(config.multiple)
        reference = {k: np.asarray(model(x, training=False), np.float64) for k, x in inputs.items()}
        t_convert = time.perf_counter()
        proto, fixes = _convert(route, model, model_path, config, opset, workfile)
        t_parity = time.perf_counter()
        rename_io_dims(proto)
        _check_interface(proto, config.out_channels)
        parity = check_parity(proto.SerializeToString(), inputs, reference, parity_tolerance)
        if not parity["passed"]:
            figures = ", ".join(f"{k} {v['max_abs_diff']:.3g}" for k, v in parity["inputs"].items())
            raise ExportError(f"{out_path}: not written: ONNX ({route}) differs from Keras-JAX by "
                              f"max abs {parity['max_abs_diff']:.3g} > tolerance "
                              f"{parity_tolerance:g} ({figures})")
        used_opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        versions = package_versions()
        set_metadata(proto, {
            "config": config.to_dict(), "thresholds": list(config.channel_thresholds()),
            "preprocessing": PREPROCESSING_CONTRACT, "versions": versions, "parity": parity,
            "route": route, "opset": used_opset, "precision": "fp32",
        })
        proto.producer_name, proto.doc_string = "unet_keras.export", f"{model_path.name} via {route}"
        onnx.save(proto, str(workfile))
        os.chmod(workfile, 0o644)  # mkstemp creates 0600
        os.replace(workfile, out_path)
    finally:
        with contextlib.suppress(OSError):
            workfile.unlink()
    counts = op_counts(proto)
    end = time.perf_counter()
    return {
        "out": str(out_path), "model": str(model_path), "route": route, "opset": used_opset,
        "nodes": sum(counts.values()), "transposes": counts.get("Transpose", 0), "ops": counts,
        "graph_fixes": fixes, "parity": parity, "versions": versions,
        "seconds": {"convert": round(t_parity - t_convert, 2), "parity": round(end - t_parity, 2),
                    "total": round(end - start, 2)},
    }
