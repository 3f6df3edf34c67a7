"""The single configuration object for model shape and training recipe."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

CONFIG_FILENAME = "config.json"
# Objects with fewer pixels are dropped unless a model's own tuned ``min_cell_area`` says
# otherwise (a white cell in Dataset 1 covers ~1,700-7,200 px).
MIN_CELL_AREA = 30
INITS = ("he_normal", "pytorch")  # initial kernels; see unet_keras.model.kernel_initializer
LR_SCHEDULES = ("plateau", "cosine")
# The validation score that picks the kept epoch: whole-cell Dice, or the mean of whole-cell and
# nucleus Dice (two-channel models).
CHECKPOINT_METRICS = ("whole_cell", "mean")
# Where the saved model's batch-norm statistics come from: measured again after training on
# augmented training crops, in inference mode (unet_keras.model.recompute_batch_norm), or the
# moving averages training kept. Configs written before the choice existed are "moving".
BATCH_NORM_STATS = ("recomputed", "moving")
# What a config written before each of these settings existed was trained with (read by
# UNetConfig.from_dict and the ablation's comparison of recipes): the settings whose default is
# not what training did before them.
LEGACY_DEFAULTS = {"batch_norm_stats": "moving", "boundary_weight": 0.0, "deep_supervision": 0}
# The zoom of the last ``final_zoom_epochs`` epochs (within ``scale_range``): the seed's range,
# near the training images' own magnification.
FINAL_SCALE_RANGE = (0.8, 1.25)
# Colour jitter's ranges scale with ``colour_strength``; saturation's half-width is 0.2 x it, so
# at 5 a draw could reach zero (grey) and past it.
MAX_COLOUR_STRENGTH = 4.0
MAX_COLOUR_TRANSFER = 4.0  # a spread of K sd of the training images' colour statistics
# "drop": cells touching the image edge are left out when another cell lies clear of it
# (see unet_keras.postprocess.edge_parts); "keep": every cell counts.
EDGE_CELLS = ("keep", "drop")
# `predict --colour`: map out-of-distribution colours (auto), every image, or none
# (unet_keras.colour).
COLOUR_MODES = ("auto", "always", "off")
# What the masks of a user's own folder hold (``unet_keras.data.folders``).
MASK_KINDS = ("cell-nucleus", "cell")


class ConfigError(ValueError):
    """A config file or value that cannot be used."""


@dataclasses.dataclass
class UNetConfig:
    """Model and training settings; saved as ``config.json`` beside the weights.

    The defaults are the shipped model's recipe: the seed's (depth 4, 128 px crops, 50 epochs,
    Adam at 1e-3) with a nucleus output channel beside the whole cell (cytoplasm = cell minus
    nucleus), zoom over 0.5x-2x so that another scanner's magnification is inside the training
    distribution, colour jitter (brightness, contrast, gamma, hue, saturation) but no
    haematoxylin-eosin-DAB stain jitter (measured: it cost nucleus Dice, most on eosinophils, and
    bought no robustness to stain shifts), 12 base filters instead of 16 (1.10 M parameters
    instead of 1.95 M), so that the Keras and ONNX files ship together within 10 MB, and batch 8
    instead of 16 (twice the updates in the same time; measured over 5 folds: nucleus Dice up on
    every fold, AP@0.5 1.000 on every fold, whole-cell Dice level), and deep supervision of
    every decoder level below the top (measured over 5 folds: two levels against batch 8 alone,
    whole-cell Dice +0.0009 ± 0.0017, nucleus Dice +0.0023 ± 0.0023; three against two,
    whole-cell Dice +0.0010 ± 0.0004, up on every fold, nucleus Dice -0.0001 ± 0.0017, AP@0.5
    1.000 on every fold). Dropout stays the seed's 0.1 (with three levels over 5 folds, 0 scored
    +0.0001 ± 0.0009 whole-cell Dice and 0.05 -0.0016 ± 0.0018: no gain from changing it).
    ``SEED_RECIPE`` holds the settings of the project's first recipe.
    """

    # Model shape.
    depth: int = 4
    base_filters: int = 12
    max_filters: int = 0  # cap on any level's filters (0: none; base * 2**level uncapped)
    batch_norm: bool = True
    dropout: float = 0.1
    out_channels: int = 2  # 1: whole cell; 2: whole cell, nucleus (cytoplasm = cell - nucleus)
    init: str = "he_normal"  # initial kernels: "he_normal" or "pytorch" (+-1/sqrt(fan_in))
    # Loss.
    bce_weight: float = 1.0
    dice_weight: float = 1.0
    dice_smooth: float = 1.0
    # Weight of the nucleus channel's loss against the whole cell's 1 (two outputs).
    nucleus_weight: float = 1.0
    # B > 0: each pixel's BCE within 2 px of a mask's boundary counts 1 + B times
    # (losses.boundary_band); 0: every pixel alike. Against 0 over 5 folds, 5: +0.0002 whole-cell
    # and +0.0008 nucleus Dice; 10: +0.0006 and -0.0006; within run-to-run noise (docs/results.md,
    # "Boundary-weighted cross-entropy").
    boundary_weight: float = 0.0
    # L > 0 adds L times the Lovasz hinge (losses.lovasz_hinge, a surrogate of 1 - IoU) to each
    # channel's loss of the full-resolution output; 0: off.
    lovasz_weight: float = 0.0
    # Deep supervision: N > 0 adds a 1x1 sigmoid head to each of the N decoder levels below the
    # top (1/2, 1/4, ... resolution; at most the depth - 1 there are), upsampled to the input's
    # size, whose BCE-Dice counts in the training loss with weight 2**-level (the
    # full-resolution output's: 1). Training only: the saved model has the one output. 0: off.
    deep_supervision: int = 3
    # Data.
    dataset: str = "dataset1"
    fold: int = 0
    num_folds: int = 5
    # Image ids of the test part instead of fold ``fold`` ("201-300": Dataset 1's white-background
    # batch); validation is carved from the others as for a fold. "": k-fold.
    test_ids: str = ""
    # True: no test part; every image but the validation part trains (validation carved as for
    # a fold). For the model one ships once cross-validation has measured its recipe.
    all_data: bool = False
    split_seed: int = 42
    val_fraction: float = 0.1
    # F < 1: train on that fraction of the training part only (a draw seeded by split_seed and
    # the fold, each smaller fraction's images inside each larger one's; validation and test
    # parts unchanged): for learning curves, how much more annotated data would bring.
    train_fraction: float = 1.0
    image_size: int = 128
    augment: bool = True
    stain_augment: bool = False  # haematoxylin-eosin-DAB jitter (colour jitter stays on)
    colour_strength: float = 1.0  # scales the colour jitter's ranges (data.augment.Augmenter)
    scale_range: tuple[float, float] = (0.5, 2.0)  # zoom; another scanner, another magnification
    final_zoom_epochs: int = 0  # the last N epochs zoom within FINAL_SCALE_RANGE only
    class_balance: float = 0.0  # draw examples with probability ~ (cell-type count) ** -this
    elastic: float = 0.0  # sd (px) of a smooth elastic displacement of each crop (0: none)
    # B > 0: half the crops blurred by a Gaussian of sd drawn in 0..B px (data.augment); 0: none.
    blur: float = 0.0
    # K > 0: half the crops take colour statistics drawn from N(mean, K**2 cov) of the training
    # images' (data.augment, RandStainNA); 0: none.
    colour_transfer: float = 0.0
    # Optimisation.
    epochs: int = 50
    batch_size: int = 8
    learning_rate: float = 1e-3
    # Decoupled weight decay (AdamW): each step multiplies every convolution kernel by 1 - lr *
    # this; batch-norm scales and offsets and the biases are left alone (0: off, plain Adam).
    weight_decay: float = 0.0
    lr_schedule: str = "plateau"  # "plateau" or "cosine"
    checkpoint_metric: str = "whole_cell"  # CHECKPOINT_METRICS; the plateau follows whole-cell
    batch_norm_stats: str = "recomputed"  # BATCH_NORM_STATS
    # Momentum of an exponential moving average of the weights, updated every step; validation,
    # the kept epoch and the saved model use the average (0: off, the raw weights).
    ema: float = 0.0
    seed: int = 0
    # Post-processing, tuned on validation data after training.
    thresholds: tuple[float, ...] = (0.5,)
    min_cell_area: int = MIN_CELL_AREA  # px; smaller objects are dropped
    edge_cells: str = "keep"  # "keep" or "drop" cells cut by the image edge (EDGE_CELLS)
    # Median equivalent diameter (px) of the training masks' cells, recorded by training and
    # tuning: the size `predict --scale auto` brings cells to (0: not measured).
    cell_diameter: float = 0.0
    # The training images' colour statistics (unet_keras.colour.fit_reference), recorded by
    # training and tuning: what `predict --colour auto` compares images with ({}: not measured).
    colour_reference: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scale_range = tuple(float(v) for v in self.scale_range)
        self.thresholds = tuple(float(v) for v in self.thresholds)
        self.validate()

    @property
    def test_part(self) -> str:
        """What the test part is: "fold 0", "images 201-300" with ``test_ids``, or "none"."""
        if self.all_data:
            return "none (all data)"
        return f"images {self.test_ids}" if self.test_ids else f"fold {self.fold}"

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2**self.depth

    def validate(self) -> None:
        problems = []
        if not 1 <= self.depth <= 7:
            problems.append(f"depth={self.depth} (expected 1..7)")
        if self.base_filters < 1:
            problems.append(f"base_filters={self.base_filters} (expected >= 1)")
        if self.max_filters and self.max_filters < self.base_filters:
            problems.append(f"max_filters={self.max_filters} (expected 0 or >= base_filters "
                            f"{self.base_filters})")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout} (expected 0 <= dropout < 1)")
        if self.out_channels not in (1, 2):
            problems.append(f"out_channels={self.out_channels} (expected 1 or 2)")
        if not 0 <= self.fold < self.num_folds:
            problems.append(f"fold={self.fold} (expected 0..{self.num_folds - 1})")
        if not 0.0 < self.train_fraction <= 1.0:
            problems.append(f"train_fraction={self.train_fraction} (expected 0 < F <= 1; 1: the "
                            "whole training part)")
        if self.image_size % self.multiple or self.image_size <= 0:
            problems.append(f"image_size={self.image_size} (expected a positive multiple of "
                            f"{self.multiple})")
        if len(self.scale_range) != 2 or not 0.0 < self.scale_range[0] <= self.scale_range[1] \
                or not math.isfinite(self.scale_range[1]):
            problems.append(f"scale_range={self.scale_range} (expected LOW HIGH with "
                            "0 < LOW <= HIGH; 1 1: no zoom)")
        if not 0.0 <= self.class_balance <= 1.0:
            problems.append(f"class_balance={self.class_balance} (expected 0..1)")
        if self.init not in INITS:
            problems.append(f"init={self.init!r} (expected one of {', '.join(INITS)})")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule={self.lr_schedule!r} (expected one of "
                            f"{', '.join(LR_SCHEDULES)})")
        if self.checkpoint_metric not in CHECKPOINT_METRICS:
            problems.append(f"checkpoint_metric={self.checkpoint_metric!r} (expected one of "
                            f"{', '.join(CHECKPOINT_METRICS)})")
        elif self.checkpoint_metric == "mean" and self.out_channels != 2:
            problems.append(f"checkpoint_metric='mean' with out_channels={self.out_channels} "
                            "(expected 2: a nucleus channel to average with)")
        if not self.nucleus_weight > 0.0:
            problems.append(f"nucleus_weight={self.nucleus_weight} (expected > 0; 1: the whole "
                            "cell's weight)")
        if not self.weight_decay >= 0.0:
            problems.append(f"weight_decay={self.weight_decay} (expected >= 0; 0: off)")
        if not self.lovasz_weight >= 0.0:
            problems.append(f"lovasz_weight={self.lovasz_weight} (expected >= 0; 0: off)")
        if not self.boundary_weight >= 0.0:
            problems.append(f"boundary_weight={self.boundary_weight} (expected >= 0; 0: off)")
        if self.deep_supervision < 0:
            problems.append(f"deep_supervision={self.deep_supervision} (expected >= 0: decoder "
                            "levels below the top; 0: off)")
        if not 0 <= self.final_zoom_epochs <= self.epochs:
            problems.append(f"final_zoom_epochs={self.final_zoom_epochs} (expected 0..epochs="
                            f"{self.epochs})")
        if self.batch_norm_stats not in BATCH_NORM_STATS:
            problems.append(f"batch_norm_stats={self.batch_norm_stats!r} (expected one of "
                            f"{', '.join(BATCH_NORM_STATS)})")
        if self.all_data and self.test_ids:
            problems.append(f"all_data with test_ids={self.test_ids!r} (expected one: no test "
                            "part, or these test images)")
        if self.test_ids:
            from unet_keras.data.splits import parse_id_spec

            try:
                parse_id_spec(self.test_ids)
            except ValueError as err:
                problems.append(str(err))
        if self.colour_reference:
            from unet_keras.colour import check_reference

            problems += check_reference(self.colour_reference)
        if not 0.0 <= self.colour_strength <= MAX_COLOUR_STRENGTH:
            problems.append(f"colour_strength={self.colour_strength} (expected 0.."
                            f"{MAX_COLOUR_STRENGTH}; 1: the default ranges)")
        if not 0.0 <= self.colour_transfer <= MAX_COLOUR_TRANSFER:
            problems.append(f"colour_transfer={self.colour_transfer} (expected 0.."
                            f"{MAX_COLOUR_TRANSFER}; 0: off)")
        if not self.blur >= 0.0:
            problems.append(f"blur={self.blur} (expected a standard deviation >= 0, in pixels; "
                            "0: none)")
        if not self.elastic >= 0.0:
            problems.append(f"elastic={self.elastic} (expected a standard deviation >= 0, "
                            "in pixels; 0: off)")
        if not 0.0 <= self.ema < 1.0:
            problems.append(f"ema={self.ema} (expected 0 <= ema < 1; 0: off)")
        if len(self.thresholds) not in (1, self.out_channels) or \
                not all(0.0 < t < 1.0 for t in self.thresholds):
            problems.append(f"thresholds={self.thresholds} (expected 1 or {self.out_channels} "
                            "values strictly between 0 and 1)")
        if self.min_cell_area < 0:
            problems.append(f"min_cell_area={self.min_cell_area} (expected >= 0)")
        if self.edge_cells not in EDGE_CELLS:
            problems.append(f"edge_cells={self.edge_cells!r} (expected one of "
                            f"{', '.join(EDGE_CELLS)})")
        if self.epochs < 1 or self.batch_size < 1 or not 0 < self.learning_rate < math.inf:
            problems.append("epochs, batch_size and learning_rate must be positive (and finite)")
        if problems:
            raise ConfigError("invalid config: " + "; ".join(problems))

    def filters(self, level: int) -> int:
        """Filters of encoder/decoder level ``level`` (``depth``: the bottleneck)."""
        filters = self.base_filters * 2**level
        return min(filters, self.max_filters) if self.max_filters else filters

    def channel_thresholds(self) -> tuple[float, ...]:
        """One probability threshold per output channel."""
        if len(self.thresholds) == self.out_channels:
            return self.thresholds
        return self.thresholds * self.out_channels

    def zoom_range(self, epoch: int) -> tuple[float, float]:
        """The augmentation's zoom range in (0-based) ``epoch``: ``scale_range``, narrowed to
        FINAL_SCALE_RANGE in the last ``final_zoom_epochs`` (where the two overlap)."""
        if epoch < self.epochs - self.final_zoom_epochs:
            return self.scale_range
        low = max(self.scale_range[0], FINAL_SCALE_RANGE[0])
        high = min(self.scale_range[1], FINAL_SCALE_RANGE[1])
        return (low, high) if low <= high else self.scale_range

    def loss_channel_weights(self) -> list[float] | None:
        """The loss's weight per output channel: None (equal) unless the nucleus weighs more or
        less than the whole cell."""
        if self.out_channels == 2 and self.nucleus_weight != 1.0:
            return [1.0, self.nucleus_weight]
        return None

    @property
    def supervised_levels(self) -> int:
        """The decoder levels below the top that deep supervision trains (those that exist)."""
        return min(self.deep_supervision, self.depth - 1)

    def head_weights(self) -> list[float]:
        """The training loss's weight of each output head: the full-resolution output's 1,
        then 2**-level for each deep-supervision level, normalised to sum to 1."""
        weights = [2.0**-level for level in range(self.supervised_levels + 1)]
        return [w / sum(weights) for w in weights]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["scale_range"] = list(self.scale_range)
        data["thresholds"] = list(self.thresholds)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UNetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; accepted keys: {sorted(known)}")
        return cls(**{**LEGACY_DEFAULTS, **data})

    def save(self, path: str | Path) -> None:
        from unet_keras.image_io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "UNetConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: cannot read config JSON ({err})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object of config keys")
        try:
            return cls.from_dict(data)
        except (ConfigError, TypeError) as err:
            raise ConfigError(f"{path}: {err}") from err


# The seed's recipe (the 1.95 M-parameter, one-output U-Net the project started from), for
# side-by-side comparisons: UNetConfig(**SEED_RECIPE).
SEED_RECIPE = {"base_filters": 16, "out_channels": 1, "scale_range": (0.8, 1.25),
               "stain_augment": True, "batch_size": 16, "deep_supervision": 0}


def resolve_run(path: str | Path) -> tuple[Path, UNetConfig]:
    """A ``.keras`` file or its run directory -> (model file, the config.json beside it).

    Raises:
        ConfigError: the model file or its config.json is missing or unreadable.
    """
    model_path = Path(path)
    if model_path.is_dir():
        model_path = model_path / "model.keras"
    if not model_path.is_file():
        raise ConfigError(f"{model_path}: model file not found; expected a .keras file or a run directory")
    config_path = model_path.parent / CONFIG_FILENAME
    if config_path.is_file():
        return model_path, UNetConfig.load(config_path)
    card_path = model_path.with_suffix(".json")
    if card_path.is_file():  # a model card (the shipped pretrained model): its "config" object
        return model_path, load_card_config(card_path)
    raise ConfigError(f"{config_path}: missing; expected the config.json written beside the "
                      f"model (depth, output channels, thresholds), or a model card {card_path.name}")


def load_card_config(path: str | Path) -> UNetConfig:
    """The ``config`` object of a model card (``wbc_unet.json``: config, recipe, figures)."""
    path = Path(path)
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot read model card JSON ({err})") from err
    if not isinstance(card, dict) or not isinstance(card.get("config"), dict):
        raise ConfigError(f"{path}: expected a JSON object with a \"config\" object")
    try:
        return UNetConfig.from_dict(card["config"])
    except (TypeError, ConfigError) as err:
        raise ConfigError(f"{path}: {err}") from err


def cache_home() -> Path:
    """Where the commands keep what they build and reuse (compiled XLA programs, prepared TFDS
    data); read from ``$HOME`` at each call."""
    return Path.home() / ".cache" / "unet_keras"
