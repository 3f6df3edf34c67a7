"""numpy's 2048^3 SGEMM as a worker runtime, timed in the same rounds as the models::

    python -m benchmarks.sgemm_backend

Hosts ``numpy-sgemm``: each call multiplies two fixed float32 2048 x 2048 matrices (whatever the
input). Timed between the models' calls, it measures the practical FP32 peak under the very load
the models see, so "share of peak" is a ratio within each round, like the speed-ups.
"""

from __future__ import annotations

import sys

import numpy as np

from benchmarks.flops import SGEMM_N, _blas_name
from benchmarks.worker import Runtime, serve


class Sgemm(Runtime):
    name = "numpy-sgemm"

    def __init__(self, n: int = SGEMM_N):
        rng = np.random.default_rng(0)
        a = rng.random((n, n), dtype=np.float32)
        b = rng.random((n, n), dtype=np.float32)
        self.n = n
        self.infer = lambda x: a @ b

    def info(self) -> dict:
        return {"reference": True, "gflop_per_call": 2 * self.n**3 / 1e9, "blas": _blas_name(),
                "call": f"numpy float32 {self.n}x{self.n} @ {self.n}x{self.n}"}


def main() -> int:
    return serve(lambda: {"numpy-sgemm": Sgemm()})


if __name__ == "__main__":
    sys.exit(main())
