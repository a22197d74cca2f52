"""What the Runs tab shows of runs: the table, one run's detail (curves, summary, lr search), the pickers.

Plain functions of a Registry, so the UI stays a thin wiring layer and tests call these directly; a timer tick
only ever runs a registry query and a chart function. What loads a model lives in app.weights.models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from moduletune.app.figures import charts, tables
from moduletune.app.figures.curves import training_curves
from moduletune.app.figures.labels import format_pct, humanize_seconds, short_name
from moduletune.app.public.checks import run_id_of
from moduletune.app.public.limits import public_record, redact
from moduletune.app.runs import listing as run_list
from moduletune.tasks.entities import Outcome, Run
from moduletune.tasks.registry import RETRYABLE, RegistryError
from moduletune.tuning.text import json_safe

ALL = "all"
STATUS_CHOICES = [ALL, "queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
TABLE_LIMIT = 500  # newest runs shown in the Runs tab (filters apply first)


def filter_value(value) -> str | None:
    """A filter dropdown's value: 'all' or empty means no filter."""
    return None if value in (None, "", ALL) else str(value)


def runs_frame(registry, status=None, task=None, limit: int | None = None) -> pd.DataFrame:
    """The registry's runs frame with 'all' filters ignored."""
    return registry.runs_frame(status=filter_value(status), task=filter_value(task), limit=limit)


TOP_LEVEL, EVERY_RUN = run_list.VIEWS


def runs_table(
    registry,
    status=ALL,
    task=ALL,
    limit: int = TABLE_LIMIT,
    sweep=ALL,
    search="",
    now=None,
    view: str = TOP_LEVEL,
    expanded=(),
):
    """The Runs tab's table, newest first: status, task and sweep filters, the search box's words
    (tables.matching), and the trainable share of runs not yet finished (run_list). At the top level a study's runs
    fold into one row and a search's runs under it (expanded: the parents opened, "study:N" / "run:N")."""
    found = run_list.runs_frame(registry, filter_value(status), filter_value(task), filter_value(sweep), search, limit)
    if view == EVERY_RUN:
        return tables.runs_table(found, now)
    rows = run_list.grouped(found, expanded)
    studies = {s.id: s for s in registry.studies(ids=[key for kind, key, _ in rows if kind == "study"])}
    return tables.grouped_runs_table(found, rows, studies, expanded, now)


def listed_runs(registry, status=ALL, task=ALL, sweep=ALL, search="", limit: int = TABLE_LIMIT) -> list[Run]:
    """The runs the table's filters list (newest first; search candidates left out), with what run_choices shows."""
    found = run_list.runs_frame(registry, filter_value(status), filter_value(task), filter_value(sweep), search, limit)
    found = found[found["kind"] != "candidate"] if "kind" in found.columns else found
    return [Run(**r) for r in found[["id", "task", "modules", "layers", "seed", "status"]].to_dict("records")]


def runs_records(registry, status=ALL, task=ALL, limit: int | None = None, viewer: str | None = None) -> list[dict]:
    """Runs as JSON-ready dicts (the `runs` API endpoint): the registry's columns, times as ISO strings.

    With a viewer (a public-mode visitor) no record says who submitted it; `mine` marks the viewer's own."""
    rows = registry.list_runs(status=filter_value(status), task=filter_value(task), limit=limit)
    return [json_safe(_as_json(r, viewer)) for r in rows]


def run_record(registry, run_id, viewer: str | None = None) -> dict:
    """Everything about one run (the `run` API endpoint); with a viewer, without its submitter, paths or worker."""

    return json_safe(_as_json(registry.get(run_id_of(run_id)), viewer))


def _as_json(run: Run, viewer: str | None) -> dict:
    """A run's JSON: all of it, or what a public-mode viewer may see."""
    return run.to_dict() if viewer is None else public_record(run, viewer)


def run_label(run: Run) -> str:
    """'#12 rte LN@5 seed 0 · succeeded' (a dropdown label)."""
    return f"#{run.id} {run.task} {short_name(run.modules)}@{run.layers} seed {run.seed} · {run.status}"


