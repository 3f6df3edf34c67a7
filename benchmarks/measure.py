"""Interleaved timing across workers, and the statistics every table is built from.

A measurement (one input shape, or training) is taken in rounds: in each round every runtime
gets ``runs_per_round`` timed calls, the order rotating from round to round. A burst of load
from elsewhere then slows all runtimes of that round alike, and a ratio computed round by round
(``paired_speedup``) cancels it.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Iterable

import numpy as np

from benchmarks.worker import Worker, WorkerError

SETTLE_SECONDS = 0.05  # between blocks: lets the previous runtime's spinning threads park


def summary(seconds: Iterable[float]) -> dict:
    """Median, p10, p90, min, mean (seconds) and count of a list of timings."""
    values = np.asarray(list(seconds), dtype=np.float64)
    if values.size == 0:
        return {"n": 0}
    return {"n": int(values.size), "median": float(np.median(values)),
            "p10": float(np.percentile(values, 10)), "p90": float(np.percentile(values, 90)),
            "min": float(values.min()), "mean": float(values.mean())}


def paired_speedup(reference_rounds: list[list[float]], rounds: list[list[float]]) -> float | None:
    """Median over rounds of (reference round median / this round median): > 1 is faster."""
    ratios = [statistics.median(ref) / statistics.median(mine)
              for ref, mine in zip(reference_rounds, rounds) if ref and mine]
    return statistics.median(ratios) if ratios else None


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def interleaved(workers: dict[str, Worker], request: dict, rounds: int, runs_key: str,
                runs: int, warmup: int, timeout: float, errors: dict[str, str]) -> dict:
    """Time ``request`` (an ``infer`` or ``train`` command) on every runtime, round-robin.

    Args:
        workers: runtime name -> the worker hosting it.
        request: the command without ``runtime``; ``runs_key`` ("runs" or "steps") and
            ``warmup`` are filled in here.
        errors: runtime name -> error; a runtime that fails is recorded here and dropped.
    Returns:
        runtime name -> {"rounds": [[seconds, ...], ...], "seconds": all timings flat}.
    """
    names = [n for n in workers if n not in errors]
    result = {n: {"rounds": [], "seconds": []} for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)] if names else []
        for name in order:
            if name in errors:
                continue
            command = {**request, "runtime": name, runs_key: runs, "warmup": warmup}
            try:
                reply = workers[name].call(command, timeout)
            except WorkerError as err:
                errors[name] = str(err)
                _log(f"  {name}: {err}")
                continue
            result[name]["rounds"].append(reply["seconds"])
            result[name]["seconds"].extend(reply["seconds"])
            time.sleep(SETTLE_SECONDS)
    return {n: v for n, v in result.items() if n not in errors}
