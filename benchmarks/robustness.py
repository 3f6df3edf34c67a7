"""Scores of trained runs under fixed, controlled domain shifts of their test fold.

    python -m benchmarks.robustness RUN [RUN ...] --labels a,b --out DIR [--data-dir D]
        [--synthetic] [--tta] [--conditions identity,zoom_0.5,...]

For the augmentation ablation (stain jitter and zoom on or off): every run is scored on the same
test images, each transformed by every condition in ``CONDITIONS``, with the model's own tuned
postprocessing (thresholds, minimum cell area, edge cells) and the scoring of
``unet-keras evaluate`` (``unet_keras.evaluate.score_config``).

The perturbations have no random draws, so they are the same in every invocation. Colour ones
are the training augmentation's own functions (``stain_jitter``, ``colour_jitter``) at fixed
severities beyond the training ranges, and leave the mask untouched. Zoom rescales the whole
image (bilinear, anti-aliased when shrinking), as another scanner's magnification would, rather
than the training warp's crop of a 128 px window; the mask goes through the same resampling, one
label at a time (see ``perturb``), so it stays on the image to a tenth of a pixel.
Each perturbed image is rounded to uint8, as a file from another scanner would be.

Outputs: DIR/robustness.json (every figure, the conditions' parameters, machine, versions),
DIR/ROBUSTNESS.md and DIR/robustness.png. Bad input (a missing run, runs whose test images
differ, unknown labels or conditions) exits 1 naming the path, before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import io
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks.robustness_report import render_markdown, write_report  # noqa: E402
from unet_keras.config import UNetConfig, resolve_run  # noqa: E402
from unet_keras.data.augment import (  # noqa: E402
    STAIN_SCALE, STAIN_SHIFT, AugmentParams, colour_jitter, stain_jitter,
)
from unet_keras.preprocess import to_model_input  # noqa: E402
from unet_keras.rescale import training_cell_diameter  # noqa: E402

SCORE_KEYS = ("whole_cell_dice", "whole_cell_iou", "nucleus_dice", "ap50")


class RobustnessError(ValueError):
    """Runs, labels or conditions that cannot be compared; the message names the path or value."""


@dataclasses.dataclass(frozen=True)
class Condition:
    """One fixed perturbation: ``kind`` picks the function, ``params`` are its exact arguments."""

    name: str
    kind: str  # identity, zoom, stain, colour, blur, jpeg
    params: dict
    description: str


# Training draws HED stain scale in 1 +/- STAIN_SCALE and shift in +/- STAIN_SHIFT, hue in
# +/- 0.03 turns, brightness in +/- 0.06 and contrast in 0.85-1.15: the severities below are
# three times the stain-scale half-width and beyond the colour ranges, so every model meets
# colours it was not trained on; the stain shift sits at the training edge.
def _stain(name: str, channel: int, sign: int, description: str) -> Condition:
    scale, shift = [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]
    scale[channel], shift[channel] = 1 + sign * 3 * STAIN_SCALE, sign * STAIN_SHIFT
    return Condition(name, "stain", {"stain_scale": tuple(scale), "stain_shift": tuple(shift)},
                     description)


CONDITIONS: tuple[Condition, ...] = (
    Condition("identity", "identity", {}, "test images as they are"),
    *(Condition(f"zoom_{s}", "zoom", {"scale": s}, f"whole image and mask rescaled {s}x")
      for s in (0.5, 0.7, 1.5, 2.0)),
    _stain("haematoxylin_up", 0, 1, "more haematoxylin (darker, bluer nuclei)"),
    _stain("haematoxylin_down", 0, -1, "less haematoxylin (paler nuclei)"),
    _stain("eosin_up", 1, 1, "more eosin (pinker cytoplasm and red cells)"),
    _stain("eosin_down", 1, -1, "less eosin (paler cytoplasm and red cells)"),
    Condition("hue_18deg", "colour", {"hue": 0.05}, "hue turned 18 degrees about the grey axis"),
    Condition("bright_low_contrast", "colour", {"brightness": 0.1, "contrast": 0.75},
              "brighter, lower-contrast scan"),
    Condition("blur_sigma1", "blur", {"sigma": 1.0}, "Gaussian blur, sigma 1 px (defocus)"),
    Condition("jpeg_q30", "jpeg", {"quality": 30}, "JPEG round trip at quality 30"),
)
# Magnifications beyond the training zoom, for ``--scale-auto``; asked for by name only, so the
# default set (and its means) stay those of the earlier reports.
EXTRA_CONDITIONS: tuple[Condition, ...] = tuple(
    Condition(f"zoom_{s}", "zoom", {"scale": s}, f"whole image and mask rescaled {s}x")
    for s in (0.35, 2.5, 3.0))
GROUPS = {"zoom": ("zoom",), "stain": ("stain",), "colour_quality": ("colour", "blur", "jpeg")}


def perturb(condition: Condition, image: np.ndarray,
            mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB image, label map) of one example under ``condition``; the identity returns both
    arrays unchanged, and only zoom changes the mask (keeping its exact labels and dtype)."""
    p = condition.params
    if condition.kind == "identity":
        return image, mask
    x = to_model_input(image)
    if condition.kind == "zoom":
        from skimage.transform import rescale

        # Each label's indicator goes through the image's own resampling, then the most
        # covered label wins: nearest neighbour at 0.5x and 1.5x samples exactly half-way
        # between input pixels, and its tie rule shifted the mask 0.25 px off the image.
        labels = np.unique(mask)
        resample = functools.partial(rescale, scale=p["scale"], order=1,
                                     anti_aliasing=p["scale"] < 1, channel_axis=-1)
        x = resample(x)
        cover = resample(np.stack([mask == label for label in labels], -1).astype(np.float32))
        mask = labels[np.argmax(cover, axis=-1)]
    elif condition.kind == "stain":
        x = stain_jitter(x, p["stain_scale"], p["stain_shift"])
    elif condition.kind == "colour":
        x = colour_jitter(x, AugmentParams(**p))
    elif condition.kind == "blur":
        from scipy.ndimage import gaussian_filter

        x = gaussian_filter(x, sigma=(p["sigma"], p["sigma"], 0), mode="reflect")
    elif condition.kind == "jpeg":
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(_to_uint8(x)).save(buffer, format="JPEG", quality=p["quality"])
        return np.asarray(Image.open(buffer).convert("RGB")), mask
    else:
        raise RobustnessError(f"condition {condition.name}: unknown kind {condition.kind!r}")
    return _to_uint8(x), mask