def run_choices(registry, status=None, task=None, limit: int = TABLE_LIMIT, include=None, rows=None):
    """(label, id) pairs for run dropdowns, newest first; `include` (a run id) is added when older than the
    newest `limit`, so the dropdown can show any picked run. rows: the registry's rows, if already read."""

    rows = (
        registry.list_runs(status=filter_value(status), task=filter_value(task), limit=limit) if rows is None else rows
    )
    choices = [(run_label(r), int(r.id)) for r in rows]
    if include is not None and int(include) not in {i for _, i in choices}:
        try:
            choices.append((run_label(registry.get(int(include))), int(include)))
        except (RegistryError, ValueError):
            pass  # no such run: the panel says so
    return choices


@dataclass
class RunDetail:
    """Everything the Runs tab shows about one run."""

    run_id: int | None
    summary: str
    config: dict = field(default_factory=dict)
    result: dict | None = None
    curves: object = None
    status: str | None = None
    key: tuple = ()  # changes whenever something shown changes (the timer skips redraws otherwise)
    can_cancel: bool = False
    can_retry: bool = False
    artifact_dir: str | None = None


NO_RUN = "Select a run in the table (or pick one above) to see its curves, config and result."


def detail_key(registry, run_id) -> tuple:
    """What changes while a run trains (status, step, events written): cheap, for the live timer."""
    if run_id in (None, ""):
        return ()

    try:
        run = registry.get(int(run_id))
    except (RegistryError, ValueError):
        return ("missing", run_id)
    done = run.progress
    return (int(run_id), run.status, done.step, done.total_steps, run.times.finished_at, run.cancel_requested)


def run_detail(registry, run_id, viewer: str | None = None, smoothing: float | None = None) -> RunDetail:
    """A run's summary line, config, result and live curves (training loss and eval metric).

    With a viewer (a public-mode visitor) Cancel and Retry are offered on the viewer's own runs only."""

    if run_id in (None, ""):
        return RunDetail(None, NO_RUN, curves=training_curves(None))
    try:
        run = registry.get(int(run_id))
    except (RegistryError, ValueError) as err:
        return RunDetail(None, f"⚠️ {err}", curves=training_curves(None))
    rid = int(run.id)
    own = viewer is None or run.submitter == viewer
    run = run if viewer is None else redact(run)
    if run.kind == "search":  # its candidates' losses one after another mean little: draw score vs lr
        curves = charts.lr_search_curves(search_points(registry, [rid]), f"Run #{rid}: held-out score vs lr")
    else:
        events = registry.events_frame([rid])
        what = {"id": rid, "task": run.task, "modules": run.modules, "layers": run.layers}
        row = pd.DataFrame([{**what, "primary_metric_name": run.result.primary_metric_name}])
        curves = training_curves(events, [rid], row, smoothing=smoothing)
    return RunDetail(
        run_id=rid,
        summary=summary_markdown(run),
        config=run.config_data,
        result=run.result.details or None,
        curves=curves,
        status=run.status,
        key=detail_key(registry, rid),
        can_cancel=own and run.status in ("queued", "running", "interrupted") and not run.cancel_requested,
        can_retry=own and run.status in RETRYABLE,
        artifact_dir=run.artifact_dir,
    )


def summary_markdown(run: Run) -> str:
    """One paragraph about a run: what it is, where it is, its result or its error."""
    lines = [_headline(run), " · ".join(_standing(run))]
    if run.kind == "search" and run.result.detail("chosen_lr") is not None:
        lines += _search_outcome(run.result)
    elif run.result.primary_metric is not None:
        lines.append(_score(run.result))
    note = run.extra.get("lr_search")
    if run.kind == "run" and note:
        lines.append(_found_lr(note, run.parent_id))
    if run.error and run.status != "succeeded":
        lines.append(f"⚠️ {run.error}")
    if run.status == "queued":
        lines.append("Waiting for a worker. Closing this page does not affect it.")
    return "\n\n".join(lines)


def _headline(run: Run) -> str:
    """'**Run #12** · rte · LN @ layers 5 · seed 0 · lr 0.001 · <model>'; a search's lr reads 'searching'."""
    what = {"search": f"**lr search #{run.id}**", "candidate": f"**Candidate #{run.id}** of search #{run.parent_id}"}
    lr = "?" if run.lr is None else "searching" if run.kind == "search" and run.status != "succeeded" else f"{run.lr:g}"
    return (
        f"{what.get(run.kind, f'**Run #{run.id}**')} · {run.task} · {short_name(run.modules)} @ layers {run.layers}"
        f" · seed {run.seed} · lr {lr} · {run.model}"
    )


