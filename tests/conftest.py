import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from unet_keras import compile_cache

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One XLA compilation cache for the session, the command's own (unet_keras.compile_cache), shared
# with every subprocess the tests start (they inherit the environment) and between pytest-xdist
# workers (its size cap turns on JAX's file lock). Most tests build the same tiny models, and
# JAX compiles each weight initializer and train step anew in every process: a CLI training of
# a depth-2 model took 36 s without the cache and 13 s with it. Set before anything imports jax.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="unet_keras_tests_xla_")
    atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
    os.environ[compile_cache.CACHE_ENV] = _XLA_CACHE
    compile_cache.enable()
# The tests' models are tiny, so compiling is most of their time: XLA's backend optimisation
# has nothing to gain there and makes compiling 2-3x slower.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = (REPO / "../shared/datasets/wbc-zheng2018").resolve()


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    if not (DATA_DIR / "Dataset 1").is_dir():
        pytest.skip(f"real dataset not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(autouse=True, scope="session")
def tfds_cache(tmp_path_factory):
    """Keep TFDS caches of the tests out of the user's home."""
    os.environ["WBC_TFDS_DIR"] = str(tmp_path_factory.mktemp("tfds"))


def run_python(code: str, backend: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter under a given Keras backend (it cannot switch in-process)."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unet_keras.cli", *args], cwd=cwd or REPO,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
