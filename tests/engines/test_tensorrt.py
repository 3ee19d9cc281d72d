"""The TensorRT runtime's logic, on a hand-written fake ``tensorrt`` module and fake CUDA memory.

TensorRT cannot be installed here, so everything but the real build runs against fakes that keep
the API's shape (name-based tensors, ``None`` from ``deserialize_cuda_engine``, bool returns); the
one real test is marked ``gpu`` and skips without TensorRT and a GPU.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engines import EngineError, RuntimeUnavailableError
from engines.models import ModelFiles, write_atomically
from engines.tensorrt_cache import (
    EngineCacheKey,
    GpuIdentity,
    batch_profile,
    build_lock,
)
from engines.tensorrt_runtime import TensorRtRunner, import_tensorrt
from tests.engines.fake_tensorrt import GPU, FakeCuda, FakeEngine, FakeRuntime, FakeTensorRt
from tests.engines.fixtures_pipeline import landmark_model_with_heatmap

# --- cache key, profile, files ---------------------------------------------------------------


def key(**changes: Any) -> EngineCacheKey:
    base = EngineCacheKey("pose", "ab" * 32, "10.13.0", GPU, 8)
    return replace(base, **changes)


def test_cache_key_changes_with_everything_that_decides_the_plan() -> None:
    variants = [
        key(model_sha256="cd" * 32),
        key(tensorrt_version="11.4.0"),
        key(gpu=GpuIdentity("NVIDIA Fake H100 80GB", (9, 1))),
        key(gpu=GpuIdentity("NVIDIA L4", (9, 0))),
        key(max_batch=16),
        key(precision="fp32"),
        key(builder_optimization_level=2),
    ]
    digests = {variant.digest() for variant in variants} | {key().digest()}
    assert len(digests) == len(variants) + 1
    assert key(model_name="renamed").digest() == key().digest()


def test_cache_paths_name_the_gpu_and_the_tensorrt_version(tmp_path: Path) -> None:
    assert GPU.slug == "nvidia-fake-h100-80gb-sm90"
    plan = key().plan_path(tmp_path)
    assert plan.parent == tmp_path / "nvidia-fake-h100-80gb-sm90" / "trt10.13.0"
    assert plan.name == f"pose-fp16-b8-{key().digest()[:16]}.plan"
    assert key().timing_cache_path(tmp_path).parent == plan.parent


def test_batch_profile_spans_one_to_max_batch() -> None:
    profile = batch_profile((256, 256, 3), 8)
    assert (profile.minimum, profile.optimum, profile.maximum) == (
        (1, 256, 256, 3),
        (8, 256, 256, 3),
        (8, 256, 256, 3),
    )
    assert batch_profile((3,), 8, optimum_batch=2).optimum == (2, 3)
    with pytest.raises(ValueError, match="at least 1"):
        batch_profile((3,), 0)
    with pytest.raises(ValueError, match="outside"):
        batch_profile((3,), 4, optimum_batch=5)


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "engine.plan"
    write_atomically(path, b"old")
    write_atomically(path, b"new")
    assert path.read_bytes() == b"new"
    assert [item.name for item in path.parent.iterdir()] == ["engine.plan"]


def test_build_lock_excludes_a_second_builder(tmp_path: Path) -> None:
    plan = tmp_path / "engine.plan"
    order: list[str] = []
    held = threading.Event()

    def second() -> None:
        assert held.wait(timeout=10.0)
        with build_lock(plan):
            order.append("second")

    worker = threading.Thread(target=second)
    with build_lock(plan):
        worker.start()
        held.set()
        time.sleep(0.2)
        order.append("first")
    worker.join(timeout=10.0)
    assert order == ["first", "second"]


def test_missing_tensorrt_is_reported_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(RuntimeUnavailableError, match=r"pip install 'fitscore\[tensorrt\]'"):
        import_tensorrt()


# --- the runner on the fakes -----------------------------------------------------------------

DETECTOR_OUTPUTS = {"Identity": (2254, 12), "Identity_1": (2254, 1)}
LANDMARK_OUTPUTS = {
    "Identity": (195,),
    "Identity_1": (1,),
    "Identity_3": (64, 64, 39),
    "Identity_4": (117,),
}


def tiny_model(input_size: int, outputs: Mapping[str, tuple[int, ...]]) -> onnx.ModelProto:
    """input_1 (N, size, size, 3) → the named outputs, through float weights (shape-true only)."""
    rng = np.random.default_rng(12)
    initializers = [numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), "flat")]
    nodes = [
        helper.make_node("ReduceMean", ["input_1"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean", "flat"], ["column"]),
    ]
    for name, shape in outputs.items():
        size = int(np.prod(shape))
        weight = rng.normal(size=(1, size)).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, f"{name}_weight"))
        initializers.append(numpy_helper.from_array(np.array([-1, *shape]), f"{name}_shape"))
        nodes.append(helper.make_node("MatMul", ["column", f"{name}_weight"], [f"{name}_flat"]))
        nodes.append(helper.make_node("Reshape", [f"{name}_flat", f"{name}_shape"], [name]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info(
                "input_1", TensorProto.FLOAT, ["N", input_size, input_size, 3]
            )
        ],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shape])
            for name, shape in outputs.items()
        ],
        initializer=initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path]:
    detector, landmark = tmp_path / "pose_detection.onnx", tmp_path / "pose_landmark_full.onnx"
    onnx.save(tiny_model(224, DETECTOR_OUTPUTS), str(detector))
    onnx.save(tiny_model(256, LANDMARK_OUTPUTS), str(landmark))
    return detector, landmark


@pytest.fixture
def cuda() -> FakeCuda:
    return FakeCuda()


@pytest.fixture
def fake(cuda: FakeCuda) -> FakeTensorRt:
    return FakeTensorRt(cuda)


def make_runner(
    models: tuple[Path, Path], fake: FakeTensorRt, cuda: FakeCuda, max_batch: int = 4
) -> TensorRtRunner:
    return TensorRtRunner(
        *models,
        max_batch=max_batch,
        cache_dir=models[0].parent / "cache",
        tensorrt_module=fake.module,
        cuda=cuda,
    )


def plans(models: tuple[Path, Path]) -> list[Path]:
    return sorted((models[0].parent / "cache").rglob("*.plan"))


def test_first_start_builds_strongly_typed_engines_with_a_batch_profile(
    models: tuple[Path, Path], fake: FakeTensorRt, cuda: FakeCuda
) -> None:
    runner = make_runner(models, fake, cuda)
    assert (runner.name, runner.max_batch, runner.preferred_batch) == ("tensorrt-fp16", 4, 4)
    detector_build, landmark_build = fake.builds
    assert detector_build["flags"] == landmark_build["flags"] == 1 << 5
    assert detector_build["workspace"] == 1 << 30
    assert detector_build["profile"] == {
        "input_1": ((1, 224, 224, 3), (4, 224, 224, 3), (4, 224, 224, 3))
    }
    assert landmark_build["profile"]["input_1"][2] == (4, 256, 256, 3)
    assert landmark_build["timing_cache"] == b"+tactics"  # the detector's build was reused
    assert [plan.parent.name for plan in plans(models)] == ["trt10.13.0"] * 2
    assert plans(models)[0].parent.parent.name == GPU.slug
    fp16_models = sorted((models[0].parent / "cache").glob("*.fp16-*.onnx"))
    assert len(fp16_models) == 2


def test_a_second_start_loads_the_cached_engines(
    models: tuple[Path, Path], fake: FakeTensorRt, cuda: FakeCuda
) -> None:
    make_runner(models, fake, cuda).close()
    make_runner(models, fake, cuda).close()
    assert len(fake.builds) == 2


def test_a_cached_plan_tensorrt_refuses_is_rebuilt(
    models: tuple[Path, Path],
    fake: FakeTensorRt,
    cuda: FakeCuda,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_runner(models, fake, cuda).close()
    original = FakeRuntime.deserialize_cuda_engine
    refused: list[bytes] = []

    def refuse_cached(self: FakeRuntime, plan: bytes) -> FakeEngine | None:
        if len(refused) < 2 and plan not in refused:  # each stale plan once, as after an upgrade
            refused.append(plan)
            return None
        return original(self, plan)

    with caplog.at_level(logging.WARNING, logger="engines.tensorrt_runtime"):
        FakeRuntime.deserialize_cuda_engine = refuse_cached  # type: ignore[method-assign]
        try:
            make_runner(models, fake, cuda).close()
        finally:
            FakeRuntime.deserialize_cuda_engine = original  # type: ignore[method-assign]
    assert len(fake.builds) == 4
    assert "rebuilding" in caplog.text


def test_an_engine_that_never_loads_is_an_error(
    models: tuple[Path, Path], fake: FakeTensorRt, cuda: FakeCuda
) -> None:
    fake.reject_plans = True
    with pytest.raises(EngineError, match="could not load the engine it just built"):
        make_runner(models, fake, cuda)


def test_a_network_without_float16_is_refused(
    models: tuple[Path, Path], fake: FakeTensorRt, cuda: FakeCuda
) -> None:
    fake.parse_as_fp32 = True
    with pytest.raises(EngineError, match="FP32"):
        make_runner(models, fake, cuda)
    assert fake.builds == []


def test_plans_are_per_max_batch(
    models: tuple[Path, Path], fake: FakeTensorRt, cuda: FakeCuda
) -> None:
    make_runner(models, fake, cuda, max_batch=4).close()
    make_runner(models, fake, cuda, max_batch=8).close()
    assert len(plans(models)) == 4


def test_inference_keeps_rows_in_order_and_binds_addresses_once(
    models: tuple[Path, Path], fake: FakeTensorRt, cuda: FakeCuda
) -> None:
    runner = make_runner(models, fake, cuda)
    crops = np.zeros((3, 256, 256, 3), dtype=np.float32)
    crops[:] = np.arange(3, dtype=np.float32)[:, None, None, None]
    outputs = runner.landmarks(crops)
    np.testing.assert_array_equal(outputs.landmarks, np.repeat([[0.0], [1.0], [2.0]], 195, axis=1))
    np.testing.assert_array_equal(outputs.pose_flag[:, 0], [1.0, 2.0, 3.0])
    assert outputs.heatmaps is not None
    assert outputs.heatmaps.shape == (3, 64, 64, 39)
    np.testing.assert_array_equal(outputs.heatmaps[:, 0, 0, 0], [2.0, 3.0, 4.0])

    images = np.full((2, 224, 224, 3), 5.0, dtype=np.float32)
    images[1] = 6.0
    detections = runner.detect(images)
    assert detections.regressors.shape == (2, 2254, 12)
    np.testing.assert_array_equal(detections.scores[:, 0, 0], [6.0, 7.0])
    single = runner.landmarks(crops[2:3])
    np.testing.assert_array_equal(single.landmarks[0], 2.0)

    assert sorted(fake.addresses_set) == sorted(
        [*DETECTOR_OUTPUTS, *LANDMARK_OUTPUTS, "input_1", "input_1"]
    )
    assert fake.input_shapes == [(3, 256, 256, 3), (2, 224, 224, 3), (1, 256, 256, 3)]
    runner.close()


def test_batches_outside_the_profile_and_failed_runs_raise(
    models: tuple[Path, Path], fake: FakeTensorRt, cuda: FakeCuda
) -> None:
    runner = make_runner(models, fake, cuda)
    with pytest.raises(ValueError, match=r"outside 1\.\.4"):
        runner.landmarks(np.zeros((5, 256, 256, 3), dtype=np.float32))
    fake.fail_execute = True
    with pytest.raises(EngineError, match="execute_async_v3"):
        runner.detect(np.zeros((1, 224, 224, 3), dtype=np.float32))
    runner.close()


def test_close_frees_every_buffer_and_the_stream(
    models: tuple[Path, Path], fake: FakeTensorRt, cuda: FakeCuda
) -> None:
    runner = make_runner(models, fake, cuda)
    assert len(cuda.memory) == len(cuda.host) == 8  # 3 detector + 5 landmark tensors
    runner.close()
    assert (cuda.memory, cuda.host, cuda.streams) == ({}, {}, set())


# --- on a real GPU ---------------------------------------------------------------------------


@pytest.mark.gpu
def test_tensorrt_fp16_matches_onnxruntime_fp32(model_files: ModelFiles, tmp_path: Path) -> None:
    """Needs TensorRT and an NVIDIA GPU; TRT 11 has shipped wrong results before (TensorRT#4813),
    so the GPU path is always compared with ONNX Runtime FP32."""
    from engines.onnx_runtime import OnnxRuntimeRunner

    landmark = landmark_model_with_heatmap(model_files, tmp_path)
    try:
        import_tensorrt()
        gpu_runner = TensorRtRunner(model_files.detector_onnx, landmark, cache_dir=tmp_path / "trt")
    except RuntimeUnavailableError as error:
        pytest.skip(f"needs TensorRT and an NVIDIA GPU: {error}")
    cpu_runner = OnnxRuntimeRunner(model_files.detector_onnx, landmark)
    crops = np.random.default_rng(13).random((8, 256, 256, 3), dtype=np.float32)
    gpu, cpu = gpu_runner.landmarks(crops), cpu_runner.landmarks(crops)
    assert np.median(np.abs(gpu.landmarks - cpu.landmarks)) < 1.0  # crop pixels
    np.testing.assert_allclose(gpu.pose_flag, cpu.pose_flag, atol=0.05)
    gpu_runner.close()


def test_a_failed_start_frees_what_it_allocated(
    tmp_path: Path, fake: FakeTensorRt, cuda: FakeCuda
) -> None:
    detector, landmark = tmp_path / "pose_detection.onnx", tmp_path / "pose_landmark_full.onnx"
    onnx.save(tiny_model(224, DETECTOR_OUTPUTS), str(detector))
    onnx.save(tiny_model(256, {"Identity": (195,)}), str(landmark))  # no pose flag
    with pytest.raises(EngineError, match="Identity_1"):
        make_runner((detector, landmark), fake, cuda)
    assert (cuda.memory, cuda.host) == ({}, {})
