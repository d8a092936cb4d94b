"""The run directory: where each stage reads its input and writes its output, and the summary of the run.

Layout (docs/architecture.md): ``config.toml``, ``train/`` (checkpoint, metrics.jsonl, curves.png), ``model.qonnx``,
``streamlined.onnx``, ``dataflow.onnx``, ``compile/`` (estimates), ``verify/`` (the arrays each check compared),
``summary.json`` and ``report.html``; later stages add theirs beside. Every file is written to a temporary
name in the same folder and renamed into place, so a killed or failed stage never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import tomli_w

from bnnflow import __version__
from bnnflow.errors import ConfigError
from bnnflow.pipeline.config import Config, load_config

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; finished files get the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class RunDir:
    """Paths of one run's files, and its summary."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def checkpoint(self) -> Path:
        return self.train_dir / "checkpoint.safetensors"

    @property
    def metrics(self) -> Path:
        return self.train_dir / "metrics.jsonl"

    @property
    def curves(self) -> Path:
        return self.train_dir / "curves.png"

    @property
    def qonnx(self) -> Path:
        return self.root / "model.qonnx"

    @property
    def streamlined(self) -> Path:
        return self.root / "streamlined.onnx"

    @property
    def dataflow(self) -> Path:
        return self.root / "dataflow.onnx"

    @property
    def compile_dir(self) -> Path:
        return self.root / "compile"

    @property
    def verify_dir(self) -> Path:
        return self.root / "verify"

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    @property
    def report_path(self) -> Path:
        return self.root / "report.html"

    def remove_stale_temporaries(self) -> None:
        """Delete what a killed process left half-written: ``atomic_path``'s ``.NAME.XXXX.tmp`` files, and the
        ``.NAME.tmp`` folders a stage builds before swapping them in whole (the RTL, the FINN directory)."""
        for stale in sorted(self.root.rglob(".*.tmp"), key=lambda p: len(p.parts)):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)

    def write_config(self, cfg: Config) -> None:
        atomic_write_text(self.config_path, tomli_w.dumps(cfg.to_dict()))

    def read_config(self) -> Config:
        if not self.config_path.is_file():
            raise ConfigError(f"{self.root} is not a bnnflow run (no config.toml); run `bnnflow train` or "
                              "`bnnflow run` first")
        return load_config(self.config_path)

    def read_summary(self) -> dict[str, Any]:
        if not self.summary_path.is_file():
            return {"bnnflow_version": __version__, "stages": {}}
        try:
            return json.loads(self.summary_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise ConfigError(f"{self.summary_path} is not valid JSON; delete it and rerun the stages") from None

    def record_stage(self, stage: str, entry: dict[str, Any]) -> None:
        """Replace one stage's entry in summary.json (status, seconds, key figures)."""
        summary = self.read_summary()
        summary["bnnflow_version"] = __version__
        summary.setdefault("stages", {})[stage] = entry
        atomic_write_text(self.summary_path, json.dumps(summary, indent=2) + "\n")
