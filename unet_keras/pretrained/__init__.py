"""The shipped pretrained model: ``wbc_unet.keras``, ``wbc_unet.onnx`` and ``wbc_unet.json``.

The JSON file is the model card: the model's config (with its tuned thresholds), the training
recipe and data, the figures measured on held-out data (the recipe's cross-validation; the run's
own test part, when it kept one), and the data citation. The three files are
made from a finished run by ``python -m export.ship``; ``unet-keras predict`` serves the ONNX
file when neither ``--model`` nor ``--onnx`` is given.
"""

from __future__ import annotations

import json
from pathlib import Path

PRETRAINED_DIR = Path(__file__).resolve().parent
KERAS_FILE = PRETRAINED_DIR / "wbc_unet.keras"
ONNX_FILE = PRETRAINED_DIR / "wbc_unet.onnx"
CARD_FILE = PRETRAINED_DIR / "wbc_unet.json"


class PretrainedMissingError(FileNotFoundError):
    """The installed package carries no pretrained model file."""


def pretrained_path(kind: str = "keras") -> Path:
    """Path of the shipped ``.keras`` (``kind="keras"``) or ``.onnx`` (``kind="onnx"``) model.

    Raises:
        PretrainedMissingError: the file is not installed with this package.
    """
    path = {"keras": KERAS_FILE, "onnx": ONNX_FILE}[kind]
    if not path.is_file() or not CARD_FILE.is_file():
        raise PretrainedMissingError(
            f"{path}: the shipped pretrained model is not installed (expected {path.name} and "
            f"{CARD_FILE.name} in {PRETRAINED_DIR}); pass --model or --onnx")
    return path


def model_card() -> dict:
    """The shipped model card (config, recipe, figures, citation)."""
    pretrained_path("keras")
    return json.loads(CARD_FILE.read_text())