def perturb_examples(condition: Condition, examples: Sequence[dict]) -> list[dict]:
    """Examples (image, mask, image_id) of ``condition``, in the order given."""
    out = []
    for example in examples:
        image, mask = perturb(condition, example["image"], example["mask"])
        out.append({"image": image, "mask": mask, "image_id": example["image_id"]})
    return out


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def pick_conditions(text: str | None) -> tuple[Condition, ...]:
    """``"identity,zoom_0.5"`` -> those conditions; ``None`` -> all of ``CONDITIONS``."""
    if text is None:
        return CONDITIONS
    known = {c.name: c for c in CONDITIONS + EXTRA_CONDITIONS}
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise RobustnessError(f"--conditions {text!r}: unknown {unknown}; expected names from "
                              f"{list(known)}, comma-separated")
    return tuple(known[n] for n in names)


def parse_labels(text: str | None, runs: Sequence[str]) -> list[str]:
    """One distinct label per run; by default the run directories' names."""
    if text is None:
        labels = [Path(r).name if Path(r).is_dir() else Path(r).parent.name for r in runs]
    else:
        labels = [label.strip() for label in text.split(",")]
    if len(labels) != len(runs) or len(set(labels)) != len(labels) or not all(labels):
        raise RobustnessError(f"--labels {text!r}: expected {len(runs)} distinct non-empty "
                              f"labels, comma-separated, one per run ({', '.join(runs)})")
    return labels


def examples_digest(examples: Sequence[dict]) -> str:
    """A digest of the test part's ids, images and masks: equal digests, equal test data."""
    digest = hashlib.sha256()
    for e in examples:
        for part in (str(e["image_id"]).encode(), np.ascontiguousarray(e["image"]),
                     np.ascontiguousarray(e["mask"])):
            digest.update(bytes(part))
    return digest.hexdigest()


