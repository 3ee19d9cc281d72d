"""The tflite→ONNX converter, checked number for number against the TFLite runtime.

Two kinds of model: the real BlazePose files (random inputs and a real video frame prepared as
shared/research/blazepose.md describes), and tiny models built here with the flatbuffer builder
to reach what the real files do not (odd sizes, every resize mode, block-sparse weights, unknown
operators).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tflite
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from numpy.typing import NDArray

from engines.models import DETECTOR, LANDMARK, ModelFiles
from engines.tflite_onnx import LANDMARK_OUTPUTS, ConversionError, convert
from engines.tflite_reader import (
    Quantization,
    Tensor,
    TfliteFormatError,
    densify,
    dequantize,
    read_model,
)

Arrays = dict[str, NDArray[np.float32]]

MEDIA = Path(__file__).resolve().parents[3] / "shared" / "media" / "pushup_side_gg.mp4"
PIXEL_TOLERANCE = 1e-2
"""Landmarks and regressors are pixels of the model input (256 or 224 wide)."""
SCORE_TOLERANCE = 1e-4
"""Probabilities: the pose flag, and sigmoid of score / visibility / presence logits."""


def run_tflite(model: bytes, image: NDArray[np.float32], *, xnnpack: bool = False) -> Arrays:
    """Run TFLite: its reference kernels (the specification of every operator) by default.

    ``xnnpack`` runs the XNNPACK delegate MediaPipe uses instead. It sums in another order: on
    noise inputs, whose activations grow large, it and the reference kernels differ by up to 2e-3
    in a logit, so noise is compared with the reference kernels only.
    """
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=model, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    (input_detail,) = interpreter.get_input_details()
    interpreter.set_tensor(input_detail["index"], image)
    interpreter.invoke()
    return {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}


def run_onnx(session: ort.InferenceSession, image: NDArray[np.float32]) -> Arrays:
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input_1": image}), strict=True))


def cpu_session(model: bytes | str | Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def sigmoid(values: NDArray[np.float32]) -> NDArray[np.float64]:
    result: NDArray[np.float64] = np.exp(-np.logaddexp(0.0, -values.astype(np.float64)))
    return result


def assert_landmarks_match(got: Arrays, expected: Arrays) -> None:
    np.testing.assert_allclose(got["Identity"], expected["Identity"], rtol=0, atol=PIXEL_TOLERANCE)
    rows_got, rows_expected = (
        got["Identity"].reshape(-1, 39, 5),
        expected["Identity"].reshape(-1, 39, 5),
    )
    np.testing.assert_allclose(
        sigmoid(rows_got[..., 3:]), sigmoid(rows_expected[..., 3:]), rtol=0, atol=SCORE_TOLERANCE
    )
    np.testing.assert_allclose(
        got["Identity_1"], expected["Identity_1"], rtol=0, atol=SCORE_TOLERANCE
    )
    np.testing.assert_allclose(got["Identity_4"], expected["Identity_4"], rtol=0, atol=1e-4)


def assert_detections_match(got: Arrays, expected: Arrays) -> None:
    np.testing.assert_allclose(got["Identity"], expected["Identity"], rtol=0, atol=PIXEL_TOLERANCE)
    np.testing.assert_allclose(
        sigmoid(got["Identity_1"]), sigmoid(expected["Identity_1"]), rtol=0, atol=SCORE_TOLERANCE
    )
    np.testing.assert_allclose(got["Identity_1"], expected["Identity_1"], rtol=1e-5, atol=1e-3)


# -- real models --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector_tflite(model_files: ModelFiles) -> bytes:
    return model_files.detector_tflite.read_bytes()


@pytest.fixture(scope="module")
def landmark_tflite(model_files: ModelFiles) -> bytes:
    return model_files.landmark_tflite.read_bytes()


@pytest.fixture(scope="module")
def detector_onnx(detector_tflite: bytes) -> bytes:
    """Converted here, so the tests exercise the code and not a file converted earlier."""
    return DETECTOR.convert(detector_tflite)


@pytest.fixture(scope="module")
def landmark_onnx(landmark_tflite: bytes) -> bytes:
    return LANDMARK.convert(landmark_tflite)


@pytest.fixture(scope="module")
def detector(detector_onnx: bytes) -> ort.InferenceSession:
    return cpu_session(detector_onnx)


@pytest.fixture(scope="module")
def landmarks(landmark_onnx: bytes) -> ort.InferenceSession:
    return cpu_session(landmark_onnx)


@pytest.fixture(scope="module")
def frame_rgb() -> NDArray[np.uint8]:
    if not MEDIA.is_file():
        pytest.skip(f"real footage not available ({MEDIA} is absent)")
    import av

    with av.open(str(MEDIA)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index == 40:  # 1.7 s in: the wide side view, whole body visible
                return np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
    raise AssertionError("clip too short")


@pytest.fixture(scope="module")
def detector_input(frame_rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Letterboxed to 224×224, values in [-1, 1] (blazepose.md §1)."""
    import cv2

    height, width = frame_rgb.shape[:2]
    side = max(width, height)
    scale = 224 / side
    matrix = np.array(
        [[scale, 0, -(width / 2 - side / 2) * scale], [0, scale, -(height / 2 - side / 2) * scale]]
    )
    warped = cv2.warpAffine(frame_rgb, matrix, (224, 224), flags=cv2.INTER_LINEAR)
    return (warped * (2 / 255) - 1).astype(np.float32)[None]


