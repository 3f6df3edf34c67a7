"""Kill-safe training: SIGKILL a real training process mid-epoch and resume it; bit-exact resume;
a NaN loss stops training and keeps the last good checkpoint; runs that cannot be resumed."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest

from tests.conftest import REPO, run_cli
from unet_keras import cli
from unet_keras.config import UNetConfig

TINY = ["--depth", "2", "--base-filters", "4", "--image-size", "32", "--batch-size", "8"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# The training subprocesses see the suite's XLA compilation cache and flags (conftest) through
# the environment; unbuffered, so the killed run's progress reaches the test as it prints.
UNBUFFERED = {"PYTHONUNBUFFERED": "1"}


def read_state(checkpoint) -> dict:
    """The JSON state inside checkpoint.npz, read with numpy alone (the format is plain)."""
    with np.load(checkpoint, allow_pickle=False) as npz:
        return json.loads(npz["state"].tobytes())


def history_rows(path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def test_sigkill_mid_epoch_then_resume(tmp_path):
    out = tmp_path / "run"
    partial = tmp_path / "run.partial"
    proc = subprocess.Popen(
        [sys.executable, "-m", "unet_keras.cli", "train", "--synthetic", "--epochs", "4", *TINY,
         "--out", str(out)],
        cwd=REPO, env={**os.environ, **UNBUFFERED}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = bytearray()
    reader = threading.Thread(target=lambda: [seen.extend(chunk) for chunk in iter(
        lambda: proc.stdout.read1(4096), b"")], daemon=True)
    reader.start()
    # Kill at a step in the first half of an epoch after the first: mid-epoch, never near a save.
    killed_in = None
    deadline = time.monotonic() + 240
    while killed_in is None and proc.poll() is None and time.monotonic() < deadline:
        text = ANSI.sub("", seen.decode(errors="replace"))
        epochs = list(re.finditer(r"Epoch (\d+)/\d+", text))
        if epochs and int(epochs[-1].group(1)) >= 2:
            steps = [(int(k), int(n)) for k, n in re.findall(r"(\d+)/(\d+) ━", text[epochs[-1].end():])]
            if any(2 <= k <= n // 2 for k, n in steps):
                proc.send_signal(signal.SIGKILL)
                killed_in = int(epochs[-1].group(1))
        time.sleep(0.02)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    assert killed_in is not None, ANSI.sub("", seen.decode(errors="replace"))[-3000:]
    assert proc.returncode == -signal.SIGKILL

    # What the kill left: the previous epoch's checkpoint, complete and consistent.
    assert partial.is_dir() and not out.exists()
    state = read_state(partial / "checkpoint.npz")
    assert state["epochs_done"] == killed_in - 1
    assert len(history_rows(partial / "history.csv")) == killed_in - 1
    assert zipfile.ZipFile(partial / "model.keras").testzip() is None
    assert json.loads((partial / "config.json").read_text())["epochs"] == 4
    before = history_rows(partial / "history.csv")

    done = run_cli("train", "--resume", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"after epoch {killed_in - 1} of 4" in done.stdout
    assert out.is_dir() and not partial.exists() and not (out / "checkpoint.npz").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporaries
    rows = history_rows(out / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert rows[:killed_in - 1] == before  # completed epochs were kept, not redone
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 4 and metrics["resumed_after_epochs"] == [killed_in - 1]
    best = max(range(4), key=lambda i: float(rows[i]["val_dice"]))
    assert metrics["best_epoch"] == best + 1
    assert metrics["best_val_dice_at_0.5"] == pytest.approx(float(rows[best]["val_dice"]))


def in_subprocess(function: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    """Run ``function(*args)`` of this module in a fresh interpreter with ``env`` added."""
    code = f"import sys; from tests.test_resume import {function}; sys.exit({function}(*sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)


def train_twice_interrupted(workdir: str, ema: str = "0", final_zoom: str = "0",
                            deep: str = "0") -> int:
    """The same 3-epoch run twice, each interrupted (KeyboardInterrupt, as Ctrl-C would) and
    resumed: "after_training" while scoring the test fold, after its last epoch, so its training
    ran straight through; "mid_epoch" inside a batch of epoch 2."""
    from pathlib import Path

    import unet_keras.train
    from unet_keras.data.loading import load_fold
    from unet_keras.data.pipeline import TrainingBatches
    from unet_keras.train import train

    workdir = Path(workdir)
    config = dict(depth=2, base_filters=4, image_size=32, batch_size=8, epochs=3, ema=float(ema),
                  final_zoom_epochs=int(final_zoom), deep_supervision=int(deep))
    data = load_fold(UNetConfig(**config), synthetic=True)
    getitem, tune, calls = TrainingBatches.__getitem__, unet_keras.train.tune_postprocessing, [0]

    def interrupted_batch(self, index):
        calls[0] += 1
        if calls[0] == 1 + len(self) + 3:  # fit's peek, epoch 1, three batches of epoch 2
            raise KeyboardInterrupt
        return getitem(self, index)

    def interrupted_scoring(*args):
        raise KeyboardInterrupt

    for name, target, attribute, replacement in [
            ("after_training", unet_keras.train, "tune_postprocessing", interrupted_scoring),
            ("mid_epoch", TrainingBatches, "__getitem__", interrupted_batch)]:
        original = getattr(target, attribute)
        setattr(target, attribute, replacement)
        try:
            train(UNetConfig(**config), data, workdir / name, verbose=0)
        except KeyboardInterrupt:
            pass
        setattr(target, attribute, original)
        partial = workdir / f"{name}.partial"
        (workdir / f"{name}.json").write_text(json.dumps(read_state(partial / "checkpoint.npz")))
        train(UNetConfig.load(partial / "config.json"), data, workdir / name, verbose=0, resume=True)
    assert (getitem, tune) == (TrainingBatches.__getitem__, unet_keras.train.tune_postprocessing)
    return 0


@pytest.mark.parametrize("ema, final_zoom, deep",
                         [("0", "0", "0"), ("0.9", "0", "0"), ("0", "2", "0"), ("0", "0", "1")],
                         ids=["raw-weights", "weight-average", "final-zoom", "deep-supervision"])
def test_resume_continues_exactly(tmp_path, ema, final_zoom, deep):
    """Interrupted mid-epoch and resumed == trained straight through, to the last bit; also
    with a moving average of the weights, whose checkpoint holds the raw weights and the
    average apart, with the zoom narrowed from the interrupted epoch on (the resumed run
    sets it again), and with deep supervision, whose checkpoint holds the auxiliary heads while
    model.keras, written again on resuming, holds the U-Net alone."""
    done = in_subprocess("train_twice_interrupted", str(tmp_path), ema, final_zoom, deep,
                         env=UNBUFFERED)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, epochs_done in [("after_training", 3), ("mid_epoch", 1)]:
        assert json.loads((tmp_path / f"{name}.json").read_text())["epochs_done"] == epochs_done
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics["resumed_after_epochs"] == [epochs_done] and metrics["epochs_run"] == 3
    straight = history_rows(tmp_path / "after_training" / "history.csv")
    resumed = history_rows(tmp_path / "mid_epoch" / "history.csv")
    assert len(straight) == 3 and resumed == straight  # losses and val Dice, every digit
    a, b = (keras_arrays(tmp_path / name / "model.keras") for name in ("after_training", "mid_epoch"))
    layers = [name for name in a if name.startswith("layers/")]
    assert len(layers) > 10 and a.keys() == b.keys()
    # The heads are training's only; their weights shape the shared layers' steps, so a resumed
    # run that lost them would not repeat the straight run's losses.
    assert not [name for name in layers if "aux" in name]
    for name in layers:  # model.keras's optimizer state is a by-product; checkpoint.npz has the real one
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    scores = [json.loads((tmp_path / name / "metrics.json").read_text())["test"]
              for name in ("after_training", "mid_epoch")]
    assert scores[0] == scores[1]


def keras_arrays(path) -> dict:
    """Every array stored in a .keras file (a zip holding model.weights.h5), without Keras."""
    import io

    import h5py

    with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as h5:
        found = {}
        h5.visititems(lambda name, item: found.__setitem__(name, item[()])
                      if isinstance(item, h5py.Dataset) else None)
        return found


def train_with_nan_from_epoch_2(out: str) -> int:
    """``unet-keras train`` whose inputs hold NaN from the second epoch on; returns its exit code."""
    from unet_keras.data.pipeline import TrainingBatches

    getitem, calls = TrainingBatches.__getitem__, [0]

    def poisoned(self, index):
        calls[0] += 1
        x, y = getitem(self, index)
        if calls[0] > 1 + len(self):  # after fit's peek and the whole first epoch
            x[:] = np.nan
        return x, y

    TrainingBatches.__getitem__ = poisoned
    return cli.main(["train", "--synthetic", "--epochs", "3", *TINY, "--out", out])


def test_nan_loss_stops_with_exit_4_and_keeps_last_good_checkpoint(tmp_path):
    out = tmp_path / "nan"
    done = in_subprocess("train_with_nan_from_epoch_2", str(out), env=UNBUFFERED)
    assert done.returncode == cli.EXIT_DIVERGED == 4, done.stderr[-3000:]
    assert "loss became NaN/Inf at epoch 2, step 1" in done.stderr
    assert f"the last good checkpoint (epoch 1) is kept in {out}.partial" in done.stderr
    partial = tmp_path / "nan.partial"
    assert not out.exists() and read_state(partial / "checkpoint.npz")["epochs_done"] == 1
    assert [r["epoch"] for r in history_rows(partial / "history.csv")] == ["0"]
    weights = keras_arrays(partial / "model.keras")
    assert weights and all(np.all(np.isfinite(w)) for w in weights.values())


def _fake_partial(root, splits=None):
    partial = root / "run.partial"
    partial.mkdir()
    UNetConfig(depth=2, base_filters=4, image_size=32, epochs=2).save(partial / "config.json")
    run = {"data_args": {"data_dir": None, "synthetic": True}, "splits": splits}
    (partial / "run.json").write_text(json.dumps(run))
    return partial


@pytest.mark.parametrize("case, code, message", [
    ("nothing_there", 1, "no interrupted run to resume"),
    ("complete", 1, "this run is complete; nothing to resume"),
    ("recipe_flags", 2, "--resume continues the recipe saved in the run's config.json; drop --epochs --stain"),
    ("corrupt_checkpoint", 1, "checkpoint.npz: unreadable checkpoint"),
    ("partial_in_the_way", 1, "holds an interrupted run; continue it with `unet-keras train --resume"),
    ("other_data", 1, "the train images differ from those the run started with"),
], ids=["nothing_there", "complete", "recipe_flags", "corrupt_checkpoint", "partial_in_the_way",
        "other_data"])
def test_runs_that_cannot_be_resumed(tmp_path, capsys, case, code, message):
    out = tmp_path / "run"
    args = ["train", "--resume", str(out)]
    if case == "complete":
        out.mkdir()
    elif case == "recipe_flags":
        _fake_partial(tmp_path)
        args += ["--epochs", "9", "--stain"]
    elif case == "corrupt_checkpoint":
        (_fake_partial(tmp_path) / "checkpoint.npz").write_bytes(b"PK\x03\x04 not a zip")
    elif case == "partial_in_the_way":
        _fake_partial(tmp_path)
        args = ["train", "--synthetic", *TINY, "--out", str(out)]
    elif case == "other_data":
        _fake_partial(tmp_path, splits={"train": ["001"], "val": ["002"], "test": ["003"]})
    assert cli.main(args) == code
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--resume"], ["--synthetic", *TINY, "--out"]], ids=["resume", "new"])
def test_training_into_a_running_run_is_refused(tmp_path, capsys, args):
    from unet_keras.dirlock import exclusive_dir

    partial = _fake_partial(tmp_path)
    with exclusive_dir(partial, ".unet-keras-train.lock", "`unet-keras train`"):  # "running"
        code = cli.main(["train", *args, str(tmp_path / "run")])
    assert code == cli.EXIT_BUSY == 5
    assert (f"{partial}: another `unet-keras train` (pid {os.getpid()}) is writing to this directory"
            in capsys.readouterr().err)


def test_a_new_run_failing_before_training_leaves_nothing(tmp_path, monkeypatch):
    """A full disk while writing run.json: no .partial is left to refuse both a resume and a
    new run into the same name."""
    import errno

    import unet_keras.train
    from unet_keras.data.loading import load_fold
    from unet_keras.train import train

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    config = UNetConfig(depth=2, base_filters=4, image_size=32, batch_size=8, epochs=1)
    monkeypatch.setattr(unet_keras.train, "atomic_write_text", full)
    with pytest.raises(OSError, match="No space left"):
        train(config, load_fold(config, synthetic=True), tmp_path / "run", verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_weight_average_is_what_validation_scores_and_the_run_keeps(tmp_path, monkeypatch):
    """With ``ema``, the epoch's validation Dice and model.keras come from the optimizer's moving
    average of the weights, while checkpoint.npz keeps the raw weights to continue from."""
    import keras

    from unet_keras.checkpoint import read_checkpoint, restore
    from unet_keras.data.loading import load_fold
    from unet_keras.evaluate import score_probabilities
    from unet_keras.inference import predict_probabilities
    import unet_keras.train
    from unet_keras.model import build_training_model, load_model
    from unet_keras.train import compile_model, train

    def stop(*args):
        raise KeyboardInterrupt

    # Moving batch-norm statistics: the kept model is then exactly the one validation scored.
    config = UNetConfig(depth=2, base_filters=4, image_size=32, batch_size=8, epochs=1, ema=0.5,
                        batch_norm_stats="moving")
    data = load_fold(config, synthetic=True)
    # Stopped when it comes to scoring, so that the run keeps its checkpoint (in run.partial).
    monkeypatch.setattr(unet_keras.train, "tune_postprocessing", stop)
    with pytest.raises(KeyboardInterrupt):
        train(config, data, tmp_path / "run", verbose=0)

    # The default recipe's deep supervision: the run fits the U-Net with a head on level 1, and
    # averages the head's weights too; model.keras holds the U-Net's averaged weights alone.
    training, model = build_training_model(config)
    assert training is not model
    compile_model(training, config, steps_per_epoch=1)
    checkpoint = read_checkpoint(tmp_path / "run.partial" / "checkpoint.npz")
    (tmp_path / "restored").mkdir()  # restore rewrites model.keras and history.csv there
    restore(training, checkpoint, tmp_path / "restored", saved=model)
    raw = [keras.ops.convert_to_numpy(v) for v in training.trainable_variables]
    average = {v.path: keras.ops.convert_to_numpy(a) for v, a in zip(
        training.trainable_variables, training.optimizer._model_variables_moving_average)}
    kept_model = load_model(tmp_path / "run.partial" / "model.keras")
    kept = {v.path: keras.ops.convert_to_numpy(v) for v in kept_model.trainable_variables}
    assert len(raw) == len(average) == len(kept) + 2 > 10  # + the head's kernel and bias
    assert any(not np.allclose(r, a) for r, a in zip(raw, average.values()))  # not the raw
    for path, value in kept.items():
        np.testing.assert_array_equal(value, average[path])  # one epoch: the kept is the last

    probs = predict_probabilities(kept_model, [e["image"] for e in data.val], config.multiple)
    val_dice = score_probabilities(probs, data.val, (0.5,) * config.out_channels)[1]["whole_cell_dice"]
    logged = float(history_rows(tmp_path / "run.partial" / "history.csv")[0]["val_dice"])
    assert logged == pytest.approx(val_dice, abs=1e-6)


@pytest.mark.parametrize("monitor, kept", [("val_dice", 1), ("val_mean_dice", 2)])
def test_the_monitored_score_picks_the_kept_epoch(tmp_path, monitor, kept):
    """Epoch 1 has the best whole-cell Dice, epoch 2 the best mean of whole-cell and nucleus."""
    from unet_keras.checkpoint import EpochCheckpoint
    from unet_keras.model import build_unet
    from unet_keras.train import compile_model

    class Batches:
        def get_state(self):
            return {}

    config = UNetConfig(depth=2, base_filters=4, image_size=32, out_channels=2)
    model = build_unet(config)
    compile_model(model, config, steps_per_epoch=1)
    model.optimizer.build(model.trainable_variables)
    saver = EpochCheckpoint(tmp_path, Batches(), monitor=monitor)
    saver.set_model(model)
    for epoch, (cell, nucleus) in enumerate([(0.95, 0.80), (0.94, 0.90), (0.93, 0.85)]):
        saver.on_epoch_begin(epoch)
        saver.on_epoch_end(epoch, {"loss": 0.5, "val_dice": cell, "val_nucleus_dice": nucleus,
                                   "val_mean_dice": (cell + nucleus) / 2})
    assert saver.state["best_epoch"] == kept and (tmp_path / "model.keras").is_file()


def test_training_keeps_the_epoch_of_the_best_mean_dice_when_asked(tmp_path):
    from unet_keras.data.loading import load_fold
    from unet_keras.train import train

    config = UNetConfig(depth=2, base_filters=4, image_size=32, batch_size=8, epochs=3,
                        out_channels=2, checkpoint_metric="mean")
    metrics = train(config, load_fold(config, synthetic=True), tmp_path / "run", verbose=0)
    rows = history_rows(tmp_path / "run" / "history.csv")
    for row in rows:
        assert float(row["val_mean_dice"]) == pytest.approx(
            (float(row["val_dice"]) + float(row["val_nucleus_dice"])) / 2)
    best = max(range(3), key=lambda i: float(rows[i]["val_mean_dice"]))
    assert metrics["best_epoch"] == best + 1 and metrics["checkpoint_metric"] == "mean"
    assert metrics["best_val_dice_at_0.5"] == pytest.approx(float(rows[best]["val_dice"]))
    assert metrics["best_val_nucleus_dice_at_0.5"] == pytest.approx(
        float(rows[best]["val_nucleus_dice"]))
