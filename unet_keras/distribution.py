"""Data-parallel training over several devices (``keras.distribution.DataParallel``, JAX).

Each training batch is split over the first N devices and the weights are replicated.
Validation and test predictions run undistributed, so images of any count and size work.
"""

from __future__ import annotations

import contextlib

import keras

from unet_keras.config import UNetConfig
from unet_keras.data.pipeline import TrainingBatches


class DeviceError(ValueError):
    """A ``devices`` count that this machine, backend or batch size cannot serve."""


def check_devices(devices: int, batch_size: int) -> None:
    """Refuse a data-parallel run before any work is done.

    Raises:
        DeviceError: ``devices`` < 1; ``batch_size`` not divisible by it; more than one device
            on a backend other than JAX; fewer devices on this machine.
    """
    if devices < 1:
        raise DeviceError(f"devices={devices}: expected 1 or more")
    if devices == 1:
        return
    if batch_size % devices:
        raise DeviceError(f"batch size {batch_size} cannot be split over {devices} devices; "
                          f"expected a batch size divisible by {devices}")
    backend = keras.backend.backend()
    if backend != "jax":
        raise DeviceError(f"data-parallel training (devices={devices}) needs KERAS_BACKEND=jax; "
                          f"the backend is {backend}")
    found = keras.distribution.list_devices()
    if len(found) < devices:
        raise DeviceError(f"{devices} devices requested but only {len(found)} found "
                          f"({', '.join(found)}); expected devices <= {len(found)}")


@contextlib.contextmanager
def data_parallel(devices: int):
    """Variables created and batches fed inside are replicated / split over ``devices``."""
    if devices == 1:
        yield
        return
    distribution = keras.distribution.DataParallel(
        devices=keras.distribution.list_devices()[:devices])
    with distribution.scope():
        yield


@contextlib.contextmanager
def undistributed():
    """Inputs fed whole, not split: validation batches of any size (replicated weights work)."""
    current = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


class EvenBatches(TrainingBatches):
    """Training batches whose sizes divide by the device count: the epoch's last, short batch
    is cut to a multiple of it (at most ``devices - 1`` examples, a different few each epoch as
    the order is reshuffled, sit out), since a batch is split evenly over the devices."""

    def __init__(self, examples: list[dict], config: UNetConfig, seed: int, devices: int):
        super().__init__(examples, config, seed=seed)
        self.devices = devices

    def __len__(self) -> int:
        full, rest = divmod(len(self.examples), self.config.batch_size)
        return full + (rest >= self.devices)

    def __getitem__(self, index: int):
        x, y = super().__getitem__(index)
        keep = len(x) - len(x) % self.devices
        return x[:keep], y[:keep]
