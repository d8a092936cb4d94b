"""Reading and writing the pipeline's ONNX files, with clear errors and atomic writes."""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.errors import InputError
from bnnflow.pipeline.rundir import atomic_path


def require_file(path: Path, missing: str) -> Path:
    """``path`` when it is a file; a folder or a missing path is one ``InputError`` (``missing``: what to do)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an ONNX file")
    if not path.is_file():
        raise InputError(f"{path} does not exist; {missing}")
    return path


def load_model(path: Path, produced_by: str) -> ModelWrapper:
    """Load an ONNX file that a bnnflow stage wrote; a missing or malformed file is one clear ``InputError`` naming
    the stage that writes it. (A QONNX file made elsewhere goes through ``qonnx_import.import_qonnx``.)"""
    path = require_file(path, f"run `bnnflow {produced_by}` first")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path} is not a valid ONNX model ({first}); rerun `bnnflow {produced_by}`") from None
    return ModelWrapper(model)


def save_model(model: ModelWrapper, path: Path) -> None:
    """Write an ONNX file atomically."""
    with atomic_path(Path(path)) as tmp:
        model.save(str(tmp))
