"""Keras runtimes for one backend, served as a worker (see ``benchmarks.worker``)::

    KERAS_BACKEND=jax|tensorflow|torch python -m benchmarks.keras_backend --model M.keras

loads the same ``.keras`` file every runtime uses and hosts, by backend:

* jax: ``keras-jax-jit`` (``jax.jit`` over ``model.stateless_call``), ``keras-jax-predict``
  (``model.predict``), and with ``--matmul-upsampling`` ``keras-jax-jit-mmup``: the same weights
  with each 2x2/stride-2 ``Conv2DTranspose`` computed as a matmul + depth-to-space (see
  ``MatmulUpsampling``); on GPU, ``--precisions`` adds float16/bfloat16 variants.
* tensorflow: ``keras-tf-function`` (``tf.function`` over the model call).
* torch: ``keras-torch-eager`` (the model called under ``torch.no_grad``).

With ``--train-steps N`` it also hosts ``keras-<backend>-fit``: ``model.fit`` on synthetic
arrays, compiled by ``unet_keras.train.compile_model`` (Adam + BCE-Dice), on its own copy
of the model. ``--label`` suffixes every name (for XLA-flag variants of the same backend).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from benchmarks.worker import Runtime, serve, training_arrays

SHORT = {"jax": "jax", "tensorflow": "tf", "torch": "torch"}


def _threads() -> dict:
    import keras

    backend = keras.backend.backend()
    found = {"XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
             "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")}
    if backend == "tensorflow":
        import tensorflow as tf

        found["tf_intra_op"] = tf.config.threading.get_intra_op_parallelism_threads() or "default (cores)"
        found["tf_inter_op"] = tf.config.threading.get_inter_op_parallelism_threads() or "default (cores)"
    elif backend == "torch":
        import torch

        found["torch_threads"] = torch.get_num_threads()
    elif backend == "jax":
        import jax

        found["jax_devices"] = [str(d) for d in jax.devices()]
    return found


def matmul_upsampling_layer():
    """A ``Conv2DTranspose`` whose call is a matmul + depth-to-space (kernel == strides only).

    With kernel size equal to the stride the output windows do not overlap, so
    ``out[kh*i + a, kw*j + b, o] = sum_c x[i, j, c] * kernel[a, b, o, c] + bias[o]``: one
    einsum over channels and a reshape, with the layer's own weights. XLA:CPU runs the usual
    lowering (a convolution with lhs dilation) through a slow generic loop; this form is a GEMM.
    """
    import keras
    from keras import ops

    class MatmulUpsampling(keras.layers.Conv2DTranspose):
        def call(self, inputs):
            if tuple(self.kernel_size) != tuple(self.strides) or self.dilation_rate != (1, 1) \
                    or self.data_format != "channels_last":
                return super().call(inputs)
            n, h, w = ops.shape(inputs)[0], ops.shape(inputs)[1], ops.shape(inputs)[2]
            kh, kw = self.kernel_size
            y = ops.einsum("nhwc,abOc->nhawbO", inputs, ops.cast(self.kernel, inputs.dtype))
            y = ops.reshape(y, (n, h * kh, w * kw, self.filters))
            if self.use_bias:
                y = y + ops.cast(self.bias, y.dtype)
            return self.activation(y) if self.activation is not None else y

    return MatmulUpsampling


def with_matmul_upsampling(model):
    """A copy of ``model`` (same weights) whose ``Conv2DTranspose`` layers use ``MatmulUpsampling``."""
    import keras

    cls = matmul_upsampling_layer()

    def clone(layer):
        if type(layer) is keras.layers.Conv2DTranspose:
            return cls.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _with_policy(model, config, policy: str):
    """Rebuild ``model`` under a dtype policy ("mixed_float16", "mixed_bfloat16") with its weights."""
    import keras

    from unet_keras.model import build_unet

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        copy = build_unet(config)
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


class JaxJit(Runtime):
    def __init__(self, name: str, model, device: str = "cpu"):
        import jax

        self.name = name
        self.device = device
        self.model = model
        # Own copies: Keras' fit/predict donate the variables' buffers to their jitted steps.
        tv = [jax.device_put(np.array(v.value)) for v in model.trainable_variables]
        ntv = [jax.device_put(np.array(v.value)) for v in model.non_trainable_variables]
        fn = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
        if device == "gpu":
            # Device-resident input and output: host copies would dominate a GPU batch.
            self.prepare = jax.device_put
            self.infer = lambda x: fn(tv, ntv, x).block_until_ready()
        else:
            self.infer = lambda x: np.asarray(fn(tv, ntv, x))

    def info(self) -> dict:
        return {"call": "jax.jit(model.stateless_call)", "device": self.device, **_threads()}


class KerasPredict(Runtime):
    def __init__(self, name: str, model):
        self.name = name
        self.infer = lambda x: np.asarray(model.predict(x, batch_size=len(x), verbose=0))

    def info(self) -> dict:
        return {"call": "model.predict", **_threads()}


class TfFunction(Runtime):
    def __init__(self, name: str, model):
        import tensorflow as tf

        self.name = name
        spec = [tf.TensorSpec((None, None, None, 3), tf.float32)]
        fn = tf.function(lambda x: model(x, training=False), input_signature=spec)
        self.infer = lambda x: fn(x).numpy()

    def info(self) -> dict:
        return {"call": "tf.function(model.__call__)", **_threads()}


class TorchEager(Runtime):
    def __init__(self, name: str, model):
        import torch
        from keras import ops

        self.name = name

        def infer(x):
            with torch.no_grad():
                return ops.convert_to_numpy(model(torch.from_numpy(x), training=False))
        self.infer = infer

    def info(self) -> dict:
        return {"call": "model.__call__ under torch.no_grad (eager)", **_threads()}


class KerasFit(Runtime):
    """``model.fit`` on synthetic arrays, one call per timed round (one epoch of ``steps``)."""

    def __init__(self, name: str, model, config, size: int, batch: int, max_steps: int,
                 device: str = "cpu"):
        from unet_keras.train import compile_model

        self.name = name
        self.batch = batch
        self.device = device
        self.model = model
        compile_model(model, config, max_steps)
        self.x, self.y = training_arrays(max_steps, batch, size)

        def train(steps: int) -> None:
            if steps > max_steps:
                raise ValueError(f"{steps} steps; this worker was started for at most {max_steps}")
            n = steps * batch
            model.fit(self.x[:n], self.y[:n], batch_size=batch, epochs=1, shuffle=False, verbose=0)
        self.train = train

    def info(self) -> dict:
        return {"call": "model.fit(numpy arrays)", "batch": self.batch, "device": self.device,
                **_threads()}


def build(args) -> dict[str, Runtime]:
    import keras

    from unet_keras.config import UNetConfig
    from unet_keras.model import load_model

    config = UNetConfig.load(args.config)
    backend = keras.backend.backend()
    if args.device == "gpu":
        import jax

        if backend != "jax" or jax.default_backend() != "gpu":
            raise RuntimeError(f"--device gpu: backend {backend!r} sees no GPU "
                               f"(jax default backend {jax.default_backend()!r})")
    short = SHORT[backend]
    label = f"[{args.label}]" if args.label else ""
    model = load_model(args.model)
    runtimes: dict[str, Runtime] = {}
    if args.infer:
        if backend == "jax":
            runtimes[f"keras-jax-jit{label}"] = JaxJit(f"keras-jax-jit{label}", model, args.device)
            if args.predict:
                runtimes[f"keras-jax-predict{label}"] = KerasPredict(f"keras-jax-predict{label}", model)
            if args.matmul_upsampling:
                name = f"keras-jax-jit-mmup{label}"
                runtimes[name] = JaxJit(name, with_matmul_upsampling(model), args.device)
            for precision in args.precisions:
                name = f"keras-jax-jit-{precision}{label}"
                policy = {"fp16": "mixed_float16", "bf16": "mixed_bfloat16"}[precision]
                runtimes[name] = JaxJit(name, _with_policy(model, config, policy), args.device)
        elif backend == "tensorflow":
            runtimes[f"keras-tf-function{label}"] = TfFunction(f"keras-tf-function{label}", model)
        elif backend == "torch":
            runtimes[f"keras-torch-eager{label}"] = TorchEager(f"keras-torch-eager{label}", model)
    if args.train_steps:
        train_model = load_model(args.model)
        name = f"keras-{short}-fit{label}"
        runtimes[name] = KerasFit(name, train_model, config, args.train_size, args.train_batch,
                                  args.train_steps, args.device)
        if backend == "jax" and args.matmul_upsampling:
            name = f"keras-jax-fit-mmup{label}"
            runtimes[name] = KerasFit(name, with_matmul_upsampling(load_model(args.model)), config,
                                      args.train_size, args.train_batch, args.train_steps,
                                      args.device)
    if args.profile_dir and backend == "jax":
        from benchmarks.jax_profile import attach_profilers

        attach_profilers(runtimes, config, args)
    return runtimes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.keras_backend")
    parser.add_argument("--model", required=True, help=".keras file")
    parser.add_argument("--config", required=True, help="its config.json")
    parser.add_argument("--no-infer", dest="infer", action="store_false")
    parser.add_argument("--predict", action="store_true", help="jax: also time model.predict")
    parser.add_argument("--matmul-upsampling", action="store_true",
                        help="jax: also host the matmul + depth-to-space upsampling variant")
    parser.add_argument("--precisions", nargs="*", default=[], choices=["fp16", "bf16"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--train-steps", type=int, default=0, help="most steps in one round")
    parser.add_argument("--train-size", type=int, default=128)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--profile-dir", help="jax: where profiles are written")
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    return serve(lambda: build(args))


if __name__ == "__main__":
    sys.exit(main())