@pytest.fixture(scope="module")
def landmark_input(
    frame_rgb: NDArray[np.uint8], detector_input: NDArray[np.float32], detector_tflite: bytes
) -> NDArray[np.float32]:
    """The rotated body crop from the TFLite detector's best anchor, values in [0, 1] (§2–§6a)."""
    import cv2

    outputs = run_tflite(detector_tflite, detector_input)
    best = int(np.argmax(outputs["Identity_1"][0, :, 0]))
    regressors = outputs["Identity"][0, best]
    anchor_x, anchor_y = anchor_centres()[best]
    height, width = frame_rgb.shape[:2]
    pad = (1 - min(width, height) / max(width, height)) / 2

    def to_pixels(offset_x: float, offset_y: float) -> tuple[float, float]:
        x, y = offset_x / 224 + anchor_x, offset_y / 224 + anchor_y
        if width > height:
            return x * width, (y - pad) / (1 - 2 * pad) * height
        return (x - pad) / (1 - 2 * pad) * width, y * height

    (x0, y0), (x1, y1) = to_pixels(*regressors[4:6]), to_pixels(*regressors[6:8])
    side = 2.5 * math.hypot(x1 - x0, y1 - y0)
    angle = math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0)
    cos, sin = math.cos(angle) * side / 256, math.sin(angle) * side / 256
    # tensor (u, v) -> image: centre + R(angle) · ((u - 128), (v - 128)) · side / 256
    matrix = np.array([[cos, -sin, x0 - 128 * (cos - sin)], [sin, cos, y0 - 128 * (sin + cos)]])
    crop = cv2.warpAffine(
        frame_rgb,
        matrix,
        (256, 256),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return (crop / 255).astype(np.float32)[None]


def anchor_centres() -> NDArray[np.float64]:
    """The 2254 SSD anchor centres of the detector, normalised (blazepose.md §2)."""
    centres = []
    for grid, per_cell in ((28, 2), (14, 2), (7, 6)):
        for y in range(grid):
            for x in range(grid):
                centres.extend([((x + 0.5) / grid, (y + 0.5) / grid)] * per_cell)
    return np.array(centres)


def random_images(shape: Sequence[int], low: float, count: int, seed: int) -> NDArray[np.float32]:
    return np.random.default_rng(seed).uniform(low, 1.0, (count, *shape)).astype(np.float32)


def test_onnx_inputs_and_outputs_keep_tflite_names_with_symbolic_batch(
    detector: ort.InferenceSession, landmarks: ort.InferenceSession
) -> None:
    def signature(values: Sequence[Any]) -> list[tuple[str, list[int | str]]]:
        return [(value.name, list(value.shape)) for value in values]

    assert signature(detector.get_inputs()) == [("input_1", ["batch", 224, 224, 3])]
    assert signature(detector.get_outputs()) == [
        ("Identity", ["batch", 2254, 12]),
        ("Identity_1", ["batch", 2254, 1]),
    ]
    assert signature(landmarks.get_inputs()) == [("input_1", ["batch", 256, 256, 3])]
    assert signature(landmarks.get_outputs()) == [
        ("Identity", ["batch", 195]),
        ("Identity_1", ["batch", 1]),
        ("Identity_3", ["batch", 64, 64, 39]),
        ("Identity_4", ["batch", 117]),
    ]


def test_provisioned_files_are_what_the_converter_makes_now(
    model_files: ModelFiles, detector_onnx: bytes, landmark_onnx: bytes
) -> None:
    message = "the converter changed: bump CONVERTER_VERSION, then run `make setup`"
    assert model_files.detector_onnx.read_bytes() == detector_onnx, message
    assert model_files.landmark_onnx.read_bytes() == landmark_onnx, message
    for data in (detector_onnx, landmark_onnx):
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model, full_check=True)
        assert [(opset.domain, opset.version) for opset in model.opset_import] == [("", 17)]


