"""What a tensor of model.qonnx is in the integer graph the compiler builds from it.

Lowering follows the float graph node by node and keeps, for each of its tensors, one of:

- ``Host``: a float tensor computed on the host (everything before the first quantized activation);
- ``Codes``: an integer tensor of the new graph and the per-channel affine map to the float values it stands
  for, ``real = scale * code + offset`` (channels on axis 1, model.qonnx's own layout);
- ``Monotone``: a per-channel monotone function of ``Codes`` that no integer tensor holds yet: BatchNorm after a
  clip, a PReLU. It becomes integer thresholds at the quantizer that reads it.

Binary activations are codes -1 / +1 (qonnx ``BIPOLAR``) times the quantizer's scale: a convolution of such
codes with zero padding is then exactly the model's, and the hardware's bits are the dataflow conversion's
business.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from qonnx.core.datatype import DataType


@dataclass(frozen=True)
class Host:
    """A float tensor on the host: ``name`` in the new graph (NCHW, as in model.qonnx)."""

    name: str


@dataclass(frozen=True)
class Exact:
    """Where a code tensor's float value is reproduced bit for bit: model.qonnx's tensor ``origin`` equals
    ``a * code + b`` computed in float32 (a Mul then an Add), every step exactly representable."""

    origin: str
    a: np.ndarray
    b: np.ndarray


@dataclass(frozen=True)
class Codes:
    """Integer values in the new graph's tensor ``name`` that stand for ``scale * code + offset``.

    ``parent`` is the value a linear layer read to make these codes, so the compiler can stop in front of a layer
    whose float result it cannot reproduce exactly.
    """

    name: str
    dtype: DataType
    scale: np.ndarray
    offset: np.ndarray
    shape: tuple[int, ...]
    exact: Exact | None = None
    parent: "Codes | None" = field(default=None, repr=False)

    @property
    def channels(self) -> int:
        return int(self.shape[1])

    def real(self, code: np.ndarray) -> np.ndarray:
        """model.qonnx's float32 values of codes shaped (C, ...): ``scale * code + offset``, exact where the codes
        reproduce it (``exact``), rounded once to float32 otherwise."""
        column = (-1, *[1] * (code.ndim - 1))
        return (self.scale.reshape(column) * code + self.offset.reshape(column)).astype(np.float32)


@dataclass(frozen=True)
class Step:
    """One float op of model.qonnx applied per channel, evaluated exactly as onnxruntime evaluates it: in float32,
    one rounding per operation, with the node's own float32 constants (per channel, shape (C,)).

    ``kind``: ``mul`` / ``add`` / ``sub`` / ``div`` by ``c``, ``rsub`` (``c - x``), ``bn`` (onnxruntime's
    BatchNormalization: ``x * c + d`` with ``c = gamma * (1 / sqrt(var + eps))``, ``d = beta - mean * c``),
    ``clip`` to [``c``, ``d``], ``relu``, ``prelu`` (slope ``c``).
    """

    kind: str
    c: np.ndarray | None = None
    d: np.ndarray | None = None
    #: ``add2`` / ``sub2``: two chains of steps applied to the same input, then added or subtracted (an activation
    #: written as two branches, as FTBNN's FPReLU ``p relu(z) - n relu(-z)`` exports)
    branches: tuple[tuple["Step", ...], tuple["Step", ...]] | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.branches is not None:
            left, right = (_chain(x, steps) for steps in self.branches)
            return left + right if self.kind == "add2" else left - right
        column = (-1, *[1] * (x.ndim - 1))
        c = None if self.c is None else self.c.reshape(column)
        d = None if self.d is None else self.d.reshape(column)
        with np.errstate(all="ignore"):
            if self.kind == "bn":
                return x * c + d
            if self.kind == "clip":
                return np.minimum(np.maximum(x, c), d)
            if self.kind == "relu":
                return np.maximum(x, np.float32(0))
            if self.kind == "prelu":
                return np.where(x < 0, x * c, x)
            return {"mul": lambda: x * c, "add": lambda: x + c, "sub": lambda: x - c, "div": lambda: x / c,
                    "rsub": lambda: c - x}[self.kind]()

    def direction(self) -> np.ndarray | None:
        """Per channel: -1 where the op decreases, +1 elsewhere (constant channels included); None where it
        both rises and falls (a PReLU with a negative slope)."""
        if self.kind in ("mul", "div", "bn"):
            return np.where(self.c < 0, -1, 1)
        if self.kind == "rsub":
            return -np.ones(len(self.c), dtype=int)
        if self.kind == "prelu" and (self.c < 0).any():
            return None
        if self.branches is not None:
            left, right = (_direction(steps) for steps in self.branches)
            if left is None or right is None:
                return None
            right = right if self.kind == "add2" else -right
            # the sum of two maps that move the same way moves that way; opposite ways, no single direction
            return None if (left != right).any() else left
        return 1

    def repeated(self, times: int) -> "Step":
        """The same op on a flattened tensor: each channel's constants repeated for its ``times`` positions."""
        changes = {k: np.repeat(getattr(self, k), times) for k in ("c", "d")
                   if getattr(self, k) is not None and getattr(self, k).size > 1}
        if self.branches is not None:
            changes["branches"] = tuple(tuple(step.repeated(times) for step in steps) for steps in self.branches)
        return replace(self, **changes)


