"""Figures derived from the raw timings of ``results.json``: medians, rates, ratios, targets.

Ratios are paired by round (``measure.paired_speedup``): "x vs PyTorch" is how many times faster
than the PyTorch eager reference a runtime was, round by round, then the median of those.
"""

from __future__ import annotations

import statistics

from benchmarks.measure import paired_speedup, summary

TORCH, KERAS_JAX = "torch-eager", "keras-jax-jit"
SGEMM = "numpy-sgemm"  # timed in the latency rounds: the peak under the same load
SGEMM_GFLOP = 2 * 2048**3 / 1e9
TORCH_TRAIN, KERAS_JAX_TRAIN = "torch-train", "keras-jax-fit"
ORT_FP32 = ("ort-default", "ort-tuned")
TARGET_SIZE = 256
MAX_DICE_DROP = 0.005  # export.precision.MAX_DICE_DROP, restated so the report needs no onnx


def sgemm_gflops(res: dict) -> float:
    """The practical FP32 peak: the median of the SGEMM medians before and after the run."""
    values = [p["median_gflops"] for p in res.get("peak", {}).values() if "median_gflops" in p]
    return statistics.median(values) if values else float("nan")


def peak_gflops(res: dict) -> float:
    """SGEMM GFLOP/s timed in the 256 px latency rounds, else the before/after median."""
    rounds = res.get("latency", {}).get(str(TARGET_SIZE), {}).get(SGEMM)
    if rounds and rounds["seconds"]:
        return SGEMM_GFLOP / float(statistics.median(rounds["seconds"]))
    return sgemm_gflops(res)


def table(timings: dict, batch: int, gflop_per_image: float | None, peak: float,
          references=((TORCH, "vs_torch"), (KERAS_JAX, "vs_keras_jax"))) -> dict[str, dict]:
    """Per runtime: ms per call, images/s, GFLOP/s, share of peak and paired speed-ups."""
    rows = {}
    sgemm = timings.get(SGEMM)
    for name, t in timings.items():
        s = summary(t["seconds"])
        if not s["n"]:
            continue
        row = {"n": s["n"], "median_ms": 1000 * s["median"], "p10_ms": 1000 * s["p10"],
               "p90_ms": 1000 * s["p90"], "images_per_s": batch / s["median"],
               "images_per_s_p10": batch / s["p90"], "images_per_s_p90": batch / s["p10"]}
        if name == SGEMM:
            row.update(gflops=SGEMM_GFLOP / s["median"], reference=True, peak_share=1.0)
            rows[name] = row
            continue
        if gflop_per_image:
            row["gflops"] = gflop_per_image * batch / s["median"]
            row["peak_share"] = row["gflops"] / peak if peak == peak else None
            if sgemm:
                # Within each round: (model GFLOP/s) / (SGEMM GFLOP/s), then the median.
                speed = paired_speedup(sgemm["rounds"], t["rounds"])
                row["peak_share"] = speed * gflop_per_image * batch / SGEMM_GFLOP if speed else None
                row["peak_share_basis"] = "paired with SGEMM in the same rounds"
        for reference, key in references:
            if reference in timings and reference != name:
                row[key] = paired_speedup(timings[reference]["rounds"], t["rounds"])
            elif reference == name:
                row[key] = 1.0
        rows[name] = row
    return rows


def gflop(res: dict, size: int | str) -> float | None:
    entry = res.get("model", {}).get("gflop", {}).get(str(size))
    return entry["conv_gflop"] if entry else None


def latency_tables(res: dict, key: str = "latency") -> dict[str, dict]:
    peak = sgemm_gflops(res)
    return {size: table(t, 1, gflop(res, size), peak) for size, t in res.get(key, {}).items()}


def throughput_tables(res: dict, key: str = "throughput") -> dict[str, dict]:
    peak = sgemm_gflops(res)
    tp = res.get(key, {})
    return {batch: table(t, int(batch), gflop(res, tp["size"]), peak)
            for batch, t in tp.get("batches", {}).items()}