def load_shared_test(configs: dict[str, tuple[Path, UNetConfig]], data_dir, synthetic: bool):
    """The test fold all runs share (``load_fold`` of each run's config); refuses differing ones.

    Runs are compared by their test images themselves, so recipes that differ only outside the
    split (a validation fraction, say) still compare.
    """
    from unet_keras.data.loading import load_fold

    loaded: dict[str, object] = {}  # a split's settings -> its FoldData, loaded once
    first = None
    for model_path, config in configs.values():
        split = _split(config)
        if split not in loaded:
            loaded[split] = load_fold(config, data_dir, synthetic=synthetic)
        digest = examples_digest(loaded[split].test)
        if first is None:
            first = (model_path, split, digest)
        elif digest != first[2]:
            raise RobustnessError(
                f"{model_path.parent}: its test images ({split}) differ from those of "
                f"{first[0].parent} ({first[1]}); expected runs trained on the same fold")
    return loaded[first[1]]


def _split(config: UNetConfig) -> str:
    part = (f"test images {config.test_ids}" if config.test_ids
            else f"fold {config.fold} of {config.num_folds}")
    return (f"{config.dataset}, {part}, split seed "
            f"{config.split_seed}, validation fraction {config.val_fraction}, seed {config.seed}")


def _scores(probs: list[np.ndarray], examples: list[dict], config: UNetConfig) -> dict:
    """Summary scores with the model's own tuned postprocessing, as ``unet-keras evaluate``."""
    from unet_keras.evaluate import score_config

    return score_config(probs, examples, config)[1]


def score_conditions(model, config: UNetConfig, perturbed: dict[str, list[dict]],
                     reference: float = 0.0) -> tuple[dict[str, dict], dict[str, list[float]]]:
    """Summary scores of one model on each condition's perturbed test examples, and the
    factor each image was resampled by: with a ``reference`` cell diameter (px), images go
    through ``unet-keras predict --scale auto`` (``unet_keras.rescale``), else as they are."""
    from unet_keras.inference import keras_probability_fn, predict_probabilities
    from unet_keras.rescale import ScaledPredictor

    scores, factors = {}, {}
    for name, examples in perturbed.items():
        images = [e["image"] for e in examples]
        if reference:
            predictor = ScaledPredictor(keras_probability_fn(model, config.multiple), "auto",
                                        reference, config.channel_thresholds()[0])
            probs = [predictor(image) for image in images]
            factors[name] = predictor.factors
        else:
            probs = predict_probabilities(model, images, config.multiple)
        scores[name] = _scores(probs, examples, config)
    return scores, factors


def tta_comparison(model, config: UNetConfig, examples: list[dict]) -> dict:
    """Identity-condition scores with and without 8-view TTA, and warm seconds per image of each.

    Each timed pass follows an untimed one of the same kind, so compilation for every batch
    shape (TTA turns non-square images) is outside the timings; the cold times are kept too.
    """
    from unet_keras.inference import predict_probabilities

    images, out = [e["image"] for e in examples], {}
    for tta in (False, True):
        seconds = []
        for _ in range(2):
            start = time.perf_counter()
            probs = predict_probabilities(model, images, config.multiple, tta=tta)
            seconds.append(time.perf_counter() - start)
        key = "tta" if tta else "plain"
        out[key] = {"scores": _scores(probs, examples, config),
                    "seconds_per_image": seconds[1] / len(images),
                    "cold_seconds_per_image": seconds[0] / len(images)}
    gains = {k: out["tta"]["scores"][k] - out["plain"]["scores"][k]
             for k in SCORE_KEYS if k in out["plain"]["scores"]}
    return {**out, "gain": gains,
            "time_ratio": out["tta"]["seconds_per_image"] / out["plain"]["seconds_per_image"]}


