"""Export one model by both routes and compare graphs and speed.

    python -m export.compare_routes --model runs/NAME --out /tmp/routes [--size 256] [--repeats 30]

Prints a JSON report: per route, node and Transpose counts in the file and after onnxruntime's
basic graph optimizations (constant folding, Transpose optimization: what actually runs),
parity figures, export seconds, and median onnxruntime CPU latency at batch 1; plus the
Keras-JAX latency on the same input for reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from export.graph_fixes import op_counts
from export.onnx_export import ROUTES, export_onnx
from export.precision import measure_latency


def optimized_counts(onnx_path: Path, level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC) -> dict:
    """Op counts of the graph onnxruntime runs after its graph optimizations at ``level``."""
    optimized = onnx_path.with_suffix(".ort-optimized.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.optimized_model_filepath = str(optimized)
    options.log_severity_level = 3
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    counts = op_counts(onnx.load(str(optimized)))
    optimized.unlink()
    return {"nodes": sum(counts.values()), "transposes": counts.get("Transpose", 0), "ops": counts}


def keras_latency(model_path: Path, shape, repeats: int) -> dict:
    from unet_keras.model import load_model

    model = load_model(model_path)
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(3):
        model.predict_on_batch(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(model.predict_on_batch(x))
        times.append(1000 * (time.perf_counter() - start))
    return {"median_ms": round(statistics.median(times), 3), "repeats": repeats}


def compare(model: str | Path, out_dir: str | Path, size: int = 256, repeats: int = 30) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = (1, size, size, 3)
    report: dict = {"input_shape": list(shape), "routes": {}}
    for route in ROUTES:
        path = out_dir / f"{route}.onnx"
        exported = export_onnx(model, path, route=route)
        report["routes"][route] = {
            "opset": exported["opset"], "file_nodes": exported["nodes"],
            "file_transposes": exported["transposes"], "file_ops": exported["ops"],
            "ort_optimized": optimized_counts(path), "graph_fixes": exported["graph_fixes"],
            "parity_max_abs_diff": exported["parity"]["max_abs_diff"],
            "export_seconds": exported["seconds"]["total"],
            "latency": measure_latency(path, shape, repeats),
        }
        report["model"] = exported["model"]
    report["keras_jax_latency"] = keras_latency(Path(report["model"]), shape, repeats)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.compare_routes")
    parser.add_argument("--model", required=True, help=".keras file or run directory")
    parser.add_argument("--out", required=True, help="directory for the two exports")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    print(json.dumps(compare(args.model, args.out, args.size, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