def test_detector_matches_tflite_on_random_input(
    detector_tflite: bytes, detector: ort.InferenceSession
) -> None:
    image = random_images((224, 224, 3), -1.0, 1, seed=1)
    assert_detections_match(run_onnx(detector, image), run_tflite(detector_tflite, image))


def test_landmarks_match_tflite_on_random_input(
    landmark_tflite: bytes, landmarks: ort.InferenceSession
) -> None:
    image = random_images((256, 256, 3), 0.0, 1, seed=2)
    assert_landmarks_match(run_onnx(landmarks, image), run_tflite(landmark_tflite, image))


@pytest.mark.parametrize("xnnpack", [False, True], ids=["reference", "xnnpack"])
def test_detector_matches_tflite_on_a_real_frame(
    detector_tflite: bytes,
    detector: ort.InferenceSession,
    detector_input: NDArray[np.float32],
    xnnpack: bool,
) -> None:
    expected = run_tflite(detector_tflite, detector_input, xnnpack=xnnpack)
    assert sigmoid(expected["Identity_1"]).max() > 0.9, "the frame should show a person"
    assert_detections_match(run_onnx(detector, detector_input), expected)


@pytest.mark.parametrize("xnnpack", [False, True], ids=["reference", "xnnpack"])
def test_landmarks_match_tflite_on_a_real_frame(
    landmark_tflite: bytes,
    landmarks: ort.InferenceSession,
    landmark_input: NDArray[np.float32],
    xnnpack: bool,
) -> None:
    expected = run_tflite(landmark_tflite, landmark_input, xnnpack=xnnpack)
    assert expected["Identity_1"][0, 0] > 0.5, "the crop should hold a pose"
    assert_landmarks_match(run_onnx(landmarks, landmark_input), expected)


def test_unpruned_landmark_model_matches_every_tflite_output(
    landmark_tflite: bytes, landmark_input: NDArray[np.float32]
) -> None:
    full = convert(landmark_tflite)
    assert [output.name for output in full.graph.output] == [
        f"Identity{s}" for s in ("", "_1", "_2", "_3", "_4")
    ]
    got = run_onnx(cpu_session(full.SerializeToString()), landmark_input)
    expected = run_tflite(landmark_tflite, landmark_input)
    assert_landmarks_match(got, expected)
    for name in ("Identity_2", "Identity_3"):  # segmentation and heatmap logits, NHWC
        # Logits reach hundreds here; TFLite's own two CPU backends differ by ~3e-4 of the range.
        scale = float(np.abs(expected[name]).max())
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=2e-4 * scale)


def test_pruning_drops_the_segmentation_head(landmark_tflite: bytes, landmark_onnx: bytes) -> None:
    pruned = onnx.load_from_string(landmark_onnx)
    full = convert(landmark_tflite)
    assert [output.name for output in pruned.graph.output] == list(LANDMARK_OUTPUTS)
    assert len(pruned.graph.node) < len(full.graph.node) - 20
    assert sum(i.ByteSize() for i in pruned.graph.initializer) < sum(
        i.ByteSize() for i in full.graph.initializer
    )


@pytest.mark.parametrize("model", ["detector", "landmarks"])
def test_a_batch_of_four_gives_each_item_its_batch_of_one_result(
    model: str, request: pytest.FixtureRequest
) -> None:
    session: ort.InferenceSession = request.getfixturevalue(model)
    size, low = (224, -1.0) if model == "detector" else (256, 0.0)
    images = random_images((size, size, 3), low, 4, seed=3)
    images[1] = images[1] * 0.25  # a darker image, a different regime of every activation
    batched = run_onnx(session, images)
    for item in range(4):
        single = run_onnx(session, images[item : item + 1])
        for name, value in single.items():
            np.testing.assert_allclose(batched[name][item : item + 1], value, rtol=0, atol=1e-4)


