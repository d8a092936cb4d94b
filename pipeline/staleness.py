"""Whether a stage's results still follow from its inputs, judged from ``manifest.json``'s records alone.

A stage's inputs are run files and config sections, named by keys (``model.qonnx``, ``[compile]``) whose
fingerprints (sha256) the manifest keeps from when the stage last ran. A stage is up to date when its last run
succeeded, every fingerprint is unchanged and its outputs are as it wrote them; an input is usable when the stage
that wrote it is up to date in turn, all the way up the chain, and the file is still what that stage wrote.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from bnnflow.errors import ConfigError
from bnnflow.pipeline.config import Config
from bnnflow.pipeline.manifest import Manifest, file_sha256, text_sha256
from bnnflow.pipeline.rundir import RunDir

#: files whose reader checks their content itself (the checkpoint's checksum): a changed one is judged by that
#: check, whose message says what is wrong, and an intact replacement (a checkpoint copied in) is taken
SELF_CHECKED = frozenset({"train/checkpoint.safetensors"})


def input_keys(inputs: Sequence[str], config: Sequence[str]) -> list[str]:
    """The fingerprint keys of a stage: its input files, then its config sections as ``[name]``."""
    return [*inputs, *(f"[{section}]" for section in config)]


def fingerprint(keys: Sequence[str], cfg: Config, run: RunDir) -> dict[str, str | None]:
    """The sha256 of each input: a run file (None when missing), or a config section written ``[name]``."""
    sections = cfg.identity().to_dict()  # where training runs is not an input of what it makes
    return {key: text_sha256(json.dumps(sections[key[1:-1]], sort_keys=True)) if key.startswith("[")
            else file_sha256(run.root / key) for key in keys}


def first_change(recorded: dict[str, Any], cfg: Config, run: RunDir) -> str | None:
    """The first recorded input (files before config sections) whose fingerprint differs now, for a message."""
    for key, value in fingerprint(sorted(recorded, key=lambda k: k.startswith("[")), cfg, run).items():
        if recorded[key] != value:
            if key.startswith("["):
                return f"the configuration's {key} section"
            return key if value is not None else f"{key} (now missing)"
    return None


def out_of_date(name: str, keys: Sequence[str], cfg: Config, run: RunDir, manifest: Manifest) -> str | None:
    """Why stage ``name`` (reading ``keys``) must run again, or None if it is up to date."""
    record = manifest.stages.get(name)
    if record is None:
        return "it has not run yet"
    if record.get("status") != "ok":
        return f"its last run {'did not finish' if record.get('status') == 'running' else record.get('status')}"
    if sorted(record.get("inputs", {})) != sorted(keys):
        return "it read other inputs last time"
    changed = first_change(record["inputs"], cfg, run)
    if changed:
        return f"{changed} changed since it last ran"
    for rel, sha in record.get("files", {}).items():
        if file_sha256(run.root / rel) != sha:
            return f"its output {rel} is missing or was changed"
    return None


def check_inputs(name: str, inputs: Sequence[str], cfg: Config, run: RunDir, manifest: Manifest,
                 seen: set[str] | None = None) -> None:
    """Refuse to run stage ``name`` on an input file made by an out-of-date stage, or changed after it was written.

    Checked up the chain: export must be current for compile to take its model.qonnx, and so on, so a checkpoint
    changed after its export is caught by every later stage.
    """
    seen = set() if seen is None else seen
    for rel in inputs:
        owner = manifest.owner(rel)
        if owner is None or owner == name or not (run.root / rel).is_file():
            continue
        record = manifest.stages[owner]
        command = record.get("command")
        rerun = f"`{command.replace('{run}', str(run.root))}`" if command else f"its {owner} step"
        if record.get("status") == "running":
            raise ConfigError(f"{run.root / rel} is from a run of the {owner} step that did not finish; rerun {rerun}")
        written = manifest.written_sha(rel)
        if rel not in SELF_CHECKED and written is not None and file_sha256(run.root / rel) != written:
            raise ConfigError(f"{run.root / rel} was changed after bnnflow's {owner} step wrote it, so it is not "
                              f"what was verified; rerun {rerun}")
        if owner in seen:
            continue
        seen.add(owner)
        changed = first_change(record.get("inputs", {}), cfg, run)
        if changed:
            raise ConfigError(f"{run.root / rel} is out of date: {changed} changed since the {owner} step made it; "
                              f"rerun {rerun} first")
        check_inputs(owner, [k for k in record.get("inputs", {}) if not k.startswith("[")], cfg, run, manifest, seen)
