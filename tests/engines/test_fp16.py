"""The FP16 models TensorRT builds from, checked on ONNX Runtime's CPU provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from engines.blazepose import BlazePoseEngine
from engines.fp16 import (
    Fp16ConversionError,
    check_fp16_model,
    convert_to_fp16,
    ensure_fp16_model,
    fp16_model_path,
)
from engines.models import ModelFiles
from engines.onnx_runtime import OnnxRuntimeRunner
from engines.tracks import track_video
from tests.engines.fixtures_pipeline import BODY_JOINTS, landmark_model_with_heatmap, shared_clip


def small_model() -> onnx.ModelProto:
    """Y = relu(X · W + B), batch axis symbolic."""
    rng = np.random.default_rng(9)
    weight = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["XW"]),
            helper.make_node("Add", ["XW", "B"], ["Z"]),
            helper.make_node("Relu", ["Z"], ["Y"]),
        ],
        "small",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 3])],
        initializer=[weight, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, inputs: np.ndarray) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return list(session.run(None, {session.get_inputs()[0].name: inputs}))


def test_conversion_halves_the_weights_and_keeps_float32_io() -> None:
    model = small_model()
    converted = convert_to_fp16(model)
    assert [tensor.data_type for tensor in converted.graph.initializer] == [TensorProto.FLOAT16] * 2
    assert converted.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert converted.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    inputs = np.random.default_rng(10).normal(size=(5, 4)).astype(np.float32)
    (expected,) = run(model, inputs)
    (actual,) = run(converted, inputs)
    assert actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, atol=1e-2)


def test_a_model_that_stayed_float32_is_refused() -> None:
    model = small_model()
    with pytest.raises(Fp16ConversionError, match="no float16 weights"):
        check_fp16_model(model, model)


def test_a_model_whose_io_changed_type_is_refused() -> None:
    model = small_model()
    converted = convert_to_fp16(model)
    converted.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    with pytest.raises(Fp16ConversionError, match="inputs/outputs changed"):
        check_fp16_model(model, converted)


def test_fp16_model_is_made_once_per_source_content(tmp_path: Path) -> None:
    source = tmp_path / "small.onnx"
    onnx.save(small_model(), str(source))
    cache = tmp_path / "cache"
    first = ensure_fp16_model(source, cache)
    assert first == fp16_model_path(source, cache)
    stamp = first.stat().st_mtime_ns
    assert ensure_fp16_model(source, cache) == first
    assert first.stat().st_mtime_ns == stamp  # not converted again
    assert sorted(path.name for path in cache.iterdir()) == [first.name]  # no temporary left


def test_real_models_convert_soundly(model_files: ModelFiles, tmp_path: Path) -> None:
    detector = ensure_fp16_model(model_files.detector_onnx, tmp_path)
    images = np.random.default_rng(11).uniform(-1, 1, size=(2, 224, 224, 3)).astype(np.float32)
    regressors_32, scores_32 = run(onnx.load(str(model_files.detector_onnx)), images)
    regressors_16, scores_16 = run(onnx.load(str(detector)), images)
    assert regressors_16.dtype == np.float32
    np.testing.assert_allclose(scores_16, scores_32, atol=0.5)
    assert np.median(np.abs(regressors_16 - regressors_32)) < 0.5  # detector-input pixels


@pytest.mark.slow
def test_fp16_landmarks_stay_within_a_pixel_of_fp32_on_the_shared_clip(
    model_files: ModelFiles, tmp_path: Path
) -> None:
    """The exact FP16 models TensorRT would build, run through the whole pipeline on CPU."""
    video, _ = shared_clip("pushup_side_gg")
    landmark = landmark_model_with_heatmap(model_files, tmp_path)
    fp32 = BlazePoseEngine(OnnxRuntimeRunner(model_files.detector_onnx, landmark))
    fp16 = BlazePoseEngine(
        OnnxRuntimeRunner(
            ensure_fp16_model(model_files.detector_onnx, tmp_path / "fp16"),
            ensure_fp16_model(landmark, tmp_path / "fp16"),
        )
    )
    reference = track_video(video, fp32)
    half = track_video(video, fp16)
    assert (half.present == reference.present).mean() >= 0.99
    both = half.present & reference.present
    joints = list(BODY_JOINTS)
    delta = half.keypoints[both][:, joints, 0:2] - reference.keypoints[both][:, joints, 0:2]
    errors = np.hypot(delta[..., 0], delta[..., 1])
    assert np.median(errors) <= 1.0, f"median {np.median(errors):.2f} px"
