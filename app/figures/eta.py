"""How long queued work will take, and what that estimate rests on: this lab's finished runs of a model.

A run's work is its training examples times its epochs; a search's is that times what this lab's searches have
cost (their measured cost ratio, else MAX_COST's bound); a running one's is what is left of it. Throughput is
measured over whole runs, from start to finish (evaluation and start-up included), so an estimate is wall time on
one worker. With no finished run of the model there is no measurement, and the estimate says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from moduletune.app.figures.labels import humanize_seconds
from moduletune.tasks.entities import Run
from moduletune.tuning.finals import planned_finals
from moduletune.tuning.glue import get_task
from moduletune.tuning.glue_sizes import train_rows
from moduletune.tuning.search import MAX_COST

FALLBACK_ROWS = 10_000  # a task whose size is not known (never a GLUE one)


@dataclass
class Throughput:
    """Training examples per second of wall time, measured over `runs` finished runs (None: nothing measured)."""

    examples_per_second: float | None
    runs: int
    basis: str  # what it rests on, in words
    search_cost: float = MAX_COST  # one search in runs: this lab's median, else the bound

    def seconds(self, examples: float) -> float | None:
        return examples / self.examples_per_second if self.examples_per_second else None


def work(config: dict) -> float:
    """Training examples one run of this config processes (a config dict)."""
    train = train_rows(get_task(config["task"]).name)
    rows = config.get("max_train") or train or FALLBACK_ROWS
    rows = min(rows, train or rows)
    return float(rows) * float(config.get("epochs") or 1)


def measured(registry, model: str, study_id: int | None = None) -> Throughput:
    """This lab's throughput on a model: the study's own finished runs when it has some, else every finished run of
    the model; with the searches' median cost."""
    runs = registry.runs_frame(status="succeeded")
    searches = runs[runs["kind"] == "search"]
    cost = _median_cost(registry, searches["id"].tolist()[:50])
    runs = runs[(runs["kind"] == "run") & (runs["model"] == model)]
    scope = "of this study"
    if study_id is not None and (runs["study_id"] == study_id).any():
        runs = runs[runs["study_id"] == study_id]
    else:
        scope = f"of {model}"
    wall = (runs["finished_at"] - runs["started_at"]).dt.total_seconds()
    runs = runs[wall > 0]
    if runs.empty:
        basis = f"no finished run of {model} on this lab yet: no measurement to estimate from"
        return Throughput(None, 0, basis, cost)
    examples = sum(work({"task": t, **s}) for t, s in zip(runs["task"], runs["settings"]))
    rate = examples / float(wall[runs.index].sum())
    hosts = runs["worker"].dropna().map(lambda w: str(w).rsplit(":", 1)[0])
    where = f" on {hosts.mode().iloc[0]}" if len(hosts) and hosts.nunique() == 1 else ""
    n = len(runs)
    basis = f"{n} finished run{'s' if n != 1 else ''} {scope}{where}, {rate:.0f} examples/s"
    return Throughput(rate, n, basis, cost)


def _median_cost(registry, search_ids) -> float:
    """The median cost ratio of these finished searches (MAX_COST when there are none)."""
    costs = []
    for run_id in search_ids:
        cost = registry.get(int(run_id)).result.detail("cost_ratio")
        if isinstance(cost, (int, float)):
            costs.append(float(cost))
    return float(pd.Series(costs).median()) if costs else MAX_COST


def planned_examples(configs, search_cost: float) -> float:
    """Training examples a list of configs (RunConfig or dicts) will process: a search its cost, then its runs."""
    total = 0.0
    for c in configs:
        c = c if isinstance(c, dict) else c.to_dict()
        one = work(c)
        total += one * (search_cost + planned_finals(c)) if c.get("lr_search") else one
    return total


def remaining_examples(runs: list[Run], search_cost: float) -> float:
    """Training examples a study's runs (read with their config: Registry.get) still need: queued ones all of
    theirs, running ones what is left, searches also the runs they will queue."""
    total = 0.0
    for r in runs:
        if r.kind == "candidate" or r.status not in ("queued", "running", "interrupted"):
            continue
        config = r.config_data
        one = work(config)
        left = 1.0
        if r.status == "running" and r.progress.total_steps:
            left = max(0.0, 1.0 - r.progress.fraction)
        if r.kind == "search":
            total += one * (search_cost * left + planned_finals(config))
        else:
            total += one * left
    return total


def eta_text(seconds: float | None, throughput: Throughput) -> str:
    """'about 2 h 10 m (12 finished runs of this study, 130 examples/s)', or why there is no estimate."""
    if seconds is None or not math.isfinite(seconds):
        return f"no estimate yet ({throughput.basis})"
    return f"about {humanize_seconds(seconds)} on one worker ({throughput.basis})"
