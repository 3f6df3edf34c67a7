"""Runtimes in their own processes, timed on request: the protocol between coordinator and workers.

Each framework runs in a worker process (``python -m benchmarks.keras_backend``,
``benchmarks.onnx_backend``, ``benchmarks.torch_backend``): the Keras backend cannot change inside
a process, and separate processes keep thread pools and allocators apart. The coordinator sends
one JSON command per line on the worker's stdin and reads one JSON answer per line; it asks each
worker in turn for a few timed runs, round after round, so a noisy machine slows every runtime
alike and ratios taken in one run stay fair. An idle worker blocks on its stdin and uses no CPU.

Commands (``op``): ``infer`` (timed calls on a fixed random batch), ``predict`` (probabilities of
an ``.npy`` batch, written to ``.npy``), ``train`` (timed training steps), ``profile`` (a
runtime-specific op-level profile), ``memory``, ``quit``. The worker's first line is
``{"ready": true, "runtimes": {name: info}}``.
"""

from __future__ import annotations

import json
import os
import resource
import select
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, IO

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def input_batch(batch: int, size: int) -> np.ndarray:
    """The fixed float32 NHWC input in [0, 1] every runtime is timed on (same numbers everywhere)."""
    return np.random.default_rng(1000 * size + batch).random((batch, size, size, 3), np.float32)


