"""What the Compare tab shows: one task's charts and tables, the selected runs' configs diffed, the results CSV.

Plain functions of a Registry, so the tab stays a thin wiring layer and tests call these directly.
"""

from __future__ import annotations

import pandas as pd

from moduletune.app.compare.figures import compare_view
from moduletune.app.figures import charts, tables
from moduletune.app.figures.labels import layer_sort_key
from moduletune.app.figures.pooling import finished_runs
from moduletune.app.figures.style import NO_RUNS
from moduletune.app.files.downloads import downloads_dir
from moduletune.app.runs.views import ALL, filter_value, search_points
from moduletune.tasks.entities import COMPARE_COLUMNS
from moduletune.tuning.glue import get_task
from moduletune.tuning.text import json_safe


def task_searches(registry, task: str, limit: int = 12) -> list[int]:
    """The task's most recent lr searches (running or succeeded) that the Compare tab draws."""
    found = registry.list_runs(task=filter_value(task), limit=None)
    return [int(r.id) for r in found if r.kind == "search" and r.status in ("running", "succeeded")][:limit]


def default_curve_runs(runs: pd.DataFrame, task: str, limit: int = 5) -> list[int]:
    """The task's most recent succeeded runs (what the curves show before the user picks)."""
    done = finished_runs(runs, task)
    return sorted(int(i) for i in done["id"])[-limit:] if "id" in done.columns else []


def compare(
    registry,
    task: str,
    layers: str | None = ALL,
    run_ids=None,
    only_differences: bool = True,
    tag=None,
    cost: str = "trainable_pct",
) -> dict:
    """All Compare-tab charts for a task (comparison.compare_view), with the selected runs' full configs diffed;
    with a tag, only the runs that carry it; the frontier against `cost` (charts.FRONTIER_COSTS)."""
    runs = registry.runs_frame(tag=filter_value(tag))
    ids = [int(i) for i in (run_ids or [])] or default_curve_runs(runs, task)
    events = registry.events_frame(ids) if ids else None
    view = compare_view(runs, events, task, ids, layers=layers or ALL, cost=cost)
    selected = runs[runs["id"].isin(ids)].drop(columns=["submitter"], errors="ignore")  # never who submitted
    if not selected.empty:  # columns in the order the runs were picked
        selected = selected.iloc[sorted(range(len(selected)), key=lambda i: ids.index(int(selected["id"].iloc[i])))]
        selected["config"] = [registry.get(int(i)).config_data for i in selected["id"]]
    view["config_diff"] = tables.config_diff(selected, only_differences=only_differences)
    view["lr_searches"] = charts.lr_search_curves(
        search_points(registry, task_searches(registry, task)), f"{task}: learning-rate searches (held-out score vs lr)"
    )
    view["run_ids"] = ids
    return view


def compare_records(registry, task: str | None = None) -> list[dict]:
    """The succeeded runs (of a task) the Compare charts plot: one JSON-ready dict per point."""
    task = filter_value(task)
    task = get_task(task).name if task else None  # an unknown name is refused with the allowed ones
    done = finished_runs(registry.runs_frame(), task)
    if done.empty:
        return []
    cols = [c for c in COMPARE_COLUMNS if c in done.columns]
    return [json_safe(r) for r in done[cols].sort_values("id").to_dict("records")]


def _safe(text: str) -> str:
    """Text usable in a file name: letters, digits, '-' and '_' kept, anything else '_', at most 40 characters."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(text))[:40]


def results_csv_file(registry, layers: str | None = ALL) -> str:
    """The paper-style results as a CSV file (mean, std, n, trainable % per module and task)."""
    path = downloads_dir() / f"moduletune-results-{_safe(layers or ALL)}.csv"
    path.write_text(tables.results_csv(registry.runs_frame(), layers or ALL))
    return str(path)


def results_note(table: pd.DataFrame, layers: str | None, choices: list[str]) -> str:
    """Why the results table is empty, and what to pick instead (or nothing when it has rows)."""
    if table is not None and len(table):
        return (
            f"Runs with layer choice **{layers or ALL}** (families that ignore layers — embeddings, head, full — "
            "count under every choice). Each cell: mean ± std over seeds (number of runs)."
        )
    others = [c for c in choices if c != (layers or ALL)]
    if others:
        return (
            f"No succeeded runs with layer choice **{layers or ALL}** yet; try "
            + ", ".join(f"**{c}**" for c in others[:6])
            + " in *Layer choice*."
        )
    return NO_RUNS + "."


def layer_filter_choices(registry) -> list[str]:
    """Layer choices that succeeded runs used: 'all' first, then single layers, then other specs."""
    runs = registry.runs_frame(status="succeeded")
    specs = set(runs["layers"].astype(str)) | {ALL}
    return sorted(specs, key=layer_sort_key)
