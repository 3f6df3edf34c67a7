"""Deterministic k-fold splits by image id, with a validation part carved from the training folds."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def fold_indices(image_ids: Sequence[str], fold: int, num_folds: int = 5, seed: int = 42,
                 val_fraction: float = 0.1) -> dict[str, list[int]]:
    """Split examples into train / val / test index lists.

    The order depends only on the sorted image ids and the seed, so the same data always gives
    the same folds whatever order they were read in. Test = fold ``fold`` of ``num_folds``;
    val = the first ``val_fraction`` of the remaining examples (in permuted order).
    """
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold {fold} out of range 0..{num_folds - 1}")
    _check_unique(image_ids)
    chunks = np.array_split(np.array(_seeded_order(image_ids, seed), dtype=int), num_folds)
    rest = [i for k, chunk in enumerate(chunks) if k != fold for i in chunk.tolist()]
    return {**_carve_val(rest, val_fraction), "test": chunks[fold].tolist()}


def all_data_indices(image_ids: Sequence[str], seed: int = 42,
                     val_fraction: float = 0.1) -> dict[str, list[int]]:
    """Train / val index lists over every example, with no test part: val = the first
    ``val_fraction`` of them in the seeded order of ``fold_indices``."""
    _check_unique(image_ids)
    return {**_carve_val(_seeded_order(image_ids, seed), val_fraction), "test": []}


def _check_unique(image_ids: Sequence[str]) -> None:
    if len(set(image_ids)) != len(image_ids):
        raise ValueError("duplicate image ids; the split needs unique ids")


def _id_order(image_ids: Sequence[str]) -> list[int]:
    """Indices sorted by image id."""
    return sorted(range(len(image_ids)), key=lambda i: image_ids[i])


def _seeded_order(image_ids: Sequence[str], seed: int) -> list[int]:
    """Indices in an order that depends only on the sorted ids and the seed."""
    order = _id_order(image_ids)
    return [order[i] for i in np.random.default_rng(seed).permutation(len(order))]


def _carve_val(rest: list[int], val_fraction: float) -> dict[str, list[int]]:
    n_val = int(round(val_fraction * len(rest)))
    return {"train": rest[n_val:], "val": rest[:n_val]}


def parse_id_spec(spec: str) -> list[tuple[int, int] | str]:
    """``"201-300"`` or ``"5,17,40-60"`` -> inclusive numeric ranges and single ids.

    Raises:
        ValueError: an empty item, or a numeric range whose ends descend.
    """
    items: list[tuple[int, int] | str] = []
    for part in (p.strip() for p in spec.split(",")):
        low, dash, high = (s.strip() for s in part.partition("-"))
        if not part:
            raise ValueError(f"test ids {spec!r}: empty item; expected ids or LOW-HIGH ranges, "
                             "comma-separated (201-300)")
        if dash and low.isdigit() and high.isdigit():
            if int(low) > int(high):
                raise ValueError(f"test ids {spec!r}: range {part!r}; expected LOW-HIGH with "
                                 "LOW <= HIGH")
            items.append((int(low), int(high)))
        else:  # an id, which may itself hold a dash (synthetic-0007)
            items.append(part)
    return items


def _matches(image_id: str, items: Sequence[tuple[int, int] | str]) -> bool:
    number = int(image_id) if image_id.isdigit() else None
    for item in items:
        if isinstance(item, tuple):
            if number is not None and item[0] <= number <= item[1]:
                return True
        elif item == image_id or (number is not None and item.isdigit() and int(item) == number):
            return True
    return False


def _check_each_item_matches(image_ids: Sequence[str], spec: str,
                             items: Sequence[tuple[int, int] | str]) -> None:
    """Refuse an item that names no image (a typo in a list that names others)."""
    for item in items:
        if not any(_matches(image_id, [item]) for image_id in image_ids):
            shown = f"{item[0]}-{item[1]}" if isinstance(item, tuple) else item
            raise ValueError(f"ids {spec!r}: {shown!r} names none of the {len(image_ids)} "
                             f"images; expected ids or LOW-HIGH ranges of them")


def select_indices(image_ids: Sequence[str], spec: str) -> list[int]:
    """Indices of the images ``spec`` names (``"all"``, or as ``holdout_indices``), in id order.

    For scoring a model on data it never trained on (another laboratory's images, Dataset 2).

    Raises:
        ValueError: a bad spec, or one that names no image.
    """
    order = _id_order(image_ids)
    if spec.strip().lower() == "all":
        return order
    items = parse_id_spec(spec)
    chosen = [i for i in order if _matches(image_ids[i], items)]
    if not chosen:
        raise ValueError(f"images {spec!r} name none of the {len(image_ids)} images (ids "
                         f"{image_ids[order[0]]}..{image_ids[order[-1]]}); expected 'all', or "
                         "ids and LOW-HIGH ranges, comma-separated")
    _check_each_item_matches(image_ids, spec, items)
    return chosen


def holdout_indices(image_ids: Sequence[str], spec: str, seed: int = 42,
                    val_fraction: float = 0.1) -> dict[str, list[int]]:
    """Train / val / test index lists with the images named by ``spec`` as the test part.

    For a test set chosen by what the images are, not by chance: another acquisition batch,
    stain or scanner (Dataset 1's images 201-300 are the white-background batch). Ids match as
    numbers where both are numeric (``7`` names ``007``). Val = the first ``val_fraction`` of the
    other images in the seeded order of ``fold_indices``.

    Raises:
        ValueError: a bad spec, or one that names no image or every image.
    """
    items = parse_id_spec(spec)
    perm = _seeded_order(image_ids, seed)
    test = [i for i in perm if _matches(image_ids[i], items)]
    rest = [i for i in perm if not _matches(image_ids[i], items)]
    if not test or not rest:
        raise ValueError(f"test ids {spec!r} name {len(test)} of the {len(image_ids)} images; "
                         "expected some but not all of them")
    _check_each_item_matches(image_ids, spec, items)
    return {**_carve_val(rest, val_fraction), "test": sorted(test, key=lambda i: image_ids[i])}
