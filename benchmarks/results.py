"""The measurement phases of a run, filling the results dict that ``results.json`` holds.

Every timing is raw seconds per call (``rounds`` of ``runs_per_round``), so any statistic can be
recomputed from ``results.json``; ``benchmarks.report`` derives the tables from them.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np

from benchmarks.measure import interleaved
from benchmarks.summary import SGEMM, SGEMM_GFLOP
from benchmarks.worker import Worker, WorkerError

log = logging.getLogger("benchmarks")

REFERENCE_RUNTIME = "keras-jax-jit"  # the agreement column compares every runtime with it


def _select(res: dict, workers: dict[str, Worker], kind: str, device: str) -> dict[str, Worker]:
    chosen = {}
    for name, info in res["runtimes"].items():
        if info.get(kind) and info.get("device", "cpu") == device and info["worker"] in workers \
                and name not in res["errors"] and not info.get("reference"):
            chosen[name] = workers[info["worker"]]
    return chosen


def _memory(res: dict, workers: dict[str, Worker], phase: str, timeout: float) -> None:
    for label, worker in workers.items():
        try:
            reply = worker.call({"op": "memory"}, timeout)
            res["memory"].setdefault(label, {})[phase] = {
                "peak_rss_mib": reply["peak_rss_mib"], "rss_mib": reply["rss_mib"]}
        except WorkerError as err:
            res["errors"][label] = str(err)


def _left(res: dict, profile) -> float:
    """Seconds of the profile's budget left after its reserve (inf without a budget)."""
    if profile.budget_s is None:
        return float("inf")
    return profile.budget_s - profile.reserve_s - (time.time() - res["meta"]["t0"])


def _estimate_seconds(res: dict, key: str, size: int, batch: int, profile, names) -> float:
    """Time a throughput measurement will take, from the batch-1 latencies at that size."""
    latency = res.get(f"latency{key}", {}).get(str(size), {})
    per_image = sum(np.median(t["seconds"]) for n, t in latency.items() if n in names)
    # Contention can double a phase; over-estimating skips an optional batch, never the budget.
    return per_image * batch * (profile.runs + profile.warmup) * 1.5


def _references(res: dict, workers: dict[str, Worker]) -> dict[str, Worker]:
    return {name: workers[info["worker"]] for name, info in res["runtimes"].items()
            if info.get("reference") and info["worker"] in workers and name not in res["errors"]}


def latency_phase(res: dict, infer: dict[str, Worker], sizes, profile, timeout: float,
                  key: str = "", references: dict[str, Worker] | None = None) -> None:
    """Batch-1 latency at each size; reference runtimes (SGEMM) are timed in the same rounds."""
    latency = res.setdefault(f"latency{key}", {})
    for size in sizes:
        log.info("latency%s %dx%d, batch 1: %d runtimes", key, size, size, len(infer))
        latency[str(size)] = interleaved({**infer, **(references or {})},
                                         {"op": "infer", "batch": 1, "size": size},
                                         profile.rounds, "runs", profile.runs_per_round,
                                         profile.warmup, timeout, res["errors"])


def throughput_phase(res: dict, infer: dict[str, Worker], batches, size: int, profile,
                     timeout: float, key: str = "") -> None:
    """Images/s at ``size`` for each batch (batch 1 is the latency measurement, when taken).

    A batch is skipped (and listed in ``res["skipped"]``) when its estimated time exceeds what
    is left of the profile's budget.
    """
    latency = res.get(f"latency{key}", {})
    throughput = res.setdefault(f"throughput{key}", {"size": size, "batches": {}})
    for batch in batches:
        if batch == 1 and str(size) in latency:
            throughput["batches"]["1"] = {n: t for n, t in latency[str(size)].items()
                                          if n in infer}
            continue
        estimate = _estimate_seconds(res, key, size, batch, profile, infer)
        if estimate > _left(res, profile):
            res.setdefault("skipped", []).append(
                f"throughput{key} batch {batch}: needs about {estimate:.0f} s, "
                f"{max(0, _left(res, profile)):.0f} s left of the {profile.name} budget")
            log.info("skipped: %s", res["skipped"][-1])
            continue
        log.info("throughput%s %dx%d, batch %d", key, size, size, batch)
        throughput["batches"][str(batch)] = interleaved(
            infer, {"op": "infer", "batch": batch, "size": size}, profile.rounds, "runs",
            profile.runs_per_round, profile.warmup, timeout, res["errors"])


