"""Model FLOPs counted from the Keras layers, and the machine's practical FP32 peak.

Convention: a multiply-add is 2 FLOPs. A ``Conv2D`` costs 2 * kh * kw * (cin / groups) * cout
per output pixel; a ``Conv2DTranspose`` 2 * kh * kw * cin * cout per *input* pixel (every input
pixel scatters one kh x kw x cout patch). Biases, batch norm, ReLU, pooling, concatenation and
the sigmoid are counted apart as "elementwise" work: they are memory-bound and under 1 % of the
total, so GFLOP and GFLOP/s quoted in reports are the convolutions'.
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def _shape_of(known: dict, tensor) -> tuple:
    try:
        return known[id(tensor)]
    except KeyError:
        raise ValueError(f"layer input {tensor!r} was not produced by an earlier layer; "
                         "expected a functional model with one call per layer") from None


def layer_flops(model, height: int, width: int, batch: int = 1) -> list[dict]:
    """Per layer: name, class, output shape and FLOPs for a (batch, height, width, C) input.

    Shapes are propagated with ``compute_output_shape`` through the functional graph, so this
    works on any backend and builds nothing.
    """
    import keras

    (model_input,) = model.inputs
    known = {id(model_input): (batch, height, width, model_input.shape[-1])}
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inputs = layer.input
        if isinstance(inputs, (list, tuple)):
            in_shapes = [_shape_of(known, t) for t in inputs]
            out_shape = tuple(layer.compute_output_shape(in_shapes))
            in_shape = in_shapes[0]
        else:
            in_shape = _shape_of(known, inputs)
            out_shape = tuple(layer.compute_output_shape(in_shape))
        known[id(layer.output)] = out_shape
        conv, elementwise = 0, 0
        if isinstance(layer, keras.layers.Conv2DTranspose):
            kh, kw = layer.kernel_size
            conv = 2 * kh * kw * in_shape[-1] * layer.filters * int(np.prod(in_shape[:-1]))
            elementwise = int(np.prod(out_shape)) if layer.use_bias else 0
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            cin = in_shape[-1] // layer.groups
            conv = 2 * kh * kw * cin * layer.filters * int(np.prod(out_shape[:-1]))
            elementwise = int(np.prod(out_shape)) if layer.use_bias else 0
        elif isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Activation,
                                keras.layers.MaxPooling2D)):
            elementwise = int(np.prod(out_shape))
        rows.append({"name": layer.name, "class": type(layer).__name__,
                     "output_shape": list(out_shape), "conv_flops": conv,
                     "elementwise_ops": elementwise})
    return rows


def model_gflop(model, height: int, width: int) -> dict:
    """Convolution GFLOP (all, and the transposed ones) and elementwise Gop per image."""
    rows = layer_flops(model, height, width)
    return {"height": height, "width": width,
            "conv_gflop": sum(r["conv_flops"] for r in rows) / 1e9,
            "transposed_conv_gflop": sum(r["conv_flops"] for r in rows
                                         if r["class"] == "Conv2DTranspose") / 1e9,
            "elementwise_gop": sum(r["elementwise_ops"] for r in rows) / 1e9}


SGEMM_N = 2048


def sgemm_peak(n: int = SGEMM_N, repeats: int = 7) -> dict:
    """Measured FP32 GFLOP/s of numpy's ``n x n @ n x n`` (2 n^3 FLOPs), the practical peak.

    Numpy calls its BLAS (OpenBLAS in the wheels) with all cores; a large square SGEMM is the
    best case for any dense kernel, so the convolution runtimes are judged against it.
    """
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b  # warm-up: thread pool start and page faults
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        seconds.append(time.perf_counter() - start)
    flops = 2.0 * n**3
    rates = sorted(flops / s / 1e9 for s in seconds)
    return {"n": n, "repeats": repeats, "seconds": seconds,
            "median_gflops": statistics.median(rates), "best_gflops": rates[-1],
            "blas": _blas_name()}


def _blas_name() -> str:
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # numpy < 1.26 or an unusual build: the name is informative only
        return "unknown"
