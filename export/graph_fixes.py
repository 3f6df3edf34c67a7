"""Graph rewrites that make jax2onnx output run on onnxruntime (onnx only; no keras or jax).

jax2onnx 0.17.1 lowers ``lax.reduce_window_max`` over an NHWC tensor with window (1, kh, kw, 1)
as pooling with four spatial axes over a rank-6 tensor::

    x (N, H, W, C) -> Unsqueeze(0) -> Unsqueeze(0) -> MaxPool(kernel_shape=[1, kh, kw, 1])
                   -> Squeeze([0, 1]) -> (N, H/kh, W/kw, C)

That is valid ONNX, but onnxruntime implements pooling over 1 to 3 spatial axes only and fails at
run time with "Unsupported pooling size" (see ``JAX2ONNX_MAXPOOL.md``). ``fix_nhwc_pooling``
rewrites each such chain as ``Transpose(NCHW) -> MaxPool([kh, kw]) -> Transpose(NHWC)``, which
computes the same values; ``cancel_transpose_pairs`` then removes the back-to-back Transposes
this leaves in front of the next convolution (itself wrapped in NHWC<->NCHW Transposes).
"""

from __future__ import annotations

import collections

import onnx
from onnx import helper, numpy_helper

POOL_OPS = ("MaxPool", "AveragePool", "LpPool")
TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


class GraphFixError(ValueError):
    """A graph with a pattern the rewrite does not recognise; the message names the node."""


def _constant_ints(graph: onnx.GraphProto, name: str) -> list[int] | None:
    for init in graph.initializer:
        if init.name == name:
            return [int(v) for v in numpy_helper.to_array(init).ravel()]
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return [int(v) for v in numpy_helper.to_array(node.attribute[0].t).ravel()]
    return None


def _axes(graph: onnx.GraphProto, node: onnx.NodeProto) -> list[int] | None:
    """The axes of an Unsqueeze/Squeeze: an input from opset 13, an attribute before."""
    if len(node.input) > 1:
        return _constant_ints(graph, node.input[1])
    for attr in node.attribute:
        if attr.name == "axes":
            return list(attr.ints)
    return None


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _index(graph: onnx.GraphProto):
    producer = {out: node for node in graph.node for out in node.output}
    consumers = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    return producer, consumers


def _nhwc_source(graph, pool, producer, consumers) -> tuple[str, list[onnx.NodeProto]] | None:
    """The rank-4 tensor behind a pool's leading Unsqueezes, and those Unsqueeze nodes."""
    chain, name = [], pool.input[0]
    while len(chain) < 2:
        node = producer.get(name)
        if node is None or node.op_type != "Unsqueeze" or len(consumers[node.output[0]]) != 1:
            break
        chain.append(node)
        name = node.input[0]
    # Replay the Unsqueezes forward: the source axes must end up behind two new leading axes.
    layout: list[int | None] = [0, 1, 2, 3]
    for node in reversed(chain):
        axes = _axes(graph, node)
        if axes is None:
            return None
        rank = len(layout) + len(axes)
        for axis in sorted(a % rank for a in axes):
            layout.insert(axis, None)
    return (name, chain) if layout == [None, None, 0, 1, 2, 3] else None


