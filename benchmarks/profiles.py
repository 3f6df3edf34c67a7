"""What ``--quick`` and ``--full`` measure: sizes, batches, run counts and variants."""

from __future__ import annotations

import dataclasses

# XLA:CPU flag sets tried on the Keras-JAX training step (--full). Each runs in its own worker,
# since XLA reads XLA_FLAGS once per process.
JAX_FLAG_VARIANTS = (
    ("eigen-1thread", "--xla_cpu_multi_thread_eigen=false"),
    ("no-ynn", "--xla_cpu_experimental_ynn_fusion_type="),
    ("onednn", "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true"),
    ("fast-math", "--xla_cpu_enable_fast_math=true"),
)


@dataclasses.dataclass(frozen=True)
class Profile:
    """A measurement plan. Every timing is ``rounds`` x ``runs_per_round`` calls (>= 20) after
    ``warmup`` untimed calls, interleaved across runtimes round by round."""

    name: str
    latency_sizes: tuple[int, ...]
    throughput_size: int
    throughput_batches: tuple[int, ...]
    rounds: int = 5
    runs_per_round: int = 4
    warmup: int = 2
    train_size: int = 128
    train_batch: int = 16
    train_rounds: int = 3
    train_steps: int = 2  # per round
    train_warmup: int = 2  # steps, the first compiles
    calibration_images: int = 16
    profile_runs: int = 5
    keras_predict: bool = True
    channels_last: bool = False
    jax_flag_variants: tuple[tuple[str, str], ...] = ()
    gpu_sizes: tuple[int, ...] = (256,)
    gpu_batches: tuple[int, ...] = (1, 64, 256)
    gpu_train_steps: int = 10
    # Wall-clock budget of the whole run (None: no limit). The optional measurements, taken
    # last (throughput at batch > 1, the jax profile), are skipped, and the report says so,
    # when their estimated time exceeds what is left minus ``reserve_s``.
    budget_s: float | None = None
    reserve_s: float = 10.0

    @property
    def runs(self) -> int:
        return self.rounds * self.runs_per_round


QUICK = Profile(
    name="quick", latency_sizes=(128, 256), throughput_size=128, throughput_batches=(1, 2, 4),
    train_steps=1, train_warmup=1, keras_predict=False, budget_s=285.0,
)

FULL = Profile(
    name="full", latency_sizes=(128, 256, 512), throughput_size=256,
    throughput_batches=(1, 2, 4, 8, 16), rounds=5, runs_per_round=4, warmup=3,
    train_rounds=5, train_steps=4, train_warmup=3, calibration_images=64, profile_runs=10,
    channels_last=True, jax_flag_variants=JAX_FLAG_VARIANTS,
)

PROFILES = {"quick": QUICK, "full": FULL}
