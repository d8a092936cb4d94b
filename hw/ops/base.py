"""The base class of bnnflow's hardware ops (ONNX domain ``bnnflow.hw``).

A hardware op is a qonnx ``CustomOp``: a node of ``dataflow.onnx`` whose attributes hold its shape and its
folding (how many processing elements, PE, and input lanes, SIMD, work in parallel), and whose initializers
hold weights and thresholds. ``execute_node`` runs the op's reference semantics (``bnnflow.hw.kernels``), so a
dataflow graph runs in qonnx's own executor. The estimates are exact functions of the attributes; an op that
does not define one raises ``NotImplementedError`` instead of reporting 0.

Each op states its contract twice: ``verify_node`` (qonnx's per-node hook) checks the attributes alone, and
``verify_in_graph`` the tensors and initializers the node reads in its model. Both return what is wrong as
short phrases ([] when nothing is); ``bnnflow.hw.check.check_dataflow`` turns the first into an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.custom_op.base import CustomOp
from qonnx.util.basic import get_by_name

from bnnflow.hw.boards import ECP5, blocks

DOMAIN = "bnnflow.hw"


@dataclass(frozen=True)
class Memory:
    """``count`` identical on-chip memories of an op: ``width`` bits read per cycle, ``depth`` words each."""

    width: int
    depth: int
    count: int = 1
    #: read asynchronously (in the cycle of its address), which only LUTs can do: never block RAM, whatever its size
    asynchronous: bool = False
    #: bits of a ROM's word that differ between its words (synthesis drops the others; None: all ``width``); the
    #: RTL's choice of LUTs or block RAM is on ``width``, the block RAMs it takes are for these bits
    used_width: int | None = None
    #: a ROM the RTL puts in logic at any width when it has at most ``SHALLOW_ROM_WORDS`` words (the MVTU's weights)
    logic_when_shallow: bool = False

    @property
    def bits(self) -> int:
        """Bits of all ``count`` memories together."""
        return self.width * self.depth * self.count


class HWOp(CustomOp):
    """Common attributes and helpers; subclasses declare their own attributes and estimates."""

    def get_nodeattr_types(self) -> dict:
        return {"inputDataType": ("s", True, ""), "outputDataType": ("s", True, "")}

    def input_datatype(self) -> DataType:
        return DataType[self.get_nodeattr("inputDataType")]

    def output_datatype(self) -> DataType:
        return DataType[self.get_nodeattr("outputDataType")]

    def infer_node_datatype(self, model) -> None:
        model.set_tensor_datatype(self.onnx_node.output[0], self.output_datatype())

    def verify_node(self) -> list[str]:
        """What is wrong with the node's attributes: required ones missing, datatypes that are not integer
        types, then the op's own rules (``attribute_problems``)."""
        missing = [name for name, spec in self.get_nodeattr_types().items()
                   if spec[1] and get_by_name(self.onnx_node.attribute, name) is None]
        if missing:
            return [f"lacks the required attribute{'s' if len(missing) > 1 else ''} {', '.join(missing)}"]
        problems = [f"has {name} = {self.get_nodeattr(name)!r}, not an integer datatype (a stream carries integers "
                    "or bits)" for name in self.datatype_attributes() if integer_type(self.get_nodeattr(name)) is None]
        return problems or self.attribute_problems()

    def datatype_attributes(self) -> list[str]:
        """The attributes that name a datatype."""
        return ["inputDataType", "outputDataType"]

    def attribute_problems(self) -> list[str]:
        """The op's own rules on its attributes (shape, folding), once they are all present and typed."""
        return []

    def num_inputs(self) -> int:
        """How many inputs the node reads: the stream, then its initializers."""
        return 1

    def stream_shapes(self) -> tuple[list[int], list[int]]:
        """The shapes of one frame (without the batch axis) of the input and output streams."""
        raise NotImplementedError(f"{type(self).__name__} does not state its stream shapes")

    def num_outputs(self) -> int:
        """How many streams the node writes."""
        return 1

    def streams(self) -> list[tuple[str, list[int], str, str]]:
        """(tensor, frame shape, datatype attribute, "reads" / "writes") of every stream the node reads and
        writes; one in, one out unless an op says otherwise."""
        in_shape, out_shape = self.stream_shapes()
        node = self.onnx_node
        return [(node.input[0], in_shape, "inputDataType", "reads"), (node.output[0], out_shape, "outputDataType",
                                                                     "writes")]

    def verify_in_graph(self, model) -> list[str]:
        """What is wrong with the tensors the node reads and writes in ``model``: input and output counts, the
        streams' shapes and datatype annotations against the attributes, then the initializers
        (``parameter_problems``). Call after ``verify_node`` found nothing."""
        node = self.onnx_node
        if len(node.input) != self.num_inputs() or len(node.output) != self.num_outputs():
            return [f"has {len(node.input)} inputs and {len(node.output)} outputs, not {self.num_inputs()} and "
                    f"{self.num_outputs()}"]
        for tensor, shape, attr, verb in self.streams():
            recorded = model.get_tensor_shape(tensor)
            if recorded is None or list(recorded[1:]) != shape:
                return [f"{verb} {tensor} of shape {recorded}, but its attributes make frames of shape {shape}"]
            annotated = annotation(model, tensor)
            if annotated != self.get_nodeattr(attr):
                return [f"has {attr} = {self.get_nodeattr(attr)} but its tensor {tensor} is annotated {annotated}"]
        return self.parameter_problems(model)

    def parameter_problems(self, model) -> list[str]:
        """The op's rules on its initializers (weights, thresholds); [] for ops without any."""
        return []

    def folding(self) -> dict[str, int]:
        """The op's folding attributes (PE / SIMD) and their values."""
        return {name: self.get_nodeattr(name) for name in ("PE", "SIMD") if name in self.get_nodeattr_types()}

    def legal_foldings(self) -> list[dict[str, int]]:
        """Every legal value combination of the folding attributes."""
        raise NotImplementedError(f"{type(self).__name__} does not list its legal foldings")

    def get_exp_cycles(self) -> int:
        """Clock cycles to process one frame at the current folding (the op's initiation interval)."""
        raise NotImplementedError(f"{type(self).__name__} has no cycle model")

    def lut_estimate(self, lut_inputs: int) -> int:
        """Logic LUTs of ``lut_inputs`` inputs (6 on Xilinx 7-series/UltraScale, 4 on ECP5/iCE40)."""
        raise NotImplementedError(f"{type(self).__name__} has no LUT model")

    def memories(self, model=None) -> list[Memory]:
        """The op's memories at the current folding (parameters, buffers), as its RTL declares them; [] when it has
        none. With the op's ``model``, widths that depend on its parameters (an MVTU's accumulator) are exact."""
        return []


