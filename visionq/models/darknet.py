"""visionq's own Darknet → ONNX converter: parses a .cfg, reads the .weights, emits an ONNX graph.

Batch norm is folded into the convolutions, so the graph is plain Conv → activation; each [yolo] layer
becomes a graph output holding the raw head tensor, decoded later by `visionq.detect.decoders`
with the anchors, masks and `scale_x_y` recorded here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from visionq.detect.manifest import DarknetHead
from visionq.errors import ModelError
from visionq.models.darknet_cfg import Section, parse_cfg

OPSET = 18  # Mish arrived in opset 18; ONNX Runtime supports it on CPU.
INPUT_NAME = "images"


@dataclass(slots=True)
class Conversion:
    """The converted graph and what decoding it needs."""

    model: onnx.ModelProto
    width: int
    height: int
    heads: list[DarknetHead] = field(default_factory=list)


class _Weights:
    """Sequential reader over a .weights file, after its header."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 20:
            raise ModelError("weights file is too short to hold a Darknet header")
        major, minor, _revision = (int(v) for v in np.frombuffer(data, dtype="<i4", count=3))
        # Darknet wrote `seen` as 64 bits from version 0.2 on.
        seen_bytes = 8 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 4
        body = len(data) - 12 - seen_bytes
        if body % 4:
            raise ModelError(f"weights file ends in the middle of a float ({len(data)} bytes): truncated?")
        self._floats = np.frombuffer(data, dtype="<f4", offset=12 + seen_bytes)
        self._pos = 0

    def take(self, count: int) -> np.ndarray:
        if self._pos + count > self._floats.size:
            raise ModelError("weights file is shorter than the cfg needs: wrong cfg for these weights?")
        out = self._floats[self._pos : self._pos + count]
        self._pos += count
        return out.astype(np.float32)

    def check_consumed(self) -> None:
        left = self._floats.size - self._pos
        if left:
            raise ModelError(f"weights file has {left} floats more than the cfg uses: wrong cfg?")


@dataclass(slots=True)
class _Layer:
    name: str
    channels: int
    height: int
    width: int