def shifted_means(scores: dict[str, dict], conditions: Sequence[Condition]) -> dict[str, dict]:
    """Mean of the condition means over all shifted conditions, and over each group of them."""
    groups = {"all_shifted": tuple({c.kind for c in conditions} - {"identity"}), **GROUPS}
    means = {}
    for group, kinds in groups.items():
        names = [c.name for c in conditions if c.kind in kinds]
        if names:
            means[group] = {k: float(np.mean([scores[n][k] for n in names]))
                            for k in SCORE_KEYS if k in scores[names[0]]}
            means[group]["conditions"] = names
    return means


def run_benchmark(runs: Sequence[str], labels: Sequence[str], data_dir=None,
                  synthetic: bool = False, tta: bool = False,
                  conditions: Sequence[Condition] = CONDITIONS, scale_auto: bool = False) -> dict:
    """Every figure of the report, as written to robustness.json. Raises on bad input first.

    With ``scale_auto`` each run is scored a second time, as "LABEL, scale auto", through
    ``unet-keras predict --scale auto``; its reference cell size is the config's
    ``cell_diameter``, or else measured on the fold's training masks (what training records).
    """
    configs = {label: resolve_run(run) for label, run in zip(labels, runs)}
    fold = load_shared_test(configs, data_dir, synthetic)
    import keras

    from benchmarks import machine
    from unet_keras.model import load_model

    started = time.perf_counter()
    perturbed = {c.name: perturb_examples(c, fold.test) for c in conditions}
    models = {}
    for label, (model_path, config) in configs.items():
        model = load_model(model_path)
        scores, _ = score_conditions(model, config, perturbed)
        models[label] = {"run": str(model_path.parent), "config": config.to_dict(),
                         "thresholds": list(config.thresholds),
                         "min_cell_area": config.min_cell_area,
                         "edge_cells": config.edge_cells, "scores": scores,
                         "shifted_means": shifted_means(scores, conditions)}
        if tta:
            models[label]["tta"] = tta_comparison(model, config, fold.test)
        if scale_auto:
            reference = config.cell_diameter or training_cell_diameter(
                [e["mask"] for e in fold.train], config.min_cell_area)
            scores, factors = score_conditions(model, config, perturbed, reference)
            models[f"{label}, scale auto"] = {
                **models[label], "scores": scores, "shifted_means": shifted_means(scores, conditions),
                "scale": {"reference_cell_diameter": reference, "factors": factors}}
            models[f"{label}, scale auto"].pop("tta", None)
    any_config = next(iter(configs.values()))[1]
    return {"data_source": fold.source, "synthetic": fold.synthetic, "fold": any_config.fold,
            "n_test_images": len(fold.test), "test_ids": [e["image_id"] for e in fold.test],
            "test_fingerprint_sha256": examples_digest(fold.test),
            "conditions": [dataclasses.asdict(c) for c in conditions], "labels": list(models),
            "models": models, "seconds": round(time.perf_counter() - started, 1),
            "keras_backend": keras.backend.backend(), "machine": machine.describe(),
            "versions": machine.versions()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.robustness",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (model.keras + config.json)")
    parser.add_argument("--labels", help="comma-separated, one per run (default: directory names)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--data-dir", help="dataset root (default: the standard locations)")
    parser.add_argument("--synthetic", action="store_true", help="use the synthetic smear set")
    parser.add_argument("--tta", action="store_true", help="also time and score 8-view TTA")
    parser.add_argument("--conditions", help="subset of " + ", ".join(
        c.name for c in CONDITIONS + EXTRA_CONDITIONS) + " (default: all but the last three)")
    parser.add_argument("--scale-auto", action="store_true",
                        help="also score each run through `unet-keras predict --scale auto`")
    args = parser.parse_args(argv)
    try:
        labels = parse_labels(args.labels, args.runs)
        conditions = pick_conditions(args.conditions)
        result = run_benchmark(args.runs, labels, args.data_dir, args.synthetic, args.tta,
                               conditions, args.scale_auto)
        argv = sys.argv[1:] if argv is None else argv
        result["command"] = shlex.join(["python", "-m", "benchmarks.robustness", *argv])
        paths = write_report(result, Path(args.out))
    except (ValueError, OSError) as err:  # RobustnessError, ConfigError, DataError, ModelLoadError
        print(f"benchmarks.robustness: error: {err}", file=sys.stderr)
        return 1
    print(render_markdown(result))
    print("written: " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
