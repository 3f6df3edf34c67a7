"""The jax2onnx pooling rewrite, on hand-built graphs and on a real jax2onnx export."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.graph_fixes import (GraphFixError, cancel_transpose_pairs, fix_nhwc_pooling,
                                op_counts)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _ints(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def pooling_chain(op="MaxPool", kernel=(1, 2, 2, 1), strides=(1, 2, 2, 1), split_unsqueeze=True,
                  **pool_attrs):
    """x (N, H, W, C) -> Unsqueeze -> Unsqueeze -> pool with 4 spatial axes -> Squeeze, as jax2onnx does."""
    if split_unsqueeze:
        unsqueeze = [helper.make_node("Unsqueeze", ["x", "ax0"], ["u0"]),
                     helper.make_node("Unsqueeze", ["u0", "ax1"], ["u1"])]
        inits = [_ints("ax0", [0]), _ints("ax1", [1])]
    else:
        unsqueeze = [helper.make_node("Unsqueeze", ["x", "ax01"], ["u1"])]
        inits = [_ints("ax01", [0, 1])]
    nodes = [*unsqueeze,
             helper.make_node(op, ["u1"], ["p"], kernel_shape=list(kernel), strides=list(strides),
                              **pool_attrs),
             helper.make_node("Squeeze", ["p", "sq"], ["pooled"]),
             helper.make_node("Relu", ["pooled"], ["y"])]
    graph = helper.make_graph(
        nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "H", "W", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "h", "w", 5])],
        [*inits, _ints("sq", [0, 1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def reference_pool(x, op):
    n, h, w, c = x.shape
    blocks = x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
    pooled = blocks.max(axis=(2, 4)) if op == "MaxPool" else blocks.mean(axis=(2, 4))
    return np.maximum(pooled, 0)


def test_onnxruntime_refuses_the_unfixed_chain():
    x = np.random.default_rng(0).normal(size=(2, 6, 8, 5)).astype(np.float32)
    with pytest.raises(Exception, match="Unsupported pooling size"):
        _session(pooling_chain()).run(None, {"x": x})


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("split_unsqueeze", [True, False])
@pytest.mark.parametrize("shape", [(2, 6, 8, 5), (1, 7, 5, 5)])
def test_rewrite_computes_nhwc_pooling(op, split_unsqueeze, shape):
    model = pooling_chain(op, split_unsqueeze=split_unsqueeze)
    assert fix_nhwc_pooling(model) == 1
    ops = op_counts(model)
    assert ops == {"Transpose": 2, op: 1, "Relu": 1}
    assert not model.graph.initializer  # the axes constants went with their nodes
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    got = _session(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, reference_pool(x, op), rtol=1e-6, atol=1e-6)


def test_rewrite_maps_spatial_pads():
    # pads (begin N, H, W, C, end N, H, W, C): one row above, one column to the right.
    model = pooling_chain(pads=[0, 1, 0, 0, 0, 0, 1, 0])
    assert fix_nhwc_pooling(model) == 1
    x = np.random.default_rng(4).normal(size=(2, 5, 7, 5)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (1, 0), (0, 1), (0, 0)), constant_values=-np.inf)
    np.testing.assert_allclose(_session(model).run(None, {"x": x})[0], reference_pool(padded, "MaxPool"))


def test_rewrite_refuses_windows_over_batch_or_channels():
    with pytest.raises(GraphFixError, match="MaxPool node .*spans the batch or channel axis"):
        fix_nhwc_pooling(pooling_chain(kernel=(1, 2, 2, 2), strides=(1, 2, 2, 2)))


def test_rewrite_refuses_an_unknown_pattern():
    model = pooling_chain()
    model.graph.node[1].input[1] = "ax2"  # the second Unsqueeze now inserts an inner axis
    model.graph.initializer.append(_ints("ax2", [3]))
    with pytest.raises(GraphFixError, match="expected Unsqueeze -> Unsqueeze -> pool"):
        fix_nhwc_pooling(model)


def test_graphs_without_4d_pooling_are_untouched():
    model = pooling_chain(kernel=(2, 2), strides=(2, 2))
    before = model.SerializeToString()
    assert fix_nhwc_pooling(model) == 0 and model.SerializeToString() == before


def _transpose_model(p1, p2):
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["t1"], perm=p1),
         helper.make_node("Transpose", ["t1"], ["t2"], perm=p2),
         helper.make_node("Relu", ["t2"], ["y"])], "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, 5])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_inverse_transpose_pairs_cancel_and_others_stay():
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 5)).astype(np.float32)
    model = _transpose_model([0, 3, 1, 2], [0, 2, 3, 1])
    assert cancel_transpose_pairs(model) == 1 and op_counts(model) == {"Relu": 1}
    np.testing.assert_array_equal(_session(model).run(None, {"x": x})[0], np.maximum(x, 0))
    model = _transpose_model([0, 3, 1, 2], [0, 3, 1, 2])
    assert cancel_transpose_pairs(model) == 0 and op_counts(model)["Transpose"] == 2


def test_real_jax2onnx_export_runs_after_the_rewrite():
    """The upstream defect on a one-layer Keras model (see export/JAX2ONNX_MAXPOOL.md)."""
    import jax2onnx
    import keras

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(4, 3, padding="same")(inputs)))
    proto = jax2onnx.to_onnx(lambda x: model(x, training=False), inputs=[("B", "2*h", "2*w", 3)],
                             return_mode="proto")
    x = np.random.default_rng(3).random((2, 10, 14, 3), dtype=np.float32)
    with pytest.raises(Exception, match="Unsupported pooling size"):
        _session(proto).run(None, {proto.graph.input[0].name: x})
    assert fix_nhwc_pooling(proto) == 1
    got = _session(proto).run(None, {proto.graph.input[0].name: x})[0]
    np.testing.assert_allclose(got, np.asarray(model(x)), atol=1e-5)