def training_arrays(steps: int, batch: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic (image, whole-cell target) arrays for ``steps`` training batches, NHWC."""
    rng = np.random.default_rng(7)
    x = rng.random((steps * batch, size, size, 3), np.float32)
    y = (rng.random((steps * batch, size, size, 1)) > 0.5).astype(np.float32)
    return x, y


def memory_mib() -> dict[str, float]:
    """Peak (VmHWM) and current (VmRSS) resident memory of this process, MiB.

    Not ``ru_maxrss``: Linux carries it across fork and exec, so a worker would report the
    coordinator's footprint at the moment it was started.
    """
    found = {"VmHWM": float("nan"), "VmRSS": float("nan")}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in found:
                found[key] = int(line.split()[1]) / 1024  # kB
    except OSError:
        found["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_rss_mib": round(found["VmHWM"], 1), "rss_mib": round(found["VmRSS"], 1)}


class Runtime:
    """What a worker hosts under one name. Subclasses set ``infer`` and/or ``train``.

    ``infer(prepare(x))`` takes a float32 NHWC numpy batch and returns the probabilities,
    synchronously. On CPU ``prepare`` is the identity and ``infer`` returns numpy: the
    conversions from and to numpy are inside the timed call, for every runtime. A GPU runtime
    may move the input to the device in ``prepare`` (untimed) and return a device array that
    ``to_numpy`` copies back, so a batch's timing is the device's work.
    ``train(steps)`` runs that many optimiser steps on fixed synthetic batches and returns
    when they are done.
    """

    name = "runtime"
    infer: Callable[[object], object] | None = None
    train: Callable[[int], None] | None = None

    def prepare(self, x: np.ndarray) -> object:
        return x

    def to_numpy(self, out: object) -> np.ndarray:
        return np.asarray(out)

    def info(self) -> dict:
        return {}

    def profile(self, request: dict) -> dict:
        raise NotImplementedError(f"{self.name}: no profiler")


def _timed(fn: Callable[[], object], runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def _handle(runtimes: dict[str, Runtime], request: dict, warmed: set) -> dict:
    op = request["op"]
    if op == "memory":
        return memory_mib()
    runtime = runtimes[request["runtime"]]
    if op == "infer":
        x = runtime.prepare(input_batch(request["batch"], request["size"]))
        key = ("infer", request["batch"], request["size"])
        if key not in warmed:
            _timed(lambda: runtime.infer(x), request.get("warmup", 2))
            warmed.add(key)
        return {"seconds": _timed(lambda: runtime.infer(x), request["runs"])}
    if op == "predict":
        x = np.load(request["inputs"])
        batch = request.get("batch", 16)
        start = time.perf_counter()
        out = np.concatenate([runtime.to_numpy(runtime.infer(runtime.prepare(x[i:i + batch])))
                              for i in range(0, len(x), batch)])
        seconds = time.perf_counter() - start
        np.save(request["outputs"], out.astype(np.float32))
        return {"seconds": seconds}
    if op == "train":
        if ("train",) not in warmed:
            runtime.train(request.get("warmup", 2))
            warmed.add(("train",))
        return {"seconds": _timed(lambda: runtime.train(request["steps"]), request.get("rounds", 1))}
    if op == "profile":
        return runtime.profile(request)
    raise ValueError(f"unknown op {op!r}; expected infer, predict, train, profile, memory, quit")


def serve(build: Callable[[], dict[str, Runtime]]) -> int:
    """Worker main loop: build the runtimes, announce them, answer commands until ``quit``.

    Frameworks print to stdout; the protocol gets a private copy of the original stdout and
    everything else written to fd 1 goes to stderr (the worker's log file).
    """
    protocol: IO[str] = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(message: dict) -> None:
        protocol.write(json.dumps(message, default=float) + "\n")

    try:
        runtimes = build()
    except Exception as err:
        traceback.print_exc()
        send({"ready": False, "error": f"{type(err).__name__}: {err}"})
        return 1
    described = {name: {**r.info(), "infer": r.infer is not None, "train": r.train is not None}
                 for name, r in runtimes.items()}
    send({"ready": True, "runtimes": described, **memory_mib()})
    warmed: dict[str, set] = {name: set() for name in runtimes}
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        try:
            reply = _handle(runtimes, request, warmed.setdefault(request.get("runtime"), set()))
            send({"ok": True, **reply, **memory_mib()})
        except Exception as err:
            traceback.print_exc()
            send({"ok": False, "error": f"{type(err).__name__}: {err}"})
    return 0


class WorkerError(RuntimeError):
    """A worker that failed to start, crashed, answered with an error or timed out."""


class Worker:
    """The coordinator's handle on one worker process.

    Args:
        module: the worker module, run as ``python -m module *args``.
        args: its command-line arguments.
        env: extra environment variables (KERAS_BACKEND, XLA_FLAGS, ...).
        log_path: the worker's stderr goes here.
    """

    def __init__(self, label: str, module: str, args: list[str], env: dict[str, str],
                 log_path: Path):
        self.label = label
        self.log_path = log_path
        self._log = open(log_path, "w")
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            "TF_CPP_MIN_LOG_LEVEL": "3", **env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=REPO, env=full_env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, bufsize=1)
        self.runtimes: dict[str, dict] = {}
        self.error: str | None = None

    def _read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            self.close(kill=True)
            raise WorkerError(f"{self.label}: no answer within {timeout:.0f} s (log {self.log_path})")
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise WorkerError(f"{self.label}: exited with status {code}; last log lines:\n"
                              + self.log_tail())
        return json.loads(line)

    def wait_ready(self, timeout: float) -> dict[str, dict]:
        message = self._read(timeout)
        if not message.get("ready"):
            self.error = message.get("error", "not ready")
            self.close()
            raise WorkerError(f"{self.label}: {self.error}")
        self.runtimes = message["runtimes"]
        self.ready_memory = {k: message.get(k) for k in ("peak_rss_mib", "rss_mib")}
        return self.runtimes

    def call(self, request: dict, timeout: float) -> dict:
        if self.process.poll() is not None:
            raise WorkerError(f"{self.label}: not running")
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = self._read(timeout)
        if not reply.get("ok"):
            raise WorkerError(f"{self.label}: {request['op']} failed: {reply.get('error')}")
        return reply

    def log_tail(self, lines: int = 12) -> str:
        self._log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self, kill: bool = False) -> None:
        if self.process.poll() is None:
            if not kill:
                try:
                    self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                    self.process.stdin.flush()
                    self.process.wait(timeout=20)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self._log.close()
