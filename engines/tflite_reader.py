"""Read a TFLite flatbuffer into plain, typed Python objects.

The flatbuffer accessors come from the ``tflite`` package (classes generated from TensorFlow's
``schema.fbs``); this module turns the parts the converter needs into frozen dataclasses, so the
converter never touches flatbuffer tables. It also implements the TFLite sparse-tensor storage
format (:func:`densify`), which the BlazePose detector uses for some of its weights.

Only the first subgraph is read: the BlazePose models have exactly one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tflite
from numpy.typing import NDArray

_DTYPES: dict[int, np.dtype[Any]] = {
    0: np.dtype(np.float32),
    1: np.dtype(np.float16),
    2: np.dtype(np.int32),
    3: np.dtype(np.uint8),
    4: np.dtype(np.int64),
    6: np.dtype(np.bool_),
    7: np.dtype(np.int16),
    9: np.dtype(np.int8),
    10: np.dtype(np.float64),
}
"""TFLite ``TensorType`` codes that can hold constant data, and their numpy types."""

_OPTION_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "CONV_2D": (
        "Conv2DOptions",
        ("Padding", "StrideW", "StrideH", "DilationWFactor", "DilationHFactor",
         "FusedActivationFunction"),
    ),
    "DEPTHWISE_CONV_2D": (
        "DepthwiseConv2DOptions",
        ("Padding", "StrideW", "StrideH", "DepthMultiplier", "DilationWFactor",
         "DilationHFactor", "FusedActivationFunction"),
    ),
    "ADD": ("AddOptions", ("FusedActivationFunction",)),
    "CONCATENATION": ("ConcatenationOptions", ("Axis", "FusedActivationFunction")),
    "MAX_POOL_2D": (
        "Pool2DOptions",
        ("Padding", "StrideW", "StrideH", "FilterWidth", "FilterHeight",
         "FusedActivationFunction"),
    ),
    "RESIZE_BILINEAR": ("ResizeBilinearOptions", ("AlignCorners", "HalfPixelCenters")),
    "DEPTH_TO_SPACE": ("DepthToSpaceOptions", ("BlockSize",)),
}  # fmt: skip
"""Builtin options read per operator: (options table, fields). Missing tables read as {}."""

_BUILTIN_NAMES: dict[int, str] = {
    code: name
    for name, code in vars(tflite.BuiltinOperator).items()
    if not name.startswith("_") and isinstance(code, int)
}


class TfliteFormatError(ValueError):
    """The bytes are not a TFLite model this reader understands."""


@dataclass(frozen=True)
class DimensionMetadata:
    """One dimension of a sparse tensor, in traversal order (TFLite ``DimensionMetadata``)."""

    dense: bool
    """DENSE (True) or SPARSE_CSR (False)."""
    dense_size: int
    """Size of a DENSE dimension; unused for SPARSE_CSR."""
    segments: NDArray[np.int64] | None = field(default=None, compare=False)
    """SPARSE_CSR: start of each parent position's run in :attr:`indices` (length parents + 1)."""
    indices: NDArray[np.int64] | None = field(default=None, compare=False)
    """SPARSE_CSR: the coordinate along this dimension of every stored entry."""


@dataclass(frozen=True)
class Sparsity:
    """How a sparse constant is stored (TFLite ``SparsityParameters``)."""

    traversal_order: tuple[int, ...]
    """A permutation of the n tensor dimensions, then of the k block dimensions n..n+k-1."""
    block_map: tuple[int, ...]
    """For block dimension n+j: the tensor dimension it subdivides."""
    dimensions: tuple[DimensionMetadata, ...]
    """Metadata of the n+k dimensions, in traversal order."""


@dataclass(frozen=True)
class Quantization:
    """Affine quantization: real = (stored - zero_point) * scale, per tensor or per channel."""

    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    axis: int


@dataclass(frozen=True, eq=False)
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    type_code: int
    data: NDArray[Any] | None
    """Constant contents, flat, in storage order (sparse order if :attr:`sparsity` is set)."""
    sparsity: Sparsity | None = None
    quantization: Quantization | None = None


@dataclass(frozen=True)
class Operator:
    index: int
    opcode: str
    """Builtin operator name as in the TFLite schema (``CONV_2D``), or ``CUSTOM(name)``."""
    inputs: tuple[int, ...]
    """Tensor indices; -1 marks an omitted optional input."""
    outputs: tuple[int, ...]
    options: Mapping[str, int] = field(default_factory=dict)
    """Builtin options by snake_case name (booleans as 0/1)."""


