"""Keras callbacks of training: the validation Dice that picks the kept epoch, the swap to the
moving average of the weights that it then scores, and the zoom range of each epoch."""

from __future__ import annotations

import logging

import keras

from unet_keras.checkpoint import host_copies
from unet_keras.config import UNetConfig
from unet_keras.distribution import undistributed
from unet_keras.evaluate import score_probabilities
from unet_keras.inference import predict_probabilities

log = logging.getLogger(__name__)


class AveragedWeights(keras.callbacks.Callback):
    """With ``config.ema``: at the end of every epoch, puts the optimizer's moving average of
    the weights into the model, so that the callbacks after it (``ValidationDice``, the
    checkpoint's best model) see the averaged model; ``raw()`` puts the trained weights back,
    which the checkpoint calls before it saves the state a resumed run continues from.

    Batch-norm statistics are not averaged: they are the running means of the raw weights'
    activations, close to the average's once the learning rate is small.
    """

    def __init__(self):
        super().__init__()
        self._raw: list | None = None

    def on_epoch_end(self, epoch, logs=None):
        variables = self.model.trainable_variables
        averages = self.model.optimizer._model_variables_moving_average  # Keras 3's EMA slots
        # Host copies both ways: the JAX trainer donates the variables' device buffers to the
        # next step, so no two variables may share one (as ``finalize_variable_values`` makes
        # them do).
        self._raw = host_copies(variables)
        for variable, average in zip(variables, host_copies(averages), strict=True):
            variable.assign(average)

    def raw(self) -> None:
        if self._raw is not None:
            for variable, value in zip(self.model.trainable_variables, self._raw):
                variable.assign(value)
            self._raw = None


class ValidationDice(keras.callbacks.Callback):
    """Adds ``val_dice`` / ``val_iou`` (whole cell, mean over images, threshold 0.5) to the logs,
    and for two-channel models ``val_nucleus_dice`` and ``val_mean_dice`` (of the two Dice),
    computed on full validation images with the same numpy metrics as evaluation. ``model``:
    the U-Net to score when the model being fitted is another that holds it (deep supervision:
    ``model.build_training_model``); default the fitted model."""

    def __init__(self, examples: list[dict], config: UNetConfig, model: keras.Model | None = None):
        super().__init__()
        self.examples = examples
        self.config = config
        self.scored = model

    def on_epoch_end(self, epoch, logs=None):
        with undistributed():
            probs = predict_probabilities(self.scored or self.model,
                                          [e["image"] for e in self.examples],
                                          self.config.multiple)
        _, summary = score_probabilities(probs, self.examples, (0.5,) * self.config.out_channels)
        if logs is not None:
            logs["val_dice"] = summary["whole_cell_dice"]
            logs["val_iou"] = summary["whole_cell_iou"]
            if self.config.out_channels == 2:
                logs["val_nucleus_dice"] = summary["nucleus_dice"]
                logs["val_mean_dice"] = (logs["val_dice"] + logs["val_nucleus_dice"]) / 2


class ZoomSchedule(keras.callbacks.Callback):
    """Sets the training batches' zoom range at the start of every epoch to
    ``config.zoom_range(epoch)``: narrower in the last ``config.final_zoom_epochs``. Keras calls
    it before the epoch's first batch is drawn, resumed runs included."""

    def __init__(self, batches, config: UNetConfig):
        super().__init__()
        self.batches = batches
        self.config = config

    def on_epoch_begin(self, epoch, logs=None):
        zoom = self.config.zoom_range(epoch)
        if self.config.augment and zoom != self.batches.augmenter.scale_range:
            log.info("epoch %d on: zoom %g-%gx", epoch + 1, *zoom)
            self.batches.augmenter.scale_range = zoom
