"""Convert the two BlazePose TFLite models to ONNX.

A converter for exactly the operators ``pose_detection.tflite`` and ``pose_landmark_full.tflite``
use (see :data:`SUPPORTED_OPERATORS`); anything else raises :class:`ConversionError` naming the
operator. General converters fail on these files (DESIGN.md §5), and owning the ~400 lines makes
every numeric choice visible:

- Constants are folded: float16 weights behind ``DEQUANTIZE`` and sparse weights behind
  ``DENSIFY`` become dense float32 initializers.
- The model keeps TFLite's NHWC input (same name and shape, batch dimension symbolic
  ``"batch"``). Inside, 4-D activations live in NCHW, the layout ONNX convolutions use; a
  Transpose is inserted wherever a tensor is needed in the other layout (at the input, before
  ``RESHAPE``, at 4-D outputs).
- Output tensors keep their TFLite names and NHWC shapes. Reshape targets that pin batch 1 are
  rewritten to 0 ("copy the batch dimension"), so every batch size works.
- Padding follows TFLite: SAME puts the odd pixel after (bottom/right), VALID pads nothing; both
  are written as explicit pads. ``RESIZE_BILINEAR`` flags map to the Resize coordinate mode
  (half_pixel_centers → ``half_pixel``, align_corners → ``align_corners``, neither →
  ``asymmetric``); ``DEPTH_TO_SPACE`` in NHWC is ONNX ``DCR`` in NCHW.

Model outputs (checked against the TFLite runtime in tests/engines/test_converter.py):

- detector (input ``input_1`` [batch, 224, 224, 3]): ``Identity`` [batch, 2254, 12] box and
  keypoint regressors, ``Identity_1`` [batch, 2254, 1] score logits.
- landmarks (input ``input_1`` [batch, 256, 256, 3]), with :data:`LANDMARK_OUTPUTS`:
  ``Identity`` [batch, 195] landmarks, ``Identity_1`` [batch, 1] pose flag (a probability),
  ``Identity_3`` [batch, 64, 64, 39] heatmaps (MediaPipe refines every landmark with them; without
  them landmarks land about 9 px from MediaPipe's at 720p), ``Identity_4`` [batch, 117] world
  landmarks; the segmentation head (``Identity_2``) is pruned.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper

from engines.tflite_reader import Graph, Operator, Tensor, densify, dequantize, read_model

logger = logging.getLogger(__name__)

CONVERTER_VERSION = "2"
"""Bump whenever the ONNX this module writes could change; recorded in the models manifest."""

OPSET = 17
IR_VERSION = 8
BATCH_DIMENSION = "batch"

LANDMARK_OUTPUTS = ("Identity", "Identity_1", "Identity_3", "Identity_4")
"""Outputs kept from ``pose_landmark_full.tflite``: landmarks, pose flag, heatmaps, world
landmarks (only the segmentation head is pruned)."""

SUPPORTED_OPERATORS = frozenset(
    {
        "PAD", "DEQUANTIZE", "DENSIFY", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "DEPTH_TO_SPACE",
        "RESIZE_BILINEAR", "RESHAPE", "CONCATENATION", "MAX_POOL_2D", "LOGISTIC",
    }
)  # fmt: skip

_PADDING_SAME = 0
_PADDING_VALID = 1
_TO_NCHW = (0, 3, 1, 2)
_TO_NHWC = (0, 2, 3, 1)


class ConversionError(ValueError):
    """The TFLite model uses something this converter does not implement."""


class Layout(Enum):
    NATURAL = "natural"
    """The tensor exactly as TFLite defines it (NHWC for 4-D activations)."""
    NCHW = "nchw"
    """A 4-D NHWC tensor transposed to NCHW."""


@dataclass(frozen=True)
class _Activation:
    op_type: str
    clip: tuple[float, float] | None = None


_FUSED_ACTIVATIONS = {
    1: _Activation("Relu"),
    2: _Activation("Clip", (-1.0, 1.0)),
    3: _Activation("Clip", (0.0, 6.0)),
    4: _Activation("Tanh"),
}
"""TFLite ``ActivationFunctionType`` codes (0 = NONE) and their ONNX equivalents."""


def convert(
    tflite_model: bytes, *, output_names: Sequence[str] | None = None, name: str = "model"
) -> onnx.ModelProto:
    """Convert a TFLite model; ``output_names`` keeps only those outputs (default: all)."""
    return convert_graph(read_model(tflite_model), output_names=output_names, name=name)


def convert_graph(
    graph: Graph, *, output_names: Sequence[str] | None = None, name: str = "model"
) -> onnx.ModelProto:
    """Convert an already parsed TFLite graph (see :func:`convert`)."""
    outputs = _select_outputs(graph, output_names)
    operators = _needed_operators(graph, outputs)
    unsupported = sorted({op.opcode for op in operators} - SUPPORTED_OPERATORS)
    if unsupported:
        raise ConversionError(f"unsupported TFLite operator(s): {', '.join(unsupported)}")
    builder = _GraphBuilder(graph)
    for operator in operators:
        builder.convert_operator(operator)
    model = builder.finish(name, outputs)
    onnx.checker.check_model(model, full_check=True)
    logger.info(
        "converted %s: %d TFLite operators -> %d ONNX nodes",
        name,
        len(operators),
        len(model.graph.node),
    )
    return model


def _select_outputs(graph: Graph, output_names: Sequence[str] | None) -> tuple[int, ...]:
    if output_names is None:
        return graph.outputs
    by_name = {graph.tensors[index].name: index for index in graph.outputs}
    missing = [name for name in output_names if name not in by_name]
    if missing:
        raise ConversionError(f"no model output named {missing}; outputs are {sorted(by_name)}")
    return tuple(by_name[name] for name in output_names)


def _needed_operators(graph: Graph, outputs: tuple[int, ...]) -> list[Operator]:
    """The operators the chosen outputs depend on, in the model's (topological) order."""
    producer = {tensor: op for op in graph.operators for tensor in op.outputs}
    needed: set[int] = set()
    pending = list(outputs)
    while pending:
        tensor = pending.pop()
        op = producer.get(tensor)
        if op is not None and op.index not in needed:
            needed.add(op.index)
            pending.extend(index for index in op.inputs if index >= 0)
    return [op for op in graph.operators if op.index in needed]


