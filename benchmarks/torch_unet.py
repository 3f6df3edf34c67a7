"""The PyTorch reference: the U-Net of ``unet_keras.model`` rebuilt in plain PyTorch.

Same graph as ``build_unet``: per level two (Conv3x3 -> BatchNorm -> ReLU), MaxPool 2, Dropout;
a bottleneck block; per decoder level ConvTranspose 2x2 stride 2, concat [up, skip] in that
order, a block; a 1x1 convolution and a sigmoid. BatchNorm uses Keras' eps 1e-3 and momentum
0.9 (PyTorch's 0.1). ``copy_keras_weights`` loads a Keras model's weights, so both compute the
same function; ``max_abs_difference`` is the check run before any timing.

The loss and optimiser match ``unet_keras.train.compile_model``: BCE (probabilities clipped to
[1e-7, 1 - 1e-7]) + (1 - soft Dice), per sample and channel, averaged; Adam with eps 1e-7.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from unet_keras.config import UNetConfig

KERAS_BN_EPSILON = 1e-3
KERAS_EPSILON = 1e-7  # keras.config.epsilon(): BCE clipping and Adam's eps


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, batch_norm: bool):
        layers: list[nn.Module] = []
        for c in (cin, cout):
            layers.append(nn.Conv2d(c, cout, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout, eps=KERAS_BN_EPSILON, momentum=0.1))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class TorchUNet(nn.Module):
    """NCHW float32 in [0, 1] -> sigmoid probabilities (N, out_channels, H, W)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        f, bn = config.filters, config.batch_norm
        self.depth = config.depth
        self.encoders = nn.ModuleList(
            ConvBlock(3 if level == 0 else f(level - 1), f(level), bn)
            for level in range(config.depth))
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(config.dropout)
        self.bottleneck = ConvBlock(f(config.depth - 1), f(config.depth), bn)
        # Index i holds decoder level i (as Keras names dec{i}), run from the deepest up.
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(f(level + 1), f(level), 2, stride=2)
            for level in range(config.depth))
        self.decoders = nn.ModuleList(
            ConvBlock(f(level) * 2, f(level), bn) for level in range(config.depth))
        self.head = nn.Conv2d(f(0), config.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.dropout(self.pool(x))
        x = self.dropout(self.bottleneck(x))
        for level in reversed(range(self.depth)):
            x = torch.cat([self.ups[level](x), skips[level]], dim=1)
            x = self.decoders[level](x)
        return torch.sigmoid(self.head(x))


def _set(param: torch.Tensor, value: np.ndarray, name: str) -> None:
    value = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    if tuple(param.shape) != tuple(value.shape):
        raise ValueError(f"{name}: Keras weight of shape {tuple(value.shape)} for a PyTorch "
                         f"parameter of shape {tuple(param.shape)}; architectures differ")
    with torch.no_grad():
        param.copy_(value)


def keras_layer_weights(keras_model) -> dict[str, list[np.ndarray]]:
    """Layer name -> its weight arrays, for every Keras layer that has weights."""
    return {layer.name: [np.asarray(w) for w in layer.get_weights()]
            for layer in keras_model.layers if layer.get_weights()}


def _layer(weights: Mapping[str, Sequence[np.ndarray]], name: str) -> Sequence[np.ndarray]:
    try:
        return weights[name]
    except KeyError:
        raise ValueError(f"no weights for Keras layer {name!r}; the model is not a build_unet "
                         f"graph of this shape (layers: {sorted(weights)[:8]}...)") from None


def _copy_block(block: ConvBlock, weights, prefix: str) -> None:
    convs = [m for m in block if isinstance(m, nn.Conv2d)]
    norms = [m for m in block if isinstance(m, nn.BatchNorm2d)]
    for i, conv in enumerate(convs, start=1):
        arrays = _layer(weights, f"{prefix}_conv{i}")
        _set(conv.weight, arrays[0].transpose(3, 2, 0, 1), f"{prefix}_conv{i}")  # HWIO -> OIHW
        if conv.bias is not None:
            _set(conv.bias, arrays[1], f"{prefix}_conv{i} bias")
    for i, norm in enumerate(norms, start=1):
        gamma, beta, mean, var = _layer(weights, f"{prefix}_bn{i}")
        for param, value, what in ((norm.weight, gamma, "gamma"), (norm.bias, beta, "beta"),
                                   (norm.running_mean, mean, "moving mean"),
                                   (norm.running_var, var, "moving variance")):
            _set(param, value, f"{prefix}_bn{i} {what}")


def copy_keras_weights(weights: Mapping[str, Sequence[np.ndarray]],
                       torch_model: TorchUNet) -> TorchUNet:
    """Load Keras weights (``keras_layer_weights`` of a ``build_unet`` model) into ``torch_model``.

    Conv kernels go HWIO -> OIHW. Keras keeps a transposed-convolution kernel as
    (kh, kw, out, in) and PyTorch as (in, out, kh, kw); both apply it without a spatial flip
    (output pixel (2i + a, 2j + b) takes tap (a, b)), so it is a pure transpose.
    """
    for level in range(torch_model.depth):
        _copy_block(torch_model.encoders[level], weights, f"enc{level}")
        _copy_block(torch_model.decoders[level], weights, f"dec{level}")
        kernel, bias = _layer(weights, f"dec{level}_up")
        _set(torch_model.ups[level].weight, kernel.transpose(3, 2, 0, 1), f"dec{level}_up")
        _set(torch_model.ups[level].bias, bias, f"dec{level}_up bias")
    _copy_block(torch_model.bottleneck, weights, "bottleneck")
    kernel, bias = _layer(weights, "probability")
    _set(torch_model.head.weight, kernel.transpose(3, 2, 0, 1), "probability")
    _set(torch_model.head.bias, bias, "probability bias")
    return torch_model


def from_keras(keras_model, config: UNetConfig) -> TorchUNet:
    """A ``TorchUNet`` in eval mode holding ``keras_model``'s weights."""
    return copy_keras_weights(keras_layer_weights(keras_model), TorchUNet(config)).eval()


def predict_nhwc(model: TorchUNet, x: np.ndarray, channels_last: bool = False) -> np.ndarray:
    """NHWC float32 numpy in and out, like the Keras and ONNX models."""
    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
        t = t.contiguous(memory_format=torch.channels_last if channels_last else
                         torch.contiguous_format)
        return model(t).permute(0, 2, 3, 1).numpy()


def max_abs_difference(model: TorchUNet, keras_probabilities: np.ndarray, x: np.ndarray) -> float:
    """Largest |PyTorch - Keras| over the probabilities of the NHWC inputs ``x``."""
    got = predict_nhwc(model, x)
    return float(np.max(np.abs(got.astype(np.float64) - keras_probabilities)))


def bce_dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0,
                  bce_weight: float = 1.0, dice_weight: float = 1.0,
                  channel_weights: Sequence[float] | None = None) -> torch.Tensor:
    """``unet_keras.losses.bce_dice`` for NCHW tensors, averaged over the batch."""
    p = probs.clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON)
    bce = -(target * torch.log(p) + (1.0 - target) * torch.log(1.0 - p)).mean(dim=(2, 3))
    intersection = (target * probs).sum(dim=(2, 3))
    total = target.sum(dim=(2, 3)) + probs.sum(dim=(2, 3))
    dice = (2.0 * intersection + smooth) / (total + smooth)
    per_channel = bce_weight * bce + dice_weight * (1.0 - dice)
    if channel_weights is None:
        return per_channel.mean()
    weights = torch.tensor(channel_weights, dtype=per_channel.dtype, device=per_channel.device)
    return ((per_channel * weights).sum(dim=1) / weights.sum()).mean()


