"""How tensors travel on the accelerator's streams, and on the wire to a board.

A stream carries ``lanes`` elements of ``elem_bits`` bits per beat; element ``i`` of a beat sits at bits
``[i * elem_bits, (i + 1) * elem_bits)``, so the first element in the tensor's (row-major, channels-last) order
is in the lowest bits. Signed elements are two's complement. A beat is moved as ``ceil(width / 8)`` bytes,
least significant byte first: the Verilator testbench files and the UART protocol use this same byte form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bnnflow.errors import DataError


@dataclass(frozen=True)
class StreamFormat:
    """The shape of one stream: ``beats`` beats per frame of ``lanes`` elements of ``elem_bits`` bits."""

    lanes: int
    elem_bits: int
    signed: bool
    beats: int

    @property
    def width(self) -> int:
        """Bits per beat (the port width in Verilog)."""
        return self.lanes * self.elem_bits

    @property
    def bytes_per_beat(self) -> int:
        return math.ceil(self.width / 8)

    @property
    def elements(self) -> int:
        """Elements per frame."""
        return self.lanes * self.beats

    def to_json(self) -> dict:
        return {"lanes": self.lanes, "elem_bits": self.elem_bits, "signed": self.signed, "beats": self.beats}

    @classmethod
    def from_json(cls, data: dict) -> StreamFormat:
        return cls(int(data["lanes"]), int(data["elem_bits"]), bool(data["signed"]), int(data["beats"]))


def encode(values: np.ndarray, fmt: StreamFormat) -> np.ndarray:
    """Frames (N, ...) of integers -> (N * beats, bytes_per_beat) uint8, each row one beat, little-endian."""
    flat = np.asarray(values).reshape(len(values), -1).astype(np.int64)
    if flat.shape[1] != fmt.elements:
        raise DataError(f"a frame has {flat.shape[1]} values, but the stream carries {fmt.elements} per frame")
    low = -(1 << (fmt.elem_bits - 1)) if fmt.signed else 0
    high = (1 << (fmt.elem_bits - 1)) - 1 if fmt.signed else (1 << fmt.elem_bits) - 1
    if flat.size and (flat.min() < low or flat.max() > high):
        raise DataError(f"values range over [{flat.min()}, {flat.max()}], outside the stream's {fmt.elem_bits}-bit "
                        f"{'signed' if fmt.signed else 'unsigned'} elements")
    codes = (flat & ((1 << fmt.elem_bits) - 1)).astype(np.uint64)
    # bit j of every element, least significant first: (N * elements, elem_bits)
    bits = ((codes[..., None] >> np.arange(fmt.elem_bits, dtype=np.uint64)) & 1).astype(np.uint8)
    bits = bits.reshape(len(flat) * fmt.beats, fmt.width)
    pad = fmt.bytes_per_beat * 8 - fmt.width
    if pad:
        bits = np.concatenate([bits, np.zeros((len(bits), pad), dtype=np.uint8)], axis=1)
    return np.packbits(bits, axis=1, bitorder="little")


def decode(data: np.ndarray, fmt: StreamFormat) -> np.ndarray:
    """(N * beats, bytes_per_beat) uint8 beats -> (N, elements) int64 values."""
    data = np.asarray(data, dtype=np.uint8).reshape(-1, fmt.bytes_per_beat)
    if len(data) % fmt.beats:
        raise DataError(f"{len(data)} beats do not make whole frames of {fmt.beats} beats")
    bits = np.unpackbits(data, axis=1, bitorder="little")[:, : fmt.width].astype(np.int64)
    bits = bits.reshape(-1, fmt.elem_bits)
    values = (bits << np.arange(fmt.elem_bits, dtype=np.int64)).sum(axis=1)
    if fmt.signed:
        values = np.where(values >= 1 << (fmt.elem_bits - 1), values - (1 << fmt.elem_bits), values)
    return values.reshape(len(data) // fmt.beats, fmt.elements)


def write_hex(path, beats: np.ndarray, width: int | None = None) -> None:
    """One beat per line as hexadecimal, most significant digit first (what the testbenches read).

    With ``width``, each beat is masked to ``width`` bits and written as exactly ``ceil(width / 4)`` digits: a
    ``$readmemh`` into a ``width``-bit memory warns about any digit beyond those (Icarus: "excess hex digits").
    """
    rows = np.asarray(beats, dtype=np.uint8)
    if width is None:
        lines = [row[::-1].tobytes().hex() for row in rows]
    else:
        mask, digits = (1 << width) - 1, -(-width // 4)
        lines = [f"{int.from_bytes(row.tobytes(), 'little') & mask:0{digits}x}" for row in rows]
    with open(path, "w") as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))


def read_hex(path, fmt: StreamFormat) -> np.ndarray:
    """The inverse of ``write_hex``: (beats, bytes_per_beat) uint8."""
    with open(path) as f:
        rows = [bytes.fromhex(line.strip().rjust(2 * fmt.bytes_per_beat, "0"))[::-1] for line in f if line.strip()]
    if not rows:
        return np.zeros((0, fmt.bytes_per_beat), dtype=np.uint8)
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), fmt.bytes_per_beat)
