"""ONNX export: both routes pass the parity gate; a bad graph fails it and leaves no file."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import export.onnx_export as onnx_export
from export.metadata import decode_metadata
from export.onnx_export import ExportError, export_onnx, parity_inputs
from tests.conftest import run_cli
from unet_keras.config import UNetConfig
from unet_keras.preprocess import PREPROCESSING_CONTRACT

CONFIG = UNetConfig(depth=2, base_filters=4, out_channels=2, image_size=64, thresholds=(0.4, 0.6))


def make_run(directory, config: UNetConfig = CONFIG, seed: int = 0):
    """A run directory with an untrained tiny U-Net whose batch-norm statistics are not trivial."""
    import keras

    from unet_keras.model import build_unet

    keras.utils.set_random_seed(seed)
    model = build_unet(config)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.2, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype("float32"))
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.keras")
    config.save(directory / "config.json")
    return directory, model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run") / "tiny")[0]


@pytest.fixture(scope="module")
def exports(run_dir):
    return {route: export_onnx(run_dir, run_dir / f"{route}.onnx", route=route)
            for route in ("tf2onnx", "jax2onnx")}


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_parity_inputs_cover_batch3_non_square_and_smallest():
    shapes = [x.shape for x in parity_inputs(16).values()]
    assert (3, 96, 160, 3) in shapes and (2, 16, 32, 3) in shapes
    assert all(x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
               for x in parity_inputs(32).values())
    assert all(s[1] % 32 == 0 and s[2] % 32 == 0 for s in map(np.shape, parity_inputs(32).values()))


@pytest.mark.parametrize("route", ["tf2onnx", "jax2onnx"])
def test_route_passes_parity_gate_with_named_dynamic_io(exports, run_dir, route):
    report = exports[route]
    assert report["parity"]["passed"] and report["parity"]["max_abs_diff"] <= 1e-4
    assert {tuple(v["shape"]) for v in report["parity"]["inputs"].values()} >= {(3, 96, 160, 3)}
    model = onnx.load(str(run_dir / f"{route}.onnx"))
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert (inp.name, dims(inp)) == ("image", ["batch", "height", "width", 3])
    assert (out.name, dims(out)) == ("probability", ["batch", "height", "width", 2])
    assert report["transposes"] == report["ops"].get("Transpose", 0)
    # Dynamic sizes really run: a size the gate did not use.
    y = _session(run_dir / f"{route}.onnx").run(None, {"image": np.zeros((2, 36, 20, 3), np.float32)})[0]
    assert y.shape == (2, 36, 20, 2)


def test_metadata_makes_the_file_self_describing(exports, run_dir):
    meta = decode_metadata({p.key: p.value for p in onnx.load(str(run_dir / "tf2onnx.onnx")).metadata_props})
    assert UNetConfig.from_dict(meta["config"]) == CONFIG
    assert meta["thresholds"] == [0.4, 0.6]
    assert meta["preprocessing"] == PREPROCESSING_CONTRACT
    assert meta["route"] == "tf2onnx" and meta["precision"] == "fp32" and meta["opset"] == 15
    assert {"keras", "jax", "onnx", "tf2onnx", "jax2onnx", "onnxruntime"} <= set(meta["versions"])
    assert meta["parity"]["max_abs_diff"] == exports["tf2onnx"]["parity"]["max_abs_diff"]
    # onnxruntime exposes the same entries to the runtime.
    custom = _session(run_dir / "tf2onnx.onnx").get_modelmeta().custom_metadata_map
    assert json.loads(custom["unet_keras.thresholds"]) == [0.4, 0.6]


def test_jax2onnx_route_rewrites_every_pooling_node(exports, run_dir):
    assert exports["jax2onnx"]["graph_fixes"]["pooling_rewritten"] == CONFIG.depth
    pools = [n for n in onnx.load(str(run_dir / "jax2onnx.onnx")).graph.node if n.op_type == "MaxPool"]
    assert len(pools) == CONFIG.depth
    assert all(list(a.ints) == [2, 2] for n in pools for a in n.attribute if a.name == "kernel_shape")


def test_routes_agree_with_each_other(exports, run_dir):
    x = np.random.default_rng(3).random((1, 64, 92, 3), dtype=np.float32)
    a, b = (_session(run_dir / f"{r}.onnx").run(None, {"image": x})[0] for r in ("tf2onnx", "jax2onnx"))
    assert np.abs(a - b).max() < 1e-5


@pytest.fixture
def cached_convert(exports, run_dir, monkeypatch):
    """Replace the converter by the already exported tf2onnx graph, optionally corrupted."""
    def install(corrupt=None):
        def convert(*args, **kwargs):
            proto = onnx.load(str(run_dir / "tf2onnx.onnx"))
            if corrupt:
                corrupt(proto)
            return proto, {}
        monkeypatch.setattr(onnx_export, "_convert", convert)
    return install


def _perturb_first_conv_weight(proto):
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    init = next(i for i in proto.graph.initializer if i.name == conv.input[1])
    weights = onnx.numpy_helper.to_array(init).copy()
    weights.flat[0] += 0.5
    init.CopyFrom(onnx.numpy_helper.from_array(weights, init.name))


def test_perturbed_weights_fail_the_gate_and_leave_no_file(cached_convert, run_dir, tmp_path):
    cached_convert(_perturb_first_conv_weight)
    out = tmp_path / "broken.onnx"
    with pytest.raises(ExportError, match=r"differs from Keras-JAX by max abs .* > tolerance 0.0001"):
        export_onnx(run_dir, out)
    assert list(tmp_path.iterdir()) == []


def test_a_nan_output_on_any_parity_input_fails_the_gate():
    from onnx import TensorProto, helper

    graph = helper.make_graph(  # log: NaN on the negative input only, 0 on the ones
        [helper.make_node("Log", ["image"], ["probability"])], "log",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", "H", "W", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ones = np.ones((1, 4, 4, 3), np.float32)
    inputs = {"ones": ones, "negative": -ones}
    reference = {name: np.zeros((1, 4, 4, 3)) for name in inputs}
    parity = onnx_export.check_parity(model.SerializeToString(), inputs, reference, 1e-4)
    assert np.isnan(parity["inputs"]["negative"]["max_abs_diff"])
    assert np.isnan(parity["max_abs_diff"]) and parity["passed"] is False


def test_zero_tolerance_fails_with_figures(cached_convert, run_dir, tmp_path):
    cached_convert()
    with pytest.raises(ExportError, match=r"batch3_96x160 \d"):
        export_onnx(run_dir, tmp_path / "m.onnx", parity_tolerance=0.0)
    assert list(tmp_path.iterdir()) == []


def test_failed_export_keeps_an_existing_file_untouched(cached_convert, run_dir, tmp_path):
    cached_convert(_perturb_first_conv_weight)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(ExportError):
        export_onnx(run_dir, out)
    assert out.read_bytes() == b"previous" and len(list(tmp_path.iterdir())) == 1


def test_bad_arguments_are_refused_before_any_work(run_dir, tmp_path):
    with pytest.raises(ExportError, match="route='torch'; expected one of"):
        export_onnx(run_dir, tmp_path / "m.onnx", route="torch")
    with pytest.raises(ExportError, match="nowhere/m.onnx: cannot write there"):
        export_onnx(run_dir, tmp_path / "nowhere" / "m.onnx")
    with pytest.raises(ExportError, match="is a directory"):
        export_onnx(run_dir, tmp_path)
    (tmp_path / "lonely").mkdir()
    (tmp_path / "lonely" / "model.keras").write_bytes((run_dir / "model.keras").read_bytes())
    with pytest.raises(ExportError, match="config.json: missing"):
        export_onnx(tmp_path / "lonely", tmp_path / "m.onnx")
    (tmp_path / "lonely" / "config.json").write_text((run_dir / "config.json").read_text())
    (tmp_path / "lonely" / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(ExportError, match="not a loadable Keras model"):
        export_onnx(tmp_path / "lonely", tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lonely"]


def test_failing_converter_reports_its_error(run_dir, tmp_path):
    with pytest.raises(ExportError, match="tf2onnx route failed .*: tf2onnx export failed: .*99"):
        export_onnx(run_dir, tmp_path / "m.onnx", opset=99)
    assert list(tmp_path.iterdir()) == []


def test_cli_export_prints_parity_figures(run_dir, tmp_path):
    out = tmp_path / "cli.onnx"
    done = run_cli("export", "--model", str(run_dir), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["parity"]["passed"] is True and out.is_file()
