"""REPORT.md from a results dict: headline, targets, machine, tables, profiles, method."""

from __future__ import annotations

from benchmarks import summary
from benchmarks.summary import KERAS_JAX, TARGET_SIZE, TORCH, _fmt

PEAK_NOTE = ("practical FP32 peak = numpy float32 2048x2048 @ 2048x2048 SGEMM (2 n^3 FLOPs), median "
             "of 7 timed products after a warm-up, measured before and after the run; the report "
             "uses the median of the two")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _x(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _status(met) -> str:
    return {True: "**met**", False: "**not met**", None: "not measured"}[met]


def headline(res: dict) -> str:
    lat = summary.latency_tables(res).get(str(TARGET_SIZE), {})
    if not lat:
        return "No latency measured at 256 px."
    lat = {n: r for n, r in lat.items() if not r.get("reference")}
    best = min(lat, key=lambda n: lat[n]["median_ms"])
    parts = [f"At {TARGET_SIZE}x{TARGET_SIZE}, batch 1, the fastest runtime was **{best}** at "
             f"{lat[best]['median_ms']:.1f} ms"]
    for ref, label in ((TORCH, "PyTorch eager"), (KERAS_JAX, "jitted Keras-JAX")):
        if ref in lat and ref != best:
            parts.append(f"{_x(lat[best].get('vs_torch' if ref == TORCH else 'vs_keras_jax'))} "
                         f"faster than {label} ({lat[ref]['median_ms']:.1f} ms)")
    train = summary.training_table(res)
    text = ", ".join(parts) + "."
    if summary.KERAS_JAX_TRAIN in train and summary.TORCH_TRAIN in train:
        text += (f" Keras-JAX trained at {_x(train[summary.KERAS_JAX_TRAIN]['vs_torch'])} the "
                 "PyTorch reference's images/s (median of the rounds' paired ratios)")
        if "keras-jax-fit-mmup" in train:
            text += (f", {_x(train['keras-jax-fit-mmup']['vs_torch'])} with the upsampling "
                     "computed as a matmul")
        text += "."
    return text


def _contention_note(res: dict) -> str:
    reasons = summary.contention(res)
    if not reasons:
        return ""
    return ("> **Busy machine**: " + "; ".join(reasons) + ". Absolute timings are inflated and "
            "ratios are unreliable, most for the OpenMP runtimes (PyTorch, Keras on torch), whose "
            "threads wait at barriers for a descheduled peer. Rerun on a quiet machine.\n")


def _ort_diagnosis(res: dict, name: str) -> str:
    p = res.get("profiles", {}).get(name)
    g = res.get("model", {}).get("gflop", {}).get(str(TARGET_SIZE))
    if not p or "by_op_type" not in p or not g:
        return f"no onnxruntime profile of {name}"
    by_op = {o["op"]: o["ms_per_run"] for o in p["by_op_type"]}
    conv_ms = by_op.get("Conv", 0.0) + by_op.get("QLinearConv", 0.0) + by_op.get("FusedConv", 0.0)
    conv_gflop = g["conv_gflop"] - g.get("transposed_conv_gflop", 0.0)
    rest = p["node_ms_per_run"] - conv_ms
    peak = p.get("sgemm_gflops") or summary.peak_gflops(res)  # SGEMM timed next to the profile
    top = ", ".join(f"{o['op']} {100 * o['share']:.0f}%" for o in p["by_op_type"][:4])
    rate = conv_gflop / conv_ms * 1000
    rate_text = (f"{rate:.0f} int8 GOP/s" if "QLinearConv" in by_op else
                 f"{rate:.0f} GFLOP/s ({100 * rate / peak:.0f}% of SGEMM)")
    return (f"onnxruntime's profiler ({name}, {p['runs']} runs): {top} of node time. Its 3x3 "
            f"convolutions ran at {rate_text} for {conv_ms:.1f} ms; "
            f"the other {rest:.1f} ms (transposed convolutions, layout reorders, concat, slices, "
            f"pooling) do under 5% of the FLOPs") if conv_ms else f"{name}: no Conv nodes profiled"


def _jax_diagnosis(res: dict) -> str:
    p = res.get("profiles", {}).get("keras-jax-fit")
    if not p:
        return "no jax.profiler trace (taken when the target is missed, or with --full)"
    kinds = ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(p["by_kind"].items())[:3])
    dilated = [o for o in p["ops"] if o["kind"].startswith("dilated")]
    layers = ", ".join(sorted({o["layer"] for o in dilated if o["layer"]}))
    text = (f"jax.profiler ({p['size']}px, batch {p['batch']}): forward {p['forward_s'] * 1000:.0f} ms, "
            f"forward + backward {p['forward_backward_s'] * 1000:.0f} ms; op time by kind: {kinds}.")
    if dilated:
        text += (f" The dilated convolutions are the kernel gradients of the 2x2/stride-2 "
                 f"Conv2DTranspose layers ({layers}): XLA:CPU runs a convolution with rhs dilation "
                 f"through a generic loop, not YNNPACK/Eigen, so {_transposed_share(res)} of "
                 f"the FLOPs take {100 * sum(o['share'] for o in dilated):.0f}% of the op time. "
                 "Computing the "
                 "upsampling as a matmul + depth-to-space (same weights, same outputs: "
                 "`keras-jax-fit-mmup`) removes them.")
    train = summary.training_table(res)
    flags = {n: r.get("vs_torch") for n, r in train.items() if n.startswith("keras-jax-fit[")}
    if flags:
        text += (" XLA flag variants, images/s vs PyTorch: "
                 + ", ".join(f"{n[len('keras-jax-fit'):]} {_x(v)}" for n, v in flags.items())
                 + f" (default {_x(train.get(summary.KERAS_JAX_TRAIN, {}).get('vs_torch'))}).")
    return text


