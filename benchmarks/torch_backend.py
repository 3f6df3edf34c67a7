"""The PyTorch reference served as a worker (see ``benchmarks.worker``)::

    python -m benchmarks.torch_backend --weights W.npz --config config.json \
        --parity-inputs X.npy --parity-reference P.npy

The Keras weights (``torch_unet.save_weights``) are copied into ``TorchUNet`` and its outputs on
the parity inputs are compared with Keras-JAX's; over ``--tolerance`` (1e-4) the worker refuses
to start, so nothing unequal is ever timed. Runtimes: ``torch-eager`` (NCHW), with
``--channels-last`` ``torch-eager-cl``; with ``--train-steps`` ``torch-train`` (and
``torch-train-cl``): Adam steps of the same BCE-Dice loss. With ``--gpu``: ``torch-cuda`` and
``--precisions`` fp16/bf16 variants (weights and activations cast), device-resident I/O.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from benchmarks.torch_unet import (TorchTrainer, TorchUNet, copy_keras_weights, load_weights,
                                   max_abs_difference)
from benchmarks.worker import Runtime, serve, training_arrays
from unet_keras.config import UNetConfig

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _threads() -> dict:
    return {"torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")}


class TorchInfer(Runtime):
    def __init__(self, name: str, model: TorchUNet, channels_last: bool = False,
                 device: str = "cpu", dtype: str = "fp32"):
        self.name, self.device, self.dtype = name, device, dtype
        self.channels_last = channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        target = torch.device("cuda" if device == "gpu" else "cpu")
        self.model = model.to(target, DTYPES[dtype], memory_format=self.memory_format).eval()
        if device == "gpu":
            self.prepare = lambda x: self._to_tensor(x).to(target, DTYPES[dtype])
            self.infer = self._infer_device
            self.to_numpy = lambda out: out.float().permute(0, 2, 3, 1).cpu().numpy()
        else:
            self.infer = lambda x: self._infer_device(self._to_tensor(x)).permute(0, 2, 3, 1).numpy()

    def _to_tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format)

    def _infer_device(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = self.model(x)
        if self.device == "gpu":
            torch.cuda.synchronize()
        return out

    def info(self) -> dict:
        return {"call": "eager nn.Module under inference_mode", "device": self.device,
                "dtype": self.dtype, "layout": "channels_last" if self.channels_last else "NCHW",
                **_threads()}


class TorchTrain(Runtime):
    def __init__(self, name: str, model: TorchUNet, config: UNetConfig, size: int, batch: int,
                 max_steps: int, channels_last: bool = False, device: str = "cpu"):
        self.name, self.batch, self.channels_last, self.device = name, batch, channels_last, device
        target = torch.device("cuda" if device == "gpu" else "cpu")
        self.trainer = TorchTrainer(model.to(target), config, channels_last)
        x, y = training_arrays(max_steps, batch, size)

        def train(steps: int) -> None:
            for step in range(steps):
                rows = slice(step * batch, (step + 1) * batch)
                # NHWC numpy -> NCHW tensor per batch, as Keras' fit converts its numpy batches.
                xb = torch.from_numpy(x[rows]).permute(0, 3, 1, 2).to(target)
                yb = torch.from_numpy(y[rows]).permute(0, 3, 1, 2).to(target)
                self.trainer.step(xb, yb)  # returns the loss as a float: synchronised
        self.train = train

    def info(self) -> dict:
        return {"call": "Adam step, BCE-Dice loss", "batch": self.batch, "device": self.device,
                "layout": "channels_last" if self.channels_last else "NCHW", **_threads()}


def build(args) -> dict[str, Runtime]:
    config = UNetConfig.load(args.config)
    weights = load_weights(args.weights)

    def fresh() -> TorchUNet:
        return copy_keras_weights(weights, TorchUNet(config)).eval()

    x = np.load(args.parity_inputs)
    difference = max_abs_difference(fresh(), np.load(args.parity_reference).astype(np.float64), x)
    if not difference <= args.tolerance:
        raise ValueError(f"PyTorch reference differs from Keras-JAX by max abs {difference:.3g} > "
                         f"{args.tolerance:g} on {x.shape}; not timed")
    parity = {"parity_max_abs_diff": difference, "parity_tolerance": args.tolerance}
    runtimes: dict[str, Runtime] = {}
    if not args.gpu_only:
        runtimes["torch-eager"] = TorchInfer("torch-eager", fresh())
        if args.channels_last:
            runtimes["torch-eager-cl"] = TorchInfer("torch-eager-cl", fresh(), channels_last=True)
        if args.train_steps:
            runtimes["torch-train"] = TorchTrain("torch-train", fresh(), config, args.train_size,
                                                 args.train_batch, args.train_steps)
            if args.channels_last:
                runtimes["torch-train-cl"] = TorchTrain(
                    "torch-train-cl", fresh(), config, args.train_size, args.train_batch,
                    args.train_steps, channels_last=True)
    if args.gpu and torch.cuda.is_available():
        runtimes["torch-cuda"] = TorchInfer("torch-cuda", fresh(), device="gpu")
        for precision in args.precisions:
            runtimes[f"torch-cuda-{precision}"] = TorchInfer(
                f"torch-cuda-{precision}", fresh(), channels_last=True, device="gpu",
                dtype=precision)
        if args.train_steps:
            runtimes["torch-cuda-train"] = TorchTrain(
                "torch-cuda-train", fresh(), config, args.train_size, args.train_batch,
                args.train_steps, device="gpu")
    for runtime in runtimes.values():
        runtime.info = (lambda base: lambda: {**base(), **parity})(runtime.info)
    return runtimes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_backend")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--parity-inputs", required=True)
    parser.add_argument("--parity-reference", required=True)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--train-steps", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=128)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--gpu-only", action="store_true")
    parser.add_argument("--precisions", nargs="*", default=[], choices=["fp16", "bf16"])
    args = parser.parse_args(argv)
    return serve(lambda: build(args))


if __name__ == "__main__":
    sys.exit(main())
