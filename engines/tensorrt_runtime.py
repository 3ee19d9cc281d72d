"""TensorRT FP16 behind the BlazePose pipeline: the GPU runtime.

Each model is converted to FP16 with float32 I/O (:mod:`engines.fp16`), parsed into a strongly
typed network (the only kind TensorRT 11 builds, and the way to get FP16 on 10.x without the
deprecated ``BuilderFlag.FP16``), built with one dynamic-batch profile 1..max_batch, and cached
under a key of model hash, TensorRT version, GPU name and compute capability, max batch and
precision (:mod:`engines.tensorrt_cache`). A cached plan that TensorRT refuses (``None`` from
``deserialize_cuda_engine``) is rebuilt. Inference uses the name-based API of TensorRT 10/11:
I/O buffers for the largest batch are allocated once and their addresses registered once; a call
sets the input shape, copies in, ``execute_async_v3``, copies out, synchronises.

TensorRT cannot be installed on the machines this project is developed on, so ``tensorrt`` is
imported only when this runtime is built, and a missing package or GPU raises
:class:`engines.RuntimeUnavailableError` with what to install. One lock serialises calls: an
execution context must not be used by two threads at once.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engines import EngineError, RuntimeUnavailableError
from engines.blazepose import DetectorOutputs, LandmarkOutputs
from engines.cuda_memory import CudaApi, CudaRuntime
from engines.fp16 import ensure_fp16_model
from engines.models import write_atomically
from engines.tensorrt_cache import (
    PRECISION_FP16,
    EngineCacheKey,
    GpuIdentity,
    batch_profile,
    build_lock,
)

logger = logging.getLogger(__name__)

WORKSPACE_BYTES = 1 << 30
"""Cap on the builder's scratch memory (its default is most of the GPU)."""
BUILDER_OPTIMIZATION_LEVEL = 3