def divisors(n: int) -> list[int]:
    """The legal parallelism values of a dimension of size ``n``: its divisors, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def as_float(values: np.ndarray) -> np.ndarray:
    """qonnx's executor keeps every tensor in float32 containers; integers below 2**24 stay exact."""
    return np.asarray(values).astype(np.float32)


#: the simulator holds input codes and multi-bit weights in 32-bit integers (``bnnflow.hw.native.int_gemm``)
INT32 = DataType["INT32"]


def integer_type(name: str) -> DataType | None:
    """The integer datatype (of one bit or more) called ``name``; None for anything else."""
    try:
        dtype = DataType[name]
    except Exception:  # qonnx raises KeyError, ValueError or a bare Exception for names it cannot resolve
        return None
    return dtype if dtype.is_integer() and dtype.bitwidth() >= 1 else None


def annotation(model, tensor: str) -> str:
    """The name of the datatype ``tensor`` is annotated with (FLOAT32 when none); a name qonnx cannot resolve
    reads as "an unknown datatype" rather than raising."""
    try:
        return model.get_tensor_datatype(tensor).name
    except Exception:  # qonnx resolves the annotation's name and raises as integer_type describes
        return "an unknown datatype"


def fits_int32(dtype: DataType) -> bool:
    """Whether every value of ``dtype`` fits the simulator's 32-bit integers."""
    return INT32.min() <= dtype.min() and dtype.max() <= INT32.max()


def positive(op: HWOp, *names: str) -> list[str]:
    """Each named attribute (an int, or every entry of a list of ints) is at least 1."""
    problems = []
    for name in names:
        value = op.get_nodeattr(name)
        if any(v < 1 for v in (value if isinstance(value, list) else [value])):
            problems.append(f"has {name} = {value}, which must be positive")
    return problems


def pairs(op: HWOp, *names: str) -> list[str]:
    """Each named attribute is a pair (height, width) of positive ints."""
    problems = [f"has {name} = {op.get_nodeattr(name)}, not a (height, width) pair" for name in names
                if len(op.get_nodeattr(name)) != 2]
    return problems or positive(op, *names)


