"""User-facing errors: each carries an exit code and a one-line message that names the problem and the fix.

The CLI turns these into a single line on stderr and a non-zero exit; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class BnnflowError(Exception):
    """Base class of every error a user can cause; ``str(err)`` is the whole message."""

    exit_code = 1


class InputError(BnnflowError):
    """Bad input: a file or folder the user named is missing, unreadable or of the wrong kind, or an argument is
    out of range. The subclasses say which kind of input."""

    exit_code = 2


class ConfigError(InputError):
    """A configuration file, flag or value is wrong (unknown key, wrong type, out of range)."""


class DataError(InputError):
    """A data set or an array file is missing or not in the expected layout."""


class CheckpointError(InputError):
    """A checkpoint is missing, corrupt, or not written by bnnflow."""


class RunBusyError(InputError):
    """Another bnnflow process holds the run folder (its lock); the message names that process."""


class UnsupportedGraphError(BnnflowError):
    """An ONNX graph holds something a stage cannot handle; the message names the node and its op type."""

    exit_code = 3


class VerificationError(BnnflowError):
    """Two levels of the verification ladder disagree; the message names the step and the first mismatch."""

    exit_code = 4


class ToolchainError(BnnflowError):
    """An external tool (yosys, nextpnr, verilator, FINN) is missing or failed; the message names its log."""

    exit_code = 5
