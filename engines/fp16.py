"""FP32 → FP16 ONNX for TensorRT's strongly typed networks, inputs and outputs kept float32.

TensorRT 11 dropped ``BuilderFlag.FP16``: precision now lives in the ONNX model itself
(shared/research/gpu_and_video.md §1.2). :func:`convert_to_fp16` stores weights and activations as
float16 and puts a Cast at each graph input and output, so callers keep feeding and reading float32.
``onnxconverter-common`` does the rewrite; its default block list keeps ``Resize`` in float32
behind Casts, which TensorRT's parser accepts. The result is checked here, not trusted: the graph
must pass ONNX's strict type inference (what a strongly typed parser needs too), its I/O must still
be float32, and it must really hold float16 weights (a silent FP32 build is the known trap).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import warnings
from pathlib import Path

import onnx

logger = logging.getLogger(__name__)

FLOAT16_MAX = 65504.0
"""Largest finite float16; the converter's default clamps weights at 1e4 instead."""
FLOAT16_MIN_POSITIVE = 1e-7
"""Weights closer to zero become ±this (float16 subnormals reach 6e-8)."""


class Fp16ConversionError(Exception):
    """The float16 model failed a check after conversion."""


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float16 copy of ``model`` with float32 inputs and outputs; raises if it is unsound."""
    # Imported by name: the package ships no type information (and is only needed here).
    float16 = importlib.import_module("onnxconverter_common.float16")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted: onnx.ModelProto = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            min_positive_val=FLOAT16_MIN_POSITIVE,
            max_finite_val=FLOAT16_MAX,
        )
    clamped = [str(item.message) for item in caught if issubclass(item.category, UserWarning)]
    if clamped:
        logger.debug("%d weights clamped into float16 range, e.g. %s", len(clamped), clamped[0])
    check_fp16_model(model, converted)
    return converted


def check_fp16_model(original: onnx.ModelProto, converted: onnx.ModelProto) -> None:
    """Raise :class:`Fp16ConversionError` unless ``converted`` is a sound FP16 ``original``."""
    float32 = onnx.TensorProto.FLOAT
    float16 = onnx.TensorProto.FLOAT16

    def signature(values: list[onnx.ValueInfoProto]) -> list[tuple[str, int]]:
        return [(value.name, value.type.tensor_type.elem_type) for value in values]

    before = signature(list(original.graph.input)) + signature(list(original.graph.output))
    after = signature(list(converted.graph.input)) + signature(list(converted.graph.output))
    if after != before or any(elem_type != float32 for _, elem_type in after):
        raise Fp16ConversionError(f"inputs/outputs changed: {before} became {after}")
    weights = [tensor for tensor in converted.graph.initializer if tensor.dims]
    half = sum(1 for tensor in weights if tensor.data_type == float16)
    if half == 0:
        raise Fp16ConversionError("no float16 weights after conversion: the model would run FP32")
    try:
        onnx.checker.check_model(converted)
        onnx.shape_inference.infer_shapes(converted, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise Fp16ConversionError(f"float16 model is not type-consistent: {error}") from error


def fp16_model_path(source: Path, cache_dir: Path) -> Path:
    """Where the FP16 twin of ``source`` lives: named after the source's SHA-256."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    return cache_dir / f"{source.stem}.fp16-{digest}.onnx"


def ensure_fp16_model(source: Path, cache_dir: Path) -> Path:
    """Convert ``source`` once into ``cache_dir`` (atomically) and return the FP16 model's path."""
    destination = fp16_model_path(source, cache_dir)
    if destination.is_file():
        return destination
    cache_dir.mkdir(parents=True, exist_ok=True)
    converted = convert_to_fp16(onnx.load(str(source)))
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(converted.SerializeToString())
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)
    logger.info("wrote FP16 model %s", destination)
    return destination
