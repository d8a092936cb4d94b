"""The bit-exact accelerator simulator: runs ``dataflow.onnx`` on a batch with bit-packed integer arithmetic.

Each hardware op is prepared once (weights packed 64 bits to a word, thresholds as integers) and then applied
to the whole batch: XNOR layers through the C kernel's ``popcount(x ^ w)`` on packed words, thresholds, sliding
windows and max-pooling on small integer arrays, and multi-bit layers through the C kernel's integer product. There is
no floating point anywhere, and no step rounds or approximates: the results equal each op's reference
``execute_node`` under qonnx's executor bit for bit, which the tests check. The timing model is the estimates'
(``bnnflow.hw.estimates.timing``): folding gives each op's cycles per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.errors import DataError
from bnnflow.hw import kernels
from bnnflow.hw.check import check_dataflow
from bnnflow.hw.estimates import hw_ops
from bnnflow.hw.native import int_gemm, xnor_popcount_gemm


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(R, K) values in {0, 1} -> (R, ceil(K / 64)) uint64 words, least significant bit first, zero padded."""
    packed = np.packbits(bits.astype(np.uint8, copy=False), axis=-1, bitorder="little")
    pad = (-packed.shape[-1]) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros((packed.shape[0], pad), dtype=np.uint8)], axis=-1)
    return np.ascontiguousarray(packed).view(np.uint64)


def _thresholds(acc: np.ndarray, thresholds: np.ndarray | None, bias: int = 0) -> np.ndarray:
    if thresholds is None:
        return acc
    if thresholds.shape[1] == 1:
        return (acc >= thresholds[:, 0]).astype(np.int32) + bias
    return kernels.multithreshold(acc, thresholds, bias).astype(np.int32)


Run = Callable[..., np.ndarray]


@dataclass
class _Stage:
    """One hardware op: the tensors it reads and writes, and its exact integer function of the inputs."""

    inputs: list[str]
    outputs: list[str]
    run: Run


def _mvtu_run(model: ModelWrapper, node, op) -> Run:
    weights = model.get_initializer(node.input[1])
    thresholds = model.get_initializer(node.input[2]).astype(np.int64) if not op.get_nodeattr("noActivation") else None
    bias = op.get_nodeattr("outputBias")
    mw = op.get_nodeattr("MW")
    vectors = list(op.get_nodeattr("numInputVectors"))
    correct = None
    if op.get_nodeattr("padCorrection"):
        table = model.get_initializer(node.input[-1]).astype(np.int64)
        rows, cols = op.get_nodeattr("correctionRows"), op.get_nodeattr("correctionCols")
        index = np.asarray(rows)[:, None] * (max(cols) + 1) + np.asarray(cols)[None, :]
        per_position = table[index]  # (OH, OW, MH)

        def correct(acc: np.ndarray) -> np.ndarray:
            return acc + per_position
    if op.get_nodeattr("binaryXnorMode"):
        packed = pack_bits(weights.T.astype(np.uint8))

        def accumulate(x: np.ndarray) -> np.ndarray:  # the bipolar dot product 2 popcount - MW
            return 2 * xnor_popcount_gemm(pack_bits(x.reshape(-1, mw)), packed, mw).astype(np.int64) - mw
    else:
        w = weights.astype(np.int32)

        def accumulate(x: np.ndarray) -> np.ndarray:
            return int_gemm(x.reshape(-1, mw), w)

    def run(x: np.ndarray) -> np.ndarray:
        acc = accumulate(x).reshape(len(x), *vectors, -1)
        if correct is not None:
            acc = correct(acc)
        return _thresholds(acc, thresholds, bias)
    return run


def _thresholding_run(model: ModelWrapper, node, op) -> Run:
    thresholds = model.get_initializer(node.input[1]).astype(np.int64)
    bias = op.get_nodeattr("outputBias")
    signs = model.get_initializer(node.input[2]).astype(np.int64) if op.get_nodeattr("inputSigns") else None
    return lambda x: _thresholds(x.astype(np.int64) * signs if signs is not None else x, thresholds, bias)


def _run(model: ModelWrapper, node, op) -> Run:
    """The fast exact function of one op: packed bits and the C kernel for XNOR units, ``kernels`` for the rest."""
    attr = op.get_nodeattr
    if node.op_type == "MVTU":
        return _mvtu_run(model, node, op)
    if node.op_type == "Thresholding":
        return _thresholding_run(model, node, op)
    if node.op_type == "SlidingWindow":
        return lambda x: kernels.sliding_window(x, tuple(attr("ConvKernelDim")), tuple(attr("Stride")),
                                                tuple(attr("Padding")), attr("PadValue"))
    if node.op_type == "StreamingMaxPool":
        return lambda x: kernels.maxpool(x, tuple(attr("PoolDim")), tuple(attr("Stride")))
    if node.op_type == "SumPool":
        return lambda x: kernels.sum_pool(x, tuple(attr("PoolDim")), tuple(attr("Stride")))
    if node.op_type == "Downsample":
        return lambda x: kernels.downsample(x, tuple(attr("Offset")), tuple(attr("Stride")), tuple(attr("OutDim")))
    if node.op_type == "ChannelPad":
        return lambda x: kernels.channel_pad(x, attr("PadBefore"), attr("PadAfter"), attr("PadValue"))
    if node.op_type == "AddStreams":
        return kernels.add_streams
    if node.op_type == "DuplicateStreams":
        return lambda x: x
    if node.op_type == "LabelSelect":
        return lambda x: kernels.label_select(x, 1)
    raise AssertionError(f"unhandled hardware op {node.op_type}")  # check_dataflow admits only the ops above


