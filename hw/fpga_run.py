"""Running frames on a programmed board over its serial port: the host side of ``hw/rtl/verilog/uart_bridge.v``.

The board speaks the byte form of ``hw/rtl/stream.py``: each input beat as ceil(width / 8) bytes, least significant
first, and the same for each output beat. A UART has no flow control here, so the host sends one frame and reads
all of that frame's output before sending the next; the board then only has to keep up within a frame, which
the bridge's double buffer allows. The same code talks to the simulated board of ``uart_cosim.pty_session``.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import serial

from bnnflow.errors import ConfigError, DataError, ToolchainError
from bnnflow.hw.rtl.stream import StreamFormat, decode, encode
from bnnflow.pipeline.console import out

_PORT_HINT = ("check the USB cable and that the board is powered; `ls /dev/ttyUSB* /dev/ttyACM*` lists the serial "
              "ports present")


def load_interface(path: Path) -> dict:
    """Read a design's ``interface.json``, checking the parts ``run_on_board`` needs."""
    try:
        interface = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; it is written with the design's Verilog (`bnnflow rtl`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({exc}); regenerate it with `bnnflow rtl`") from None
    _formats(interface, str(path))
    return interface


def run_on_board(port: str, interface: dict, inputs: np.ndarray, *, baud: int = 115200,
                 timeout: float = 10.0) -> np.ndarray:
    """Run frames through the accelerator on a board and return what it computed.

    Args:
        port: the board's serial device, e.g. ``/dev/ttyUSB0``.
        interface: the design's ``interface.json`` (see ``load_interface``).
        inputs: (N, ...) integer frames in the input stream's element order, each with
            ``interface["input"]``'s element count; values must fit its element type.
        baud: the rate the bitstream was built for (its ``uart_bridge`` CLKS_PER_BIT = clock / baud).
        timeout: seconds to wait for a frame's output after its input has been sent.

    Returns:
        (N, output elements) int64, decoded with the output stream's format.

    Raises:
        ConfigError: malformed interface, or the port is missing, busy or not permitted.
        DataError: inputs of the wrong shape, type or range.
        ToolchainError: the board did not answer in time, or the connection was lost.
    """
    in_fmt, out_fmt = _formats(interface, "interface.json")
    frames = _frames(inputs, in_fmt)
    if baud <= 0:
        raise ConfigError(f"baud rate {baud} must be positive")
    in_bytes = in_fmt.beats * in_fmt.bytes_per_beat
    out_bytes = out_fmt.beats * out_fmt.bytes_per_beat
    wire = encode(frames, in_fmt).reshape(len(frames), in_bytes)
    answers: list[bytes] = []
    if len(frames):
        with _open(port, baud, timeout) as link, out.progress() as progress:
            task = progress.add_task(f"board on {port}", total=len(frames), status="")
            link.reset_input_buffer()  # nothing left over from an earlier, interrupted session
            for i, frame in enumerate(wire):
                answers.append(_exchange(link, port, frame.tobytes(), out_bytes, i, baud, timeout))
                progress.advance(task)
    return decode(np.frombuffer(b"".join(answers), dtype=np.uint8), out_fmt)


def _formats(interface: dict, where: str) -> tuple[StreamFormat, StreamFormat]:
    """The input and output stream formats of an interface, or a ConfigError naming what is wrong."""
    if not isinstance(interface, dict):
        raise ConfigError(f"{where} is malformed: expected a JSON object, got {type(interface).__name__}")
    formats = []
    for key in ("input", "output"):
        spec = interface.get(key)
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} is malformed: no '{key}' stream description; regenerate it with `bnnflow rtl`")
        for field in ("lanes", "elem_bits", "beats"):
            value = spec.get(field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where} is malformed: '{key}.{field}' must be a positive integer, got {value!r}")
        if not isinstance(spec.get("signed"), bool):
            raise ConfigError(f"{where} is malformed: '{key}.signed' must be true or false, got {spec.get('signed')!r}")
        formats.append(StreamFormat.from_json(spec))
    return formats[0], formats[1]


def _frames(inputs: np.ndarray, fmt: StreamFormat) -> np.ndarray:
    """(N, elements) int64 frames from the caller's array, or a DataError that says what does not fit."""
    array = np.asarray(inputs)
    if array.ndim < 1:
        raise DataError("inputs must be a batch of frames (N, ...), got a scalar")
    if array.dtype.kind not in "iub":
        if array.dtype.kind != "f" or not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise DataError(f"inputs must be integers (the input stream's {fmt.elem_bits}-bit codes), got "
                            f"{array.dtype} values; quantize them first")
    per_frame = int(np.prod(array.shape[1:], dtype=np.int64))
    if per_frame != fmt.elements:
        raise DataError(f"each input frame has {per_frame} values (shape {array.shape[1:]}), but the board's input "
                        f"stream takes {fmt.elements} per frame ({fmt.beats} beats of {fmt.lanes}); pass a batch (N, ...)")
    return array.reshape(len(array), -1).astype(np.int64)


def _open(port: str, baud: int, timeout: float) -> serial.Serial:
    try:
        # exclusive: a second bnnflow (or anything else that takes the lock) would interleave frames on the wire
        return serial.Serial(port, baud, timeout=timeout, write_timeout=None, exclusive=True)
    except serial.SerialException as exc:
        code = exc.errno
        if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            raise ConfigError(f"serial port {port} not found: {_PORT_HINT}") from None
        if code in (errno.EACCES, errno.EPERM):
            raise ConfigError(f"no permission to open {port}: add yourself to the group that owns it (usually "
                              "dialout: `sudo usermod -aG dialout $USER`, then log out and in)") from None
        if code in (errno.EBUSY, errno.EAGAIN):
            raise ConfigError(f"{port} is in use by another program (a serial terminal?); close it first") from None
        raise ConfigError(f"cannot open {port}: {exc}; {_PORT_HINT}") from None


def _exchange(link: serial.Serial, port: str, frame: bytes, out_bytes: int, index: int, baud: int,
              timeout: float) -> bytes:
    """Send one frame and read its whole answer."""
    try:
        link.write(frame)
        link.flush()  # wait until the bytes have left, so `timeout` counts the board's time only
        answer = link.read(out_bytes)
    except serial.SerialException as exc:
        lost = f"lost the connection to the board on {port} at frame {index}: {exc}"
        raise ToolchainError(f"{lost}; {_PORT_HINT}") from None
    if len(answer) < out_bytes:
        raise ToolchainError(
            f"the board on {port} sent {len(answer)} of {out_bytes} bytes for frame {index} within {timeout:g} s. "
            f"Is the bitstream loaded (board programmed)? Was it built for {baud} baud (pass baud= to match)? "
            "Press the board's reset if its error LED is on: a lost byte leaves it out of step with the host")
    return answer
