"""Benchmark every runtime on the same weights in one run; write results.json, REPORT.md, plots.

    python -m benchmarks.run --quick|--full [--gpu] [--model runs/NAME/model.keras] --out DIR

Order of a run: the machine's SGEMM peak; the model and everything made from it
(``benchmarks.artifacts``); the workers, started together (``benchmarks.worker``); then, each
interleaved across runtimes, batch-1 latency per image size (numpy's SGEMM in the same rounds),
the accuracy pass (one scoring code, ``unet_keras.evaluate``), training throughput, batched
throughput; op-level profiles; the SGEMM peak again. Timings are taken only while nothing else
of this run computes. ``benchmarks.results`` holds the phases.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"  # export_onnx's parity reference; set before keras loads
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import machine  # noqa: E402
from benchmarks.flops import model_gflop, sgemm_peak  # noqa: E402
from benchmarks.profiles import PROFILES, Profile  # noqa: E402
from benchmarks.worker import Worker, WorkerError  # noqa: E402

log = logging.getLogger("benchmarks")


def _worker_specs(art, profile: Profile, work: Path, gpu: bool) -> list[tuple]:
    """(label, module, args, env) of every worker this run starts."""
    model = ["--model", str(art.model_path), "--config", str(art.model_path.parent / "config.json")]
    train = ["--train-steps", str(max(profile.train_steps, profile.train_warmup)),
             "--train-size", str(profile.train_size), "--train-batch", str(profile.train_batch)]
    cpu_only = {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    jax_args = model + train + ["--matmul-upsampling", "--profile-dir", str(work)]
    if profile.keras_predict:
        jax_args.append("--predict")
    specs = [
        ("keras-jax", "benchmarks.keras_backend", jax_args, {"KERAS_BACKEND": "jax", **cpu_only}),
        ("keras-tf", "benchmarks.keras_backend", model + train,
         {"KERAS_BACKEND": "tensorflow", **cpu_only}),
        ("keras-torch", "benchmarks.keras_backend", model + train,
         {"KERAS_BACKEND": "torch", **cpu_only}),
        ("torch", "benchmarks.torch_backend",
         ["--weights", str(art.weights), "--config", str(art.model_path.parent / "config.json"),
          "--parity-inputs", str(art.parity_inputs), "--parity-reference",
          str(art.parity_reference), *train[:], *(["--channels-last"] if profile.channels_last else [])],
         cpu_only),
    ]
    specs.append(("numpy", "benchmarks.sgemm_backend", [], {}))
    for label, flags in profile.jax_flag_variants:
        specs.append((f"keras-jax[{label}]", "benchmarks.keras_backend",
                      model + train + ["--no-infer", "--label", label],
                      {"KERAS_BACKEND": "jax", "XLA_FLAGS": flags, **cpu_only}))
    if gpu:
        gpu_train = ["--train-steps", str(profile.gpu_train_steps), "--train-size",
                     str(profile.train_size), "--train-batch", str(profile.train_batch)]
        specs += [
            ("keras-jax-gpu", "benchmarks.keras_backend",
             model + gpu_train + ["--device", "gpu", "--precisions", "fp16", "bf16", "--label", "gpu"],
             # No preallocation: PyTorch and onnxruntime share the device from other processes.
             {"KERAS_BACKEND": "jax", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}),
            ("torch-gpu", "benchmarks.torch_backend",
             ["--weights", str(art.weights), "--config", str(art.model_path.parent / "config.json"),
              "--parity-inputs", str(art.parity_inputs), "--parity-reference",
              str(art.parity_reference), "--gpu", "--gpu-only", "--precisions", "fp16", "bf16",
              *gpu_train], {}),
        ]
    return specs


def _ort_spec(art, work: Path, gpu: bool) -> tuple:
    args = ["--onnx", str(art.onnx), "--work", str(work)]
    if art.int8:
        args += ["--int8", str(art.int8)]
    if gpu and art.fp16:
        args += ["--gpu", "--fp16", str(art.fp16)]
    return ("onnxruntime", "benchmarks.onnx_backend", args, {})


def _start(spec, work: Path) -> Worker:
    label, module, args, env = spec
    log.info("starting worker %s", label)
    return Worker(label, module, args, env, work / f"worker-{label}.log")


def run(args, profile: Profile) -> dict:
    from benchmarks import artifacts, results as results_lib

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    res: dict = {"meta": {"profile": profile.name, "t0": started, "command": " ".join(sys.argv),
                          "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "gpu_requested": args.gpu},
                 "machine": machine.describe(), "versions": machine.versions(), "errors": {}}
    log.info("SGEMM peak (before)")
    res["peak"] = {"before": sgemm_peak()}

    art = artifacts.prepare_model(args.model, work)
    # Keras workers need only the model file: start them first, so their (single-threaded)
    # imports overlap with the coordinator's own set-up.
    workers: dict[str, Worker] = {}
    specs = _worker_specs(art, profile, work, args.gpu)
    for spec in specs:
        if spec[1] == "benchmarks.keras_backend":
            workers[spec[0]] = _start(spec, work)
    try:
        import keras

        from unet_keras.model import load_model

        keras_model = load_model(art.model_path)
        sizes = sorted({*profile.latency_sizes, profile.throughput_size, profile.train_size,
                        *(profile.gpu_sizes if args.gpu else ())})
        res["model"] = {"path": str(art.model_path), "trained": art.trained,
                        "config": art.config.to_dict(), "parameters": keras_model.count_params(),
                        "gflop": {str(s): model_gflop(keras_model, s, s) for s in sizes}}
        artifacts.write_torch_inputs(art, keras_model, work)
        del keras_model
        keras.backend.clear_session()
        # Specs again: the PyTorch worker's arguments name the files just written.
        for spec in _worker_specs(art, profile, work, args.gpu):
            if spec[0] not in workers:
                workers[spec[0]] = _start(spec, work)
        log.info("loading test data and exporting ONNX while workers start")
        try:
            calibration = artifacts.load_test_data(art, work, args.data_dir,
                                                   profile.calibration_images)
        except Exception as err:  # no data: timings go on, accuracy is n/a
            calibration = []
            res["errors"]["data"] = f"{type(err).__name__}: {err}"
        artifacts.export_all(art, work, calibration, fp16=args.gpu)
        workers["onnxruntime"] = _start(_ort_spec(art, work, args.gpu), work)
        res["model"].update(notes=art.notes, data_source=art.data_source,
                            onnx=str(art.onnx), int8=str(art.int8) if art.int8 else None)
        res["runtimes"] = {}
        for label, worker in list(workers.items()):
            try:
                for name, info in worker.wait_ready(args.start_timeout).items():
                    res["runtimes"][name] = {"worker": label, **info}
                res.setdefault("memory", {})[label] = {"ready": worker.ready_memory}
            except WorkerError as err:
                log.warning("%s", err)
                res["errors"][label] = str(err)
                del workers[label]
        log.info("runtimes: %s", ", ".join(res["runtimes"]))
        results_lib.measure_all(res, workers, art, profile, work, args)
    finally:
        for worker in workers.values():
            worker.close()
    log.info("SGEMM peak (after)")
    res["peak"]["after"] = sgemm_peak()
    res["machine"]["load_average_end"] = machine.load_average()
    res["meta"]["duration_s"] = round(time.time() - started, 1)
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="profile", const="quick",
                      help="128/256 px, a few batches, short training (default; <= 5 min on 2 cores)")
    size.add_argument("--full", action="store_const", dest="profile", const="full",
                      help="128-512 px, batches to 16, XLA flag variants, longer training")
    parser.add_argument("--gpu", action="store_true", help="add GPU runtimes when a GPU is present")
    parser.add_argument("--model", help="trained .keras file (config.json beside it); "
                                        "default: the untrained seed U-Net")
    parser.add_argument("--data-dir", help="dataset directory (default: unet_keras's search)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--work", help="scratch directory for models, inputs, logs and raw "
                                       "profiles (default: a temporary one, removed at the end)")
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--call-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    if not args.gpu:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")  # no accelerator probing in the coordinator
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from benchmarks import plots, report

    profile = PROFILES[args.profile or "quick"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keep_work = bool(args.work)
    if not keep_work:
        args.work = tempfile.mkdtemp(prefix="unet-keras-bench-")
    try:
        res = run(args, profile)
    finally:
        if not keep_work:
            shutil.rmtree(args.work, ignore_errors=True)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    figures = plots.write_all(res, out)
    (out / "REPORT.md").write_text(report.render(res, figures))
    log.info("wrote %s (%.0f s)", out / "REPORT.md", res["meta"]["duration_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
