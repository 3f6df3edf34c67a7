"""The machine a report was measured on: CPU, cores, memory, load, library versions, threads."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
from pathlib import Path

PACKAGES = ("keras", "jax", "jaxlib", "tensorflow-cpu", "tensorflow", "torch", "onnx",
            "onnxruntime", "onnxruntime-gpu", "tf2onnx", "numpy", "unet-keras")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "XLA_FLAGS",
                    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "KMP_BLOCKTIME")
# FP32 lanes x FMA units, for the theoretical peak: AVX-512 parts have two 512-bit FMA units
# on server cores (one on some client parts: the estimate says so), AVX2 two 256-bit.
SIMD_FP32_LANES = (("avx512f", 16), ("avx2", 8), ("avx", 8), ("sse2", 4))


def cpu_info() -> dict:
    """CPU model, logical cores, frequency and vector extensions from /proc/cpuinfo."""
    model, mhz, flags = platform.processor() or platform.machine(), None, set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name":
                model = value
            elif key == "cpu MHz" and mhz is None:
                mhz = float(value)
            elif key == "flags" and not flags:
                flags = set(value.split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lanes = next((n for flag, n in SIMD_FP32_LANES if flag in flags), 1)
    info = {"model": model, "logical_cores": cores, "mhz": mhz,
            "vector_extensions": sorted(f for f in flags if f.startswith(("avx", "fma", "amx"))),
            "fp32_lanes": lanes}
    if mhz and "fma" in flags:
        # cores x 2 FMA units x lanes x 2 FLOPs x clock: an upper bound (turbo and AVX-512
        # clock offsets are unknown in a VM); the report judges against measured SGEMM instead.
        info["theoretical_fp32_gflops"] = round(cores * 2 * lanes * 2 * mhz / 1000, 1)
    return info


def memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    return None


def load_average() -> list[float] | None:
    with contextlib.suppress(OSError):
        return [round(v, 2) for v in os.getloadavg()]
    return None


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def describe() -> dict:
    return {"cpu": cpu_info(), "memory_gib": memory_gib(), "platform": platform.platform(),
            "load_average_start": load_average(),
            "thread_environment": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ}}
