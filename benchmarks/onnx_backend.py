"""onnxruntime sessions served as a worker (see ``benchmarks.worker``)::

    python -m benchmarks.onnx_backend --onnx model.onnx [--int8 model.int8.onnx] --work DIR

Runtimes (CPU):

* ``ort-default``: ``InferenceSession`` with default ``SessionOptions``, what a user gets first.
* ``ort-tuned``: intra-op threads = cores, inter-op 1, sequential execution, ``ORT_ENABLE_ALL``
  graph optimisation saved once through ``optimized_model_filepath`` and the saved optimised
  graph then loaded with optimisation off (no re-optimisation at start-up).
* ``ort-int8``: the static QDQ int8 model of ``export.precision.make_int8``, tuned options.

With ``--gpu``: ``ort-cuda`` (fp32) and ``ort-cuda-fp16`` (``--fp16`` model) on the CUDA
execution provider, ``ort-trt-fp16`` on TensorRT when this build has it; inputs and outputs
stay on the device through I/O binding.

``profile`` runs onnxruntime's own profiler and returns time per operator type and node.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.worker import Runtime, serve

INPUT_NAME, OUTPUT_NAME = "image", "probability"


def tuned_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def save_optimized(onnx_path: Path, out_path: Path, threads: int) -> Path:
    """Write the ``ORT_ENABLE_ALL``-optimised graph for this machine to ``out_path``."""
    options = tuned_options(threads)
    options.optimized_model_filepath = str(out_path)
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return out_path


def _option_summary(options: ort.SessionOptions) -> dict:
    return {"intra_op_num_threads": options.intra_op_num_threads or "default (physical cores)",
            "inter_op_num_threads": options.inter_op_num_threads or "default",
            "execution_mode": str(options.execution_mode).split(".")[-1],
            "graph_optimization_level": str(options.graph_optimization_level).split(".")[-1]}


class OrtSession(Runtime):
    def __init__(self, name: str, path: Path, options: ort.SessionOptions,
                 providers: list, note: str = ""):
        self.name = name
        self.path, self.options, self.providers, self.note = path, options, providers, note
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.device = "gpu" if any("CUDA" in str(p) or "Tensorrt" in str(p) for p in providers) \
            else "cpu"
        if self.device == "gpu":
            self._binding = self.session.io_binding()
            self.prepare = lambda x: ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
            self.infer = self._infer_bound
            self.to_numpy = lambda out: out.numpy()
        else:
            self.infer = lambda x: self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    def _infer_bound(self, x):
        self._binding.bind_ortvalue_input(INPUT_NAME, x)
        self._binding.bind_output(OUTPUT_NAME, "cuda")
        self.session.run_with_iobinding(self._binding)
        return self._binding.get_outputs()[0]

    def info(self) -> dict:
        return {"file": self.path.name, "providers": self.session.get_providers(),
                "device": self.device, "note": self.note, **_option_summary(self.options)}

    def profile(self, request: dict) -> dict:
        """onnxruntime profiler over ``runs`` calls on the fixed input: time per op type and node."""
        from benchmarks.worker import input_batch

        profiled = ort.SessionOptions()
        for attr in ("intra_op_num_threads", "inter_op_num_threads", "execution_mode",
                     "graph_optimization_level", "log_severity_level"):
            setattr(profiled, attr, getattr(self.options, attr))
        profiled.enable_profiling = True
        profiled.profile_file_prefix = str(Path(request["dir"]) / f"ort-profile-{self.name}")
        session = ort.InferenceSession(str(self.path), profiled, providers=self.providers)
        x = input_batch(request["batch"], request["size"])
        warmup, runs = request.get("warmup", 2), request.get("runs", 10)
        for _ in range(warmup + runs):
            session.run([OUTPUT_NAME], {INPUT_NAME: x})
        path = Path(session.end_profiling())
        return summarize_profile(json.loads(path.read_text()), runs, warmup, file=str(path))


def summarize_profile(events: list[dict], runs: int, warmup: int, file: str = "",
                      top: int = 12) -> dict:
    """Per op type and per node: ms per run and share of node time, warm-up runs excluded."""
    run_starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    first = run_starts[warmup] if len(run_starts) > warmup else 0
    by_type: dict[str, float] = collections.Counter()
    by_node: dict[str, float] = collections.Counter()
    node_type = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") \
                or e["ts"] < first:
            continue
        op = e.get("args", {}).get("op_name", "?")
        node = e["name"][: -len("_kernel_time")]
        by_type[op] += e["dur"] / 1000.0
        by_node[node] += e["dur"] / 1000.0
        node_type[node] = op
    total = sum(by_type.values()) or 1.0
    model_runs = [e["dur"] / 1000.0 for e in events if e.get("name") == "model_run"][warmup:]
    return {
        "file": file, "runs": runs,
        "model_run_ms": float(np.median(model_runs)) if model_runs else None,
        "node_ms_per_run": total / runs,
        "by_op_type": [{"op": op, "ms_per_run": ms / runs, "share": ms / total}
                       for op, ms in sorted(by_type.items(), key=lambda kv: -kv[1])],
        "top_nodes": [{"node": n, "op": node_type[n], "ms_per_run": ms / runs, "share": ms / total}
                      for n, ms in sorted(by_node.items(), key=lambda kv: -kv[1])[:top]],
    }


def build(args) -> dict[str, Runtime]:
    cpu = ["CPUExecutionProvider"]
    threads = args.threads or os.cpu_count() or 1
    work = Path(args.work)
    runtimes: dict[str, Runtime] = {}
    default = ort.SessionOptions()
    default.log_severity_level = 3
    onnx_path = Path(args.onnx)
    if not args.gpu_only:
        runtimes["ort-default"] = OrtSession("ort-default", onnx_path, default, cpu,
                                             "default SessionOptions")
        optimized = save_optimized(onnx_path, work / "model.ort-optimized.onnx", threads)
        loaded = tuned_options(threads)
        loaded.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        runtimes["ort-tuned"] = OrtSession("ort-tuned", optimized, loaded, cpu,
                                           "saved ORT_ENABLE_ALL graph, loaded unoptimised")
        if args.int8:
            runtimes["ort-int8"] = OrtSession("ort-int8", Path(args.int8), tuned_options(threads),
                                              cpu, "static QDQ int8 (export.precision.make_int8)")
    if args.gpu:
        available = ort.get_available_providers()
        options = tuned_options(threads)
        if "CUDAExecutionProvider" in available:
            runtimes["ort-cuda"] = OrtSession("ort-cuda", onnx_path, options,
                                              ["CUDAExecutionProvider"], "fp32")
            if args.fp16:
                runtimes["ort-cuda-fp16"] = OrtSession("ort-cuda-fp16", Path(args.fp16), options,
                                                       ["CUDAExecutionProvider"],
                                                       "fp16 (export.precision.make_fp16)")
        if "TensorrtExecutionProvider" in available:
            trt = [("TensorrtExecutionProvider",
                    {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                     "trt_engine_cache_path": str(work / "trt-cache")}), "CUDAExecutionProvider"]
            try:
                runtimes["ort-trt-fp16"] = OrtSession("ort-trt-fp16", onnx_path, options, trt,
                                                      "TensorRT EP, fp16 kernels allowed")
            except Exception as err:  # a TensorRT library missing at run time
                print(f"TensorRT EP unavailable: {err}", file=sys.stderr)
    return runtimes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onnx_backend")
    parser.add_argument("--onnx", required=True, help="fp32 model from export.onnx_export")
    parser.add_argument("--int8", help="int8 QDQ model from export.precision.make_int8")
    parser.add_argument("--fp16", help="fp16 model from export.precision.make_fp16 (GPU)")
    parser.add_argument("--work", required=True, help="directory for the optimised model")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (tuned)")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--gpu-only", action="store_true")
    args = parser.parse_args(argv)
    return serve(lambda: build(args))


if __name__ == "__main__":
    sys.exit(main())
