"""Section: accuracy at every level of the verification ladder, and each level's disagreements with the one before."""

from __future__ import annotations

from bnnflow.pipeline.reporting import fmt
from bnnflow.pipeline.reporting.context import Context
from bnnflow.pipeline.reporting.ladder import Ladder, Level
from bnnflow.pipeline.reporting.markup import badge, esc, note

ID = "accuracy"
TITLE = "Accuracy through the verification ladder"


def _accuracy_cell(level: Level, unlabelled: str) -> str:
    if level.accuracy is not None:
        count = f"<small>{fmt.integer(level.correct)} / {fmt.integer(level.samples)}</small>" \
            if level.correct is not None else ""
        return f"<b>{fmt.percent(level.accuracy)}</b> {count}"
    if level.has_figures and unlabelled:
        return "<span class='muted'>no labels</span>"
    return fmt.NONE


def _mismatch_cell(level: Level) -> str:
    if not fmt.is_number(level.mismatches):
        return fmt.NONE
    css = "good" if level.mismatches == 0 else "bad" if level.exact else "muted"
    return f"<span class='{css}'>{fmt.integer(level.mismatches)}</span>"


def _status_cell(ctx: Context, level: Level) -> str:
    status = ctx.stages.status(level.stage)
    if status == "not run" and not level.has_figures:
        return badge("not-run", "not run yet")
    parts = [badge(status, f"{level.stage} {status}")]
    if level.problem:
        parts.append(f"<div class='bad'>{esc(level.problem)}</div>")
    parts += [f"<div class='muted'>{esc(n)}</div>" for n in level.notes]
    return "".join(parts)


def _row(ctx: Context, level: Level, unlabelled: str) -> str:
    before = f"<small>vs {esc(level.before)}</small>" if level.before and fmt.is_number(level.mismatches) else ""
    cells = [
        f"<th scope='row'>{esc(level.name)}<small>{esc(level.engine)}</small></th>",
        f"<td class='num'>{fmt.integer(level.samples)}</td>",
        f"<td class='num acc'>{_accuracy_cell(level, unlabelled)}</td>",
        f"<td class='num mism'>{_mismatch_cell(level)} {before}</td>",
        f"<td>{_status_cell(ctx, level)}</td>",
    ]
    return f"<tr data-level='{esc(level.name)}'>{''.join(cells)}</tr>"


def _headline(ladder: Ladder) -> str:
    """One sentence: the accuracy on the whole verified split at the deepest level, and whether every exact level
    agreed with the one before."""
    deepest = ladder.deepest_labelled()
    compared = [lv for lv in ladder.levels if fmt.is_number(lv.mismatches) and lv.exact]
    parts = []
    if deepest is not None:
        parts.append(f"Test accuracy <b>{fmt.percent(deepest.accuracy)}</b> on {fmt.integer(deepest.samples)} samples "
                     f"at the deepest level that kept its predictions ({esc(deepest.name)}).")
    if compared:
        differing = sum(lv.mismatches for lv in compared)
        if differing == 0:
            parts.append(f"All {len(compared)} checks between levels, {esc(compared[0].before or compared[0].name)} "
                         f"to {esc(compared[-1].name)}, are exact: <span class='good'>0 outputs differ</span>.")
        else:
            parts.append(f"<span class='bad'>{fmt.integer(differing)} outputs differ</span> from the level before "
                         "across the ladder: see the rows in red.")
    return f"<p class='lead'>{' '.join(parts)}</p>" if parts else ""


def render(ctx: Context) -> str:
    ladder = ctx.ladder
    stages = list(dict.fromkeys(level.stage for level in ladder.levels))
    if not any(level.has_figures or ctx.stages.ran(level.stage) for level in ladder.levels):
        return ctx.stages.notice("export", "the first level's outputs (verify/export.npz)")
    rows = "".join(_row(ctx, level, ladder.unlabelled) for level in ladder.levels)
    head = ("<thead><tr><th>level</th><th class='num'>samples</th><th class='num'>test accuracy</th>"
            "<th class='num'>outputs differing from the level before</th><th>stage</th></tr></thead>")
    notices = "".join(ctx.stages.notice(s, "") for s in stages if ctx.stages.status(s) not in ("ok", "not run"))
    unlabelled = note("info", f"No accuracy: {esc(ladder.unlabelled)}.") if ladder.unlabelled else ""
    return f"{_headline(ladder)}<table class='ladder'>{head}<tbody>{rows}</tbody></table>{unlabelled}{notices}"
