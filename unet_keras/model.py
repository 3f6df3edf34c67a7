"""The U-Net: a Keras 3 functional graph built from a ``UNetConfig``."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import keras
import numpy as np
from keras import layers

from unet_keras.config import UNetConfig

INPUT_NAME = "image"
OUTPUT_NAME = "probability"


class ModelLoadError(ValueError):
    """A model file that cannot be loaded. The message names the file."""


def kernel_initializer(config: UNetConfig, default: str = "he_normal"):
    """Initial kernels. ``init="pytorch"``: PyTorch's default, uniform on +-1/sqrt(fan_in).

    Under batch norm a kernel's scale does not change the output, but Adam's steps have a
    fixed size, so a kernel that starts sqrt(6) times larger (he_normal) turns sqrt(6) times
    more slowly: the same recipe trains more slowly. ``init="he_normal"`` is the graph of
    models trained before the option existed (he_normal in the blocks, Keras' glorot_uniform
    in the transposed convolutions and the head, batch-norm epsilon 1e-3).
    """
    if config.init == "pytorch":
        return keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform")
    return default


def conv_block(x, filters: int, config: UNetConfig, name: str):
    """Two 3x3 convolutions, each followed by batch norm (optional) and ReLU."""
    for i in (1, 2):
        x = layers.Conv2D(
            filters, 3, padding="same", use_bias=not config.batch_norm,
            kernel_initializer=kernel_initializer(config), name=f"{name}_conv{i}",
        )(x)
        if config.batch_norm:
            # momentum 0.9 (PyTorch's 0.1): with ~14 steps an epoch, Keras' default 0.99 leaves
            # the moving statistics far from the batch statistics for many epochs.
            epsilon = 1e-5 if config.init == "pytorch" else 1e-3
            x = layers.BatchNormalization(momentum=0.9, epsilon=epsilon, name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def build_unet(config: UNetConfig) -> keras.Model:
    """Build the U-Net described by ``config``.

    Input ``image``: (None, None, 3) float32 in [0, 1], sides a multiple of ``2**depth``.
    Output ``probability``: sigmoid, one channel per head (whole cell[, nucleus]).
    """
    return _unet(config)[0]


def build_training_model(config: UNetConfig) -> tuple[keras.Model, keras.Model]:
    """(the model to fit, the U-Net of ``build_unet`` inside it, sharing its layers).

    Without deep supervision both are the same model. With N levels
    (``config.supervised_levels``), the model to fit outputs the U-Net's ``probability``
    concatenated (channels) with one head per decoder level 1..N: a 1x1 convolution of that
    level's features, bilinearly upsampled to the input's size (as logits), then a sigmoid;
    ``losses.BCEDiceLoss(head_weights=config.head_weights())`` scores each head against the
    same mask. The U-Net alone is what is validated and saved.
    """
    model, decoder = _unet(config)
    if not config.supervised_levels:
        return model, model
    heads = [model.output]
    for level in range(1, config.supervised_levels + 1):
        logits = layers.Conv2D(
            config.out_channels, 1, dtype="float32",
            kernel_initializer=kernel_initializer(config, "glorot_uniform"),
            name=f"aux{level}_logits",
        )(decoder[level])
        logits = layers.UpSampling2D(2**level, interpolation="bilinear",
                                     name=f"aux{level}_up")(logits)
        heads.append(layers.Activation("sigmoid", dtype="float32", name=f"aux{level}")(logits))
    training = keras.Model(model.input, layers.Concatenate(name="heads")(heads),
                           name=f"{model.name}_deep_supervision")
    return training, model


def _unet(config: UNetConfig) -> tuple[keras.Model, dict]:
    """The U-Net and its decoder's features by level (what deep-supervision heads read)."""
    inputs = keras.Input(shape=(None, None, 3), name=INPUT_NAME)
    x = inputs
    skips = []
    for level in range(config.depth):
        x = conv_block(x, config.filters(level), config, name=f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
        if config.dropout:
            x = layers.Dropout(config.dropout, name=f"enc{level}_drop")(x)
    x = conv_block(x, config.filters(config.depth), config, name="bottleneck")
    if config.dropout:
        x = layers.Dropout(config.dropout, name="bottleneck_drop")(x)
    decoder = {}
    for level in reversed(range(config.depth)):
        filters = config.filters(level)
        x = layers.Conv2DTranspose(
            filters, 2, strides=2, padding="same",
            kernel_initializer=kernel_initializer(config, "glorot_uniform"), name=f"dec{level}_up",
        )(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
        x = conv_block(x, filters, config, name=f"dec{level}")
        decoder[level] = x
    outputs = layers.Conv2D(
        config.out_channels, 1, activation="sigmoid", dtype="float32",
        kernel_initializer=kernel_initializer(config, "glorot_uniform"), name=OUTPUT_NAME,
    )(x)
    model = keras.Model(inputs, outputs, name=f"unet_d{config.depth}_f{config.base_filters}")
    return model, decoder


def recompute_batch_norm(model: keras.Model, batches: Iterable[np.ndarray]) -> int:
    """Set every batch-norm layer's moving mean and variance to its inputs' statistics over
    ``batches`` (float32 NHWC arrays, reused for each layer), computed in inference mode.

    During training the moving statistics average the last ~10 batches (momentum 0.9) as the
    training graph sees them: with dropout on, which scales the kept activations by
    1 / (1 - rate) and so inflates the variance that reaches the next layer, a variance
    inference never sees. Here each layer's statistics are measured with dropout off and the
    layers before it already updated, layer by layer in graph order, so they are those of the
    graph that predicts. Returns how many layers were set.
    """
    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    batches = list(batches)
    for layer in norms:
        features = keras.Model(model.inputs, layer.input)
        total = squares = 0.0
        count = 0
        for x in batches:
            a = np.asarray(features.predict_on_batch(x), np.float64)
            total = total + a.sum(axis=(0, 1, 2))
            squares = squares + np.square(a).sum(axis=(0, 1, 2))
            count += a.size // a.shape[-1]
        mean = total / count
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(squares / count - mean**2, 0.0).astype(np.float32))
    return len(norms)


def load_model(path: str | Path, compile: bool = False) -> keras.Model:
    """Load a ``.keras`` file saved by this package, under whichever backend is active."""
    import unet_keras.losses  # noqa: F401  (registers the loss for compiled loading)

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: model file not found; expected a .keras file")
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as err:  # keras raises many types for a bad archive
        raise ModelLoadError(
            f"{path}: not a loadable Keras model ({type(err).__name__}: {err}); "
            "expected a .keras file written by `unet-keras train`"
        ) from err
