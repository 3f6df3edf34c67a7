"""Bad inputs at the prediction end (docs/reliability.md): a batch with bad files, images too
small or too large, broken model files, unwritable or full output directories, two runs on one
output directory. Outputs are never seen half-written."""

import errno
import os
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, run_cli
from unet_keras import cli, image_io
from unet_keras.config import UNetConfig
from unet_keras.image_io import ImageReadError, atomic_output
from unet_keras.dirlock import OutputBusyError
from unet_keras.predict import collect_inputs, exclusive_output_dir, predict_files

CONFIG = UNetConfig(depth=2, base_filters=4, image_size=32, out_channels=2)
RNG = np.random.default_rng(5)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An untrained depth-2 model saved as a run directory (model.keras + config.json)."""
    from unet_keras.model import build_unet

    run = tmp_path_factory.mktemp("tiny-run")
    model = build_unet(CONFIG)
    model.save(run / "model.keras")
    CONFIG.save(run / "config.json")
    return run, model


def rgb(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), np.uint8)


def visible_files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def hidden_leftovers(folder) -> list[str]:
    """Temporaries that a failed or killed write left (the lock file is expected)."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name.startswith(".") and p.name != ".unet-keras-predict.lock")


def test_batch_predict_refuses_bad_files_and_finishes_the_good_ones(tiny_run, tmp_path):
    run, _ = tiny_run
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = {  # name -> array written; all must come out with a mask of their size
        "good.png": rgb(64, 64), "gray.bmp": rgb(64, 64)[..., 0], "rgba.png": rgb(64, 64)[..., :4],
        "tiny.png": rgb(1, 1), "small.png": rgb(3, 5), "large.png": rgb(300, 260),
    }
    rgba = np.dstack([good["rgba.png"][..., :3], np.full((64, 64), 200, np.uint8)])
    for name, array in good.items():
        Image.fromarray(rgba if name == "rgba.png" else array).save(inputs / name)
    Image.fromarray(rgb(64, 64)).quantize(8).save(inputs / "palette.png")
    Image.fromarray(RNG.integers(0, 65536, (64, 64)).astype(np.uint16)).save(inputs / "gray16.png")
    Image.fromarray(RNG.random((64, 64)).astype(np.float32)).save(inputs / "float.tif")
    nan = np.full((8, 8), 0.5, np.float32)
    nan[2, 2] = np.nan
    Image.fromarray(nan).save(inputs / "nan.tif")
    (inputs / "empty.jpg").write_bytes(b"")
    png = (inputs / "good.png").read_bytes()
    (inputs / "truncated.png").write_bytes(png[:len(png) // 2])
    (inputs / "notes.tif").write_text("not an image\n")
    Image.fromarray(rgb(64, 64)).save(inputs / "good.tif")  # same output name as good.png

    out = tmp_path / "out"
    done = run_cli("predict", str(inputs), "--model", str(run), "--out", str(out), "--tile", "128")
    assert done.returncode == cli.EXIT_PARTIAL == 3, done.stderr[-3000:]
    refused = {line.split(": ")[0].removeprefix("refused ") for line in done.stderr.splitlines()
               if line.startswith("refused ")}
    assert refused == {str(inputs / n) for n in
                       ("empty.jpg", "good.tif", "nan.tif", "notes.tif", "truncated.png")}
    for name, reason in [("empty.jpg", "file is empty (0 bytes)"),
                         ("good.tif", "output name 'good' already used by"),
                         ("nan.tif", "float image contains NaN or Inf values"),
                         ("notes.tif", "content is no known image format"),
                         ("truncated.png", "not a readable image")]:
        assert f"refused {inputs / name}: {inputs / name}: " in done.stderr and reason in done.stderr
    for name, note in [("gray.bmp", "converted grayscale to RGB"),
                       ("rgba.png", "dropped the alpha channel"),
                       ("palette.png", "converted palette image to RGB"),
                       ("gray16.png", "rescaled 16-bit (0..65535) integer image to 8 bits"),
                       ("float.tif", "converted float image (range 0..1) to 8 bits")]:
        assert f"converted {inputs / name}: {note}" in done.stdout
    assert "predicted 9 image(s)" in done.stdout and "refused 5" in done.stdout
    for name, array in good.items():
        stem = name.split(".")[0]
        mask = np.array(Image.open(out / f"{stem}_mask.png"))
        assert mask.shape == array.shape[:2] and set(np.unique(mask)) <= {0, 128, 255}
    assert len(visible_files(out)) == 2 * 9 + 2 and (out / "cells.csv").is_file()
    images = (out / "images.csv").read_text().splitlines()
    assert len(images) == 1 + 9 and any(line.startswith("gray.bmp,") and "grayscale" in line
                                        for line in images)
    assert hidden_leftovers(out) == []


def test_strict_stops_at_the_first_bad_file(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.png", "c.png"):
        Image.fromarray(rgb(16, 16)).save(inputs / name)
    (inputs / "b.png").write_bytes(b"")
    files = sorted(inputs.iterdir())
    with pytest.raises(ImageReadError, match=r"b\.png: file is empty"):
        predict_files(files, lambda image: np.zeros(image.shape[:2] + (1,), np.float32), (0.5,),
                      tmp_path / "out", strict=True)
    assert visible_files(tmp_path / "out") == ["a_mask.png", "a_overlay.png"]


def blank(image):
    return np.zeros(image.shape[:2] + (1,), np.float32)


def test_predict_never_overwrites_an_input_and_reads_a_file_named_twice_once(tmp_path):
    # c.bmp's mask would be written as c_mask.png, an input here; c.bmp is named twice.
    for name in ("c.bmp", "c_mask.png"):
        Image.fromarray(rgb(16, 16)).save(tmp_path / name)
    kept = (tmp_path / "c_mask.png").read_bytes()
    inputs = collect_inputs([tmp_path / "c_mask.png", tmp_path / "c.bmp", tmp_path / "c.bmp"])
    assert [p.name for p in inputs] == ["c_mask.png", "c.bmp"]
    summary = predict_files(inputs, blank, (0.5,), tmp_path)
    assert (tmp_path / "c_mask.png").read_bytes() == kept
    assert summary.written == [str(tmp_path / "c_mask.png")]
    ((path, reason),) = summary.refused
    assert path == str(tmp_path / "c.bmp")
    assert f"would overwrite the input {tmp_path / 'c_mask.png'}" in reason


def test_a_run_that_predicts_nothing_leaves_no_earlier_table(tmp_path):
    Image.fromarray(rgb(16, 16)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"")
    out = tmp_path / "out"
    predict_files([tmp_path / "a.png"], blank, (0.5,), out)
    assert len((out / "images.csv").read_text().splitlines()) == 2
    summary = predict_files([tmp_path / "b.png"], blank, (0.5,), out)
    assert summary.written == [] and len(summary.refused) == 1
    assert len((out / "images.csv").read_text().splitlines()) == 1  # the header alone
    assert len((out / "cells.csv").read_text().splitlines()) == 1


def test_a_bad_tile_or_a_missing_onnx_file_is_refused_before_the_output_exists(tmp_path):
    Image.fromarray(rgb(16, 16)).save(tmp_path / "a.png")
    for extra, code, message in (
            (["--tile", "0"], 2, "--tile: '0': expected a whole number above 0"),
            (["--onnx", str(tmp_path / "nope.onnx")], 1, "nope.onnx: ONNX file not found")):
        done = run_cli("predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), *extra)
        assert done.returncode == code and message in done.stderr, done.stderr[-2000:]
        assert not (tmp_path / "out").exists()


def test_large_images_are_tiled_exactly_and_tiny_ones_padded(tiny_run):
    _, model = tiny_run
    tiled = cli._keras_probability_fn(model, CONFIG, tile=128)
    whole = cli._keras_probability_fn(model, CONFIG, tile=4096)
    image = rgb(300, 260)
    np.testing.assert_allclose(tiled(image), whole(image), atol=1e-5)
    for h, w in [(1, 1), (3, 5), (2, 17)]:
        assert tiled(rgb(h, w)).shape == (h, w, 2)
    with pytest.raises(cli.UsageError, match="--tile 64: expected a multiple of 4"):
        cli._keras_probability_fn(model, CONFIG, tile=64)  # not above the overlap of 68


def test_tiles_average_the_eight_views_like_the_whole_image(tiny_run):
    _, model = tiny_run
    tiled = cli._keras_probability_fn(model, CONFIG, tile=128, tta=True)
    whole = cli._keras_probability_fn(model, CONFIG, tile=4096, tta=True)
    plain = cli._keras_probability_fn(model, CONFIG, tile=128)
    image = rgb(300, 260)
    averaged = tiled(image)
    np.testing.assert_allclose(averaged, whole(image), atol=1e-4)
    assert np.abs(averaged - plain(image)).max() > 1e-3  # the views were averaged, tiles too


def _onnx_model(path, input_name: str, input_shape: list, output_name: str) -> None:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("ReduceMean", [input_name], [output_name], axes=[3], keepdims=1)
    graph = helper.make_graph(
        [node], "other", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.mark.parametrize("case, message", [
    ("keras_garbage", "model.keras: not a loadable Keras model"),
    ("keras_truncated", "model.keras: not a loadable Keras model"),
    ("keras_without_config", "config.json: missing; expected the config.json written beside the model"),
    ("onnx_garbage", "model.onnx: not a loadable ONNX model"),
    ("onnx_nchw_input", "model.onnx: has inputs 'x' tensor(float) [1, 3, 'height', 'width'] "
                        "(channels first: NCHW); outputs"),
    ("onnx_without_metadata", "model.onnx: unusable unet_keras metadata"),
], ids=["keras_garbage", "keras_truncated", "keras_without_config", "onnx_garbage", "onnx_nchw_input",
        "onnx_without_metadata"])
def test_broken_model_files_are_refused(tiny_run, tmp_path, capsys, case, message):
    run, _ = tiny_run
    image = tmp_path / "cell.png"
    Image.fromarray(rgb(16, 16)).save(image)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    if case.startswith("keras"):
        data = (run / "model.keras").read_bytes()
        (model_dir / "model.keras").write_bytes({"keras_garbage": b"not a zip" * 10,
                                                 "keras_truncated": data[:len(data) // 2],
                                                 "keras_without_config": data}[case])
        if case != "keras_without_config":
            CONFIG.save(model_dir / "config.json")
        source = ["--model", str(model_dir)]
    else:
        onnx_path = model_dir / "model.onnx"
        if case == "onnx_garbage":
            onnx_path.write_bytes(b"\x08\x07garbage")
        elif case == "onnx_nchw_input":
            _onnx_model(onnx_path, "x", [1, 3, "height", "width"], "y")
        else:
            _onnx_model(onnx_path, "image", ["batch", "height", "width", 3], "probability")
        source = ["--onnx", str(onnx_path)]
    code = cli.main(["predict", str(image), *source, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR == 1
    assert message in err and err.startswith("unet-keras predict: error: ")
    assert not (tmp_path / "out").exists() or visible_files(tmp_path / "out") == []


def test_unwritable_output_directory(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    (tmp_path / "a_file").write_text("")
    image = tmp_path / "cell.png"
    Image.fromarray(rgb(16, 16)).save(image)
    code = cli.main(["predict", str(image), "--model", str(run), "--out", str(tmp_path / "a_file" / "out")])
    assert code == 1
    assert f"cannot write to output directory {tmp_path / 'a_file' / 'out'}: Not a directory" in capsys.readouterr().err


def _fail_on_call(n: int, error: int):
    """An os.fsync whose n-th call on a file (directories are synced too) raises ``error``,
    where a full or read-only disk reports it for buffered writes."""
    calls = [0]
    real = os.fsync

    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            calls[0] += 1
            if calls[0] == n:
                raise OSError(error, os.strerror(error))
        return real(fd)

    return fsync


@pytest.mark.parametrize("error, words", [(errno.ENOSPC, "No space left on device"),
                                          (errno.EACCES, "Permission denied")], ids=["ENOSPC", "EACCES"])
def test_full_or_unwritable_disk_stops_the_batch_without_partial_files(tmp_path, monkeypatch, error, words):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rgb(16, 16)).save(inputs / name)
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_mask.png").write_bytes(b"the previous run's mask")
    # Writes 1-2 are a's mask and overlay; write 3, b's mask, fails when flushed to disk.
    monkeypatch.setattr(image_io.os, "fsync", _fail_on_call(3, error))
    with pytest.raises(OSError) as caught:
        predict_files(sorted(inputs.iterdir()), lambda image: np.full(image.shape[:2] + (1,), 0.9, np.float32),
                      (0.5,), out)
    assert caught.value.errno == error
    assert str(caught.value) == f"[Errno {error}] cannot write {out / 'b_mask.png'}: {words}"
    assert visible_files(out) == ["a_mask.png", "a_overlay.png", "b_mask.png"]
    assert (out / "b_mask.png").read_bytes() == b"the previous run's mask"  # old file intact
    assert np.array(Image.open(out / "a_mask.png")).shape == (16, 16)  # complete files only
    assert hidden_leftovers(out) == []


def test_full_disk_through_the_cli_exits_1(tiny_run, tmp_path, monkeypatch, capsys):
    run, _ = tiny_run
    Image.fromarray(rgb(16, 16)).save(tmp_path / "cell.png")
    monkeypatch.setattr(image_io.os, "fsync", _fail_on_call(1, errno.ENOSPC))
    code = cli.main(["predict", str(tmp_path / "cell.png"), "--model", str(run), "--out", str(tmp_path / "out")])
    assert code == 1
    assert "cell_mask.png: No space left on device" in capsys.readouterr().err
    assert visible_files(tmp_path / "out") == [] and hidden_leftovers(tmp_path / "out") == []


def test_atomic_output_keeps_the_old_file_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    for interruption in (OSError(errno.ENOSPC, "full"), KeyboardInterrupt()):
        with pytest.raises(type(interruption)):
            with atomic_output(target, "w") as handle:
                handle.write("new, half written")
                raise interruption
        assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["table.csv"]
    with atomic_output(target, "w") as handle:
        handle.write("new\n")
    assert target.read_text() == "new\n"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_second_predict_on_the_same_output_directory_is_refused(tiny_run, tmp_path):
    run, _ = tiny_run
    Image.fromarray(rgb(16, 16)).save(tmp_path / "cell.png")
    out = tmp_path / "out"
    with exclusive_output_dir(out):  # a first run, in this process, holds the directory
        done = run_cli("predict", str(tmp_path / "cell.png"), "--model", str(run), "--out", str(out))
        with pytest.raises(OutputBusyError):
            with exclusive_output_dir(out):
                pass
    assert done.returncode == cli.EXIT_BUSY == 5, done.stderr[-2000:]
    assert (f"{out}: another `unet-keras predict` (pid {os.getpid()}) is writing to this directory"
            in done.stderr)
    assert visible_files(out) == []


def test_the_lock_dies_with_a_killed_run(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from unet_keras.predict import exclusive_output_dir\n"
         "with exclusive_output_dir(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(120)",
         str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(OutputBusyError, match=f"pid {holder.pid}"):
        with exclusive_output_dir(out):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with exclusive_output_dir(out):  # free again: no stale lock to clean up by hand
        pass