class _Builder:
    def __init__(self, weights: _Weights) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._ids = 0

    def name(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_{self._ids}"

    def const(self, prefix: str, array: np.ndarray) -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], prefix: str, **attrs: Any) -> str:
        out = self.name(prefix)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def activation(self, kind: str, x: str, where: Section) -> str:
        if kind == "linear":
            return x
        if kind == "leaky":
            return self.node("LeakyRelu", [x], "leaky", alpha=0.1)
        if kind == "relu":
            return self.node("Relu", [x], "relu")
        if kind == "logistic":
            return self.node("Sigmoid", [x], "sigmoid")
        if kind == "mish":
            return self.node("Mish", [x], "mish")
        if kind == "swish":
            return self.node("Mul", [x, self.node("Sigmoid", [x], "sigmoid")], "swish")
        raise ModelError(f"[{where.kind}] at line {where.line}: activation '{kind}' is not supported")

    def convolutional(self, s: Section, prev: _Layer) -> _Layer:
        filters, size = s.int_("filters"), s.int_("size")
        stride, groups = s.int_("stride", 1), s.int_("groups", 1)
        pad = size // 2 if s.int_("pad", 0) else s.int_("padding", 0)
        bias = self.weights.take(filters)
        if s.int_("batch_normalize", 0):
            scales, mean, var = (self.weights.take(filters) for _ in range(3))
            if (var < 0).any() or not np.isfinite(var).all():
                raise ModelError(
                    f"[convolutional] at line {s.line}: negative batch-norm variance: wrong weights?"
                )
            factor = scales / (np.sqrt(var) + 1e-6)  # Darknet's normalize_cpu epsilon
            bias = bias - mean * factor
        else:
            factor = np.ones(filters, dtype=np.float32)
        kernel = self.weights.take(filters * (prev.channels // groups) * size * size)
        kernel = kernel.reshape(filters, prev.channels // groups, size, size) * factor[:, None, None, None]
        x = self.node(
            "Conv",
            [prev.name, self.const("w", kernel.astype(np.float32)), self.const("b", bias.astype(np.float32))],
            "conv",
            kernel_shape=[size, size],
            strides=[stride, stride],
            pads=[pad, pad, pad, pad],
            group=groups,
        )
        x = self.activation(s.str_("activation", "logistic"), x, s)
        h = (prev.height + 2 * pad - size) // stride + 1
        w = (prev.width + 2 * pad - size) // stride + 1
        return _Layer(x, filters, h, w)

    def maxpool(self, s: Section, prev: _Layer) -> _Layer:
        size = s.int_("size", 1)
        stride = s.int_("stride", 1)
        padding = s.int_("padding", size - 1)
        h, w = ((d + padding - size) // stride + 1 for d in (prev.height, prev.width))
        # Darknet pads `padding // 2` before and whatever the output size still needs after.
        top = left = padding // 2
        bottom = max(0, (h - 1) * stride + size - prev.height - top)
        right = max(0, (w - 1) * stride + size - prev.width - left)
        x = self.node(
            "MaxPool",
            [prev.name],
            "maxpool",
            kernel_shape=[size, size],
            strides=[stride, stride],
            pads=[top, left, bottom, right],
        )
        return _Layer(x, prev.channels, h, w)

    def route(self, s: Section, layers: list[_Layer]) -> _Layer:
        index = len(layers)
        sources = [layers[i if i >= 0 else index + i] for i in s.ints("layers")]
        groups, group_id = s.int_("groups", 1), s.int_("group_id", 0)
        parts: list[str] = []
        channels = 0
        for src in sources:
            if groups == 1:
                parts.append(src.name)
                channels += src.channels
                continue
            part = src.channels // groups
            start = self.const("start", np.array([group_id * part], dtype=np.int64))
            end = self.const("end", np.array([(group_id + 1) * part], dtype=np.int64))
            axis = self.const("axis", np.array([1], dtype=np.int64))
            parts.append(self.node("Slice", [src.name, start, end, axis], "slice"))
            channels += part
        first = sources[0]
        if any((src.height, src.width) != (first.height, first.width) for src in sources):
            raise ModelError(f"[route] at line {s.line} joins layers of different sizes")
        x = parts[0] if len(parts) == 1 else self.node("Concat", parts, "route", axis=1)
        return _Layer(x, channels, first.height, first.width)

    def upsample(self, s: Section, prev: _Layer) -> _Layer:
        stride = s.int_("stride", 2)
        scales = self.const("scales", np.array([1, 1, stride, stride], dtype=np.float32))
        x = self.node("Resize", [prev.name, "", scales], "upsample", mode="nearest")
        return _Layer(x, prev.channels, prev.height * stride, prev.width * stride)

    def shortcut(self, s: Section, layers: list[_Layer]) -> _Layer:
        prev = layers[-1]
        src_index = s.int_("from")
        other = layers[src_index if src_index >= 0 else len(layers) + src_index]
        if (other.channels, other.height, other.width) != (prev.channels, prev.height, prev.width):
            raise ModelError(f"[shortcut] at line {s.line} adds layers of different shapes")
        x = self.node("Add", [prev.name, other.name], "shortcut")
        x = self.activation(s.str_("activation", "linear"), x, s)
        return _Layer(x, prev.channels, prev.height, prev.width)


def convert(cfg_text: str, weights: bytes, *, name: str = "darknet") -> Conversion:
    """Convert a Darknet cfg and its weights into an ONNX graph taking RGB in [0, 1], NCHW, batch 1."""
    sections = parse_cfg(cfg_text)
    net = sections[0]
    width, height, channels = net.int_("width"), net.int_("height"), net.int_("channels", 3)
    builder = _Builder(_Weights(weights))
    layers: list[_Layer] = []
    heads: list[DarknetHead] = []
    prev = _Layer(INPUT_NAME, channels, height, width)
    for s in sections[1:]:
        if s.kind == "convolutional":
            layer = builder.convolutional(s, prev)
        elif s.kind == "maxpool":
            layer = builder.maxpool(s, prev)
        elif s.kind == "route":
            layer = builder.route(s, layers)
        elif s.kind == "upsample":
            layer = builder.upsample(s, prev)
        elif s.kind == "shortcut":
            layer = builder.shortcut(s, layers)
        elif s.kind == "yolo":
            heads.append(_yolo_head(s, prev, width))
            layer = prev
        elif s.kind == "dropout":
            layer = prev
        else:
            raise ModelError(f"cfg line {s.line}: layer [{s.kind}] is not supported by the converter")
        layers.append(layer)
        prev = layer
    builder.weights.check_consumed()
    if not heads:
        raise ModelError("cfg has no [yolo] layer: not a YOLO detector")
    by_name = {layer.name: layer for layer in layers}
    outputs: list[onnx.ValueInfoProto] = []
    for head in heads:
        out_layer = by_name[head.output]
        builder.nodes.append(helper.make_node("Identity", [out_layer.name], [f"head_{len(outputs)}"]))
        shape = [1, out_layer.channels, out_layer.height, out_layer.width]
        outputs.append(helper.make_tensor_value_info(f"head_{len(outputs)}", TensorProto.FLOAT, shape))
    heads = [dataclasses.replace(h, output=f"head_{i}") for i, h in enumerate(heads)]
    graph = helper.make_graph(
        builder.nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, channels, height, width])],
        outputs,
        builder.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="visionq")
    model.ir_version = 8  # widely loadable (ONNX Runtime >= 1.10)
    onnx.checker.check_model(model)
    return Conversion(model, width, height, heads)


def _yolo_head(s: Section, prev: _Layer, net_width: int) -> DarknetHead:
    flat = [float(v) for v in s.str_("anchors").split(",") if v.strip()]
    pairs = list(zip(flat[0::2], flat[1::2], strict=True))
    mask = s.ints("mask", list(range(len(pairs))))
    classes = s.int_("classes", 80)
    if prev.channels != len(mask) * (5 + classes):
        raise ModelError(
            f"[yolo] at line {s.line}: input has {prev.channels} channels, "
            f"{len(mask)} anchors x (5 + {classes} classes) expected"
        )
    return DarknetHead(
        output=prev.name,
        anchors=tuple(pairs[m] for m in mask),
        classes=classes,
        scale_x_y=s.float_("scale_x_y", 1.0),
        new_coords=bool(s.int_("new_coords", 0)),
        stride=net_width // prev.width,
    )