class TorchTrainer:
    """One Adam step of BCE + Dice on an NCHW batch, as Keras' ``fit`` does per batch."""

    def __init__(self, model: TorchUNet, config: UNetConfig, channels_last: bool = False):
        self.model = model.train()
        self.config = config
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate,
                                          eps=KERAS_EPSILON)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        x = x.contiguous(memory_format=self.memory_format)
        self.optimizer.zero_grad(set_to_none=True)
        loss = bce_dice_loss(self.model(x), y, self.config.dice_smooth, self.config.bce_weight,
                             self.config.dice_weight, self.config.loss_channel_weights())
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def save_weights(weights: Mapping[str, Sequence[np.ndarray]], path) -> None:
    """Keras layer weights to an ``.npz`` (keys ``layer/index``), readable without Keras."""
    np.savez(path, **{f"{name}/{i}": w for name, arrays in weights.items()
                      for i, w in enumerate(arrays)})


def load_weights(path) -> dict[str, list[np.ndarray]]:
    """The inverse of ``save_weights``."""
    found: dict[str, dict[int, np.ndarray]] = {}
    with np.load(path) as data:
        for key in data.files:
            name, index = key.rsplit("/", 1)
            found.setdefault(name, {})[int(index)] = data[key]
    return {name: [arrays[i] for i in sorted(arrays)] for name, arrays in found.items()}