def divides(op: HWOp, part: str, whole: str) -> list[str]:
    """The folding attribute ``part`` divides the dimension ``whole``: each PE / SIMD lane gets whole words."""
    p, w = op.get_nodeattr(part), op.get_nodeattr(whole)
    return [] if w % p == 0 else [f"has {part} = {p}, which does not divide {whole} = {w}"]


def frame(vectors: list[int], *last: int) -> list[int]:
    """A frame's shape: ``numInputVectors`` then the given trailing dimensions."""
    return [*vectors, *last]


def first_bad(ok: np.ndarray, values: np.ndarray) -> str:
    """``value at [i, j]`` of the first entry where ``ok`` is False."""
    index = tuple(int(i) for i in np.argwhere(~ok)[0])
    return f"{values[index]:g} at {list(index)}"


class ChannelStreamOp(HWOp):
    """An op that handles ``PE`` of its ``NumChannels`` channels a cycle, every pixel or vector in turn."""

    def legal_foldings(self) -> list[dict[str, int]]:
        return [{"PE": pe} for pe in divisors(self.get_nodeattr("NumChannels"))]

    def channel_folds(self) -> int:
        """Cycles per pixel: the channels over ``PE``."""
        return self.get_nodeattr("NumChannels") // self.get_nodeattr("PE")


class PixelStreamOp(ChannelStreamOp):
    """A channel stream over the ``ImgDim`` pixels of its input map: one cycle per pixel and channel fold."""

    def get_exp_cycles(self) -> int:
        h, w = self.get_nodeattr("ImgDim")
        return h * w * self.channel_folds()


class VectorStreamOp(ChannelStreamOp):
    """A channel stream over ``prod(numInputVectors)`` vectors: one cycle per vector and channel fold."""

    def stream_shapes(self) -> tuple[list[int], list[int]]:
        shape = frame(self.get_nodeattr("numInputVectors"), self.get_nodeattr("NumChannels"))
        return shape, shape

    def get_exp_cycles(self) -> int:
        return math.prod(self.get_nodeattr("numInputVectors")) * self.channel_folds()


def bank_depth(width: int, words: int) -> int:
    """Words per bank of a deep memory of ``words`` words of ``width`` bits (bnn_mvtu's weights, bnn_thr_search's
    levels, bnn_stream_fifo's RAM), which the RTL reads bank by bank, registering each bank's output before one is
    selected: a block RAM's data comes late in its cycle, and a multiplexer between it and a register limits the
    clock. A bank is as deep as synthesis can map with blocks side by side only, every other mapping, with blocks
    stacked behind a multiplexer, costing more (``_stacking_costs_more``); of those depths, the one that holds the
    most words per block, the shallowest on a tie: 36 x 512 for wide words, 18 x 1024 for 10 to 18 bits, 9 x 2048
    for 5 to 9, ...; fewer words when the memory is smaller (a 1-word memory: 2)."""
    depths = sorted({d for _, d in ECP5.ram_shapes})
    safe = [d for d in depths if _stacking_costs_more(width, d)]
    best = min(safe, key=lambda d: blocks(width, d, ECP5.ram_shapes) / d)
    return min(best, 1 << max(1, (words - 1).bit_length()))