def _transposed_share(res: dict) -> str:
    g = res.get("model", {}).get("gflop", {}).get(str(res.get("training_setup", {}).get("size")))
    if not g or "transposed_conv_gflop" not in g:
        return "a few percent"
    return f"{100 * g['transposed_conv_gflop'] / g['conv_gflop']:.1f}%"


def _missed_section(res: dict, targets: list[dict]) -> str:
    lines = []
    for t in targets:
        if t["met"] is not False:
            continue
        if "onnxruntime" in t["target"]:
            why = _ort_diagnosis(res, "ort-tuned")
            if "int8" in t["figure"] and "within" in t["figure"]:
                why += ". " + _ort_diagnosis(res, "ort-int8")
        elif "Keras-JAX training" in t["target"]:
            why = _jax_diagnosis(res)
        else:
            why = "no profile for this target"
        lines.append(f"- **{t['target']}**: {t['figure']} ({t['gap']}). {why}.")
    return "\n".join(lines) + "\n" if lines else "Every measured target was met.\n"


def _latency_section(title: str, tables: dict, unit_batch: bool = True) -> str:
    out = []
    for size, rows in sorted(tables.items(), key=lambda kv: int(kv[0])):
        out.append(f"### {title} {size}x{size}, batch 1\n")
        body = [[name, _fmt(r["median_ms"], 1), f"{r['p10_ms']:.1f}-{r['p90_ms']:.1f}", r["n"],
                 _fmt(r.get("gflops"), 1), _fmt(100 * r["peak_share"], 0) + "%" if r.get("peak_share") else "n/a",
                 _x(r.get("vs_torch")), _x(r.get("vs_keras_jax"))]
                for name, r in sorted(rows.items(), key=lambda kv: kv[1]["median_ms"])]
        out.append(_md_table(["runtime", "median ms", "p10-p90 ms", "runs", "GFLOP/s",
                              "of SGEMM peak", "x vs PyTorch eager", "x vs Keras-JAX jit"], body))
    return "\n".join(out)