DETECTOR_OUTPUTS = ("Identity", "Identity_1")
LANDMARK_OUTPUTS = ("Identity", "Identity_1")
HEATMAP_OUTPUT = "Identity_3"


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` package, or :class:`RuntimeUnavailableError` saying how to get it."""
    try:
        tensorrt = importlib.import_module("tensorrt")
    except (ImportError, OSError) as error:
        raise RuntimeUnavailableError(
            "TensorRT is not available here; on a machine with an NVIDIA GPU install it with "
            "pip install 'fitscore[tensorrt]' (or use the onnxruntime runtime): "
            f"{error}"
        ) from error
    return tensorrt


@dataclass(frozen=True)
class TensorSpec:
    """One engine I/O tensor; ``sample_shape`` excludes the batch axis."""

    name: str
    is_input: bool
    dtype: np.dtype[Any]
    sample_shape: tuple[int, ...]

    @property
    def sample_bytes(self) -> int:
        return int(np.prod(self.sample_shape)) * self.dtype.itemsize


def describe_io(trt: Any, engine: Any) -> list[TensorSpec]:
    """The engine's I/O tensors; each must have a dynamic batch axis and fixed other axes."""
    specs = []
    for position in range(engine.num_io_tensors):
        name = engine.get_tensor_name(position)
        shape = tuple(int(size) for size in engine.get_tensor_shape(name))
        if len(shape) < 2 or shape[0] != -1 or any(size < 0 for size in shape[1:]):
            raise EngineError(f"tensor {name} has shape {shape}; expected (-1, fixed…)")
        specs.append(
            TensorSpec(
                name=name,
                is_input=engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                dtype=np.dtype(trt.nptype(engine.get_tensor_dtype(name))),
                sample_shape=shape[1:],
            )
        )
    return specs


def check_half_precision(trt: Any, network: Any) -> int:
    """Count the network's float16 layer outputs; none means the model would silently run FP32."""
    half = 0
    for position in range(network.num_layers):
        layer = network.get_layer(position)
        half += sum(
            1
            for output in range(layer.num_outputs)
            if layer.get_output(output).dtype == trt.DataType.HALF
        )
    if half == 0:
        raise EngineError("the parsed network has no float16 tensors: it would build as FP32")
    return half


def build_plan(
    trt: Any,
    trt_logger: Any,
    onnx_bytes: bytes,
    *,
    max_batch: int,
    timing_cache: bytes | None,
) -> tuple[bytes, bytes]:
    """Build a serialized engine; returns (plan, updated timing cache)."""
    builder = trt.Builder(trt_logger)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = 0 if strongly_typed is None else 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise EngineError(f"TensorRT could not parse the ONNX model: {errors}")
    half_tensors = check_half_precision(trt, network)
    if network.num_inputs != 1:
        raise EngineError(f"expected one network input, got {network.num_inputs}")
    network_input = network.get_input(0)
    sample_shape = tuple(int(size) for size in network_input.shape[1:])
    profile = batch_profile(sample_shape, max_batch)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.builder_optimization_level = BUILDER_OPTIMIZATION_LEVEL
    cache = config.create_timing_cache(timing_cache or b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    optimization_profile = builder.create_optimization_profile()
    optimization_profile.set_shape(
        network_input.name, profile.minimum, profile.optimum, profile.maximum
    )
    config.add_optimization_profile(optimization_profile)
    logger.info(
        "building TensorRT engine: input %s %s..%s, %d float16 tensors",
        network_input.name,
        profile.minimum,
        profile.maximum,
        half_tensors,
    )
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError("TensorRT failed to build the engine (its log above says why)")
    return bytes(plan), bytes(config.get_timing_cache().serialize())


def load_or_build_engine(
    trt: Any,
    runtime: Any,
    trt_logger: Any,
    onnx_path: Path,
    *,
    cache_dir: Path,
    gpu: GpuIdentity,
    max_batch: int,
) -> Any:
    """The deserialized engine for ``onnx_path``, from the cache when it still loads, else built."""
    onnx_bytes = onnx_path.read_bytes()
    key = EngineCacheKey(
        model_name=onnx_path.stem,
        model_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        tensorrt_version=str(trt.__version__),
        gpu=gpu,
        max_batch=max_batch,
        precision=PRECISION_FP16,
        builder_optimization_level=BUILDER_OPTIMIZATION_LEVEL,
    )
    plan_path = key.plan_path(cache_dir)
    with build_lock(plan_path):
        if plan_path.is_file():
            engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
            if engine is not None:
                logger.info("loaded cached TensorRT engine %s", plan_path)
                return engine
            logger.warning("cached engine %s does not load here; rebuilding it", plan_path)
        timing_path = key.timing_cache_path(cache_dir)
        timing = timing_path.read_bytes() if timing_path.is_file() else None
        plan, timing = build_plan(
            trt, trt_logger, onnx_bytes, max_batch=max_batch, timing_cache=timing
        )
        write_atomically(timing_path, timing)
        write_atomically(plan_path, plan)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EngineError(f"TensorRT could not load the engine it just built ({plan_path})")
        return engine


class IoBuffers:
    """Device and page-locked host buffers for every I/O tensor at ``max_batch``, bound once."""

    def __init__(
        self, specs: Sequence[TensorSpec], context: Any, cuda: CudaApi, max_batch: int
    ) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.max_batch = max_batch
        self._context = context
        self._cuda = cuda
        self.device: dict[str, int] = {}
        self.host: dict[str, NDArray[Any]] = {}
        try:
            for spec in specs:
                self.device[spec.name] = cuda.allocate_device(max_batch * spec.sample_bytes)
                self.host[spec.name] = cuda.allocate_host(
                    (max_batch, *spec.sample_shape), spec.dtype
                )
                if not context.set_tensor_address(spec.name, self.device[spec.name]):
                    raise EngineError(f"TensorRT refused the address of tensor {spec.name}")
        except BaseException:
            self.close()
            raise

    def run(
        self, inputs: dict[str, NDArray[Any]], outputs: Sequence[str], stream: int
    ) -> dict[str, NDArray[Any]]:
        """One inference: copy ``inputs`` in, execute, copy the named ``outputs`` back (copies)."""
        batch = {array.shape[0] for array in inputs.values()}
        if len(batch) != 1:
            raise ValueError(f"inputs disagree on the batch size: {sorted(batch)}")
        count = batch.pop()
        if not 1 <= count <= self.max_batch:
            raise ValueError(f"batch of {count} outside 1..{self.max_batch}")
        for name, array in inputs.items():
            spec = self.specs[name]
            if not spec.is_input or array.shape[1:] != spec.sample_shape:
                raise ValueError(f"input {name}: expected (N, {spec.sample_shape}), {array.shape}")
            if not self._context.set_input_shape(name, (count, *spec.sample_shape)):
                raise EngineError(f"TensorRT refused input shape {(count, *spec.sample_shape)}")
            staged = self.host[name][:count]
            np.copyto(staged, array, casting="same_kind")
            self._cuda.copy_to_device(self.device[name], staged, stream)
        if not self._context.execute_async_v3(stream):
            raise EngineError("TensorRT execute_async_v3 failed (its log says why)")
        results = {}
        for name in outputs:
            spec = self.specs[name]
            shape = tuple(int(size) for size in self._context.get_tensor_shape(name))
            if shape != (count, *spec.sample_shape):
                raise EngineError(f"output {name} has shape {shape}, expected {count} samples")
            self._cuda.copy_to_host(self.host[name][:count], self.device[name], stream)
        self._cuda.synchronize(stream)
        for name in outputs:
            results[name] = self.host[name][:count].copy()
        return results

    def close(self) -> None:
        for address in self.device.values():
            self._cuda.free_device(address)
        for array in self.host.values():
            self._cuda.free_host(array)
        self.device.clear()
        self.host.clear()


class _Model:
    """One engine, its execution context and its buffers."""

    def __init__(self, trt: Any, engine: Any, cuda: CudaApi, max_batch: int) -> None:
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineError("TensorRT could not create an execution context")
        specs = describe_io(trt, engine)
        inputs = [spec for spec in specs if spec.is_input]
        if len(inputs) != 1:
            raise EngineError(f"expected one input tensor, got {[spec.name for spec in inputs]}")
        self.input_name = inputs[0].name
        self.output_names = {spec.name for spec in specs if not spec.is_input}
        self.buffers = IoBuffers(specs, self.context, cuda, max_batch)

    def run(self, batch: NDArray[np.float32], outputs: Sequence[str], stream: int) -> Any:
        return self.buffers.run({self.input_name: batch}, outputs, stream)


class TensorRtRunner:
    """:class:`engines.blazepose.ModelRunner` on TensorRT FP16 (GPU 0)."""

    def __init__(
        self,
        detector_onnx: Path,
        landmark_onnx: Path,
        *,
        max_batch: int = 8,
        cache_dir: Path | None = None,
        tensorrt_module: ModuleType | None = None,
        cuda: CudaApi | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        trt = import_tensorrt() if tensorrt_module is None else tensorrt_module
        self._cuda: CudaApi = CudaRuntime() if cuda is None else cuda
        self._max_batch = max_batch
        self._lock = threading.Lock()
        gpu = self._cuda.device_identity()
        cache = detector_onnx.parent / "tensorrt" if cache_dir is None else cache_dir
        # One logger for everything; the runtime must outlive the engines it deserialised.
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        models: list[_Model] = []
        try:
            for source in (detector_onnx, landmark_onnx):
                fp16_path = ensure_fp16_model(source, cache)
                engine = load_or_build_engine(
                    trt,
                    self._runtime,
                    self._trt_logger,
                    fp16_path,
                    cache_dir=cache,
                    gpu=gpu,
                    max_batch=max_batch,
                )
                models.append(_Model(trt, engine, self._cuda, max_batch))
            detector, landmark = models
            missing = [name for name in DETECTOR_OUTPUTS if name not in detector.output_names]
            missing += [name for name in LANDMARK_OUTPUTS if name not in landmark.output_names]
            if missing:
                raise EngineError(f"engines lack outputs {missing}")
        except BaseException:
            for model in models:
                model.buffers.close()
            raise
        self._detector, self._landmark = detector, landmark
        self._landmark_outputs = list(LANDMARK_OUTPUTS)
        if HEATMAP_OUTPUT in self._landmark.output_names:
            self._landmark_outputs.append(HEATMAP_OUTPUT)
        self._stream = self._cuda.create_stream()
        logger.info("TensorRT %s FP16 on %s, max batch %d", trt.__version__, gpu.name, max_batch)

    @property
    def name(self) -> str:
        return "tensorrt-fp16"

    @property
    def preferred_batch(self) -> int:
        """A GPU is most efficient at its largest batch."""
        return self._max_batch

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def detect(self, images: NDArray[np.float32]) -> DetectorOutputs:
        with self._lock:
            outputs = self._detector.run(images, DETECTOR_OUTPUTS, self._stream)
        return DetectorOutputs(regressors=outputs["Identity"], scores=outputs["Identity_1"])

    def landmarks(self, crops: NDArray[np.float32]) -> LandmarkOutputs:
        with self._lock:
            outputs = self._landmark.run(crops, self._landmark_outputs, self._stream)
        return LandmarkOutputs(
            landmarks=outputs["Identity"],
            pose_flag=outputs["Identity_1"],
            heatmaps=outputs.get(HEATMAP_OUTPUT),
        )

    def close(self) -> None:
        with self._lock:
            for model in (self._detector, self._landmark):
                model.buffers.close()
            self._cuda.destroy_stream(self._stream)
