"""Binary cross-entropy + Dice loss, in pure keras.ops so it runs on every backend."""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops


def soft_dice(y_true, y_pred, smooth: float = 1.0):
    """Soft Dice per sample and channel: (2|X.Y| + s) / (|X| + |Y| + s), shape (N, C)."""
    axes = (1, 2)
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return (2.0 * intersection + smooth) / (total + smooth)


def boundary_band(y_true, width: int = 5):
    """Per pixel and channel, how far the mask changes within a ``width`` x ``width`` window
    (its maximum less its minimum there): 1 within ``width // 2`` px of a binary mask's
    boundary, on either side, else 0; fractional along anti-aliased edges. The window is cut at
    the image's border, so a cell that runs off the image has no band there."""
    dilated = ops.max_pool(y_true, pool_size=width, strides=1, padding="same")
    eroded = -ops.max_pool(-y_true, pool_size=width, strides=1, padding="same")
    return dilated - eroded


def binary_crossentropy_map(y_true, y_pred, from_logits: bool = False, pixel_weights=None):
    """Mean binary cross-entropy per sample and channel, shape (N, C); ``pixel_weights``
    (shaped as ``y_true``) multiplies each pixel's term before the mean."""
    if from_logits:
        # log(1 + exp(-|x|)) + max(x, 0) - x * y, stable for large |x|.
        bce = ops.relu(y_pred) - y_pred * y_true + ops.log1p(ops.exp(-ops.abs(y_pred)))
    else:
        eps = keras.config.epsilon()
        p = ops.clip(y_pred, eps, 1.0 - eps)
        bce = -(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
    if pixel_weights is not None:
        bce = bce * pixel_weights
    return ops.mean(bce, axis=(1, 2))


def boundary_weights(y_true, boundary_weight: float, width: int = 5):
    """Each pixel's BCE weight: 1 + ``boundary_weight`` times its ``boundary_band``; None
    (every pixel alike) for a weight of 0."""
    if not boundary_weight:
        return None
    return 1.0 + boundary_weight * boundary_band(y_true, width)


def lovasz_hinge(y_true, y_pred, from_logits: bool = False):
    """Lovasz hinge per sample and channel, shape (N, C) (Berman et al., CVPR 2018): the
    Lovasz extension of the Jaccard loss (1 - IoU) applied to each pixel's hinge error
    max(0, 1 - logit * sign), sign +1 inside the mask (``y_true`` >= 0.5) and -1 outside. The
    errors are sorted, largest first, and each weighted by how much it adds to 1 - IoU."""
    if not from_logits:
        eps = keras.config.epsilon()
        p = ops.clip(y_pred, eps, 1.0 - eps)
        y_pred = ops.log(p) - ops.log(1.0 - p)
    # (N, H, W, C) -> (N, C, H*W): one row per sample and channel.
    shape = ops.shape(y_pred)
    rows = (shape[0], shape[3], -1)
    logits = ops.reshape(ops.transpose(y_pred, (0, 3, 1, 2)), rows)
    labels = ops.reshape(ops.transpose(ops.cast(y_true >= 0.5, y_pred.dtype), (0, 3, 1, 2)), rows)
    errors = 1.0 - logits * (2.0 * labels - 1.0)
    order = ops.argsort(-ops.stop_gradient(errors), axis=-1)
    errors_sorted = ops.take_along_axis(errors, order, axis=-1)
    labels_sorted = ops.take_along_axis(labels, order, axis=-1)
    # 1 - IoU of the prediction that takes the k largest errors as wrong, for k = 1..P; its
    # increments are the weights (the Lovasz extension's gradient).
    positives = ops.sum(labels_sorted, axis=-1, keepdims=True)
    intersection = positives - ops.cumsum(labels_sorted, axis=-1)
    union = positives + ops.cumsum(1.0 - labels_sorted, axis=-1)
    jaccard = 1.0 - intersection / union
    weights = ops.concatenate([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], axis=-1)
    return ops.sum(ops.relu(errors_sorted) * ops.stop_gradient(weights), axis=-1)


def bce_dice(y_true, y_pred, from_logits=False, smooth=1.0, bce_weight=1.0, dice_weight=1.0,
             channel_weights=None, pixel_weights=None, lovasz_weight=0.0):
    """Per-sample loss: weighted mean over channels of bce_weight*BCE + dice_weight*(1 - Dice)
    (+ lovasz_weight * ``lovasz_hinge``); ``pixel_weights`` (shaped as ``y_true``, e.g.
    ``boundary_weights``) weighs each pixel's BCE."""
    y_true = ops.cast(y_true, y_pred.dtype)
    bce = binary_crossentropy_map(y_true, y_pred, from_logits, pixel_weights)
    probs = ops.sigmoid(y_pred) if from_logits else y_pred
    dice = soft_dice(y_true, probs, smooth)
    per_channel = bce_weight * bce + dice_weight * (1.0 - dice)
    if lovasz_weight:
        per_channel = per_channel + lovasz_weight * lovasz_hinge(y_true, y_pred, from_logits)
    if channel_weights is None:
        return ops.mean(per_channel, axis=-1)
    weights = ops.convert_to_tensor(channel_weights, dtype=per_channel.dtype)
    return ops.sum(per_channel * weights, axis=-1) / ops.sum(weights)


@keras.saving.register_keras_serializable(package="unet_keras")
class BCEDiceLoss(keras.losses.Loss):
    """Binary cross-entropy + (1 - soft Dice), computed per output channel.

    Args:
        from_logits: whether predictions are logits rather than probabilities.
        smooth: additive smoothing in the Dice ratio (keeps empty masks finite).
        bce_weight, dice_weight: weights of the two terms.
        channel_weights: optional weight per output channel (default: equal).
        head_weights: with deep supervision (``model.build_training_model``), the weight of each
            head whose channels are concatenated in the prediction (the full-resolution
            output first), each head scored against the same mask; default: one head.
        boundary_weight: B > 0 weighs each pixel's BCE 1 + B within ``boundary_width // 2`` px
            of the mask's boundary (``boundary_band``), 1 elsewhere; 0: every pixel alike.
        lovasz_weight: L > 0 adds L times the ``lovasz_hinge`` (a surrogate of 1 - IoU) to each
            channel's loss of the full-resolution output (the first head); 0: off.
    """

    def __init__(self, from_logits: bool = False, smooth: float = 1.0, bce_weight: float = 1.0,
                 dice_weight: float = 1.0, channel_weights: Sequence[float] | None = None,
                 head_weights: Sequence[float] | None = None, boundary_weight: float = 0.0,
                 boundary_width: int = 5, lovasz_weight: float = 0.0, name: str = "bce_dice",
                 reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = from_logits
        self.smooth = float(smooth)
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.channel_weights = None if channel_weights is None else [float(w) for w in channel_weights]
        self.head_weights = None if head_weights is None else [float(w) for w in head_weights]
        self.boundary_weight = float(boundary_weight)
        self.boundary_width = int(boundary_width)
        self.lovasz_weight = float(lovasz_weight)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        # Every head is scored against the same mask: one weight map serves them all.
        pixel_weights = boundary_weights(y_true, self.boundary_weight, self.boundary_width)

        def one_head(part, lovasz_weight=0.0):
            return bce_dice(y_true, part, self.from_logits, self.smooth, self.bce_weight,
                            self.dice_weight, self.channel_weights, pixel_weights, lovasz_weight)

        if not self.head_weights:
            return one_head(y_pred, self.lovasz_weight)
        channels = y_pred.shape[-1] // len(self.head_weights)
        total = 0.0
        for head, weight in enumerate(self.head_weights):
            # The Lovasz term (a sort of every pixel) scores the full-resolution output only.
            total = total + weight * one_head(y_pred[..., head * channels:(head + 1) * channels],
                                              self.lovasz_weight if head == 0 else 0.0)
        return total

    def get_config(self):
        config = super().get_config()
        config.update(
            from_logits=self.from_logits, smooth=self.smooth, bce_weight=self.bce_weight,
            dice_weight=self.dice_weight, channel_weights=self.channel_weights,
            head_weights=self.head_weights, boundary_weight=self.boundary_weight,
            boundary_width=self.boundary_width, lovasz_weight=self.lovasz_weight,
        )
        return config
