"""The keras-free onnxruntime Segmenter: validation, conversions, tiling, equality with Keras."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from export.onnx_export import export_onnx
from export.runtime import RuntimeModelError, Segmenter, choose_providers
from export.tiling import (axis_weights, default_overlap, padded_indices, receptive_radius,
                          tile_predict)
from tests.conftest import REPO, run_cli
from tests.test_export import CONFIG, make_run
from unet_keras.image_io import ImageReadError
from unet_keras.preprocess import pad_to_multiple


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runtime") / "tiny", seed=1)[0]


@pytest.fixture(scope="module")
def onnx_path(run_dir):
    path = run_dir / "model.onnx"
    export_onnx(run_dir, path)
    return path


@pytest.fixture(scope="module")
def segmenter(onnx_path):
    return Segmenter.from_onnx(onnx_path, ["CPUExecutionProvider"])


def random_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_runtime_imports_and_serves_without_keras_jax_tensorflow(onnx_path):
    code = textwrap.dedent("""
        import importlib.abc, json, sys
        BLOCKED = {"keras", "jax", "jaxlib", "tensorflow", "tf2onnx", "jax2onnx"}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{name} is blocked in this test")
        sys.meta_path.insert(0, Block())
        for name in ("keras", "jax", "tensorflow"):
            try:
                __import__(name)
            except ImportError:
                pass
            else:
                raise SystemExit(f"{name} imported despite the block")
        import numpy as np
        from export.runtime import Segmenter
        result = Segmenter.from_onnx(sys.argv[1]).segment(np.full((50, 70, 3), 180, np.uint8))
        print(json.dumps({"shape": list(result.probability.shape),
                          "mask": sorted(int(v) for v in np.unique(result.mask_png)),
                          "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}))
    """)
    done = subprocess.run([sys.executable, "-c", code, str(onnx_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["shape"] == [50, 70, 2] and out["loaded"] == []
    assert set(out["mask"]) <= {0, 128, 255}


def test_metadata_drives_the_segmenter(segmenter):
    assert segmenter.config == CONFIG and segmenter.thresholds == (0.4, 0.6)
    assert segmenter.out_channels == 2 and segmenter.providers == ["CPUExecutionProvider"]
    assert segmenter.metadata["parity"]["passed"] is True


def test_probabilities_match_the_keras_path(segmenter, run_dir):
    from unet_keras.inference import predict_probabilities
    from unet_keras.model import load_model

    image = random_image(75, 101)  # not a multiple of 2**depth: padded, then cropped
    want = predict_probabilities(load_model(run_dir / "model.keras"), [image], CONFIG.multiple)[0]
    got = segmenter.predict_probabilities(image)
    assert got.shape == (75, 101, 2) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-4


def test_tta_averages_the_eight_views_like_the_keras_path(onnx_path, run_dir):
    from unet_keras.inference import predict_probabilities
    from unet_keras.model import load_model

    image = random_image(75, 101, seed=3)
    want = predict_probabilities(load_model(run_dir / "model.keras"), [image], CONFIG.multiple,
                                 tta=True)[0]
    averaged = Segmenter.from_onnx(onnx_path, ["CPUExecutionProvider"], tta=True)
    got = averaged.predict_probabilities(image)
    assert got.shape == (75, 101, 2) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-4
    plain = Segmenter.from_onnx(onnx_path, ["CPUExecutionProvider"]).predict_probabilities(image)
    assert np.abs(got - plain).max() > 1e-3  # an untrained model is not symmetric: views differ


def test_tta_of_tiles_stays_close_to_tta_of_the_whole_image(onnx_path):
    whole = Segmenter.from_onnx(onnx_path, tile=1024, tta=True)
    tiled = Segmenter.from_onnx(onnx_path, tile=96, tta=True)
    image = random_image(210, 333, seed=7)
    assert np.abs(tiled.predict_probabilities(image) - whole.predict_probabilities(image)).max() <= 1e-4


def test_segment_thresholds_and_encodes_like_the_dataset(segmenter):
    result = segmenter.segment(random_image(64, 80, seed=2), image_name="x.png")
    p = result.probability
    # Thresholded, then only the pixels of kept cells (min_cell_area or larger) stay.
    kept = result.instances > 0
    assert np.bincount(result.instances.ravel())[1:].min() >= segmenter.config.min_cell_area
    nucleus = (p[..., 1] >= 0.6) & kept
    cell = ((p[..., 0] >= 0.4) | (p[..., 1] >= 0.6)) & kept
    np.testing.assert_array_equal(result.label_map > 0, cell)
    np.testing.assert_array_equal(result.label_map == 2, nucleus)
    expected_png = np.where(nucleus, 255, np.where(cell, 128, 0))
    np.testing.assert_array_equal(result.mask_png, expected_png)
    assert result.instances.dtype == np.int32 and result.instances.shape == (64, 80)
    assert len(result.cells) == result.instances.max()
    assert all(row["image"] == "x.png" for row in result.cells) and result.notes == []


@pytest.mark.parametrize("make, note", [
    (lambda rgb: rgb[..., 0], "grayscale"),
    (lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]), "alpha"),
    (lambda rgb: rgb.astype(np.uint16) * 257, "to 8 bits"),
    (lambda rgb: rgb.astype(np.float32) / 255, "float image"),
])
def test_other_image_kinds_are_converted_and_said_so(segmenter, make, note):
    rgb = random_image(40, 56, seed=3)
    converted = make(rgb)
    as_rgb = np.repeat(rgb[..., :1], 3, axis=2) if converted.ndim == 2 else rgb
    result = segmenter.segment(converted)
    assert any(note in n for n in result.notes), result.notes
    np.testing.assert_allclose(result.probability, segmenter.predict_probabilities(as_rgb), atol=1e-6)


@pytest.mark.parametrize("array, message", [
    (np.zeros((1, 32, 32, 3), np.uint8), r"shape \(1, 32, 32, 3\); expected \(H, W\)"),
    (np.zeros((32, 32, 5), np.uint8), r"shape \(32, 32, 5\); expected"),
    (np.zeros((32, 32, 3), np.complex64), "unsupported dtype complex64"),
    (np.full((32, 32, 3), np.nan, np.float32), "NaN or Inf"),
])
def test_bad_arrays_are_refused_with_what_is_accepted(segmenter, array, message):
    with pytest.raises(ImageReadError, match=message):
        segmenter.segment(array)


def _save(model: onnx.ModelProto, path):
    onnx.save(model, str(path))
    return path


def test_foreign_onnx_is_refused_naming_what_it_has(tmp_path):
    nchw = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"])], "nchw",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, "H", "W"])]))
    path = _save(nchw, tmp_path / "nchw.onnx")
    with pytest.raises(RuntimeModelError) as err:
        Segmenter.from_onnx(path)
    message = str(err.value)
    assert str(path) in message and "'input' tensor(float) ['N', 3, 'H', 'W']" in message
    assert "NCHW" in message and "expected one float32 input 'image'" in message
    # Named as the contract asks, with symbolic height and width: still channels first.
    named = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["image"], ["probability"])], "nchw",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 3, "H", "W"])]))
    path = _save(named, tmp_path / "named.onnx")
    with pytest.raises(RuntimeModelError, match=r"named\.onnx: has inputs .* \(channels first"):
        Segmenter.from_onnx(path)


def test_onnx_without_metadata_is_refused(tmp_path):
    bare = helper.make_model(helper.make_graph(
        [helper.make_node("ReduceMax", ["image", "axes"], ["probability"])], "bare",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", "H", "W", 1])],
        [onnx.numpy_helper.from_array(np.array([3], np.int64), "axes")]))
    with pytest.raises(RuntimeModelError, match=r"bare.onnx: unusable unet_keras metadata .*lacks \['config', 'thresholds'\]"):
        Segmenter.from_onnx(_save(bare, tmp_path / "bare.onnx"))


def test_corrupt_or_missing_onnx_is_refused(onnx_path, tmp_path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_path.read_bytes()[:500])
    with pytest.raises(RuntimeModelError, match="truncated.onnx: not a loadable ONNX model"):
        Segmenter.from_onnx(truncated)
    with pytest.raises(RuntimeModelError, match="missing.onnx: ONNX file not found"):
        Segmenter.from_onnx(tmp_path / "missing.onnx")


def test_provider_preference():
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider", "CUDAExecutionProvider",
                             "TensorrtExecutionProvider"]) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers([]) == ["CPUExecutionProvider"]


# Tiling.

def test_receptive_radius_bounds_the_real_model(segmenter):
    x = np.random.default_rng(5).random((1, 96, 96, 3), dtype=np.float32)
    base = segmenter.run(x)
    x[0, 48, 48] += 1.0
    changed = np.argwhere(np.abs(segmenter.run(x) - base).max(axis=-1)[0] > 0)
    reach = np.abs(changed - 48).max()
    assert 0 < reach <= receptive_radius(CONFIG.depth) == 26


def test_ramps_of_neighbouring_tiles_sum_to_one():
    margin, ramp = 10, 12
    overlap = 2 * margin + ramp
    left = axis_weights(0, 64, 200, margin, ramp)
    right = axis_weights(64 - overlap, 128, 200, margin, ramp)
    total = np.zeros(200)
    total[:64] += left
    total[64 - overlap:128] += right
    np.testing.assert_allclose(total[:64 + 20], 1.0, atol=1e-12)  # right tile's own margin ends at 84
    assert left[:margin + 5].min() == 1.0 and left[-margin:].max() == 0.0  # no taper at the border


@pytest.mark.parametrize("shape", [(37, 29), (40, 300), (3, 5)])
def test_padded_indices_match_pad_to_multiple(shape):
    image = random_image(*shape, seed=6)
    rows, cols = padded_indices(*shape, 16)
    np.testing.assert_array_equal(image[np.ix_(rows, cols)], pad_to_multiple(image, 16)[0])


def test_tiled_equals_whole_image_inference(onnx_path):
    whole = Segmenter.from_onnx(onnx_path, tile=1024)
    tiled = Segmenter.from_onnx(onnx_path, tile=96)
    shapes = []
    run = tiled.run
    tiled.run = lambda batch: shapes.append(batch.shape) or run(batch)
    image = random_image(210, 333, seed=7)
    got = tiled.predict_probabilities(image)
    assert len(shapes) > 4 and max(s[1] for s in shapes) == 96  # really tiled
    assert np.abs(got - whole.predict_probabilities(image)).max() <= 1e-4
    assert tiled.overlap == default_overlap(CONFIG.depth) == 68


def test_overlap_below_the_receptive_field_is_not_exact(segmenter):
    image = random_image(210, 333, seed=7)
    approx = segmenter.tile_predict(image, tile=64, overlap=16)
    assert np.abs(approx - segmenter.predict_probabilities(image)).max() > 1e-3


def test_tiled_probabilities_stay_within_0_and_1():
    # A model sure everywhere: the weighted float32 sum over overlaps came back a few ulp over 1.
    def sure(batch):
        return np.ones(batch.shape[:3] + (2,), np.float32)

    got = tile_predict(sure, np.zeros((500, 437, 3), np.uint8), 2, 2, tile=128, overlap=48)
    assert got.max() == 1.0 and got.min() >= 1.0 - 1e-6


def test_tile_arguments_are_checked(segmenter):
    with pytest.raises(ValueError, match="multiples of 4 with 0 <= overlap < tile"):
        segmenter.tile_predict(random_image(50, 50), tile=30, overlap=8)
    with pytest.raises(ValueError, match="tile=98, overlap=68; expected multiples of 4"):
        Segmenter.from_onnx(segmenter.source, tile=98, overlap=68)
    # An overlap off the pooling grid is refused when the segmenter is made, not at the first
    # image large enough to tile; a tile of 0 is refused, not taken for the default.
    with pytest.raises(ValueError, match="tile=96, overlap=30; expected multiples of 4"):
        Segmenter.from_onnx(segmenter.source, tile=96, overlap=30)
    with pytest.raises(ValueError, match="tile=0"):
        segmenter.tile_predict(random_image(50, 50), tile=0)


@pytest.mark.parametrize("depth, tile", [(4, 1024), (5, 1024), (6, 2176), (7, 4352)])
def test_deep_models_load_with_the_default_tile(segmenter, depth, tile):
    """The exact overlap of a depth-6 model (1088 px) exceeds 1024 px: the default tile grows
    to twice it rather than every image being refused; a tile given too small is refused
    naming the file."""
    from unet_keras.cli import _keras_probability_fn
    from unet_keras.config import UNetConfig

    metadata = {**segmenter.metadata, "config": {**segmenter.metadata["config"], "depth": depth,
                                                 "image_size": 128}}
    assert Segmenter(segmenter.session, metadata, "deep.onnx").tile == tile
    assert Segmenter(segmenter.session, metadata, "deep.onnx").overlap == default_overlap(depth)
    _keras_probability_fn(None, UNetConfig(depth=depth), None)  # the Keras path's default too
    if depth >= 6:
        with pytest.raises(ValueError, match=r"deep\.onnx: tile=1024, overlap="):
            Segmenter(segmenter.session, metadata, "deep.onnx", tile=1024)


def test_cli_predict_through_onnx_matches_the_keras_path(run_dir, onnx_path, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(random_image(75, 101, seed=8)).save(images / "rgb.png")
    Image.fromarray((random_image(64, 64, seed=9)[..., 0].astype(np.uint16) * 257)).save(images / "gray16.png")
    keras_out, onnx_out = tmp_path / "keras", tmp_path / "onnx"
    for flag, source, out in (("--model", run_dir, keras_out), ("--onnx", onnx_path, onnx_out)):
        done = run_cli("predict", str(images), flag, str(source), "--out", str(out))
        assert done.returncode == 0, done.stderr[-2000:]
        assert "converted" in done.stdout and "gray16.png" in done.stdout
    for name in ("rgb_mask.png", "gray16_mask.png"):
        np.testing.assert_array_equal(np.asarray(Image.open(keras_out / name)),
                                      np.asarray(Image.open(onnx_out / name)))
    assert (keras_out / "cells.csv").read_text() == (onnx_out / "cells.csv").read_text()
    for flag, source in (("--model", run_dir), ("--onnx", onnx_path)):
        done = run_cli("predict", str(images / "rgb.png"), flag, str(source), "--tta", "--out",
                       str(tmp_path / f"{flag.strip('-')}-tta"))
        assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "model-tta" / "rgb_mask.png")),
                                  np.asarray(Image.open(tmp_path / "onnx-tta" / "rgb_mask.png")))


def test_cli_evaluate_through_onnx_scores_like_the_keras_path(run_dir, onnx_path, tmp_path):
    scored = {}
    for flag, source in (("--model", run_dir), ("--onnx", onnx_path)):
        out = tmp_path / flag.strip("-")
        done = run_cli("evaluate", flag, str(source), "--synthetic", "--out", str(out))
        assert done.returncode == 0, done.stderr[-2000:]
        scored[flag] = json.loads((out / "metrics.json").read_text())
    keras_run, onnx_run = scored["--model"], scored["--onnx"]
    assert keras_run["runtime"].startswith("keras ")
    assert onnx_run["runtime"].startswith("onnxruntime ") and "CPUExecutionProvider" in onnx_run["runtime"]
    assert onnx_run["test"]["n_images"] == keras_run["test"]["n_images"] > 0
    assert onnx_run["test"]["whole_cell_dice"] == pytest.approx(keras_run["test"]["whole_cell_dice"],
                                                                abs=2e-3)
    for flag, source in (("--model", run_dir), ("--onnx", onnx_path)):
        out = tmp_path / f"{flag.strip('-')}-tta"
        done = run_cli("evaluate", flag, str(source), "--synthetic", "--tta", "--out", str(out))
        assert done.returncode == 0, done.stderr[-2000:]
        scored[flag] = json.loads((out / "metrics.json").read_text())
        assert scored[flag]["tta"] is True
    assert scored["--onnx"]["test"]["whole_cell_dice"] == pytest.approx(
        scored["--model"]["test"]["whole_cell_dice"], abs=2e-3)


@pytest.mark.slow
def test_8000x8000_image_peak_memory_under_2gb(tmp_path):
    """Depth 4, 16 filters, 2 channels (the 512 MB float32 output is the bulk); several minutes.

    An untrained model's masks are noise, so the postprocessing stage of ``segment`` is run on a
    realistic label map (the synthetic clusters of cells below, tiled) while the probabilities
    are still held, as ``SegmentResult`` holds them.
    """
    from unet_keras.config import UNetConfig

    run, _ = make_run(tmp_path / "d4", UNetConfig(depth=4, base_filters=16, out_channels=2))
    export_onnx(run, run / "model.onnx")
    code = textwrap.dedent("""
        import json, resource, sys, time
        import numpy as np
        from export.instances import instances_by_component
        from export.runtime import Segmenter
        from unet_keras.postprocess import labels_to_png, probabilities_to_labels
        def peak_gb():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        seg = Segmenter.from_onnx(sys.argv[1])
        image = np.random.default_rng(0).integers(0, 256, (8000, 8000, 3), dtype=np.uint8)
        start = time.perf_counter()
        prob = seg.predict_probabilities(image)
        labels = probabilities_to_labels(prob, seg.thresholds)
        out = {"shape": list(prob.shape), "predict_s": time.perf_counter() - start,
               "predict_peak_gb": peak_gb()}
        labels = np.tile(np.load(sys.argv[2]), (20, 20))
        instances, cells = instances_by_component(labels, "big", has_nucleus=True)
        png = labels_to_png(labels, 2)
        out.update(cells=len(cells), total_s=time.perf_counter() - start, peak_gb=peak_gb())
        print(json.dumps(out))
    """)
    np.save(tmp_path / "cells.npy", synthetic_label_map(400))
    done = subprocess.run([sys.executable, "-c", code, str(run / "model.onnx"),
                           str(tmp_path / "cells.npy")], cwd=REPO, capture_output=True,
                          text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    print(f"8000x8000: {out}")
    assert out["shape"] == [8000, 8000, 2] and out["cells"] > 10_000
    assert out["peak_gb"] <= 2.0


# Postprocessing of large images, one component at a time.

def synthetic_label_map(size=400, seed=0):
    """Separate clusters of one to three overlapping cells, each with a nucleus; clusters far apart."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    for cy in range(40, size - 30, 80):
        for cx in range(40, size - 30, 80):
            for k in range(rng.integers(1, 4)):
                y, x = cy + 14 * k * rng.uniform(0.8, 1.2), cx + 10 * k
                r = rng.uniform(10, 16)
                d2 = (yy - y) ** 2 + (xx - x) ** 2
                labels[(d2 < r * r) & (labels == 0)] = 1
                labels[d2 < (r / 2.5) ** 2] = 2
    labels[5:9, 5:7] = 1  # a speck under min_size
    return labels


@pytest.mark.parametrize("has_nucleus", [True, False])
def test_component_wise_postprocessing_equals_whole_image(has_nucleus):
    from export.instances import instances_by_component
    from unet_keras.postprocess import measure_cells
    from unet_keras.separation import separate_instances

    labels = synthetic_label_map()
    if not has_nucleus:
        labels = (labels > 0).astype(np.uint8)
    whole = separate_instances(labels > 0, labels == 2 if has_nucleus else None)
    whole_rows = measure_cells(whole, labels, "big", has_nucleus=has_nucleus)
    parts, rows = instances_by_component(labels, "big", has_nucleus)
    assert parts.dtype == np.int32 and whole.max() == parts.max() == len(rows) > 20
    assert whole.max() > ndi_label(labels > 0).max()  # some clusters were split
    np.testing.assert_array_equal(whole > 0, parts > 0)
    # The same cells: each matches one cell of the other map at IoU >= 0.95 (watershed ties on
    # the boundary of touching cells can go either way).
    for w in range(1, whole.max() + 1):
        ids, counts = np.unique(parts[whole == w], return_counts=True)
        best = ids[np.argmax(counts)]
        iou = counts.max() / np.count_nonzero((whole == w) | (parts == best))
        assert best > 0 and iou >= 0.95, (w, iou)
    key = lambda r: (r["bbox_min_row"], r["bbox_min_col"])  # noqa: E731
    for a, b in zip(sorted(whole_rows, key=key), sorted(rows, key=key), strict=True):
        assert a["image"] == b["image"] and a.keys() == b.keys()
        assert abs(a["area"] - b["area"]) <= 0.03 * a["area"]
        assert abs(a["centroid_y"] - b["centroid_y"]) < 0.5 and abs(a["centroid_x"] - b["centroid_x"]) < 0.5


def ndi_label(mask):
    from scipy import ndimage

    return ndimage.label(mask, structure=np.ones((3, 3)))[0]


def test_segment_of_an_image_larger_than_a_tile_uses_component_wise_postprocessing(onnx_path):
    small_tile = Segmenter.from_onnx(onnx_path, tile=96)
    whole = Segmenter.from_onnx(onnx_path, tile=1024)
    image = random_image(100, 140, seed=10)
    a, b = small_tile.segment(image), whole.segment(image)
    np.testing.assert_array_equal(a.label_map, b.label_map)
    np.testing.assert_array_equal(a.instances > 0, b.instances > 0)
    assert a.instances.max() == b.instances.max() == len(a.cells) == len(b.cells)


def test_component_wise_postprocessing_drops_the_same_edge_cells():
    from export.instances import instances_by_component
    from unet_keras.postprocess import edge_parts
    from unet_keras.separation import separate_instances

    labels = synthetic_label_map()
    yy, xx = np.mgrid[0:400, 0:400]
    for cy, cx in ((0, 200), (200, 399), (399, 399)):  # three cells cut by the edge
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < 15**2] = 1
    before = labels.copy()
    cut = edge_parts(labels > 0)
    whole = separate_instances((labels > 0) & ~cut, (labels == 2) & ~cut)
    parts, rows = instances_by_component(labels, "big", True, edge_cells="drop")
    kept, _ = instances_by_component(labels, "big", True)
    np.testing.assert_array_equal(labels, before)  # the caller's map is left alone
    np.testing.assert_array_equal(whole > 0, parts > 0)
    assert parts.max() == len(rows) and kept.max() >= parts.max() + 3
    assert not np.concatenate([parts[0], parts[-1], parts[:, 0], parts[:, -1]]).any()
    for row in rows:  # the table's labels name the cells of the map
        assert row["area"] == np.count_nonzero(parts == row["label"])


def test_segment_at_another_scale_and_auto_when_the_model_records_its_cell_size(segmenter):
    from export.runtime import Segmenter
    from unet_keras.rescale import ScaledPredictor, predict_at_scale

    image = random_image(60, 76, seed=11)
    doubled = segmenter.segment(image, scale=2.0)
    np.testing.assert_array_equal(doubled.probability,
                                  predict_at_scale(segmenter.predict_probabilities, image, 2.0))
    assert doubled.mask_png.shape == (60, 76)
    assert segmenter.config.cell_diameter == 0  # none recorded: scale 1 by default
    np.testing.assert_array_equal(segmenter.segment(image).probability,
                                  segmenter.predict_probabilities(image))
    sized = Segmenter(segmenter.session, {**segmenter.metadata, "config": {
        **segmenter.metadata["config"], "cell_diameter": 12.0}})
    auto = ScaledPredictor(segmenter.predict_probabilities, "auto", 12.0, segmenter.thresholds[0])
    np.testing.assert_array_equal(sized.segment(image).probability, auto(image))


def test_segment_maps_colours_by_default_when_the_model_records_its_training_colours(segmenter):
    from export.runtime import Segmenter
    from unet_keras.colour import auto_target, colour_features, fit_reference, normalise

    reference = fit_reference(random_image(32, 32, seed=s) // 4 + 150 for s in range(12))
    image = random_image(40, 56, seed=12)  # far from those pale, low-contrast images
    assert segmenter.config.colour_reference == {}  # none recorded: off by default
    plain = segmenter.segment(image)
    np.testing.assert_array_equal(plain.probability, segmenter.predict_probabilities(image))
    coloured = Segmenter(segmenter.session, {**segmenter.metadata, "config": {
        **segmenter.metadata["config"], "colour_reference": reference}})
    mapped = coloured.segment(image)
    assert any("colours mapped" in note for note in mapped.notes)
    target = auto_target(colour_features(image), reference)
    np.testing.assert_array_equal(mapped.probability, segmenter.predict_probabilities(
        normalise(image, reference, target)))
    np.testing.assert_array_equal(coloured.segment(image, colour="off").probability,
                                  plain.probability)
