"""fp16 and int8 variants: the float32 contract holds, and a Dice drop over the limit is refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import export.precision as precision
from export.metadata import decode_metadata
from export.onnx_export import export_onnx
from export.precision import PrecisionError, check_variant, export_variant, make_fp16, make_int8
from export.runtime import Segmenter
from tests.test_export import make_run


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run, _ = make_run(tmp_path_factory.mktemp("precision") / "tiny", seed=2)
    path = run / "fp32.onnx"
    export_onnx(run, path)
    return path


@pytest.fixture(scope="module")
def labelled(reference):
    """Images labelled by the float32 model itself: its Dice is 1 by construction."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8) for _ in range(4)]
    segmenter = Segmenter.from_onnx(reference)
    return images, [segmenter.segment(image).label_map for image in images]


def _io_types(path):
    model = onnx.load(str(path))
    return [v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]]


def test_fp16_keeps_float32_io_and_stays_close(reference, tmp_path, labelled):
    out = tmp_path / "fp16.onnx"
    make_fp16(reference, out)
    assert _io_types(out) == [onnx.TensorProto.FLOAT] * 2
    weights = [i.data_type for i in onnx.load(str(out)).graph.initializer if len(i.dims) == 4]
    assert weights and set(weights) == {onnx.TensorProto.FLOAT16}
    image = labelled[0][0]
    a = Segmenter.from_onnx(reference).predict_probabilities(image)
    b = Segmenter.from_onnx(out).predict_probabilities(image)
    assert 0 < np.abs(a - b).max() < 1e-2


def test_int8_is_quantized_and_needs_calibration(reference, tmp_path, labelled):
    out = tmp_path / "int8.onnx"
    make_int8(reference, out, labelled[0])
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and _io_types(out) == [onnx.TensorProto.FLOAT] * 2
    with pytest.raises(PrecisionError, match="int8 needs calibration images"):
        make_int8(reference, tmp_path / "none.onnx", [])


def test_accepted_variant_is_written_with_its_figures(reference, tmp_path, labelled):
    out = tmp_path / "fp16.onnx"
    report = export_variant(reference, out, "fp16", *labelled)
    assert report["passed"] and report["reference"]["whole_cell_dice"] == 1.0
    assert report["whole_cell_dice_drop"] <= 0.005
    assert report["variant"]["latency"]["median_ms"] > 0
    meta = decode_metadata({p.key: p.value for p in onnx.load(str(out)).metadata_props})
    assert meta["precision"] == "fp16" and meta["variant_check"]["passed"] is True
    # The fp32 file's parity with Keras is kept as the source's, not claimed for this file.
    assert meta["thresholds"] == [0.4, 0.6] and "parity" not in meta
    assert meta["source_parity"]["passed"] is True
    assert Segmenter.from_onnx(out).thresholds == (0.4, 0.6)


def test_variant_losing_dice_is_refused_and_not_written(reference, tmp_path, labelled, monkeypatch):
    def broken_fp16(src, dst):
        model = onnx.load(str(src))
        for init in model.graph.initializer:
            if len(init.dims) == 4:  # scramble every convolution kernel
                w = onnx.numpy_helper.to_array(init)
                init.CopyFrom(onnx.numpy_helper.from_array(-w, init.name))
        onnx.save(model, str(dst))

    monkeypatch.setattr(precision, "make_fp16", broken_fp16)
    with pytest.raises(PrecisionError, match=r"fp16.onnx: not written: fp16 whole-cell Dice 0\.\d+ vs 1\.0000"):
        export_variant(reference, tmp_path / "fp16.onnx", "fp16", *labelled)
    assert list(tmp_path.iterdir()) == []


def test_check_variant_reports_both_sides(reference, labelled):
    report = check_variant(reference, reference, *labelled, latency_shape=(1, 32, 32, 3))
    assert report["whole_cell_dice_drop"] == 0.0 and report["images"] == 4
    assert set(report["reference"]) >= {"whole_cell_dice", "nucleus_dice", "latency"}
    with pytest.raises(PrecisionError, match="4 images and 3 label maps"):
        check_variant(reference, reference, labelled[0], labelled[1][:3])


def test_unknown_precision_is_refused(reference, tmp_path, labelled):
    with pytest.raises(PrecisionError, match=r"precision='bf16'; expected one of \['fp16', 'int8'\]"):
        export_variant(reference, tmp_path / "x.onnx", "bf16", *labelled)


def test_export_reduced_goes_from_keras_to_a_checked_variant(reference, tmp_path, labelled):
    from export.precision import export_reduced

    out = tmp_path / "model-int8.onnx"
    report = export_reduced(reference.parent, out, "int8", *labelled, calibration_images=labelled[0])
    assert report["fp32"]["parity"]["passed"] and report["variant"]["passed"]
    assert [p.name for p in tmp_path.iterdir()] == ["model-int8.onnx"]  # the fp32 file is gone
    assert Segmenter.from_onnx(out).metadata["precision"] == "int8"
