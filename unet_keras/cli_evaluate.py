"""``unet-keras evaluate``: score a model on its test part, chosen images of a dataset, or a
user's own folder of images and masks, through what ``predict`` does when asked to
(``--scale``, ``--colour``), with Keras or the exported ONNX file; and set the cells ``predict``
would measure beside the annotated ones (``unet_keras.cell_agreement``)."""

from __future__ import annotations

from pathlib import Path

from unet_keras.cli_parser import EXIT_OK, UsageError
from unet_keras.config import UNetConfig, resolve_run
from unet_keras.evaluate import format_scores


def cmd_evaluate(args) -> int:
    from unet_keras.domain import DomainAdapter
    from unet_keras.cell_agreement import (confidence_headline, confidence_summary,
                                           count_headline, count_summary, headline, summarise,
                                           write_pairs_csv)
    from unet_keras.evaluate import (cell_agreement, score_config, write_json,
                                     write_per_image_csv)
    from unet_keras.inference import keras_probability_fn, predict_probabilities
    from unet_keras.model import load_model
    from unet_keras.rescale import parse_scale

    if args.images and args.fold is not None:
        raise UsageError("--images scores the images it names and --fold a fold of the model's "
                         "split; give one of them")
    if args.image_dir:
        given = [f"--{name.replace('_', '-')}" for name in ("data_dir", "dataset", "images", "fold")
                 if getattr(args, name) is not None] + (["--synthetic"] if args.synthetic else [])
        if given:
            raise UsageError(f"--image-dir scores the pairs in that folder; drop {' '.join(given)}")
    elif args.mask_dir or args.masks:
        raise UsageError(f"--{'mask-dir' if args.mask_dir else 'masks'} goes with --image-dir "
                         "(a folder of one's own images and masks)")
    scale = parse_scale(args.scale) if args.scale else None
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out}: a file is there; expected a directory (new or "
                         "existing) for the scores")
    if not (args.model or args.onnx):
        if not args.out:
            raise UsageError("without --model (the shipped pretrained model) give --out: the "
                             "shipped model's folder is the installed package")
        from unet_keras.pretrained import pretrained_path

        args.model = str(pretrained_path("keras"))
        print(f"no --model: scoring the shipped pretrained model {args.model}")
    if args.onnx:
        from export.runtime import Segmenter

        segmenter = Segmenter.from_onnx(args.onnx, tta=args.tta)
        model_path, config = Path(args.onnx), segmenter.config
    else:
        model_path, config = resolve_run(args.model)
    data, part, where = _evaluation_data(args, config)
    # The model's own test part is scored as the plain model, as training scored it; images
    # from elsewhere as predict would segment them (None: predict's defaults).
    own_test_part = not (args.image_dir or where.get("images"))
    if own_test_part:
        scale = 1.0 if scale is None else scale
    elif scale is None or args.colour is None:
        print("images from elsewhere: scored through predict's defaults where not given "
              "(--scale 1 --colour off: the plain model)")
    colour = args.colour or ("off" if own_test_part else None)
    if args.onnx:
        model, runtime = None, f"onnxruntime {', '.join(segmenter.session.get_providers())}"
        probability_fn = segmenter.predict_probabilities
    else:
        import keras

        model, runtime = load_model(model_path), f"keras {keras.backend.backend()}"
        probability_fn = keras_probability_fn(model, config.multiple, tta=args.tta)
    adapter = DomainAdapter(probability_fn, config, scale, colour)
    examples = data.test
    if adapter.scaler or adapter.mapper or model is None:
        probs = [adapter(e["image"]) for e in examples]
        for line in adapter.summary():
            print(line)
    else:
        probs = predict_probabilities(model, [e["image"] for e in examples], config.multiple,
                                      tta=args.tta)
    rows, summary = score_config(probs, examples, config)
    pairs, counts = cell_agreement(probs, examples, config)
    measured, counted = summarise(pairs), count_summary(counts)
    confidence = confidence_summary(pairs)
    for row, count in zip(rows, counts):
        row["annotated_cells"], row["predicted_cells"] = count["annotated"], count["predicted"]
    for row, mapped in zip(rows, adapter.mapped):
        row["colour_mapped"] = int(mapped)
    for row, factor in zip(rows, adapter.factors):
        row["scale_factor"] = round(factor, 4)
    out_name = where.pop("out_name")
    out = Path(args.out) if args.out else model_path.parent / out_name
    out.mkdir(parents=True, exist_ok=True)
    write_json({"data_source": data.source, "synthetic": data.synthetic, **where,
                "model": str(model_path), "runtime": runtime, "tta": args.tta,
                "scale": adapter.scale, "colour": adapter.colour,
                "n_colour_mapped": sum(adapter.mapped),
                "n_rescaled": sum(f != 1.0 for f in adapter.factors),
                "thresholds": list(config.thresholds), "min_cell_area": config.min_cell_area,
                "edge_cells": config.edge_cells, "test": summary,
                "cell_measurements": measured, "cell_counts": counted,
                "cell_confidence": confidence}, out / "metrics.json")
    write_per_image_csv(rows, out / "per_image.csv")
    write_pairs_csv(pairs, out / "cells_vs_annotated.csv")
    print(format_scores(f"test {part}", summary, data.source))
    print(headline(measured))
    print(count_headline(counted))
    print(confidence_headline(confidence))
    print(f"written: {out / 'metrics.json'}, {out / 'per_image.csv'}, "
          f"{out / 'cells_vs_annotated.csv'}")
    return EXIT_OK