def _throughput_section(res: dict, key: str) -> str:
    tables = summary.throughput_tables(res, key)
    if not tables:
        return ""
    batches = sorted(tables, key=int)
    names = sorted({n for rows in tables.values() for n in rows},
                   key=lambda n: -tables[batches[-1]].get(n, {}).get("images_per_s", 0))
    body = []
    for name in names:
        cells = []
        for b in batches:
            r = tables[b].get(name)
            cells.append(f"{r['images_per_s']:.1f} ({r['images_per_s_p10']:.1f}-"
                         f"{r['images_per_s_p90']:.1f})" if r else "-")
        last = tables[batches[-1]].get(name, {})
        body.append([name, *cells, _fmt(last.get("gflops"), 1), _x(last.get("vs_torch")),
                     _x(last.get("vs_keras_jax"))])
    size = res[key]["size"]
    return (f"Images/s, median (p10-p90), at {size}x{size}; GFLOP/s and ratios at batch "
            f"{batches[-1]}.\n\n" + _md_table(
                ["runtime", *[f"batch {b}" for b in batches], "GFLOP/s", "x vs PyTorch eager",
                 "x vs Keras-JAX jit"], body))


def _training_section(res: dict, key: str) -> str:
    rows = summary.training_table(res, key)
    if not rows:
        return "Not measured.\n"
    setup = res.get(f"{key}_setup", {})
    body = [[n, _fmt(r["images_per_s"], 2), f"{r['images_per_s_p10']:.2f}-{r['images_per_s_p90']:.2f}",
             _fmt(r["step_ms"], 0), r["n"], _x(r.get("vs_torch")), _x(r.get("vs_keras_jax"))]
            for n, r in sorted(rows.items(), key=lambda kv: -kv[1]["images_per_s"])]
    return (f"{setup.get('size')}x{setup.get('size')} crops, batch {setup.get('batch')}, "
            f"{setup.get('steps_per_round')} steps per round x {setup.get('rounds')} rounds after "
            f"{setup.get('warmup_steps')} warm-up steps; synthetic arrays.\n\n" + _md_table(
                ["runtime", "images/s", "p10-p90", "ms/step", "rounds", "x vs PyTorch",
                 "x vs Keras-JAX fit"], body))


def _accuracy_section(res: dict) -> str:
    acc = res.get("accuracy", {})
    rows = acc.get("runtimes", {})
    if not rows:
        return f"{acc.get('status', 'Not measured.')}\n"
    body = [[n, _fmt(r.get("whole_cell_dice"), 4), _fmt(r.get("whole_cell_iou"), 4),
             _fmt(r.get("ap50"), 3), f"{r['max_abs_diff_vs_keras_jax']:.2e}"
             if "max_abs_diff_vs_keras_jax" in r else "n/a"] for n, r in rows.items()]
    return (f"Status: {acc.get('status')}. Data: {acc.get('data_source')}. Scoring: "
            f"{acc.get('scoring')}, thresholds {acc.get('thresholds')}.\n\n" + _md_table(
                ["runtime", "whole-cell Dice", "IoU", "AP50", "max abs diff vs Keras-JAX"], body))


def _memory_section(res: dict) -> str:
    body = []
    for label, phases in res.get("memory", {}).items():
        hosts = ", ".join(n for n, i in res.get("runtimes", {}).items() if i["worker"] == label)
        body.append([label, hosts, _fmt((phases.get("ready") or {}).get("rss_mib"), 0),
                     _fmt(phases.get("after_inference", {}).get("peak_rss_mib"), 0),
                     _fmt(phases.get("after_training", {}).get("peak_rss_mib"), 0),
                     _fmt(phases.get("end", {}).get("peak_rss_mib"), 0)])
    return ("Resident memory (MiB) of each worker process, which holds its framework, the "
            "model copies of the runtimes it hosts and their buffers. Peaks are cumulative: "
            "batch-1 latency and the accuracy pass, then training, then batched throughput."
            "\n\n" + _md_table(["worker", "runtimes", "RSS after start",
                                 "peak after batch-1 inference", "peak after training",
                                 "peak at the end"], body))