def training_table(res: dict, key: str = "training") -> dict[str, dict]:
    setup = res.get(f"{key}_setup", {})
    images = setup.get("steps_per_round", 1) * setup.get("batch", 1)
    refs = ((TORCH_TRAIN, "vs_torch"), (KERAS_JAX_TRAIN, "vs_keras_jax"))
    timings = res.get(key, {})
    rows = table(timings, images, None, float("nan"), refs)
    for row in rows.values():
        row["step_ms"] = row["median_ms"] / setup.get("steps_per_round", 1)
    return rows


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def targets(res: dict) -> list[dict]:
    """Each target of the issue: the figure, the threshold, met or not, and by how much."""
    out = []
    lat = latency_tables(res).get(str(TARGET_SIZE), {})
    acc = res.get("accuracy", {}).get("runtimes", {})
    candidates = [n for n in ORT_FP32 if n in lat]
    int8_note = "int8 not measured"
    if "ort-int8" in lat:
        dice8 = acc.get("ort-int8", {}).get("whole_cell_dice")
        dice32 = max((acc.get(n, {}).get("whole_cell_dice") or 0 for n in ORT_FP32), default=0)
        if dice8 is not None and dice32 and dice32 - dice8 <= MAX_DICE_DROP:
            candidates.append("ort-int8")
            int8_note = f"int8 Dice {dice8:.4f} vs fp32 {dice32:.4f}: within {MAX_DICE_DROP}"
        elif dice8 is not None:
            int8_note = (f"int8 excluded: Dice {dice8:.4f} vs fp32 {dice32:.4f}, drop over "
                         f"{MAX_DICE_DROP}")
        else:
            int8_note = "int8 excluded: Dice not checked (untrained weights or no data)"
    best = max(candidates, key=lambda n: lat[n]["images_per_s"], default=None)
    for reference, key, need in ((KERAS_JAX, "vs_keras_jax", 2.5), (TORCH, "vs_torch", 1.6)):
        figure = lat[best].get(key) if best else None
        out.append({
            "target": f"best onnxruntime >= {need}x faster than {reference} at {TARGET_SIZE}px, batch 1",
            "figure": f"{best}: {_fmt(figure)}x ({_fmt(lat[best]['median_ms'], 1)} ms vs "
                      f"{_fmt(lat.get(reference, {}).get('median_ms'), 1)} ms); {int8_note}"
            if best else "not measured",
            "met": None if figure is None else figure >= need,
            "gap": None if figure is None else f"{figure / need:.0%} of the target",
        })
    peak = sgemm_gflops(res)
    fp32 = max((n for n in ORT_FP32 if n in lat), key=lambda n: lat[n].get("peak_share") or 0,
               default=None)  # the runtime judged by the target's own measure
    share = lat[fp32].get("peak_share") if fp32 else None
    if SGEMM in lat:
        peak_text = (f"SGEMM {_fmt(lat[SGEMM]['gflops'], 1)} GFLOP/s timed in the same rounds "
                     f"(before/after the run: {_fmt(peak, 1)})")
    else:
        peak_text = f"{_fmt(peak, 1)} GFLOP/s (SGEMM before/after the run)"
    out.append({
        "target": f"fp32 onnxruntime >= 85% of measured SGEMM GFLOP/s at {TARGET_SIZE}px, batch 1",
        "figure": f"{fp32}: {_fmt(lat[fp32]['gflops'], 1)} GFLOP/s = {_fmt(100 * share, 0)}% of "
                  f"{peak_text}" if fp32 and share is not None else "not measured",
        "met": None if share is None else share >= 0.85,
        "gap": None if share is None else f"{share / 0.85:.0%} of the target",
    })
    train = training_table(res)
    ratio = train.get(KERAS_JAX_TRAIN, {}).get("vs_torch")
    fixed = train.get("keras-jax-fit-mmup", {}).get("vs_torch")
    setup = res.get("training_setup", {})
    figure = "not measured"
    if ratio is not None:
        # The ratios are medians of each round's paired ratio, not ratios of the medians: with
        # few rounds the two can disagree, so they are not written as equal.
        figure = (f"{_fmt(train[KERAS_JAX_TRAIN]['images_per_s'], 1)} vs "
                  f"{_fmt(train[TORCH_TRAIN]['images_per_s'], 1)} images/s (medians); paired "
                  f"by round {ratio:.2f}x")
        if fixed is not None:
            figure += (f"; with matmul upsampling {_fmt(train['keras-jax-fit-mmup']['images_per_s'], 1)}"
                       f" images/s, paired {fixed:.2f}x")
    out.append({
        "target": f"Keras-JAX training >= 0.8x PyTorch at {setup.get('size', 128)}px, batch "
                  f"{setup.get('batch', 16)} (CPU)",
        "figure": figure, "met": None if ratio is None else ratio >= 0.8,
        "gap": None if ratio is None else f"{ratio / 0.8:.0%} of the target",
    })
    gpu = throughput_tables(res, "throughput_gpu")
    if gpu:
        biggest = max(gpu, key=int)
        best_gpu = max(gpu[biggest].items(), key=lambda kv: kv[1]["images_per_s"], default=None)
        rate = best_gpu[1]["images_per_s"] if best_gpu else None
        out.append({"target": f"GPU >= 20,000 images/s at {res['throughput_gpu']['size']}px, "
                              f"batch {biggest}, best runtime",
                    "figure": f"{best_gpu[0]}: {rate:,.0f} images/s" if best_gpu else "not measured",
                    "met": None if rate is None else rate >= 20000,
                    "gap": None if rate is None else f"{rate / 20000:.0%} of the target"})
        gtrain = training_table(res, "training_gpu")
        jax_gpu = next((n for n in gtrain if n.startswith("keras-jax-fit")), None)
        torch_gpu = gtrain.get("torch-cuda-train")
        g_ratio = (gtrain[jax_gpu]["images_per_s"] / torch_gpu["images_per_s"]
                   if jax_gpu and torch_gpu else None)
        out.append({"target": "GPU: JAX training images/s >= PyTorch's",
                    "figure": f"{g_ratio:.2f}x" if g_ratio else "not measured",
                    "met": None if g_ratio is None else g_ratio >= 1.0,
                    "gap": None if g_ratio is None else f"{g_ratio:.0%} of the target"})
    else:
        for target in ("GPU >= 20,000 images/s at 256px, batch 256, fp16, best runtime",
                       "GPU: JAX training images/s >= PyTorch's"):
            out.append({"target": target, "figure": "not measured: no GPU in this run",
                        "met": None, "gap": None})
    return out


def contention(res: dict) -> list[str]:
    """Signs that something else ran during the measurement; empty on a quiet machine."""
    reasons = []
    cores = res.get("machine", {}).get("cpu", {}).get("logical_cores") or 1
    load = res.get("machine", {}).get("load_average_start")
    if load and load[0] > 0.5 * cores:
        reasons.append(f"1-minute load average {load[0]} on {cores} cores before the run started")
    peaks = [p["median_gflops"] for p in res.get("peak", {}).values() if "median_gflops" in p]
    if len(peaks) == 2 and abs(peaks[0] - peaks[1]) > 0.15 * max(peaks):
        reasons.append(f"SGEMM {peaks[0]:.0f} GFLOP/s before vs {peaks[1]:.0f} after")
    return reasons
