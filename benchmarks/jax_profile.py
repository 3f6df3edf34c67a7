"""Where Keras-JAX spends a training step on CPU: phase timings and an op-level breakdown.

``profile_training`` times the jitted forward pass (training=True), forward + backward
(``jax.value_and_grad`` of the BCE-Dice loss, what ``fit`` runs before the optimiser) and
records a ``jax.profiler`` trace of the latter. The trace's Perfetto JSON lists every XLA:CPU
thunk by HLO instruction name; durations are summed per instruction over the worker threads and
tied back to Keras layers through the ``op_name`` metadata of the compiled HLO.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.worker import training_arrays

WRAPPERS = ("ThunkExecutor", "block_until_ready", "stop_trace", "start_trace")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = (\S+) (\w[\w-]*)\(")
_OP_NAME = re.compile(r'op_name="([^"]+)"')
_LAYER = re.compile(r"\b(enc\d_\w+?|dec\d_\w+?|bottleneck_\w+?|probability)(?=[/)\]]|$)")


def hlo_index(compiled_text: str) -> dict[str, dict]:
    """HLO instruction name -> {"shape", "opcode", "op_name", "layer"} from compiled HLO text."""
    index = {}
    for line in compiled_text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, shape, opcode = match.groups()
        op_name = _OP_NAME.search(line)
        op_name = op_name.group(1) if op_name else ""
        layer = _LAYER.search(op_name)
        index[name] = {"shape": shape, "opcode": opcode, "op_name": op_name,
                       "layer": layer.group(1) if layer else "",
                       "window": (re.search(r"window=\{[^}]*\}", line) or [""])[0],
                       "line": line}
    # Backward convolutions carry no metadata; their consumer (a reverse or transpose of the
    # kernel gradient) names the layer.
    for info in list(index.values()):
        if not info["layer"]:
            continue
        for operand in re.findall(r"%([\w.\-]+)", info["line"].split("=", 1)[1]):
            if operand in index and not index[operand]["layer"]:
                index[operand]["layer"] = info["layer"]
    for info in index.values():
        del info["line"]
    return index


def perfetto_op_times(trace_dir: Path) -> dict[str, float]:
    """Summed duration (ms) per traced op name over all threads, wrappers excluded."""
    files = sorted(Path(trace_dir).rglob("perfetto_trace.json.gz"))
    if not files:
        raise FileNotFoundError(f"{trace_dir}: no perfetto_trace.json.gz; jax.profiler wrote nothing")
    data = json.loads(gzip.open(files[-1]).read())
    events = data["traceEvents"] if isinstance(data, dict) else data
    totals: dict[str, float] = collections.Counter()
    for event in events:
        if event.get("ph") != "X" or any(w in event.get("name", "") for w in WRAPPERS):
            continue
        if event["name"].startswith("$"):  # Python frames
            continue
        totals[event["name"]] += event.get("dur", 0) / 1000.0
    return dict(totals)


def _median_seconds(fn, runs: int) -> float:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def profile_training(model, config, size: int, batch: int, runs: int = 3,
                     trace_dir: str | Path | None = None, top: int = 12) -> dict:
    """Phase timings and the op breakdown of one forward + backward pass of ``model``.

    Returns:
        {"forward_s", "forward_backward_s", "ops": [{name, ms, share, layer, opcode, shape,
        window}], "by_kind": {kind: share}} with shares of the summed op time.
    """
    import jax

    from unet_keras.losses import BCEDiceLoss

    loss_fn = BCEDiceLoss(smooth=config.dice_smooth, bce_weight=config.bce_weight,
                          dice_weight=config.dice_weight,
                          channel_weights=config.loss_channel_weights())
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    x, y = training_arrays(1, batch, size)

    def loss(tv, ntv, x, y):
        probs, new_ntv = model.stateless_call(tv, ntv, x, training=True)
        return loss_fn(y, probs), new_ntv

    forward = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=True)[0])
    grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
    for _ in range(2):
        jax.block_until_ready(forward(tv, ntv, x))
        jax.block_until_ready(grad(tv, ntv, x, y))
    result = {
        "batch": batch, "size": size,
        "forward_s": _median_seconds(lambda: jax.block_until_ready(forward(tv, ntv, x)), runs),
        "forward_backward_s": _median_seconds(
            lambda: jax.block_until_ready(grad(tv, ntv, x, y)), runs),
    }
    index = hlo_index(grad.lower(tv, ntv, x, y).compile().as_text())
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(trace_dir) if trace_dir else Path(tmp)
        jax.profiler.start_trace(str(where), create_perfetto_trace=True)
        try:
            for _ in range(runs):
                jax.block_until_ready(grad(tv, ntv, x, y))
        finally:
            jax.profiler.stop_trace()
        totals = perfetto_op_times(where)
    result.update(summarize_ops(totals, index, runs, top))
    return result


def op_kind(name: str, info: dict) -> str:
    """A readable class for an XLA:CPU op: what a person looks for in a breakdown."""
    base = re.sub(r"\.\d+$", "", name)
    if base.startswith("convolution-base-dilated") or "rhs_dilate" in info.get("window", "") \
            or "lhs_dilate" in info.get("window", ""):
        return "dilated convolution (generic loop)"
    if base.startswith(("ynn_fusion", "xnn_fusion")):
        return "YNNPACK/XNNPACK fusion (convolutions, GEMM)"
    if base.startswith("convolution") or info.get("opcode") == "convolution":
        return "convolution (Eigen)"
    if "transpose" in base or "copy" in base:
        return "transpose / copy"
    if "reduce" in base:
        return "reduction (batch norm, loss, pooling)"
    return "other fusions (elementwise)"


def summarize_ops(totals: dict[str, float], index: dict[str, dict], runs: int, top: int) -> dict:
    total = sum(totals.values()) or 1.0
    ops = []
    for name, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
        info = index.get(name, {})
        ops.append({"name": name, "ms_per_step": ms / runs, "share": ms / total,
                    "kind": op_kind(name, info), "layer": info.get("layer", ""),
                    "opcode": info.get("opcode", ""), "shape": info.get("shape", ""),
                    "window": info.get("window", "")})
    by_kind: dict[str, float] = collections.Counter()
    for op in ops:
        by_kind[op["kind"]] += op["share"]
    return {"op_ms_per_step": total / runs, "ops": ops[:top],
            "by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1]))}


def attach_profilers(runtimes: dict, config, args) -> None:
    """Give each ``keras-jax-fit*`` runtime a ``profile`` method over its own model."""
    for name, runtime in runtimes.items():
        if "-fit" in name and hasattr(runtime, "model"):
            def profile(request, runtime=runtime):
                return profile_training(runtime.model, config, args.train_size, args.train_batch,
                                        runs=request.get("runs", 3))
            runtime.profile = profile
