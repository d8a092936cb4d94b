"""What bnnflow wrote into a run folder, and what each stage made it from: ``RUN/manifest.json``.

Per stage, the manifest keeps its status, the fingerprints of its inputs when it last ran (the sha256 of each
input file, and of each configuration section it reads) and every file it wrote with its sha256. That gives:

- ownership: ``--force`` removes exactly the files listed here and refuses a folder holding any other file, and a
  stage refuses to replace a folder that holds a file bnnflow did not write;
- staleness: a stage whose input fingerprints differ from the current files is out of date, so ``bnnflow run``
  reruns it (and skips the stages that are up to date), and a command refuses an input made by a stale stage;
- integrity: an input that changed after the stage that wrote it finished is refused, not silently used.

A stage is claimed before it runs (status ``running``, its declared output paths), so a process killed half way
still leaves a manifest that owns what it wrote. The file is plain JSON, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Iterator

from bnnflow.errors import ConfigError
from bnnflow.pipeline.rundir import atomic_write_text
from bnnflow.pipeline.runlock import LOCK_NAME

MANIFEST_NAME = "manifest.json"
#: files the runner itself keeps in every run folder
RUNNER_FILES = frozenset({"config.toml", "summary.json", "report.html", MANIFEST_NAME, LOCK_NAME})

_hash_cache: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, so unchanged files hash once


def file_sha256(path: Path) -> str | None:
    """sha256 of a file's bytes (None when it does not exist), cached while its size and mtime stay the same."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _hash_cache:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _hash_cache[key] = digest.hexdigest()
    return _hash_cache[key]


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _is_temporary(rel: str) -> bool:
    """A half-written ``.NAME.XXXX.tmp`` file or a file inside a ``.NAME.tmp`` folder, which the next run removes
    (``RunDir.remove_stale_temporaries``)."""
    return any(part.startswith(".") and part.endswith(".tmp") for part in rel.split("/"))


def under(rel: str, prefixes: list[str]) -> bool:
    return any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in prefixes)


class Manifest:
    """The manifest of the run folder ``root``; ``save()`` writes it back."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / MANIFEST_NAME
        self.stages: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                self.stages = dict(json.loads(self.path.read_text(encoding="utf-8"))["stages"])
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"{self.path} is damaged, so bnnflow cannot tell which files in {self.root} it wrote; "
                                  "move your own files out and delete the folder, or choose another --out") from None

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps({"stages": self.stages}, indent=1, sort_keys=True) + "\n")

    def files(self) -> Iterator[str]:
        """Every file in the folder (relative, '/'-separated), temporaries excluded."""
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root).as_posix()
            if not path.is_dir() and not _is_temporary(rel):
                yield rel

    def owner(self, rel: str) -> str | None:
        """The stage that wrote ``rel``, or None; a stage that never finished owns all of its output paths."""
        for name, record in self.stages.items():
            if rel in record.get("files", {}):
                return name
        for name, record in self.stages.items():
            if record.get("status") == "running" and under(rel, record.get("outputs", [])):
                return name
        return None

    def foreign(self, paths: list[str] | None = None) -> list[str]:
        """Files bnnflow did not write, in the whole folder or only under ``paths``."""
        found = []
        for rel in self.files():
            if paths is not None and not under(rel, paths):
                continue
            if rel not in RUNNER_FILES and self.owner(rel) is None:
                found.append(rel)
        return found

    def claim(self, stage: str, outputs: list[str], command: str = "") -> None:
        """Mark ``stage`` as running with these output paths, before it writes anything; ``command`` reruns it."""
        record = self.stages.setdefault(stage, {})
        record.update(status="running", outputs=list(outputs), command=command)
        self.save()

    def record(self, stage: str, status: str, inputs: dict[str, str | None], outputs: list[str]) -> None:
        """After ``stage`` ran: its status, the input fingerprints it ran on, and the files under its outputs.

        Files an earlier run of the stage wrote outside this run's outputs (another board's bitstream folder) stay
        listed while they exist.
        """
        old = self.stages.get(stage, {}).get("files", {})
        files = {rel: sha for rel, sha in old.items() if not under(rel, outputs) and (self.root / rel).is_file()}
        for rel in self.files():
            if under(rel, outputs) and rel not in RUNNER_FILES:
                files[rel] = file_sha256(self.root / rel)
        command = self.stages.get(stage, {}).get("command", "")
        self.stages[stage] = {"status": status, "inputs": inputs, "outputs": list(outputs), "files": files,
                              "command": command, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.save()

    def written_sha(self, rel: str) -> str | None:
        """The sha256 ``rel`` had when the stage that wrote it finished (None if no finished stage wrote it)."""
        for record in self.stages.values():
            if rel in record.get("files", {}):
                return record["files"][rel]
        return None

    def remove_owned(self) -> None:
        """Delete every file bnnflow wrote (the manifest last) and the folders that leaves empty."""
        for rel in self.files():
            if rel != MANIFEST_NAME and rel != LOCK_NAME and (rel in RUNNER_FILES or self.owner(rel) is not None):
                (self.root / rel).unlink()
        for folder in sorted((p for p in self.root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(folder.iterdir()):
                folder.rmdir()
        self.path.unlink(missing_ok=True)
        self.stages = {}
