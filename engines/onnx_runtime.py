"""ONNX Runtime behind the BlazePose pipeline: CPU by default, the CUDA provider when present.

Threading on CPU. The server this runs in has few cores (2 on the reference box) and decodes video
on the same cores. Each session therefore gets ``intra_op_num_threads=1`` by default, and more
throughput comes from more *callers*: ``InferenceSession.run`` is thread-safe and releases the GIL,
and :class:`engines.blazepose.BlazePoseEngine` lets several threads infer disjoint cameras at once.
Measured in the research (shared/research/gpu_and_video.md §3.1), 2 callers × 1 intra-op thread gave
1.55× the throughput of 1 caller × 2 threads; one thread per session also never fights the decoders
for a core in the middle of an operator. Spinning is off for a single thread (nothing to hand work
to) and on when more threads are asked for: without it, each operator's hand-off sleeps and wakes
a worker, and 2 threads measured no faster than 1 here.

Batching on CPU barely pays (a batch of 2 costs a few per cent less per image than two batches of 1;
bigger batches get slower per image), so the CPU runner prefers batches of 2. On CUDA it prefers
the largest batch it was built for.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engines import EngineError
from engines.blazepose import DetectorOutputs, LandmarkOutputs

logger = logging.getLogger(__name__)

CPU_PREFERRED_BATCH = 2
DEFAULT_INTRA_OP_THREADS = 1

DETECTOR_OUTPUTS = ("Identity", "Identity_1")
"""Regressors (N, 2254, 12), score logits (N, 2254, 1)."""
LANDMARK_OUTPUTS = ("Identity", "Identity_1")
"""Landmarks (N, 195), pose flag (N, 1)."""
HEATMAP_OUTPUT = "Identity_3"
"""Heatmap logits (N, 64, 64, 39): optional, used to refine the landmarks as MediaPipe does."""

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def session_options(threads: int | None) -> Any:
    """Session options for one model: ``threads`` intra-op threads (default 1), sequential."""
    import onnxruntime

    intra_op_threads = DEFAULT_INTRA_OP_THREADS if threads is None else threads
    if intra_op_threads < 1:
        raise ValueError(f"threads must be at least 1, got {intra_op_threads}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    spinning = "1" if intra_op_threads > 1 else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    return options


def choose_providers(use_cuda: bool | None) -> list[Any]:
    """CUDA then CPU when the CUDA provider is installed (or required), else CPU only."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if use_cuda is False or (use_cuda is None and CUDA_PROVIDER not in available):
        return [CPU_PROVIDER]
    if CUDA_PROVIDER not in available:
        raise EngineError(
            "the CUDA execution provider was asked for but this onnxruntime has none "
            f"(available: {', '.join(available)}); install onnxruntime-gpu"
        )
    cuda_options = {
        "device_id": 0,
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_algo_search": "HEURISTIC",
    }
    return [(CUDA_PROVIDER, cuda_options), CPU_PROVIDER]


class _Session:
    """One model's session, checked against the input and outputs the pipeline needs."""

    def __init__(
        self,
        path: Path,
        *,
        input_size: int,
        required_outputs: tuple[str, ...],
        optional_outputs: tuple[str, ...],
        options: Any,
        providers: list[Any],
    ) -> None:
        import onnxruntime

        try:
            self.session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=providers
            )
        except Exception as error:  # onnxruntime raises its own untyped exceptions
            raise EngineError(f"cannot load {path}: {error}") from error
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [input_size, input_size, 3]:
            shapes = [(item.name, item.shape) for item in inputs]
            expected = f"N×{input_size}×{input_size}×3"
            raise EngineError(f"{path}: expected one {expected} input, got {shapes}")
        self.input_name: str = inputs[0].name
        names = {output.name for output in self.session.get_outputs()}
        missing = [name for name in required_outputs if name not in names]
        if missing:
            raise EngineError(f"{path}: outputs {missing} missing (has {sorted(names)})")
        self.output_names = list(required_outputs) + [
            name for name in optional_outputs if name in names
        ]
        self.providers: list[str] = self.session.get_providers()

    def run(self, batch: NDArray[np.float32]) -> dict[str, NDArray[np.float32]]:
        values = self.session.run(self.output_names, {self.input_name: batch})
        return dict(zip(self.output_names, values, strict=True))


class OnnxRuntimeRunner:
    """:class:`engines.blazepose.ModelRunner` on ONNX Runtime."""

    def __init__(
        self,
        detector_path: Path,
        landmark_path: Path,
        *,
        max_batch: int = 8,
        threads: int | None = None,
        use_cuda: bool | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        providers = choose_providers(use_cuda)
        options = session_options(threads)
        self._detector = _Session(
            detector_path,
            input_size=224,
            required_outputs=DETECTOR_OUTPUTS,
            optional_outputs=(),
            options=options,
            providers=providers,
        )
        self._landmark = _Session(
            landmark_path,
            input_size=256,
            required_outputs=LANDMARK_OUTPUTS,
            optional_outputs=(HEATMAP_OUTPUT,),
            options=options,
            providers=providers,
        )
        self._max_batch = max_batch
        self._on_cuda = CUDA_PROVIDER in self._landmark.providers
        self.has_heatmap = HEATMAP_OUTPUT in self._landmark.output_names
        if not self.has_heatmap:
            logger.warning(
                "%s has no heatmap output %s: landmarks are not refined and land several pixels "
                "away from MediaPipe's; convert the model keeping that head",
                landmark_path,
                HEATMAP_OUTPUT,
            )
        logger.info(
            "ONNX Runtime %s on %s, max batch %d",
            "CUDA" if self._on_cuda else "CPU",
            ", ".join(self._landmark.providers),
            max_batch,
        )

    @property
    def name(self) -> str:
        return "onnxruntime-cuda" if self._on_cuda else "onnxruntime-cpu"

    @property
    def preferred_batch(self) -> int:
        return self._max_batch if self._on_cuda else min(CPU_PREFERRED_BATCH, self._max_batch)

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def detect(self, images: NDArray[np.float32]) -> DetectorOutputs:
        outputs = self._detector.run(images)
        return DetectorOutputs(regressors=outputs["Identity"], scores=outputs["Identity_1"])

    def landmarks(self, crops: NDArray[np.float32]) -> LandmarkOutputs:
        outputs = self._landmark.run(crops)
        return LandmarkOutputs(
            landmarks=outputs["Identity"],
            pose_flag=outputs["Identity_1"],
            heatmaps=outputs.get(HEATMAP_OUTPUT),
        )

    def close(self) -> None:
        """Nothing to release explicitly: the sessions free their memory when collected."""