def _chain(x: np.ndarray, steps: tuple[Step, ...]) -> np.ndarray:
    for step in steps:
        x = step(x)
    return x


def _direction(steps: tuple[Step, ...]) -> np.ndarray | None:
    """Per channel +1 / -1 for a chain of steps (broadcast from a scalar where no step is per channel); None where
    a step is not monotone."""
    sign = np.ones(1, dtype=int)
    for step in steps:
        turn = step.direction()
        if turn is None:
            return None
        sign = sign * turn
    return sign


@dataclass(frozen=True)
class Monotone:
    """``steps`` applied, in order, to the float values of ``base``: a function no integer tensor holds yet."""

    base: Codes
    steps: tuple[Step, ...]
    node: str

    def then(self, step: Step) -> "Monotone":
        return replace(self, steps=(*self.steps, step))

    def evaluate(self, code: np.ndarray) -> np.ndarray:
        """model.qonnx's float32 values for codes shaped (C, ...)."""
        value = self.base.real(code)
        for step in self.steps:
            value = step(value)
        return value

    def direction(self) -> np.ndarray | None:
        """Per channel +1 / -1: the direction of the whole map in the code (scale signs included); None if some
        channel is not monotone."""
        sign = np.where(self.base.scale < 0, -1, 1)
        for step in self.steps:
            turn = step.direction()
            if turn is None:
                return None
            sign = sign * turn
        return sign


Value = Host | Codes | Monotone


def channel_vector(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """A constant that broadcasts against a tensor of ``shape`` (N, C, ...), as a float32 vector of one value per
    channel; None if it varies along another axis."""
    value = np.asarray(value, dtype=np.float32)
    channels = shape[1]
    if value.size == 1:
        return np.full(channels, value.flat[0], dtype=np.float32)
    padded = (1,) * (len(shape) - value.ndim) + value.shape
    if len(padded) != len(shape) or value.size != channels or padded[1] != channels:
        return None
    return value.reshape(channels)


def per_channel(vector: np.ndarray, rank: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast on axis 1 of a rank-``rank`` tensor."""
    return vector.reshape(1, -1, *[1] * (rank - 2))


def integer_range(dtype: DataType) -> tuple[int, int]:
    return int(dtype.min()), int(dtype.max())


def smallest_type(low: float, high: float) -> DataType:
    """The smallest qonnx integer datatype holding [low, high]."""
    if low >= 0:
        return DataType.get_smallest_possible(high)
    return DataType.get_smallest_possible(min(low, -high - 1))