class _GraphBuilder:
    """Emits ONNX nodes for TFLite operators, tracking each tensor's ONNX name per layout."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.constants: dict[int, NDArray[Any]] = {}
        self.values: dict[tuple[int, Layout], str] = {}
        self._names = _unique_names(graph.tensors)
        for index in graph.inputs:
            self.values[(index, Layout.NATURAL)] = self._names[index]

    # -- tensors ---------------------------------------------------------------------------------

    def tensor(self, index: int) -> Tensor:
        return self.graph.tensors[index]

    def constant(self, index: int) -> NDArray[Any] | None:
        """The value of a constant tensor (folded or stored), or None for an activation."""
        if index in self.constants:
            return self.constants[index]
        tensor = self.tensor(index)
        if tensor.data is None or tensor.sparsity is not None:
            return None
        value = tensor.data.reshape(tensor.shape)
        self.constants[index] = value
        return value

    def require_constant(self, index: int, role: str, op: Operator) -> NDArray[Any]:
        value = self.constant(index)
        if value is None:
            raise ConversionError(f"{op.opcode} #{op.index}: {role} must be a constant")
        return value

    def initializer(self, name: str, value: NDArray[Any]) -> str:
        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
        return name

    def stored_layout(self, index: int) -> Layout | None:
        for layout in (Layout.NCHW, Layout.NATURAL):
            if (index, layout) in self.values:
                return layout
        return None

    def value(self, index: int, layout: Layout) -> str:
        """The ONNX name of tensor ``index`` in ``layout``, adding a Transpose if needed."""
        key = (index, layout)
        if key in self.values:
            return self.values[key]
        constant = self.constant(index)
        if constant is not None:
            array = constant.astype(np.float32) if constant.dtype == np.float16 else constant
            if layout is Layout.NCHW:
                array = array.transpose(_TO_NCHW)
            name = self.initializer(self._names[index] + _suffix(layout), array)
        else:
            other = Layout.NATURAL if layout is Layout.NCHW else Layout.NCHW
            if (index, other) not in self.values:
                raise ConversionError(f"tensor {self._names[index]!r} is used before it is made")
            perm = _TO_NCHW if layout is Layout.NCHW else _TO_NHWC
            name = self._names[index] + _suffix(layout)
            self.emit("Transpose", [self.values[(index, other)]], [name], perm=list(perm))
        self.values[key] = name
        return name

    def define(self, index: int, layout: Layout) -> str:
        """Name the ONNX value that will hold tensor ``index`` in ``layout``."""
        name = self._names[index] + _suffix(layout)
        self.values[(index, layout)] = name
        return name

    def emit(self, op_type: str, inputs: list[str], outputs: list[str], **attributes: Any) -> None:
        node_name = f"{outputs[0]}/{op_type}"
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=node_name, **attributes))

    def emit_activated(
        self, op: Operator, op_type: str, inputs: list[str], layout: Layout, **attributes: Any
    ) -> None:
        """Emit ``op_type`` writing ``op``'s output, followed by the fused activation, if any."""
        output = self.define(op.outputs[0], layout)
        code = op.options.get("fused_activation_function", 0)
        if code == 0:
            self.emit(op_type, inputs, [output], **attributes)
            return
        activation = _FUSED_ACTIVATIONS.get(code)
        if activation is None:
            raise ConversionError(f"{op.opcode} #{op.index}: fused activation {code} unsupported")
        raw = output + "/pre_activation"
        self.emit(op_type, inputs, [raw], **attributes)
        extra: list[str] = []
        if activation.clip is not None:
            low, high = activation.clip
            extra = [
                self.initializer(f"clip_min_{low:g}", np.array(low, np.float32)),
                self.initializer(f"clip_max_{high:g}", np.array(high, np.float32)),
            ]
        self.emit(activation.op_type, [raw, *extra], [output])

    # -- operators -------------------------------------------------------------------------------

    def convert_operator(self, op: Operator) -> None:
        if op.opcode in ("DEQUANTIZE", "DENSIFY") and self._fold(op):
            return
        handler = getattr(self, "_op_" + op.opcode.lower(), None)
        if handler is None:  # DENSIFY/DEQUANTIZE of an activation: nothing to fold
            raise ConversionError(f"{op.opcode} #{op.index} on a non-constant input is unsupported")
        handler(op)

    def _fold(self, op: Operator) -> bool:
        source = self.tensor(op.inputs[0])
        if op.opcode == "DENSIFY":
            if source.sparsity is None:
                return False
            self.constants[op.outputs[0]] = densify(source)
            return True
        value = self.constant(op.inputs[0])
        if value is None:
            return False
        self.constants[op.outputs[0]] = dequantize(source, value)
        return True

    def _op_conv_2d(self, op: Operator) -> None:
        weights = self.require_constant(op.inputs[1], "filter", op)  # O, H, W, I
        channels_in = self.tensor(op.inputs[0]).shape[3]
        groups = channels_in // weights.shape[3]
        self._convolution(op, weights.transpose(0, 3, 1, 2), groups, "oihw")

    def _op_depthwise_conv_2d(self, op: Operator) -> None:
        weights = self.require_constant(op.inputs[1], "filter", op)  # 1, H, W, C * multiplier
        channels_in = self.tensor(op.inputs[0]).shape[3]
        self._convolution(op, weights.transpose(3, 0, 1, 2), channels_in, "depthwise")

    def _convolution(self, op: Operator, weights: NDArray[Any], groups: int, kind: str) -> None:
        inputs = [
            self.value(op.inputs[0], Layout.NCHW),
            self.initializer(f"{self._names[op.inputs[1]]}/{kind}", weights.astype(np.float32)),
        ]
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            bias = self.require_constant(op.inputs[2], "bias", op).astype(np.float32)
            inputs.append(self.initializer(self._names[op.inputs[2]], bias))
        dilations = [op.options.get("dilation_h_factor", 1), op.options.get("dilation_w_factor", 1)]
        kernel = [int(weights.shape[2]), int(weights.shape[3])]
        self.emit_activated(
            op,
            "Conv",
            inputs,
            Layout.NCHW,
            kernel_shape=kernel,
            strides=self._strides(op),
            dilations=dilations,
            pads=self._pads(op, kernel, dilations),
            group=groups,
        )

    def _op_max_pool_2d(self, op: Operator) -> None:
        kernel = [op.options["filter_height"], op.options["filter_width"]]
        self.emit_activated(
            op,
            "MaxPool",
            [self.value(op.inputs[0], Layout.NCHW)],
            Layout.NCHW,
            kernel_shape=kernel,
            strides=self._strides(op),
            pads=self._pads(op, kernel, [1, 1]),
        )

    def _strides(self, op: Operator) -> list[int]:
        return [op.options.get("stride_h", 1), op.options.get("stride_w", 1)]

    def _pads(self, op: Operator, kernel: list[int], dilations: list[int]) -> list[int]:
        """ONNX pads [top, left, bottom, right] reproducing TFLite SAME/VALID padding."""
        padding = op.options.get("padding", _PADDING_SAME)
        if padding == _PADDING_VALID:
            return [0, 0, 0, 0]
        if padding != _PADDING_SAME:
            raise ConversionError(f"{op.opcode} #{op.index}: padding type {padding} unsupported")
        input_hw = self.tensor(op.inputs[0]).shape[1:3]
        before, after = [], []
        for size, stride, k, dilation in zip(
            input_hw, self._strides(op), kernel, dilations, strict=True
        ):
            effective = (k - 1) * dilation + 1
            output = -(-size // stride)
            total = max((output - 1) * stride + effective - size, 0)
            before.append(total // 2)
            after.append(total - total // 2)
        return before + after

    def _op_pad(self, op: Operator) -> None:
        paddings = self.require_constant(op.inputs[1], "paddings", op).astype(np.int64)
        rank = len(self.tensor(op.inputs[0]).shape)
        layout = Layout.NCHW if rank == 4 else Layout.NATURAL
        if layout is Layout.NCHW:
            paddings = paddings[list(_TO_NCHW)]
        pads = np.concatenate([paddings[:, 0], paddings[:, 1]])
        self.emit(
            "Pad",
            [
                self.value(op.inputs[0], layout),
                self.initializer(f"{self._names[op.inputs[1]]}{_suffix(layout)}", pads),
            ],
            [self.define(op.outputs[0], layout)],
            mode="constant",
        )

    def _op_add(self, op: Operator) -> None:
        layout = self._shared_layout(op.inputs[:2])
        inputs = [self.value(index, layout) for index in op.inputs[:2]]
        self.emit_activated(op, "Add", inputs, layout)

    def _shared_layout(self, indices: Sequence[int]) -> Layout:
        """NCHW if some input already lives in NCHW and every input is 4-D, else natural.

        A constant of lower rank (broadcast) keeps the operation in the natural layout.
        """
        stored = [self.stored_layout(index) for index in indices]
        four_d = all(len(self.tensor(index).shape) == 4 for index in indices)
        return Layout.NCHW if four_d and Layout.NCHW in stored else Layout.NATURAL

    def _op_concatenation(self, op: Operator) -> None:
        rank = len(self.tensor(op.outputs[0]).shape)
        axis = op.options.get("axis", 0) % rank
        layout = self._shared_layout(op.inputs)
        if layout is Layout.NCHW:
            axis = _TO_NCHW.index(axis)
        inputs = [self.value(index, layout) for index in op.inputs]
        self.emit_activated(op, "Concat", inputs, layout, axis=axis)

    def _op_depth_to_space(self, op: Operator) -> None:
        self.emit(
            "DepthToSpace",
            [self.value(op.inputs[0], Layout.NCHW)],
            [self.define(op.outputs[0], Layout.NCHW)],
            blocksize=op.options["block_size"],
            mode="DCR",
        )

    def _op_resize_bilinear(self, op: Operator) -> None:
        if op.options.get("align_corners", 0):
            mode = "align_corners"
        elif op.options.get("half_pixel_centers", 0):
            mode = "half_pixel"
        else:
            mode = "asymmetric"
        input_hw = self.tensor(op.inputs[0]).shape[1:3]
        output_hw = self.require_constant(op.inputs[1], "size", op)
        scales = np.array(
            [1.0, 1.0, *(float(o) / float(i) for o, i in zip(output_hw, input_hw, strict=True))],
            np.float32,
        )
        if not all(np.floor(scales[2:] * np.array(input_hw)) == output_hw):
            raise ConversionError(f"{op.opcode} #{op.index}: size {output_hw} is not a clean scale")
        self.emit(
            "Resize",
            [
                self.value(op.inputs[0], Layout.NCHW),
                "",
                self.initializer(f"{self._names[op.outputs[0]]}/scales", scales),
            ],
            [self.define(op.outputs[0], Layout.NCHW)],
            mode="linear",
            coordinate_transformation_mode=mode,
        )

    def _op_reshape(self, op: Operator) -> None:
        if len(op.inputs) < 2 or op.inputs[1] < 0:
            raise ConversionError(f"{op.opcode} #{op.index}: shape must be given as an input")
        shape = self.require_constant(op.inputs[1], "shape", op).astype(np.int64).copy()
        if len(shape) > 0 and shape[0] == 1:
            shape[0] = 0  # ONNX: copy the input's first (batch) dimension
        self.emit(
            "Reshape",
            [
                self.value(op.inputs[0], Layout.NATURAL),
                self.initializer(f"{self._names[op.inputs[1]]}/batch_free", shape),
            ],
            [self.define(op.outputs[0], Layout.NATURAL)],
        )

    def _op_logistic(self, op: Operator) -> None:
        layout = self.stored_layout(op.inputs[0]) or Layout.NATURAL
        self.emit(
            "Sigmoid", [self.value(op.inputs[0], layout)], [self.define(op.outputs[0], layout)]
        )

    # -- the model -------------------------------------------------------------------------------

    def finish(self, name: str, outputs: tuple[int, ...]) -> onnx.ModelProto:
        for index in outputs:
            if self.constant(index) is not None:
                raise ConversionError(f"output {self._names[index]!r} is a constant")
            self.value(index, Layout.NATURAL)  # TFLite's name and layout
        graph = helper.make_graph(
            self._live_nodes(outputs),
            name,
            [self._value_info(index) for index in self.graph.inputs],
            [self._value_info(index) for index in outputs],
            initializer=[],
        )
        used = {name for node in graph.node for name in node.input}
        graph.initializer.extend(value for key, value in self.initializers.items() if key in used)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="fitscore.tflite_onnx",
            producer_version=CONVERTER_VERSION,
        )
        model.ir_version = IR_VERSION
        return model

    def _live_nodes(self, outputs: tuple[int, ...]) -> list[onnx.NodeProto]:
        """Drop nodes whose results nothing uses (e.g. a Transpose made for a pruned head)."""
        live = {self._names[index] for index in outputs}
        kept: list[onnx.NodeProto] = []
        for node in reversed(self.nodes):
            if any(output in live for output in node.output):
                kept.append(node)
                live.update(node.input)
        return kept[::-1]

    def _value_info(self, index: int) -> onnx.ValueInfoProto:
        shape: list[int | str] = [BATCH_DIMENSION, *self.tensor(index).shape[1:]]
        return helper.make_tensor_value_info(self._names[index], onnx.TensorProto.FLOAT, shape)


def _suffix(layout: Layout) -> str:
    return "" if layout is Layout.NATURAL else "/nchw"


def _unique_names(tensors: Sequence[Tensor]) -> list[str]:
    seen: set[str] = set()
    names = []
    for tensor in tensors:
        name = tensor.name or f"tensor_{tensor.index}"
        if name in seen:
            name = f"{name}__{tensor.index}"
        seen.add(name)
        names.append(name)
    return names
