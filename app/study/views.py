"""What the Study tab and `moduletune study` show of studies: the list with progress and ETA, one study's summary,
its record as JSON, its runs, and the report (one study's or every finished run's) with its files. Plain functions
of a Registry (tasks.studies, app.study.report), no Gradio."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pandas as pd

from moduletune.app.figures import eta, tables
from moduletune.app.figures.labels import humanize_age, humanize_seconds
from moduletune.app.figures.style import NO_RUNS, empty_figure
from moduletune.app.files.downloads import downloads_dir
from moduletune.app.study import report as st
from moduletune.tasks.studies import Study
from moduletune.tuning.text import json_safe

STUDY_COLUMNS = ["id", "name", "status", "progress", "ETA", "failures", "created"]
BAR_WIDTH = 12


def progress_bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """'▰▰▰▱▱▱▱▱▱▱▱▱ 12/50' (a text bar a table cell can hold)."""
    filled = round(width * done / total) if total else 0
    return "▰" * filled + "▱" * (width - filled) + f" {done}/{total}"


def study_eta(registry, study: Study) -> tuple[float | None, str]:
    """(seconds left on one worker or None, the sentence that says it and what it rests on)."""
    if not study.progress.active:
        return 0.0, "nothing left to run"
    if study.state == "paused":
        return None, "paused: no worker takes its runs until it is resumed"
    throughput = eta.measured(registry, study.spec.get("model", ""), study.id)
    left = [
        registry.get(r.id)
        for r in registry.list_runs(study_id=study.id)
        if r.status in ("queued", "running", "interrupted") and r.kind != "candidate"
    ]
    seconds = throughput.seconds(eta.remaining_examples(left, throughput.search_cost))
    return seconds, eta.eta_text(seconds, throughput)


def failures(study: Study) -> str:
    """'2 failed, 1 cancelled' ('' for none), and how many finished runs did not learn."""
    p = study.progress
    parts = [f"{n} {what}" for n, what in ((p.failed, "failed"), (p.cancelled, "cancelled")) if n]
    if p.learned_not:
        parts.append(f"{p.learned_not} did not learn")
    return ", ".join(parts)


def created(study: Study, now: float | None = None) -> str:
    now = now if now is not None else datetime.now(timezone.utc).timestamp()
    return humanize_age(now - study.created_at)


def studies_table(registry, owner: str | None = None, limit: int = 200) -> pd.DataFrame:
    """The Study tab's list, newest first: name, status, a progress bar, ETA, failures and age."""
    found = registry.studies(owner=owner, limit=limit)
    rows = []
    for s in found:
        seconds, _ = study_eta(registry, s) if s.progress.active and s.state == "active" else (None, "")
        rows.append(
            [
                s.id,
                s.name,
                s.status,
                progress_bar(s.progress.done, s.progress.total),
                "" if not seconds else humanize_seconds(seconds),
                failures(s),
                created(s),
            ]
        )
    return pd.DataFrame(rows, columns=STUDY_COLUMNS)


def study_choices(registry, owner: str | None = None, limit: int = 200) -> list[tuple[str, int]]:
    """(label, id) pairs for the study picker, newest first."""
    return [(f"#{s.id} {s.name} · {s.status}", s.id) for s in registry.studies(owner=owner, limit=limit)]


def study_record(registry, study_id: int) -> dict:
    """A study as JSON: what was asked, its state and status, progress counts and ETA (`study show --json`)."""
    study = registry.study(study_id)
    seconds, text = study_eta(registry, study)
    out = study.to_dict()
    out["eta_seconds"], out["eta"] = seconds, text
    return json_safe(out)


def study_summary(registry, study: Study) -> str:
    """One study in a few lines of Markdown: name, status, progress, ETA with its basis, what was asked."""
    p = study.progress
    _, eta_line = study_eta(registry, study)
    spec = study.spec
    asked = " · ".join(
        part
        for part in (
            ", ".join(spec.get("tasks", [])),
            f"{len(spec.get('modules', []))} module set(s)",
            f"{len(spec.get('layers', []))} layer choice(s)",
            f"seeds {', '.join(str(s) for s in spec.get('seeds', []))}",
            f"{spec['max_train']:,} training examples" if spec.get("max_train") else "full training sets",
            f"{spec.get('epochs', 1)} epoch(s)",
            f"lr search per {spec.get('scope', 'setting')}" if spec.get("lr_search") else "",
        )
        if part
    )
    lines = [
        f"**Study #{study.id}: {study.name}** · **{study.status}**"
        + (" · raised (its runs go first)" if study.priority > 10 else ""),
        f"`{progress_bar(p.done, p.total, 24)}` runs done"
        + (f" · lr searches {p.searches_done}/{p.searches}" if p.searches else "")
        + f" · {p.queued} queued · {p.running} running"
        + (f" · {failures(study)}" if failures(study) else ""),
        f"ETA: {eta_line}",
        f"Asked: {asked}",
    ]
    return "\n\n".join(lines)


def live_table(registry, study_id: int) -> pd.DataFrame:
    """The study's table as it stands (each layer choice its own row; cells still to come say pending): cheap
    enough for a live refresh, unlike the report's figures."""
    runs = registry.runs_frame(study_id=study_id)
    return st.study_table(runs, None, None, None, st.planned_cells(registry, study_id))


def study_runs_table(registry, study_id: int) -> pd.DataFrame:
    """The study's runs and searches (its candidates left out), newest first, as the Runs tab shows runs."""
    runs = registry.runs_frame(study_id=study_id)
    return tables.runs_table(runs[runs["kind"] != "candidate"])


def report_files(registry, tasks=None, study_id: int | None = None):
    """The Study tab's report (app.study.report: one study's, with its pending cells, or every finished run's, each
    layer choice its own row) and its four exports, written under names no other request shares."""
    if study_id is not None:
        report = st.report_from_registry(registry, tasks=tasks, study_id=study_id, layers=None)
    else:
        report = st.report_from_registry(registry, tasks=tasks)
    folder = downloads_dir() / f"study-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    files = [str(st.write_report(report, fmt, folder / f"moduletune-study.{fmt}")) for fmt in st.FORMATS]
    return report, files


def report_figures(report, task: str) -> dict:
    """The report's three figures for one task (explanatory empty figures for a task without runs)."""
    figures = report.figures.get(task)
    if figures:
        return figures
    empty = empty_figure(f"{task}: study", f"No finished runs of {task} in this report")
    return {"layerwise": empty, "efficiency": empty, "magnitude": empty}


def report_summary(report) -> str:
    """What the report rests on and what it finds, as Markdown."""
    if not report.n_runs:
        return NO_RUNS + "."
    lines = [
        f"**{report.n_runs} finished runs** · tasks {', '.join(report.tasks)} · generated {report.generated_at}",
        st.POOLING_NOTE,
        *st.summary_lines(report)[1:],
        *(f"- {line}" for line in st.findings(report)),
    ]
    return "\n\n".join(lines)
