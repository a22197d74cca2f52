"""What the Study tab and `moduletune study` show of studies: the list with progress and ETA, one study's summary,
its record as JSON, and its runs. Plain functions of a Registry (tasks.studies), no Gradio."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from moduletune.app import eta, tables
from moduletune.app.labels import humanize_age, humanize_seconds
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
    rows = [
        {**r, "config": registry.get(r["id"])["config"]}
        for r in registry.list_runs(study_id=study.id)
        if r["status"] in ("queued", "running", "interrupted") and r["kind"] != "candidate"
    ]
    seconds = throughput.seconds(eta.remaining_examples(rows, throughput.search_cost))
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


def study_runs_table(registry, study_id: int) -> pd.DataFrame:
    """The study's runs and searches (its candidates left out), newest first, as the Runs tab shows runs."""
    runs = registry.runs_frame(study_id=study_id)
    return tables.runs_table(runs[runs["kind"] != "candidate"])
