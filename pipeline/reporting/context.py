"""What every section reads: the run's files, the stages' statuses from summary.json, and config.toml."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from bnnflow.pipeline.reporting import fmt
from bnnflow.pipeline.reporting.markup import esc, note
from bnnflow.pipeline.reporting.runfiles import RunFiles, Unreadable

if TYPE_CHECKING:
    from bnnflow.pipeline.reporting.ladder import Ladder

#: the stages in pipeline order, as summary.json names them (the CLI's edge commands record edge, bench, bundle)
STAGE_ORDER = ("train", "import", "export", "compile", "simulate", "rtl", "bitstream", "edge", "bench", "bundle",
               "finn")
#: the stages ``bnnflow run`` takes, listed as "not run yet" until they have run
RUN_STAGES = ("train", "export", "compile", "simulate", "rtl", "bitstream")


class Stages:
    """The stage entries of summary.json; a damaged summary reads as no stage run, with the reason kept."""

    def __init__(self, files: RunFiles) -> None:
        self.problem: str | None = None
        try:
            summary = files.json("summary.json") or {}
        except Unreadable as err:
            summary, self.problem = {}, str(err)
        entries = summary.get("stages")
        self.entries: dict[str, dict[str, Any]] = {
            name: entry for name, entry in (entries.items() if isinstance(entries, dict) else ())
            if isinstance(entry, dict)}
        self.version = summary.get("bnnflow_version")

    def entry(self, name: str) -> dict[str, Any]:
        return self.entries.get(name, {})

    def ran(self, name: str) -> bool:
        return name in self.entries

    def status(self, name: str) -> str:
        """ok, skipped (ran and skipped itself), failed, stale, interrupted, or "not run"."""
        entry = self.entries.get(name)
        if entry is None:
            return "not run"
        status = str(entry.get("status", "unknown"))
        return "skipped" if status == "ok" and entry.get("skipped") else status

    def listed(self, bare_model: bool) -> list[str]:
        """The stages the header lists: the ones that ran, and ``bnnflow run``'s others as not run yet (a run
        compiled from a QONNX file has no training or export to wait for)."""
        expected = [s for s in RUN_STAGES if not (bare_model and s in ("train", "export"))]
        names = [s for s in STAGE_ORDER if s in self.entries or s in expected]
        return names + [s for s in self.entries if s not in STAGE_ORDER]

    def notice(self, name: str, what: str) -> str:
        """The note a section shows for a stage that is not simply ok ("" when it is): not run yet, its error,
        why it is stale or skipped. ``what`` names what the stage would show, for the not-run-yet case."""
        status = self.status(name)
        entry = self.entries.get(name, {})
        if status == "not run":
            return note("pending", f"Not run yet: the <b>{esc(name)}</b> stage writes {esc(what)}.")
        if status == "failed":
            error = entry.get("error") or "no message was recorded (an unexpected error; rerun with --debug)"
            return note("error", f"<b>{esc(name)} failed</b> after {fmt.seconds(entry.get('seconds'))}:"
                                 f"<pre>{esc(error)}</pre>")
        if status == "interrupted":
            return note("error", f"<b>{esc(name)} was interrupted</b> after {fmt.seconds(entry.get('seconds'))}; "
                                 "what it shows here may be from an earlier run.")
        if status == "stale":
            because = entry.get("stale_because") or "an input changed since it ran"
            return note("stale", f"<b>{esc(name)} is stale</b>: {esc(because)}. Rerun it for current figures.")
        if status == "skipped":
            return note("info", f"<b>{esc(name)} skipped</b>: {esc(entry.get('skipped'))}.")
        if status != "ok":
            return note("info", f"<b>{esc(name)}</b>: status {esc(status)}.")
        return ""


class Context:
    """One report's view of a run folder, shared by the sections (each file is read once)."""

    def __init__(self, files: RunFiles) -> None:
        self.files = files
        self.stages = Stages(files)
        self.config_problem: str | None = None
        try:
            self.config = files.toml("config.toml") or {}
        except Unreadable as err:
            self.config, self.config_problem = {}, str(err)

    def setting(self, section: str, key: str, default: Any = None) -> Any:
        """A value of config.toml (the resolved configuration), or ``default``."""
        table = self.config.get(section)
        return table.get(key, default) if isinstance(table, dict) else default

    @property
    def bare_model(self) -> bool:
        """Compiled from a QONNX file made elsewhere: the inputs are in verify/inputs.npy and have no labels."""
        return self.files.exists("verify/inputs.npy")

    @cached_property
    def ladder(self) -> Ladder:
        """The verification ladder, built on first use (the accuracy, confusion and header parts share it)."""
        from bnnflow.pipeline.reporting.ladder import build_ladder

        return build_ladder(self)