def _file_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)


def accuracy_phase(res: dict, infer: dict[str, Worker], art, work: Path, timeout: float) -> None:
    """Every runtime predicts the test images; one scoring code scores them all.

    Called once for the CPU runtimes and again, later, for the GPU ones: rows accumulate in
    ``res["accuracy"]["runtimes"]``; the Keras-JAX (CPU) probabilities are kept on ``art`` as
    the reference of the agreement column.
    """
    from unet_keras.evaluate import score_probabilities
    from unet_keras.preprocess import crop_to

    if art.test_inputs is None:
        res["accuracy"] = {"status": f"n/a: no test data ({res['errors'].get('data', '')})"}
        return
    log.info("accuracy pass: %d test images x %d runtimes", len(art.test_examples), len(infer))
    probs = {}
    seconds = {}
    for name, worker in infer.items():
        maps: list = [None] * len(art.test_examples)
        seconds[name] = 0.0
        try:
            for k, (inputs, indices) in enumerate(art.test_inputs):
                out = work / f"probabilities-{_file_name(name)}-{k}.npy"
                reply = worker.call({"op": "predict", "runtime": name, "inputs": str(inputs),
                                     "outputs": str(out), "batch": 16}, timeout)
                seconds[name] += reply["seconds"]
                batch = np.load(out)
                for row, i in enumerate(indices):
                    maps[i] = crop_to(batch[row], art.test_sizes[i])
        except WorkerError as err:
            res["errors"][f"accuracy {name}"] = str(err)
            continue
        probs[name] = maps
    if REFERENCE_RUNTIME in probs:
        art.reference_probabilities = probs[REFERENCE_RUNTIME]
    reference = getattr(art, "reference_probabilities", None)
    rows = res.get("accuracy", {}).get("runtimes", {})
    thresholds = art.config.channel_thresholds()
    for name, maps in probs.items():
        row = {"predict_seconds": seconds[name], "images": len(maps)}
        if reference is not None:
            row["max_abs_diff_vs_keras_jax"] = float(max(
                np.max(np.abs(a.astype(np.float64) - b)) for a, b in zip(maps, reference)))
        if art.trained:
            _, summary = score_probabilities(maps, art.test_examples, thresholds)
            row.update({k: summary[k] for k in ("whole_cell_dice", "whole_cell_dice_sd",
                                                "whole_cell_iou", "ap50", "n_images")
                        if k in summary})
            if "nucleus_dice" in summary:
                row["nucleus_dice"] = summary["nucleus_dice"]
        rows[name] = row
    res["accuracy"] = {
        "status": "scored" if art.trained else "n/a: untrained weights",
        "data_source": art.data_source, "thresholds": list(thresholds),
        "scoring": "unet_keras.evaluate.score_probabilities (mean per-image whole-cell Dice)",
        "runtimes": rows,
    }


def _sgemm_now(workers_by_runtime: dict[str, Worker], timeout: float) -> float | None:
    """SGEMM GFLOP/s right now (median of 5), to set a profile's kernel rates against."""
    worker = workers_by_runtime.get(SGEMM)
    if worker is None:
        return None
    reply = worker.call({"op": "infer", "runtime": SGEMM, "batch": 1, "size": 16, "runs": 5,
                         "warmup": 1}, timeout)
    return SGEMM_GFLOP / float(np.median(reply["seconds"]))