def _profiles_section(res: dict) -> str:
    out = []
    if "keras-jax-fit" in res.get("profiles", {}):
        out.append(f"### Keras-JAX training: where the time goes\n\n{_jax_diagnosis(res)}\n")
    for name, p in res.get("profiles", {}).items():
        if "by_op_type" in p:
            out.append(f"### onnxruntime profiler: {name}, 256x256 batch 1 ({p['runs']} runs, "
                       f"model_run median {_fmt(p.get('model_run_ms'), 1)} ms)\n")
            out.append(_md_table(["op type", "ms/run", "share"],
                                 [[o["op"], f"{o['ms_per_run']:.2f}", f"{100 * o['share']:.1f}%"]
                                  for o in p["by_op_type"][:8]]))
            out.append(_md_table(["node", "op", "ms/run", "share"],
                                 [[o["node"], o["op"], f"{o['ms_per_run']:.2f}",
                                   f"{100 * o['share']:.1f}%"] for o in p["top_nodes"][:6]]))
        elif "by_kind" in p:
            out.append(f"### jax.profiler: {name}, one forward + backward at {p['size']}px, batch "
                       f"{p['batch']}\n")
            out.append(f"Forward (training=True) {p['forward_s'] * 1000:.0f} ms; forward + backward "
                       f"{p['forward_backward_s'] * 1000:.0f} ms; op time summed over threads "
                       f"{p['op_ms_per_step']:.0f} ms per step.\n")
            out.append(_md_table(["op kind", "share of op time"],
                                 [[k, f"{100 * v:.1f}%"] for k, v in p["by_kind"].items()]))
            out.append(_md_table(["HLO op", "layer", "kind", "ms/step", "share", "shape", "window"],
                                 [[o["name"], o["layer"] or "-", o["kind"], f"{o['ms_per_step']:.0f}",
                                   f"{100 * o['share']:.1f}%", f"`{o['shape']}`",
                                   f"`{o['window']}`" if o["window"] else ""]
                                  for o in p["ops"][:8]]))
    return "\n".join(out) if out else "No profiles taken.\n"


def _machine_section(res: dict) -> str:
    m, cpu = res["machine"], res["machine"]["cpu"]
    peak = res.get("peak", {})
    rows = [["CPU", cpu["model"]], ["logical cores", cpu["logical_cores"]],
            ["clock (cpuinfo)", f"{cpu.get('mhz')} MHz"], ["memory", f"{m.get('memory_gib')} GiB"],
            ["vector extensions", ", ".join(cpu.get("vector_extensions", []))],
            ["SGEMM GFLOP/s (before, after)", " , ".join(_fmt(p.get("median_gflops"), 1)
                                                      for p in peak.values())],
            ["practical FP32 peak used", f"{_fmt(summary.sgemm_gflops(res), 1)} GFLOP/s ({PEAK_NOTE})"],
            ["theoretical FP32 peak", f"{cpu.get('theoretical_fp32_gflops', 'n/a')} GFLOP/s "
             "(cores x 2 FMA units x lanes x 2 x cpuinfo clock; an upper bound)"],
            ["BLAS", peak.get("before", {}).get("blas", "?")],
            ["load average (start, end)", f"{m.get('load_average_start')}, {m.get('load_average_end')}"],
            ["platform", m.get("platform")],
            ["thread environment", m.get("thread_environment") or "none set"]]
    versions = ", ".join(f"{k} {v}" for k, v in res.get("versions", {}).items())
    threads = []
    for name, info in res.get("runtimes", {}).items():
        keys = ("intra_op_num_threads", "inter_op_num_threads", "torch_threads", "tf_intra_op",
                "tf_inter_op", "XLA_FLAGS", "execution_mode", "graph_optimization_level", "call")
        threads.append([name, "; ".join(f"{k}={info[k]}" for k in keys if info.get(k) not in (None, ""))])
    return (_md_table(["", ""], rows) + f"\nVersions: {versions}.\n\n"
            + _md_table(["runtime", "how it is called, threads"], threads))


def _model_section(res: dict) -> str:
    m = res.get("model", {})
    gflop = ", ".join(f"{s}px {g['conv_gflop']:.3f}" for s, g in m.get("gflop", {}).items())
    notes = m.get("notes", {})
    return (f"- weights: `{m.get('path')}` ({'trained' if m.get('trained') else 'untrained seed U-Net'}), "
            f"{m.get('parameters', 0):,} parameters, depth {m.get('config', {}).get('depth')}, "
            f"base {m.get('config', {}).get('base_filters')}\n"
            f"- convolution GFLOP per image (2 x MACs, from the Keras layers): {gflop}\n"
            f"- ONNX: {notes.get('onnx_export')}\n- int8: {notes.get('int8')}\n"
            f"- test data: {m.get('data_source') or 'none'}\n"
            f"- PyTorch reference vs Keras-JAX before timing: {_torch_parity(res)}\n")