def fix_nhwc_pooling(model: onnx.ModelProto) -> int:
    """Rewrite every 4-spatial-axis pooling chain in place; returns how many were rewritten.

    Raises:
        GraphFixError: a pooling node with four spatial axes that is not the NHWC chain above,
            or whose window spans the batch or channel axis.
    """
    graph = model.graph
    rewritten = 0
    for pool in [n for n in graph.node if n.op_type in POOL_OPS]:
        attrs = _attrs(pool)
        kernel = list(attrs.get("kernel_shape", []))
        if len(kernel) != 4:
            continue
        producer, consumers = _index(graph)
        strides = list(attrs.get("strides", [1] * 4))
        dilations = list(attrs.get("dilations", [1] * 4))
        pads = list(attrs.get("pads", [0] * 8))
        where = f"{pool.op_type} node {pool.name!r} (kernel_shape {kernel}, strides {strides})"
        if (kernel[0], kernel[3], strides[0], strides[3], dilations[0], dilations[3]) != (1,) * 6 \
                or pads[0] or pads[3] or pads[4] or pads[7]:
            raise GraphFixError(f"{where}: window spans the batch or channel axis; "
                                "expected (1, kh, kw, 1) over NHWC")
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or len(pool.output) != 1:
            raise GraphFixError(f"{where}: auto_pad or an Indices output; expected explicit pads")
        source = _nhwc_source(graph, pool, producer, consumers)
        squeezes = consumers[pool.output[0]]
        if source is None or len(squeezes) != 1 or squeezes[0].op_type != "Squeeze" \
                or sorted(_axes(graph, squeezes[0]) or []) != [0, 1]:
            raise GraphFixError(f"{where}: expected Unsqueeze -> Unsqueeze -> pool -> "
                                "Squeeze([0, 1]) around an NHWC tensor")
        x, unsqueezes = source
        squeeze = squeezes[0]
        base = pool.name or pool.output[0]
        new_attrs = {k: v for k, v in attrs.items() if k not in ("auto_pad", "storage_order")}
        new_attrs.update(kernel_shape=kernel[1:3], strides=strides[1:3])
        if "dilations" in attrs:  # AveragePool has no dilations before opset 19
            new_attrs["dilations"] = dilations[1:3]
        if "pads" in attrs:
            new_attrs["pads"] = pads[1:3] + pads[5:7]
        new_nodes = [
            helper.make_node("Transpose", [x], [f"{base}_nchw_in"], name=f"{base}_to_nchw",
                             perm=TO_NCHW),
            helper.make_node(pool.op_type, [f"{base}_nchw_in"], [f"{base}_nchw_out"],
                             name=f"{base}_nchw", **new_attrs),
            helper.make_node("Transpose", [f"{base}_nchw_out"], [squeeze.output[0]],
                             name=f"{base}_to_nhwc", perm=TO_NHWC),
        ]
        position = list(graph.node).index(pool)
        for old in [*unsqueezes, pool, squeeze]:
            graph.node.remove(old)
        position -= len(unsqueezes)  # the Unsqueezes came before the pool
        for offset, node in enumerate(new_nodes):
            graph.node.insert(position + offset, node)
        rewritten += 1
    _prune(graph)
    return rewritten


def cancel_transpose_pairs(model: onnx.ModelProto) -> int:
    """Remove Transpose -> Transpose pairs that compose to the identity; returns pairs removed."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    removed = 0
    changed = True
    while changed:
        changed = False
        producer, consumers = _index(graph)
        for second in graph.node:
            first = producer.get(second.input[0]) if second.op_type == "Transpose" else None
            if first is None or first.op_type != "Transpose" or second.output[0] in outputs:
                continue
            p1, p2 = _attrs(first).get("perm"), _attrs(second).get("perm")
            if p1 is None or p2 is None or [p1[i] for i in p2] != list(range(len(p1))):
                continue
            for node in consumers[second.output[0]]:
                for i, name in enumerate(node.input):
                    if name == second.output[0]:
                        node.input[i] = first.input[0]
            graph.node.remove(second)
            if len(consumers[first.output[0]]) == 1 and first.output[0] not in outputs:
                graph.node.remove(first)
            removed += 1
            changed = True
            break
    _prune(graph)
    return removed


def _prune(graph: onnx.GraphProto) -> None:
    """Drop initializers no node reads and shape annotations of tensors no node produces."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    produced = {out for node in graph.node for out in node.output}
    for value in [v for v in graph.value_info if v.name not in produced]:
        graph.value_info.remove(value)


def rename_io_dims(model: onnx.ModelProto, names=("batch", "height", "width")) -> None:
    """Name the symbolic N, H, W dims of every graph input and output consistently."""
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip(dims, names):
            if not dim.HasField("dim_value"):
                dim.dim_param = name


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type, most frequent first."""
    return dict(collections.Counter(n.op_type for n in model.graph.node).most_common())
