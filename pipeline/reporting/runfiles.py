"""Tolerant, cached reads of a run folder's files for the report.

The report is rewritten after every stage and must never fail one, so a missing file is ``None`` (the stage has
not run) and a damaged one raises ``Unreadable``, which the section that needs it turns into a note. Each file
is read once per report, however many sections use it.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Callable

import numpy as np


class Unreadable(Exception):
    """A run file exists but cannot be parsed (or holds the wrong kind of data)."""


class RunFiles:
    """The files of one run folder, by path relative to it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._cache: dict[tuple[str, str], Any] = {}

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def glob(self, pattern: str) -> list[str]:
        """Relative paths of the files matching ``pattern``, sorted."""
        return sorted(str(p.relative_to(self.root)) for p in self.root.glob(pattern) if p.is_file())

    def _read(self, rel: str, kind: str, parse: Callable[[Path], Any]) -> Any:
        key = (kind, rel)
        if key not in self._cache:
            path = self.root / rel
            if not path.is_file():
                self._cache[key] = None
            else:
                try:
                    self._cache[key] = parse(path)
                except Exception as err:  # any parser's error (zlib, protobuf, numpy...): the file is damaged
                    self._cache[key] = Unreadable(f"{rel} is unreadable ({type(err).__name__}: {err})")
        value = self._cache[key]
        if isinstance(value, Unreadable):
            raise value
        return value

    def json(self, rel: str) -> dict[str, Any] | None:
        """A JSON object (``Unreadable`` if it is not valid JSON or not an object)."""
        def parse(path: Path) -> dict[str, Any]:
            value = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(value, dict):
                raise ValueError(f"a JSON {type(value).__name__}, not an object")
            return value

        return self._read(rel, "json", parse)

    def jsonl(self, rel: str) -> list[dict[str, Any]] | None:
        """One JSON object per non-empty line."""
        def parse(path: Path) -> list[dict[str, Any]]:
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if not all(isinstance(row, dict) for row in rows):
                raise ValueError("a line is not a JSON object")
            return rows

        return self._read(rel, "jsonl", parse)

    def toml(self, rel: str) -> dict[str, Any] | None:
        return self._read(rel, "toml", lambda path: tomllib.loads(path.read_text(encoding="utf-8")))

    def arrays(self, rel: str) -> dict[str, np.ndarray] | None:
        """The arrays of an .npz file (all loaded: they are small), or of an .npy file under the key ``""``."""
        def parse(path: Path) -> dict[str, np.ndarray]:
            with np.load(path, allow_pickle=False) as data:
                return {name: np.asarray(data[name]) for name in data.files}

        if rel.endswith(".npy"):
            return self._read(rel, "npy", lambda path: {"": np.asarray(np.load(path, allow_pickle=False))})
        return self._read(rel, "npz", parse)

    def onnx(self, rel: str) -> Any | None:
        """An ONNX ``ModelProto`` (the graph and its metadata; onnx is imported only when a graph is there)."""
        def parse(path: Path) -> Any:
            import onnx

            return onnx.load(str(path), load_external_data=False)

        return self._read(rel, "onnx", parse)