class Simulator:
    """A dataflow graph prepared for fast, exact execution.

    Args:
        model: ``dataflow.onnx`` as a ``ModelWrapper``; anything else, or a graph that breaks the ops' contract
            (``bnnflow.hw.check``), is an ``UnsupportedGraphError``.
    """

    def __init__(self, model: ModelWrapper) -> None:
        check_dataflow(model)
        self.model = model
        ops = {node.name: op for node, op in hw_ops(model)}
        self.stages = []
        for node in model.graph.node:  # a topological order: check_dataflow made sure
            if node.op_type == "Reshape":
                run = lambda x: x.reshape(len(x), -1)  # noqa: E731
            else:
                run = _run(model, node, ops[node.name])
            inputs = [name for name in node.input if model.get_initializer(name) is None]
            self.stages.append(_Stage(inputs, list(node.output), run))
        self.input_name = model.graph.input[0].name
        self.output_name = model.graph.output[0].name
        self.input_shape = tuple(model.get_tensor_shape(self.input_name)[1:])
        self.input_type: DataType = model.get_tensor_datatype(self.input_name)
        self.output_shape = tuple(model.get_tensor_shape(self.output_name)[1:])

    def check_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """Validate a batch against the accelerator's input: shape, integer values, the input datatype's range."""
        inputs = np.asarray(inputs)
        if inputs.ndim != len(self.input_shape) + 1 or tuple(inputs.shape[1:]) != self.input_shape:
            raise DataError(f"inputs have shape {inputs.shape}, but the accelerator takes (N, "
                            f"{', '.join(map(str, self.input_shape))}) {self.input_type.name} values")
        if not (np.issubdtype(inputs.dtype, np.integer) or np.issubdtype(inputs.dtype, np.floating)
                or inputs.dtype == np.bool_):
            raise DataError(f"inputs have dtype {inputs.dtype}; the accelerator takes {self.input_type.name} integers")
        if np.issubdtype(inputs.dtype, np.floating) and not np.array_equal(inputs, np.round(inputs)):
            raise DataError(f"inputs hold non-integer values; the accelerator takes {self.input_type.name} integer "
                            "codes (quantize on the host first)")
        low, high = self.input_type.min(), self.input_type.max()
        if inputs.size and (inputs.min() < low or inputs.max() > high):
            raise DataError(f"inputs range over [{inputs.min()}, {inputs.max()}], outside {self.input_type.name} "
                            f"[{low}, {high}]")
        return inputs.astype(np.uint8 if self.input_type.bitwidth() <= 8 and low >= 0 else np.int32)

    def run(self, inputs: np.ndarray, batch: int = 256) -> np.ndarray:
        """The accelerator's outputs for ``inputs`` (N, ...), as int64."""
        inputs = self.check_inputs(inputs)
        results = []
        for start in range(0, len(inputs), batch):
            tensors = {self.input_name: inputs[start: start + batch]}
            for stage in self.stages:
                outputs = stage.run(*(tensors[name] for name in stage.inputs))
                for name in stage.outputs:
                    tensors[name] = outputs
                for name in stage.inputs:  # a stream is read once (forks have one copy per reader)
                    if name != self.output_name:
                        tensors.pop(name, None)
            results.append(np.asarray(tensors[self.output_name], dtype=np.int64))
        if not results:
            return np.zeros((0, *self.output_shape), dtype=np.int64)
        return np.concatenate(results)


def compare(expected: np.ndarray, got: np.ndarray, shown: int = 5) -> dict[str, Any]:
    """How many outputs differ, the first few indices, and their expected and actual values."""
    expected = np.asarray(expected).reshape(len(expected), -1)
    got = np.asarray(got).reshape(len(got), -1)
    differs = np.flatnonzero(~np.all(expected == got, axis=1)) if expected.shape == got.shape else np.arange(len(got))
    first = differs[:shown].tolist()
    return {
        "samples": len(got),
        "mismatches": int(len(differs)),
        "first_mismatches": first,
        "expected": [expected[i].tolist() for i in first] if expected.shape == got.shape else [],
        "got": [got[i].tolist() for i in first],
    }


def describe_mismatch(result: dict[str, Any]) -> str:
    """A short diff: how many, first indices, expected vs got (values truncated)."""
    if not result["mismatches"]:
        return f"all {result['samples']} outputs match"

    def short(values: list) -> str:
        return "[" + ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "") + "]"

    parts = [f"{result['mismatches']} of {result['samples']} outputs differ; first at {result['first_mismatches']}"]
    if result["expected"]:
        i = result["first_mismatches"][0]
        parts.append(f"sample {i}: expected {short(result['expected'][0])}, got {short(result['got'][0])}")
    return "; ".join(parts)


def frames_per_second(simulator: Simulator, inputs: np.ndarray, batch: int = 256) -> float:
    """Measured simulator throughput on ``inputs`` (one warm-up pass on the first batch)."""
    import time

    simulator.run(inputs[:batch], batch)
    started = time.perf_counter()
    simulator.run(inputs, batch)
    return len(inputs) / max(time.perf_counter() - started, 1e-9)