def _standing(run: Run) -> list[str]:
    """Where a run stands: its status, steps done, ETA, worker and device, resumes."""
    progress, status = run.progress, run.status
    parts = [f"**{status}**" + (" (cancel requested)" if run.cancel_requested and status == "running" else "")]
    if progress.total_steps:
        parts.append(f"step {progress.step}/{progress.total_steps} ({100 * progress.step // progress.total_steps}%)")
    if status == "running" and progress.eta_seconds is not None:
        parts.append(f"ETA {humanize_seconds(progress.eta_seconds)}")
    where = " / ".join(str(x) for x in (run.placement.worker, run.placement.device) if x)
    if where:
        parts.append(where)
    if run.attempts.resume_count:
        parts.append(f"resumed {run.attempts.resume_count}× from a checkpoint")
    return parts


def _search_outcome(result: Outcome) -> list[str]:
    """An lr search's choice: the lr, how it was scored, the grid and its cost; its verdict."""
    where = (
        "a held-out slice of the training rows"
        if result.detail("selection") == "holdout"
        else "the evaluation set (optimistic: it is also the reported set)"
    )
    grid = ", ".join(f"{g:g}" for g in result.detail("grid") or [])
    lines = [
        f"**chose lr {result.detail('chosen_lr'):g}** by {result.detail('metric')} on {where} · grid {grid} · cost "
        f"{result.detail('cost_ratio', 0):.2f}× one run (the plain grid: {result.detail('grid_cost_ratio', 0):.0f}×)"
    ]
    if result.detail("verdict"):
        lines.append(f"**verdict: {result.detail('verdict')}** — {result.detail('verdict_note') or ''}")
    return lines


def _score(result: Outcome) -> str:
    """A run's score (against chance; whether it learned), its trainable parameters and training time."""
    chance = f" (chance {result.chance_metric:.3f})" if result.chance_metric is not None else ""
    why = result.detail("learned_note") or "at chance"
    verdict = "" if result.learned is not False else f" · ✗ **did not learn** ({why})"
    seconds = f" · {result.train_seconds:.1f}s training" if result.train_seconds else ""
    return (
        f"**{result.primary_metric_name} = {result.primary_metric:.4f}**{chance}{verdict} · trainable "
        f"{result.trainable_params or 0:,} parameters ({format_pct(result.trainable_pct)} of the model){seconds}"
    )


def _found_lr(note: dict, search_id: int | None) -> str:
    """How a search's final run got its lr (its config's extra["lr_search"])."""
    verdict = f", verdict **{note['verdict']}**" if note.get("verdict") else ""
    bound = " · its score is a lower bound (the best lr lay at the grid's end)" if note.get("lower_bound") else ""
    return f"lr {note['chosen_lr']:g} chosen by search #{search_id} ({note['selection']}{verdict}){bound}"


def search_points(registry, search_ids) -> pd.DataFrame:
    """The held-out scores of lr searches at each rung (their 'search' events), for charts.lr_search_curves."""
    ids = [int(i) for i in search_ids]
    columns = ["search_id", "label", "lr", "score", "step", "metric", "chosen_lr"]
    if not ids:
        return pd.DataFrame(columns=columns)
    ev = registry.events_frame(ids)
    ev = ev[ev["split"] == "search"]
    if ev.empty:
        return pd.DataFrame(columns=columns)
    runs = {i: registry.get(i) for i in ev["run_id"].unique()}
    return pd.DataFrame(
        {
            "search_id": ev["run_id"],
            "lr": ev["name"].astype(float),
            "score": ev["value"],
            "step": ev["step"],
            "label": [f"#{i} {short_name(runs[i].modules)}@{runs[i].layers}" for i in ev["run_id"]],
            "metric": [runs[i].result.primary_metric_name for i in ev["run_id"]],
            "chosen_lr": [runs[i].lr if runs[i].status == "succeeded" else float("nan") for i in ev["run_id"]],
        },
        columns=columns,
    )


def tag_choices(registry) -> list[str]:
    """Every tag some run carries, sorted (the Compare tab's tag filter)."""
    return sorted({t for tags in registry.runs_frame()["tags"] for t in (tags or ())})
