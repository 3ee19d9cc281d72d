"""ONNX Runtime behind the pipeline, and load_engine's choice of runtime."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from engines import (
    CameraFrame,
    EngineError,
    Pose,
    RuntimeUnavailableError,
    load_engine,
)
from engines.models import ModelFiles
from engines.onnx_runtime import (
    CPU_PROVIDER,
    HEATMAP_OUTPUT,
    OnnxRuntimeRunner,
    choose_providers,
    session_options,
)
from tests.engines.fixtures_pipeline import has_heatmap_output, landmark_model_with_heatmap


@pytest.fixture(scope="module")
def runner(model_files: ModelFiles, tmp_path_factory: pytest.TempPathFactory) -> OnnxRuntimeRunner:
    landmark = landmark_model_with_heatmap(model_files, tmp_path_factory.mktemp("models"))
    return OnnxRuntimeRunner(model_files.detector_onnx, landmark, max_batch=4)


def test_sessions_use_one_thread_without_spinning_by_default() -> None:
    options = session_options(None)
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(2).get_session_config_entry("session.intra_op.allow_spinning") == "1"
    with pytest.raises(ValueError, match="at least 1"):
        session_options(0)


def test_cpu_runner_prefers_small_batches(runner: OnnxRuntimeRunner) -> None:
    assert runner.name == "onnxruntime-cpu"
    assert (runner.max_batch, runner.preferred_batch) == (4, 2)
    assert runner.has_heatmap


def test_cuda_is_used_only_when_present() -> None:
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the CPU-only branch cannot be exercised here")
    assert choose_providers(None) == [CPU_PROVIDER]
    assert choose_providers(False) == [CPU_PROVIDER]
    with pytest.raises(EngineError, match="onnxruntime-gpu"):
        choose_providers(True)


def test_a_batch_gives_what_each_image_gives_alone(runner: OnnxRuntimeRunner) -> None:
    rng = np.random.default_rng(7)
    crops = rng.random((3, 256, 256, 3), dtype=np.float32)
    batched = runner.landmarks(crops)
    assert batched.landmarks.shape == (3, 195)
    assert batched.pose_flag.shape == (3, 1)
    assert batched.heatmaps is not None
    assert batched.heatmaps.shape == (3, 64, 64, 39)
    for index in range(3):
        alone = runner.landmarks(crops[index : index + 1])
        np.testing.assert_allclose(batched.landmarks[index], alone.landmarks[0], atol=1e-3)
    images = rng.uniform(-1, 1, size=(2, 224, 224, 3)).astype(np.float32)
    detections = runner.detect(images)
    assert detections.regressors.shape == (2, 2254, 12)
    assert detections.scores.shape == (2, 2254, 1)
    np.testing.assert_allclose(detections.scores[1], runner.detect(images[1:]).scores[0], atol=1e-3)


def test_provisioned_landmark_model_keeps_the_heatmap_head(model_files: ModelFiles) -> None:
    """MediaPipe moves every landmark to its heatmap's centroid; without that head (Identity_3)
    the pipeline lands ~9 px (median) away from MediaPipe on the 720p clip instead of ~1 px.
    Fix: keep Identity_3 in engines.tflite_onnx.LANDMARK_OUTPUTS and re-provision the models."""
    assert has_heatmap_output(model_files.landmark_onnx), (
        f"{model_files.landmark_onnx} has no {HEATMAP_OUTPUT} output"
    )


def test_a_model_with_the_wrong_input_is_refused(model_files: ModelFiles) -> None:
    with pytest.raises(EngineError, match="224"):
        OnnxRuntimeRunner(model_files.landmark_onnx, model_files.landmark_onnx)
    with pytest.raises(EngineError, match="cannot load"):
        OnnxRuntimeRunner(Path("/nonexistent.onnx"), model_files.landmark_onnx)


def test_load_engine_builds_the_onnxruntime_pipeline(model_files: ModelFiles) -> None:
    engine = load_engine("onnxruntime", model_files.directory, max_batch=2)
    try:
        assert engine.name == "blazepose-full/onnxruntime-cpu"
        assert (engine.max_batch, engine.preferred_batch) == (2, 2)
        image = np.zeros((240, 320, 3), dtype=np.uint8)
        results = engine.infer([CameraFrame("a", 0, 0.0, image), CameraFrame("b", 0, 0.0, image)])
        assert len(results) == 2
        assert all(result is None or isinstance(result, Pose) for result in results)
    finally:
        engine.close()


def test_load_engine_refuses_unknown_runtimes_and_missing_models(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'openvino'.*onnxruntime, tensorrt"):
        load_engine("openvino", tmp_path)
    with pytest.raises(EngineError, match="models fetch"):
        load_engine("onnxruntime", tmp_path)


def test_load_engine_reports_a_missing_tensorrt(
    model_files: ModelFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt → ImportError
    with pytest.raises(RuntimeUnavailableError, match="fitscore\\[tensorrt\\]"):
        load_engine("tensorrt", model_files.directory)