@dataclass(frozen=True, eq=False)
class Graph:
    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def read_model(data: bytes) -> Graph:
    """Parse the first subgraph of a TFLite model."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TfliteFormatError("not a TFLite flatbuffer (file identifier TFL3 missing)")
    model = tflite.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() < 1:
        raise TfliteFormatError("the model has no subgraph")
    subgraph = model.Subgraphs(0)
    buffers = [_buffer_bytes(model.Buffers(i), data) for i in range(model.BuffersLength())]
    tensors = tuple(
        _read_tensor(index, subgraph.Tensors(index), buffers)
        for index in range(subgraph.TensorsLength())
    )
    operators = tuple(
        _read_operator(index, subgraph.Operators(index), model)
        for index in range(subgraph.OperatorsLength())
    )
    return Graph(
        tensors=tensors,
        operators=operators,
        inputs=_int_tuple(subgraph.InputsAsNumpy()),
        outputs=_int_tuple(subgraph.OutputsAsNumpy()),
    )


def densify(tensor: Tensor) -> NDArray[Any]:
    """The dense array a sparse constant stands for (the TFLite ``DENSIFY`` operation).

    Walks the stored dimensions in traversal order, one level at a time: a DENSE level visits every
    coordinate (child position = parent position * size + coordinate), a SPARSE_CSR level visits
    the stored coordinates ``indices[segments[parent] : segments[parent + 1]]`` (child position =
    index into ``indices``). The leaves come out in storage order; each leaf's coordinates are then
    mapped back to the tensor's own dimensions, block dimensions folded into the dimension their
    block map names (coordinate = block coordinate * block size + coordinate inside the block).
    """
    if tensor.sparsity is None or tensor.data is None:
        raise TfliteFormatError(f"tensor {tensor.name!r} is not a sparse constant")
    sparsity = tensor.sparsity
    rank = len(tensor.shape)
    levels = len(sparsity.traversal_order)
    if len(sparsity.dimensions) != levels or levels != rank + len(sparsity.block_map):
        raise TfliteFormatError(f"tensor {tensor.name!r}: inconsistent sparsity metadata")
    positions = np.zeros(1, dtype=np.int64)
    coordinates = np.zeros((1, 0), dtype=np.int64)
    for metadata in sparsity.dimensions:
        if metadata.dense:
            size = metadata.dense_size
            children = (positions[:, None] * size + np.arange(size)).reshape(-1)
            coordinate = np.tile(np.arange(size, dtype=np.int64), len(positions))
            coordinates = np.repeat(coordinates, size, axis=0)
        else:
            if metadata.segments is None or metadata.indices is None:
                raise TfliteFormatError(f"tensor {tensor.name!r}: sparse dimension lacks arrays")
            starts = metadata.segments[positions]
            counts = metadata.segments[positions + 1] - starts
            owner = np.repeat(np.arange(len(positions)), counts)
            children = (
                starts[owner]
                + np.arange(int(counts.sum()))
                - np.repeat(np.cumsum(counts) - counts, counts)
            )
            coordinate = metadata.indices[children]
            coordinates = coordinates[owner]
        positions = children
        coordinates = np.concatenate([coordinates, coordinate[:, None]], axis=1)
    if len(positions) != tensor.data.size:
        raise TfliteFormatError(
            f"tensor {tensor.name!r}: {tensor.data.size} stored values, metadata describes "
            f"{len(positions)}"
        )
    block_sizes = {
        level_dim - rank: sparsity.dimensions[level].dense_size
        for level, level_dim in enumerate(sparsity.traversal_order)
        if level_dim >= rank
    }
    dense_index = np.zeros((len(positions), rank), dtype=np.int64)
    for level, level_dim in enumerate(sparsity.traversal_order):
        if level_dim < rank:
            dense_index[:, level_dim] += coordinates[:, level] * _block_size_of(
                level_dim, sparsity.block_map, block_sizes
            )
        else:
            dense_index[:, sparsity.block_map[level_dim - rank]] += coordinates[:, level]
    dense = np.zeros(tensor.shape, dtype=tensor.data.dtype)
    dense[tuple(dense_index.T)] = tensor.data
    return dense


def dequantize(tensor: Tensor, stored: NDArray[Any]) -> NDArray[np.float32]:
    """The float32 values a constant behind ``DEQUANTIZE`` stands for.

    float16 is widened; integers are mapped with the tensor's affine quantization, per tensor or
    per channel along its quantized dimension.
    """
    if stored.dtype == np.float16:
        return stored.astype(np.float32)
    if tensor.quantization is None or not np.issubdtype(stored.dtype, np.integer):
        raise TfliteFormatError(f"tensor {tensor.name!r}: {stored.dtype} is not dequantizable")
    scales = np.asarray(tensor.quantization.scales, np.float32)
    zero_points = np.asarray(tensor.quantization.zero_points, np.float32)
    if scales.size > 1:
        shape = [1] * stored.ndim
        shape[tensor.quantization.axis] = scales.size
        scales, zero_points = scales.reshape(shape), zero_points.reshape(shape)
    result: NDArray[np.float32] = (stored.astype(np.float32) - zero_points) * scales
    return result


def _block_size_of(dimension: int, block_map: tuple[int, ...], block_sizes: dict[int, int]) -> int:
    for block, mapped in enumerate(block_map):
        if mapped == dimension:
            return block_sizes[block]
    return 1


def _buffer_bytes(buffer: Any, data: bytes) -> bytes:
    if buffer.Offset() > 1:  # models over 2 GB keep buffers after the flatbuffer
        return data[buffer.Offset() : buffer.Offset() + buffer.Size()]
    if buffer.DataLength() == 0:
        return b""
    return bytes(buffer.DataAsNumpy().tobytes())


def _read_tensor(index: int, table: Any, buffers: list[bytes]) -> Tensor:
    raw = buffers[table.Buffer()] if table.Buffer() < len(buffers) else b""
    type_code = int(table.Type())
    data: NDArray[Any] | None = None
    if raw:
        dtype = _DTYPES.get(type_code)
        if dtype is None:
            raise TfliteFormatError(f"tensor {index}: constant of unsupported type {type_code}")
        data = np.frombuffer(raw, dtype=dtype).copy()
    return Tensor(
        index=index,
        name=table.Name().decode(),
        shape=_int_tuple(table.ShapeAsNumpy()),
        type_code=type_code,
        data=data,
        sparsity=_read_sparsity(table.Sparsity()),
        quantization=_read_quantization(table.Quantization()),
    )


def _read_sparsity(table: Any) -> Sparsity | None:
    if table is None:
        return None
    dimensions = []
    for i in range(table.DimMetadataLength()):
        metadata = table.DimMetadata(i)
        dense = metadata.Format() == tflite.DimensionType.DENSE
        dimensions.append(
            DimensionMetadata(
                dense=dense,
                dense_size=int(metadata.DenseSize()),
                segments=None if dense else _index_vector(
                    metadata.ArraySegmentsType(), metadata.ArraySegments()
                ),
                indices=None if dense else _index_vector(
                    metadata.ArrayIndicesType(), metadata.ArrayIndices()
                ),
            )
        )  # fmt: skip
    return Sparsity(
        traversal_order=_int_tuple(table.TraversalOrderAsNumpy()),
        block_map=_int_tuple(table.BlockMapAsNumpy()),
        dimensions=tuple(dimensions),
    )


def _index_vector(type_code: int, table: Any) -> NDArray[np.int64]:
    vector_types = {
        tflite.SparseIndexVector.Int32Vector: tflite.Int32Vector,
        tflite.SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
        tflite.SparseIndexVector.Uint8Vector: tflite.Uint8Vector,
    }
    if table is None or type_code not in vector_types:
        raise TfliteFormatError(f"sparse index vector of unknown type {type_code}")
    vector = vector_types[type_code]()
    vector.Init(table.Bytes, table.Pos)
    values = vector.ValuesAsNumpy()
    return np.asarray(values if not isinstance(values, int) else [], dtype=np.int64)


def _read_quantization(table: Any) -> Quantization | None:
    if table is None or table.ScaleLength() == 0:
        return None
    return Quantization(
        scales=tuple(float(v) for v in table.ScaleAsNumpy()),
        zero_points=tuple(int(v) for v in table.ZeroPointAsNumpy()),
        axis=int(table.QuantizedDimension()),
    )


def _read_operator(index: int, table: Any, model: Any) -> Operator:
    code = model.OperatorCodes(table.OpcodeIndex())
    builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
    opcode = _BUILTIN_NAMES.get(builtin, f"UNKNOWN_BUILTIN_{builtin}")
    if opcode == "CUSTOM":
        opcode = f"CUSTOM({(code.CustomCode() or b'').decode()})"
    return Operator(
        index=index,
        opcode=opcode,
        inputs=_int_tuple(table.InputsAsNumpy()),
        outputs=_int_tuple(table.OutputsAsNumpy()),
        options=_read_options(opcode, table.BuiltinOptions()),
    )


def _read_options(opcode: str, table: Any) -> dict[str, int]:
    if opcode not in _OPTION_FIELDS or table is None:
        return {}
    class_name, fields = _OPTION_FIELDS[opcode]
    options = getattr(tflite, class_name)()
    options.Init(table.Bytes, table.Pos)
    return {_snake_case(name): int(getattr(options, name)()) for name in fields}


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _int_tuple(values: Any) -> tuple[int, ...]:
    if isinstance(values, int):  # the generated accessors return 0 for an absent vector
        return ()
    return tuple(int(v) for v in values)
