"""User-facing errors: each carries an exit code and a one-line message that names the problem and the fix.

The CLI turns these into a single line on stderr and a non-zero exit; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class BnnflowError(Exception):
    """Base class of every error a user can cause; ``str(err)`` is the whole message."""

    exit_code = 1


class ConfigError(BnnflowError):
    """A configuration file, flag or value is wrong (unknown key, wrong type, out of range)."""

    exit_code = 2


class DataError(BnnflowError):
    """A data set is missing or not in the expected layout."""

    exit_code = 2


class CheckpointError(BnnflowError):
    """A checkpoint is missing, corrupt, or not written by bnnflow."""

    exit_code = 2


class UnsupportedGraphError(BnnflowError):
    """An ONNX graph holds something a stage cannot handle; the message names the node and its op type."""

    exit_code = 3


class VerificationError(BnnflowError):
    """Two levels of the verification ladder disagree; the message names the step and the first mismatch."""

    exit_code = 4


class ToolchainError(BnnflowError):
    """An external tool (yosys, nextpnr, verilator, FINN) is missing or failed; the message names its log."""

    exit_code = 5