def _torch_parity(res: dict) -> str:
    info = res.get("runtimes", {}).get("torch-eager")
    if info and "parity_max_abs_diff" in info:
        return (f"max abs diff {info['parity_max_abs_diff']:.2e} <= {info['parity_tolerance']:g} "
                "on a fixed random batch (3 images, 96x160)")
    return res.get("errors", {}).get("torch", "not run")


METHOD = """\
- Every runtime is given the same weights: one `.keras` file, loaded by each Keras backend,
  exported once to ONNX (`export.onnx_export`, parity-gated against Keras-JAX) and copied into the
  PyTorch reference, which must match Keras-JAX within 1e-4 before it is timed.
- Same work: a float32 NHWC numpy batch in, float32 numpy probabilities out, conversions inside
  the timed call. Each framework runs in its own worker process; the coordinator asks the workers
  in turn for a few timed calls per round (the order rotating), so load from elsewhere hits every
  runtime of a round alike. Ratios are medians over rounds of per-round ratios.
- Medians of >= 20 calls after warm-up calls; spread is p10-p90.
- GFLOP counts 2 x multiply-adds of the convolutions and transposed convolutions (batch norm,
  ReLU, pooling are < 1 % and left out); GFLOP/s = GFLOP per image x batch / median seconds.
- Peak: numpy's float32 2048^3 SGEMM (`numpy-sgemm`) is timed as one more runtime in every
  latency round; "of SGEMM peak" is the per-round ratio of a runtime's GFLOP/s to it, so the
  peak is measured under the load the models saw. SGEMM before and after the run is also kept.
- Training: `model.fit` on numpy arrays after `compile_model` (Adam, BCE + Dice) per Keras backend;
  the PyTorch reference runs the same loss with Adam(eps=1e-7); images/s from whole rounds.
"""


def render(res: dict, figures: dict[str, str]) -> str:
    meta = res["meta"]
    targets = summary.targets(res)
    parts = [f"# Benchmark report: {meta['profile']} run, {meta['started']}\n",
             f"{headline(res)}\n",
             _contention_note(res),
             f"Command: `{meta['command']}` ({meta.get('duration_s')} s).\n",
             "## Targets\n",
             _md_table(["target", "measured", "status", "vs target"],
                       [[t["target"], t["figure"], _status(t["met"]), t["gap"] or "-"]
                        for t in targets]),
             "### Missed targets: what the profiles show\n", _missed_section(res, targets),
             "## Machine\n", _machine_section(res), "## Model\n", _model_section(res),
             "## Batch-1 latency\n"]
    if "latency" in figures:
        parts.append(f"![latency]({figures['latency']})\n")
    parts.append(_latency_section("CPU", summary.latency_tables(res)))
    parts.append("## Throughput\n")
    if "throughput" in figures:
        parts.append(f"![throughput]({figures['throughput']})\n")
    parts.append(_throughput_section(res, "throughput"))
    parts.append("## Training throughput\n")
    if "training" in figures:
        parts.append(f"![training]({figures['training']})\n")
    parts.append(_training_section(res, "training"))
    parts.append("## Accuracy\n")
    if "accuracy" in figures:
        parts.append(f"![accuracy]({figures['accuracy']})\n")
    parts += [_accuracy_section(res), "## Memory\n", _memory_section(res),
              "## Profiles\n", _profiles_section(res), "## GPU\n"]
    if res.get("latency_gpu"):
        parts.append(_latency_section("GPU", summary.latency_tables(res, "latency_gpu")))
        parts.append(_throughput_section(res, "throughput_gpu"))
        parts.append(_training_section(res, "training_gpu"))
    else:
        parts.append(f"Not measured: {res.get('errors', {}).get('gpu', 'no GPU in this run (run with --gpu on a GPU machine)')}.\n")
    parts += ["## Method\n", METHOD]
    if res.get("skipped"):
        parts += ["## Skipped\n", "\n".join(f"- {s}" for s in res["skipped"]) + "\n"]
    if res.get("errors"):
        parts += ["## Errors\n", "\n".join(f"- {k}: {str(v)[:400]}" for k, v in res["errors"].items()) + "\n"]
    return "\n".join(parts)