def test_sparse_detector_weights_are_densified(detector_tflite: bytes) -> None:
    graph = read_model(detector_tflite)
    sparse = [tensor for tensor in graph.tensors if tensor.sparsity is not None]
    assert len(sparse) == 38
    for tensor in sparse:
        assert tensor.data is not None
        dense = densify(tensor)
        assert dense.shape == tensor.shape
        # every stored value lands somewhere, and everything else is zero
        assert np.count_nonzero(dense) == np.count_nonzero(tensor.data)
        assert math.isclose(
            float(dense.astype(np.float64).sum()),
            float(tensor.data.astype(np.float64).sum()),
            rel_tol=1e-9,
            abs_tol=1e-9,
        )


# -- tiny models built here ---------------------------------------------------------------------


@dataclass
class TinyTensor:
    name: str
    shape: tuple[int, ...]
    data: NDArray[Any] | None = None
    type_code: int = 0  # FLOAT32
    sparsity: Callable[[flatbuffers.Builder], int] | None = None


@dataclass
class TinyOperator:
    code: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: str | None = None
    """Options table name in the schema, e.g. "Conv2DOptions"."""
    fields: Mapping[str, int] = field(default_factory=dict)
    custom_code: str | None = None


def build_tflite(
    tensors: Sequence[TinyTensor],
    operators: Sequence[TinyOperator],
    inputs: Sequence[int],
    outputs: Sequence[int],
) -> bytes:
    """Serialise a one-subgraph TFLite model with the schema's generated builder functions."""
    builder = flatbuffers.Builder(1024)

    def vector(start: Callable[[flatbuffers.Builder, int], None], offsets: Sequence[int]) -> int:
        start(builder, len(offsets))
        for offset in reversed(offsets):
            builder.PrependUOffsetTRelative(offset)
        return int(builder.EndVector())

    def int_vector(values: Sequence[int]) -> int:
        return int(builder.CreateNumpyVector(np.asarray(values, dtype=np.int32)))

    buffer_offsets = []
    for data in [None, *(tensor.data for tensor in tensors)]:
        payload = (
            None
            if data is None
            else builder.CreateNumpyVector(
                np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            )
        )
        tflite.BufferStart(builder)
        if payload is not None:
            tflite.BufferAddData(builder, payload)
        buffer_offsets.append(tflite.BufferEnd(builder))
    tensor_offsets = []
    for index, tensor in enumerate(tensors):
        name, shape = builder.CreateString(tensor.name), int_vector(tensor.shape)
        sparsity = tensor.sparsity(builder) if tensor.sparsity else None
        tflite.TensorStart(builder)
        tflite.TensorAddShape(builder, shape)
        tflite.TensorAddType(builder, tensor.type_code)
        tflite.TensorAddBuffer(builder, index + 1 if tensor.data is not None else 0)
        tflite.TensorAddName(builder, name)
        if sparsity is not None:
            tflite.TensorAddSparsity(builder, sparsity)
        tensor_offsets.append(tflite.TensorEnd(builder))
    codes = sorted({(op.code, op.custom_code) for op in operators}, key=str)
    code_offsets = []
    for code, custom in codes:
        custom_offset = builder.CreateString(custom) if custom else None
        tflite.OperatorCodeStart(builder)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(builder, min(code, 127))
        tflite.OperatorCodeAddBuiltinCode(builder, code)
        tflite.OperatorCodeAddVersion(builder, 1)
        if custom_offset is not None:
            tflite.OperatorCodeAddCustomCode(builder, custom_offset)
        code_offsets.append(tflite.OperatorCodeEnd(builder))
    operator_offsets = []
    for op in operators:
        op_inputs, op_outputs = int_vector(op.inputs), int_vector(op.outputs)
        table = op.options
        options = None
        if table is not None:
            getattr(tflite, f"{table}Start")(builder)
            for name, value in op.fields.items():
                getattr(tflite, f"{table}Add{name}")(builder, value)
            options = getattr(tflite, f"{table}End")(builder)
        tflite.OperatorStart(builder)
        tflite.OperatorAddOpcodeIndex(builder, codes.index((op.code, op.custom_code)))
        tflite.OperatorAddInputs(builder, op_inputs)
        tflite.OperatorAddOutputs(builder, op_outputs)
        if table is not None:
            tflite.OperatorAddBuiltinOptionsType(builder, getattr(tflite.BuiltinOptions, table))
            tflite.OperatorAddBuiltinOptions(builder, options)
        operator_offsets.append(tflite.OperatorEnd(builder))
    subgraph_parts = (
        vector(tflite.SubGraphStartTensorsVector, tensor_offsets),
        int_vector(inputs),
        int_vector(outputs),
        vector(tflite.SubGraphStartOperatorsVector, operator_offsets),
    )
    tflite.SubGraphStart(builder)
    tflite.SubGraphAddTensors(builder, subgraph_parts[0])
    tflite.SubGraphAddInputs(builder, subgraph_parts[1])
    tflite.SubGraphAddOutputs(builder, subgraph_parts[2])
    tflite.SubGraphAddOperators(builder, subgraph_parts[3])
    subgraph = tflite.SubGraphEnd(builder)
    model_parts = (
        vector(tflite.ModelStartOperatorCodesVector, code_offsets),
        vector(tflite.ModelStartSubgraphsVector, [subgraph]),
        vector(tflite.ModelStartBuffersVector, buffer_offsets),
    )
    tflite.ModelStart(builder)
    tflite.ModelAddVersion(builder, 3)
    tflite.ModelAddOperatorCodes(builder, model_parts[0])
    tflite.ModelAddSubgraphs(builder, model_parts[1])
    tflite.ModelAddBuffers(builder, model_parts[2])
    builder.Finish(tflite.ModelEnd(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def compare_tiny(model: bytes, image: NDArray[np.float32], atol: float = 1e-5) -> None:
    expected = run_tflite(model, image)
    got = run_onnx(cpu_session(convert(model).SerializeToString()), image)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=atol, err_msg=name)


def weights(*shape: int, seed: int = 0) -> NDArray[np.float32]:
    return np.random.default_rng(seed).normal(0, 0.5, shape).astype(np.float32)


SAME, VALID = 0, 1
RELU, RELU6 = 1, 3


@pytest.mark.parametrize("padding", [SAME, VALID])
def test_convolutions_pooling_and_layout_ops_match_tflite_on_odd_sizes(padding: int) -> None:
    conv = {"Padding": padding, "StrideW": 2, "StrideH": 2, "FusedActivationFunction": RELU6}
    depthwise = {**conv, "DepthMultiplier": 2, "FusedActivationFunction": 0}
    tensors = [
        TinyTensor("input_1", (1, 7, 9, 4)),
        TinyTensor("conv_filter", (8, 3, 3, 4), weights(8, 3, 3, 4, seed=1)),
        TinyTensor("conv_bias", (8,), weights(8, seed=2)),
        TinyTensor("conv", (1, 4, 5, 8) if padding == SAME else (1, 3, 4, 8)),
        TinyTensor("depthwise_filter", (1, 3, 3, 8), weights(1, 3, 3, 8, seed=3)),
        TinyTensor("depthwise_bias", (8,), weights(8, seed=4)),
        TinyTensor("depthwise", (1, 4, 5, 8) if padding == SAME else (1, 3, 4, 8)),
        TinyTensor("sum", (1, 4, 5, 8) if padding == SAME else (1, 3, 4, 8)),
        TinyTensor("pooled", (1, 2, 3, 8) if padding == SAME else (1, 1, 1, 8)),
        TinyTensor("to_space", (1, 8, 10, 2) if padding == SAME else (1, 6, 8, 2)),
        TinyTensor("joined", (1, 4, 5, 16) if padding == SAME else (1, 3, 4, 16)),
        TinyTensor("paddings", (4, 2), np.array([[0, 0], [1, 2], [0, 1], [0, 0]], np.int32), 2),
        TinyTensor("padded", (1, 7, 6, 8) if padding == SAME else (1, 6, 5, 8)),
    ]
    operators = [
        TinyOperator(3, (0, 1, 2), (3,), "Conv2DOptions", conv),
        TinyOperator(4, (0, 4, 5), (6,), "DepthwiseConv2DOptions", depthwise),
        TinyOperator(0, (3, 6), (7,), "AddOptions", {"FusedActivationFunction": RELU}),
        TinyOperator(
            17,
            (7,),
            (8,),
            "Pool2DOptions",
            {**conv, "FilterWidth": 3, "FilterHeight": 3, "FusedActivationFunction": 0},
        ),
        TinyOperator(5, (7,), (9,), "DepthToSpaceOptions", {"BlockSize": 2}),
        TinyOperator(2, (3, 6), (10,), "ConcatenationOptions", {"Axis": 3}),
        TinyOperator(34, (6, 11), (12,)),
    ]
    model = build_tflite(tensors, operators, [0], [8, 9, 10, 12])
    compare_tiny(model, random_images((7, 9, 4), -1.0, 1, seed=5))


@pytest.mark.parametrize(
    ("align_corners", "half_pixel_centers", "output_hw"),
    [
        (False, False, (10, 14)),
        (True, False, (10, 14)),
        (False, True, (10, 14)),
        (False, True, (15, 21)),
    ],
)
def test_resize_bilinear_matches_tflite_in_every_coordinate_mode(
    align_corners: bool, half_pixel_centers: bool, output_hw: tuple[int, int]
) -> None:
    tensors = [
        TinyTensor("input_1", (1, 5, 7, 3)),
        TinyTensor("size", (2,), np.array(output_hw, np.int32), 2),
        TinyTensor("resized", (1, *output_hw, 3)),
    ]
    options = {"AlignCorners": int(align_corners), "HalfPixelCenters": int(half_pixel_centers)}
    operators = [TinyOperator(23, (0, 1), (2,), "ResizeBilinearOptions", options)]
    compare_tiny(build_tflite(tensors, operators, [0], [2]), random_images((5, 7, 3), -1.0, 1, 6))


def csr_sparsity(
    traversal_order: Sequence[int],
    block_map: Sequence[int],
    dimensions: Sequence[int | tuple[Sequence[int], Sequence[int]]],
) -> Callable[[flatbuffers.Builder], int]:
    """A SparsityParameters writer; a dimension is a dense size or (segments, indices)."""

    def write(builder: flatbuffers.Builder) -> int:
        metadata = []
        for dimension in dimensions:
            arrays = []
            if not isinstance(dimension, int):
                for values in dimension:
                    data = builder.CreateNumpyVector(np.asarray(values, np.int32))
                    tflite.Int32VectorStart(builder)
                    tflite.Int32VectorAddValues(builder, data)
                    arrays.append(tflite.Int32VectorEnd(builder))
            tflite.DimensionMetadataStart(builder)
            if isinstance(dimension, int):
                tflite.DimensionMetadataAddFormat(builder, tflite.DimensionType.DENSE)
                tflite.DimensionMetadataAddDenseSize(builder, dimension)
            else:
                tflite.DimensionMetadataAddFormat(builder, tflite.DimensionType.SPARSE_CSR)
                for add, offset in zip(("Segments", "Indices"), arrays, strict=True):
                    getattr(tflite, f"DimensionMetadataAddArray{add}Type")(
                        builder, tflite.SparseIndexVector.Int32Vector
                    )
                    getattr(tflite, f"DimensionMetadataAddArray{add}")(builder, offset)
            metadata.append(tflite.DimensionMetadataEnd(builder))
        traversal = builder.CreateNumpyVector(np.asarray(traversal_order, np.int32))
        blocks = builder.CreateNumpyVector(np.asarray(block_map, np.int32)) if block_map else None
        tflite.SparsityParametersStartDimMetadataVector(builder, len(metadata))
        for offset in reversed(metadata):
            builder.PrependUOffsetTRelative(offset)
        dim_metadata = builder.EndVector()
        tflite.SparsityParametersStart(builder)
        tflite.SparsityParametersAddTraversalOrder(builder, traversal)
        if blocks is not None:
            tflite.SparsityParametersAddBlockMap(builder, blocks)
        tflite.SparsityParametersAddDimMetadata(builder, dim_metadata)
        return int(tflite.SparsityParametersEnd(builder))

    return write


def encode_block_csr(
    dense: NDArray[np.float32], block_rows: int, block_columns: int
) -> tuple[NDArray[np.float32], list[int], list[int]]:
    """Row-major CSR over blocks of a 2-D matrix (the inverse of densify, written naively)."""
    values: list[float] = []
    segments, indices = [0], []
    for row in range(dense.shape[0] // block_rows):
        for column in range(dense.shape[1] // block_columns):
            block = dense[
                row * block_rows : (row + 1) * block_rows,
                column * block_columns : (column + 1) * block_columns,
            ]
            if np.any(block):
                indices.append(column)
                values.extend(block.reshape(-1).tolist())
        segments.append(len(indices))
    return np.array(values, np.float32), segments, indices


@pytest.mark.parametrize("block", [(1, 1), (2, 2), (1, 4)])
def test_block_sparse_weights_densify_like_tflite(block: tuple[int, int]) -> None:
    dense = weights(4, 8, seed=7)
    dense[np.random.default_rng(8).uniform(size=dense.shape) < 0.6] = 0
    if block == (1, 4):
        dense[:, :4] = 0  # an all-zero block column
    stored, segments, indices = encode_block_csr(dense, *block)
    block_rows, block_columns = block
    if block == (1, 1):
        sparsity = csr_sparsity([0, 1], [], [4, (segments, indices)])
    else:
        sparsity = csr_sparsity(
            [0, 1, 2, 3], [0, 1], [4 // block_rows, (segments, indices), block_rows, block_columns]
        )
    tensors = [
        TinyTensor("input_1", (4, 8)),
        TinyTensor("sparse_weights", (4, 8), stored, sparsity=sparsity),
        TinyTensor("dense_weights", (4, 8)),
        TinyTensor("sum", (4, 8)),
    ]
    operators = [TinyOperator(124, (1,), (2,)), TinyOperator(0, (0, 2), (3,))]
    model = build_tflite(tensors, operators, [0], [3])
    np.testing.assert_array_equal(densify(read_model(model).tensors[1]), dense)
    image = random_images((8,), -1.0, 4, seed=9)
    np.testing.assert_array_equal(run_tflite(model, image)["sum"], image + dense)
    compare_tiny(model, image, atol=0)


def test_column_major_traversal_order_is_honoured() -> None:
    dense = weights(3, 5, seed=10)
    dense[dense < 0] = 0
    stored, segments, indices = encode_block_csr(np.ascontiguousarray(dense.T), 1, 1)
    tensor = TinyTensor(
        "w", (3, 5), stored, sparsity=csr_sparsity([1, 0], [], [5, (segments, indices)])
    )
    input_tensor = TinyTensor("input_1", (3, 5))
    model = build_tflite(
        [input_tensor, tensor, TinyTensor("d", (3, 5)), TinyTensor("s", (3, 5))],
        [TinyOperator(124, (1,), (2,)), TinyOperator(0, (0, 2), (3,))],
        [0],
        [3],
    )
    np.testing.assert_array_equal(densify(read_model(model).tensors[1]), dense)
    image = random_images((5,), -1.0, 3, seed=11)
    np.testing.assert_array_equal(run_tflite(model, image)["s"], image + dense)


@pytest.mark.parametrize(
    ("code", "custom_code", "expected_name"),
    [(25, None, "SOFTMAX"), (32, "FancyOp", "CUSTOM(FancyOp)"), (250, None, "UNKNOWN_BUILTIN_250")],
)
def test_an_unsupported_operator_raises_conversion_error_naming_it(
    code: int, custom_code: str | None, expected_name: str
) -> None:
    tensors = [TinyTensor("input_1", (1, 4)), TinyTensor("out", (1, 4))]
    model = build_tflite(
        tensors, [TinyOperator(code, (0,), (1,), custom_code=custom_code)], [0], [1]
    )
    with pytest.raises(
        ConversionError, match=f"unsupported TFLite operator.*{re.escape(expected_name)}"
    ):
        convert(model)


def test_an_unknown_output_name_raises_conversion_error(landmark_tflite: bytes) -> None:
    with pytest.raises(ConversionError, match="no model output named"):
        convert(landmark_tflite, output_names=["Identity_9"])


def test_integer_constants_dequantize_per_channel() -> None:
    stored = np.array([[-128, 0, 127], [10, 20, 30]], np.int8)
    quantization = Quantization(scales=(0.5, 0.25), zero_points=(0, 10), axis=0)
    tensor = Tensor(0, "w", (2, 3), 9, stored.reshape(-1), quantization=quantization)
    expected = np.array([[-64.0, 0.0, 63.5], [0.0, 2.5, 5.0]], np.float32)
    np.testing.assert_array_equal(dequantize(tensor, stored), expected)
    with pytest.raises(TfliteFormatError, match="not dequantizable"):
        dequantize(Tensor(0, "w", (2, 3), 9, stored.reshape(-1)), stored)


def test_bytes_that_are_not_a_tflite_model_are_refused() -> None:
    with pytest.raises(TfliteFormatError, match="TFL3"):
        convert(b"\x08\x01" * 64)