def profile_phase(res: dict, workers_by_runtime: dict[str, Worker], profile, work: Path,
                  timeout: float) -> None:
    """onnxruntime's op profile at 256 px batch 1; the Keras-JAX training step's op breakdown."""
    found = res.setdefault("profiles", {})
    for name in ("ort-tuned", "ort-int8"):
        if name in workers_by_runtime:
            log.info("onnxruntime profile: %s", name)
            try:
                found[name] = workers_by_runtime[name].call(
                    {"op": "profile", "runtime": name, "batch": 1, "size": 256,
                     "runs": profile.profile_runs, "dir": str(work)}, timeout)
                found[name]["sgemm_gflops"] = _sgemm_now(workers_by_runtime, timeout)
            except WorkerError as err:
                res["errors"][f"profile {name}"] = str(err)
    jax_fits = ["keras-jax-fit"] + (["keras-jax-fit-mmup"] if profile.name == "full" else [])
    for name in jax_fits:
        if name in workers_by_runtime and _left(res, profile) < 40:
            res.setdefault("skipped", []).append(f"jax.profiler of {name}: over the "
                                                 f"{profile.name} budget")
            continue
        if name in workers_by_runtime:
            log.info("jax.profiler: %s training step", name)
            try:
                found[name] = workers_by_runtime[name].call(
                    {"op": "profile", "runtime": name, "runs": 3}, timeout)
            except WorkerError as err:
                res["errors"][f"profile {name}"] = str(err)


def training_phase(res: dict, trainers: dict[str, Worker], profile, timeout: float,
                   key: str = "training", steps: int | None = None) -> None:
    steps = steps or profile.train_steps
    log.info("%s %dx%d, batch %d: %d runtimes", key, profile.train_size, profile.train_size,
             profile.train_batch, len(trainers))
    res[key] = interleaved(trainers, {"op": "train"}, profile.train_rounds, "steps", steps,
                           profile.train_warmup, timeout, res["errors"])
    res[f"{key}_setup"] = {"size": profile.train_size, "batch": profile.train_batch,
                           "steps_per_round": steps, "rounds": profile.train_rounds,
                           "warmup_steps": profile.train_warmup}


def measure_all(res: dict, workers: dict[str, Worker], art, profile, work: Path, args) -> None:
    """Required measurements first (latency, accuracy, training), optional ones as time allows."""
    timeout = args.call_timeout
    res.setdefault("memory", {})
    cpu_infer = _select(res, workers, "infer", "cpu")
    latency_phase(res, cpu_infer, profile.latency_sizes, profile, timeout,
                  references=_references(res, workers))
    accuracy_phase(res, _select(res, workers, "infer", "cpu"), art, work, timeout)
    _memory(res, workers, "after_inference", timeout)
    training_phase(res, _select(res, workers, "train", "cpu"), profile, timeout)
    _memory(res, workers, "after_training", timeout)
    throughput_phase(res, _select(res, workers, "infer", "cpu"), profile.throughput_batches,
                     profile.throughput_size, profile, timeout)
    _memory(res, workers, "end", timeout)
    by_runtime = {name: workers[info["worker"]] for name, info in res["runtimes"].items()
                  if info["worker"] in workers}
    profile_phase(res, by_runtime, profile, work, timeout)
    gpu_infer = _select(res, workers, "infer", "gpu")
    if gpu_infer:
        latency_phase(res, gpu_infer, profile.gpu_sizes, profile, timeout, key="_gpu")
        throughput_phase(res, gpu_infer, profile.gpu_batches, max(profile.gpu_sizes), profile,
                         timeout, key="_gpu")
        accuracy_phase(res, gpu_infer, art, work, timeout)
        training_phase(res, _select(res, workers, "train", "gpu"), profile, timeout,
                       key="training_gpu", steps=profile.gpu_train_steps)
    elif args.gpu:
        res["errors"]["gpu"] = "--gpu given but no GPU runtime started (no CUDA device or build)"
