"""The unet-keras command's persistent XLA compilation cache (unet_keras.compile_cache)."""

import os
import subprocess
import sys

from tests.conftest import REPO
from unet_keras import compile_cache


def test_enable_points_jax_at_the_chosen_directory(tmp_path):
    env = {compile_cache.CACHE_ENV: str(tmp_path / "xla")}
    assert compile_cache.enable(env) == tmp_path / "xla"
    assert (tmp_path / "xla").is_dir()
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "xla")
    assert env["JAX_COMPILATION_CACHE_MAX_SIZE"] == str(compile_cache.MAX_BYTES)


def test_default_directory_is_under_the_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    env: dict[str, str] = {}
    assert compile_cache.enable(env) == tmp_path / ".cache" / "unet_keras" / "xla"


def test_users_own_jax_cache_off_and_other_backends_are_left_alone(tmp_path):
    own = {"JAX_COMPILATION_CACHE_DIR": "/somewhere/else", compile_cache.CACHE_ENV: str(tmp_path)}
    assert compile_cache.enable(own) is None
    assert own == {"JAX_COMPILATION_CACHE_DIR": "/somewhere/else",
                   compile_cache.CACHE_ENV: str(tmp_path)}
    off = {compile_cache.CACHE_ENV: "off"}
    assert compile_cache.enable(off) is None and off == {compile_cache.CACHE_ENV: "off"}
    torch = {compile_cache.CACHE_ENV: str(tmp_path), "KERAS_BACKEND": "torch"}
    assert compile_cache.enable(torch) is None and "JAX_COMPILATION_CACHE_DIR" not in torch


def test_unusable_directory_means_no_cache(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = {compile_cache.CACHE_ENV: str(blocker / "xla")}
    assert compile_cache.enable(env) is None
    assert "JAX_COMPILATION_CACHE_DIR" not in env


def test_jax_writes_compiled_programs_there(tmp_path):
    """The variables are the ones JAX reads: a jitted function lands in the directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env[compile_cache.CACHE_ENV] = str(tmp_path / "xla")
    code = ("from unet_keras import compile_cache; compile_cache.enable()\n"
            "import jax, jax.numpy as jnp\n"
            "print(float(jax.jit(lambda x: (x * 3).sum())(jnp.ones(5))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "15.0"
    assert any(path.name.endswith("-cache") for path in (tmp_path / "xla").iterdir())


def test_every_command_enables_it_first(tmp_path, monkeypatch):
    from unet_keras import cli

    calls = []
    monkeypatch.setattr(compile_cache, "enable", lambda: calls.append("enable"))
    assert cli.main(["tune", "--model", str(tmp_path / "nothing"), "--synthetic"]) == 1
    assert calls == ["enable"]