def _stacking_costs_more(width: int, depth: int) -> bool:
    """Whether every ECP5 mapping of ``width`` x ``depth`` bits that stacks a shallower shape (a slice of the width
    in blocks one behind another) takes more blocks than the best one without."""
    shapes = ECP5.ram_shapes
    flat = blocks(width, depth, tuple(s for s in shapes if s[1] >= depth))
    stacked = [-(-depth // d) + blocks(max(0, width - w), depth, shapes) for w, d in shapes if d < depth]
    return all(cost > flat for cost in stacked)


#: up to this many thresholds a unit compares them all at once (a 4-bit output: 15 comparators per channel); more,
#: and it searches them in a pipeline of log2(T + 1) compare stages, as FINN's RTL thresholding does
PARALLEL_THRESHOLDS = 15


def varying_bits(low: int, high: int, width: int) -> int:
    """Bits of a ``width``-bit two's complement word that differ between values in ``low`` .. ``high``: the others are
    the same in every word of a ROM of such values, and synthesis drops them (yosys's ``memory_libmap`` removes
    constant lanes), so they cost no block RAM."""
    return sum((low >> k) != (high >> k) for k in range(width)) if low <= high else width


def threshold_memories(thresholds: int, acc_bits: int, channels: int, pe: int, range_bits: int | None = None,
                       used: dict[str, int] | None = None, name: str = "") -> list[Memory]:
    """Where a unit keeps its thresholds: a word of all of its PE channels' thresholds per channel group when it
    compares them in parallel; when it searches them, a memory per level s of the search tree and PE lane, of one
    threshold a word, the level's 2^s thresholds of each of the lane's channels (a search stage reads one threshold
    a cycle, so the deep levels' memories are deep and narrow, which block RAM holds well; the first are a few LUTs).
    Thresholds are ``acc_bits`` wide; of them vary ``range_bits`` over the range they are clipped to, or, with the
    RTL's ROMs of node ``name`` (``bnnflow.hw.rtl.layers.rom_used_bits``), what ``used`` says of each."""
    if thresholds <= PARALLEL_THRESHOLDS:  # one ROM, a word of all PE lanes' thresholds per channel group
        width = pe * thresholds * acc_bits
        if used is not None:
            return [Memory(width, channels // pe, used_width=used[f"{name}_thresholds.hex"])]
        return [Memory(width, channels // pe, used_width=None if range_bits is None else pe * thresholds * range_bits)]
    levels = math.ceil(math.log2(thresholds + 1))
    mems = []
    for level in range(levels):  # in banks; a 1-word memory is 2 words deep
        depth = (channels // pe) << level
        bank = bank_depth(range_bits or acc_bits, depth)
        if used is not None:  # as many banks as the RTL wrote files: each but the last a power of two deep
            banks = sum(1 for key in used if key.startswith(f"{name}_search_{level:02d}_000_"))
            bank = 1 << max(1, (-(-depth // banks) - 1).bit_length())
        for start in range(0, depth, bank):
            words = max(2, min(bank, depth - start))
            if used is None:
                mems.append(Memory(acc_bits, words, pe, used_width=range_bits))
                continue
            files = [f"{name}_search_{level:02d}_{lane:03d}_{start // bank:02d}.hex" for lane in range(pe)]
            mems += [Memory(acc_bits, words, used_width=used[file]) for file in files]
    return grouped(mems)


def grouped(memories: list[Memory]) -> list[Memory]:
    """Runs of equal memories as one of a ``count``."""
    out: list[Memory] = []
    for memory in memories:
        if out and replace(out[-1], count=memory.count) == memory:
            out[-1] = replace(out[-1], count=out[-1].count + memory.count)
        else:
            out.append(memory)
    return out


def threshold_compare_luts(thresholds: int, acc_bits: int, lut_per_adder_bit: float) -> float:
    """LUTs of the compares of one PE lane: every threshold at once, or one comparator per search stage."""
    compares = thresholds if thresholds <= PARALLEL_THRESHOLDS else math.ceil(math.log2(thresholds + 1))
    return compares * acc_bits * lut_per_adder_bit / 2  # comparators share the carry chain


def threshold_problems(model, name: str, channels: int, out_type: DataType, bias: int = 0) -> list[str]:
    """Thresholds as every consumer reads them: (channels, T) or one shared row (1, T), integers that the kernels
    and the simulator compare in int64 (the RTL clips them to the reachable range, which changes no count), and
    outputs ``bias`` .. ``bias + T`` that ``out_type`` holds. Their order is free: each output counts the
    thresholds at or below its input, whatever their order."""
    t = model.get_initializer(name)
    if t is None:
        return [f"reads thresholds {name}, which is not an initializer"]
    if t.ndim != 2 or t.shape[0] not in (1, channels) or t.shape[1] < 1:
        return [f"has thresholds {name} of shape {list(t.shape)}, not ({channels}, T) or (1, T)"]
    if not (out_type.allowed(bias) and out_type.allowed(bias + t.shape[1])):
        return [f"outputs {bias} .. {bias + t.shape[1]} ({t.shape[1]} thresholds per channel from {bias}), which "
                f"outputDataType {out_type.name} cannot hold"]
    if not np.issubdtype(t.dtype, np.integer):
        ok = np.isfinite(t) & (t == np.round(t)) & (np.abs(t) < 2.0**63)
        if not ok.all():
            return [f"has threshold {first_bad(ok, t)} in {name}; thresholds are integers (the accumulators are)"]
    return []