def _evaluation_data(args, config: UNetConfig):
    """(FoldData whose test part is scored, its name, what metrics.json records of it).

    A folder of image/mask pairs (``--image-dir``); chosen images of a dataset (``--images``, or
    all of another dataset than the model's), noting those the model trained or was tuned on;
    else the model's test part (``--fold``: another fold of its split).
    """
    from unet_keras.data.loading import (FoldData, load_all, load_test_fold, select_examples,
                                         split_examples)

    if args.image_dir:
        from unet_keras.data.folders import load_folder

        masks = args.masks or "cell-nucleus"
        examples = load_folder(Path(args.image_dir), args.mask_dir and Path(args.mask_dir), masks)
        source = f"{len(examples)} image/mask pairs from {Path(args.image_dir).resolve()}"
        return (FoldData([], [], examples, source, False), "folder",
                {"image_dir": args.image_dir, "mask_dir": args.mask_dir or args.image_dir,
                 "masks": masks, "out_name": "evaluate-folder"})
    trained_on, images = config.dataset, args.images
    if args.dataset and args.dataset != config.dataset:
        config.dataset, images = args.dataset, images or "all"  # none of it was trained on
    if args.fold is not None:  # that fold, even for a run trained with --test-ids
        config.fold, config.test_ids = args.fold, ""
        config.validate()
    where = {"dataset": config.dataset, "trained_on": trained_on, "images": images}
    if not images:
        data = load_test_fold(config, args.data_dir, synthetic=args.synthetic)
        return data, config.test_part, {
            **where, "fold": config.fold, "test_ids": config.test_ids,
            "out_name": "evaluate-test-ids" if config.test_ids else f"evaluate-fold{config.fold}"}
    loaded = load_all(config, args.data_dir, args.synthetic)
    data = select_examples(images, *loaded)
    seen: set[str] = set()  # images the model trained or was tuned on
    if config.dataset == trained_on:
        split = split_examples(config, *loaded)
        seen = {e["image_id"] for e in split.train + split.val} & {
            e["image_id"] for e in data.test}
    if seen:
        held_out = ("it trained with --all-data" if config.all_data
                    else f"{config.test_part} was its test part")
        print(f"note: {len(seen)} of these {len(data.test)} images were in the model's training "
              f"or validation part ({held_out}): their scores are not held-out figures")
    return data, f"images {images}", {**where, "n_seen_in_training": len(seen),
                                      "out_name": f"evaluate-{config.dataset}-images"}
