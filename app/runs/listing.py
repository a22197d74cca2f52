"""The Runs tab's list read from the registry: its rows (filters, search box), the sweeps to filter by, the
trainable share of runs that have not finished yet, and the run the detail panel shows when nobody picked one.

Filters arrive already normalised (None means no filter); app.runs.views turns the dropdowns' 'all' into None.
"""

from __future__ import annotations

import threading

import pandas as pd

from moduletune.app.experiment.model_info import counts
from moduletune.app.figures import tables
from moduletune.tasks.entities import Run

FINISHED = ("succeeded", "failed", "cancelled")  # the registry's terminal statuses

_LOCK = threading.Lock()
_NO_COUNTS: set[tuple] = set()  # selections whose counts could not be made (an unreadable model): not retried


def runs_frame(registry, status=None, task=None, sweep=None, search: str | None = None, limit: int | None = None):
    """The runs the table lists, newest first: the registry's filters, then the search box's words (over every
    run, not only the newest `limit`), with the trainable share filled in for runs that have not reported it."""
    text = str(search or "").strip()
    found = registry.runs_frame(status=status, task=task, sweep_id=sweep, limit=None if text else limit)
    if text:
        found = found[tables.matching(found, text)]
        found = found.head(limit) if limit else found
    return with_trainable_estimates(found)


def with_trainable_estimates(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs without a trainable share yet (queued, running) get the one their config selects, counted on the
    model built on the meta device (app.experiment.model_info, cached per selection); a run whose model cannot be read
    keeps a blank."""
    if runs.empty or "trainable_pct" not in runs.columns:
        return runs
    missing = runs["trainable_pct"].isna()
    if not missing.any():
        return runs
    runs = runs.copy()
    for index in runs.index[missing]:
        row = runs.loc[index]
        settings = row.get("settings") if isinstance(row.get("settings"), dict) else {}
        runs.loc[index, "trainable_pct"] = trainable_pct(
            row["model"], row["task"], row["modules"], row["layers"], bool(settings.get("train_head", True))
        )
    return runs


def trainable_pct(model, task, modules, layers, train_head: bool = True) -> float:
    """The share of the model's parameters a selection trains (NaN when the model or selection cannot be read)."""

    key = (str(model), str(task), str(modules), str(layers), bool(train_head))
    with _LOCK:
        if key in _NO_COUNTS:
            return float("nan")
    try:
        return float(counts(model, task, modules, layers, train_head)["trainable_pct"])
    except Exception:  # a model gone from the cache, a spec this model lacks: the row shows a blank, once
        with _LOCK:
            _NO_COUNTS.add(key)
        return float("nan")


VIEWS = ("top level", "every run")  # the Runs tab's table: parents with their children folded, or every row


def grouped(runs: pd.DataFrame, expanded=()) -> list[tuple[str, object, int]]:
    """The top-level view of runs (newest first) as display rows (kind, what, depth): ("study", Study id, 0) for
    a study's runs folded into one row, ("run", run id, 0) for a run or search of its own, and, below an expanded
    parent (its key "study:N" or "run:N" in `expanded`), its runs at depth 1. A search's candidates and final runs
    fold under it, a study's runs and searches under the study (its searches' candidates never show)."""
    if runs.empty:
        return []
    study = runs["study_id"] if "study_id" in runs.columns else pd.Series(pd.NA, index=runs.index)
    parent = runs["parent_id"] if "parent_id" in runs.columns else pd.Series(pd.NA, index=runs.index)
    kinds = runs["kind"].fillna("run") if "kind" in runs.columns else pd.Series("run", index=runs.index)
    ids = runs["id"].astype(int)
    present = set(ids)
    children: dict[int, list[int]] = {}
    for run_id, up in zip(ids, parent):
        if pd.notna(up):
            children.setdefault(int(up), []).append(int(run_id))
    units: list[tuple[int, str, int]] = []  # (newest id, kind, key) for ordering
    seen_studies: dict[int, int] = {}
    for run_id, in_study, up in zip(ids, study, parent):
        if pd.notna(in_study):
            seen_studies[int(in_study)] = max(seen_studies.get(int(in_study), 0), int(run_id))
        elif pd.isna(up) or int(up) not in present:
            units.append((int(run_id), "run", int(run_id)))
    units += [(newest, "study", sid) for sid, newest in seen_studies.items()]
    units.sort(reverse=True)
    rows: list[tuple[str, object, int]] = []
    for _, kind, key in units:
        rows.append((kind, key, 0))
        if kind == "study" and f"study:{key}" in expanded:
            mine = [int(i) for i, s, k in zip(ids, study, kinds) if pd.notna(s) and int(s) == key and k != "candidate"]
            rows += [("run", i, 1) for i in mine]
        elif kind == "run" and f"run:{key}" in expanded:
            rows += [("run", i, 1) for i in children.get(key, [])]
    return rows


def sweep_choices(registry) -> list[str]:
    """The sweep ids runs were queued under, newest sweep first (the Sweep filter's choices)."""
    sweeps = (r.sweep_id for r in registry.list_runs(limit=None))
    return list(dict.fromkeys(s for s in sweeps if s))


def default_run(registry, rows: list[Run] | None = None) -> int | None:
    """What the detail panel shows when nobody picked a run: the newest running run, else the run that finished
    last, else the newest run (queued only); None in an empty registry. rows: the newest runs, if already read."""
    running = registry.list_runs(status="running", limit=1)
    if running:
        return int(running[0].id)
    rows = registry.list_runs(limit=500) if rows is None else rows
    finished = [r for r in rows if r.status in FINISHED and r.times.finished_at]
    if finished:
        return int(max(finished, key=lambda r: (r.times.finished_at, r.id)).id)
    return int(rows[0].id) if rows else None
