"""The Compare tab's figures and tables for one task in one call, so charts and tables stay apart."""

from __future__ import annotations

from collections.abc import Sequence

from moduletune.app.figures.charts import efficiency_frontier, layer_module_heatmap, score_by_family
from moduletune.app.figures.curves import training_curves
from moduletune.app.figures.pooling import finished_runs, frame
from moduletune.app.figures.tables import config_diff, results_table


def compare_view(
    runs,
    events,
    task: str,
    run_ids: Sequence[int] | None = None,
    layers: str | None = "all",
    model: str | None = None,
    max_curves: int = 5,
    cost: str = "trainable_pct",
) -> dict:
    """Everything the Compare tab shows for one task in one call; run_ids default to the latest succeeded runs."""
    # Without run_ids: the task's `max_curves` most recent succeeded runs, preferring those with events.
    runs, events = frame(runs), frame(events)
    if run_ids is None:
        done = finished_runs(runs, task, model)
        ids = sorted(done["id"].tolist()) if "id" in done.columns else []
        logged = set(events["run_id"].unique()) if "run_id" in events.columns else set()
        run_ids = ([i for i in ids if i in logged] or ids)[-max_curves:]
    run_ids = list(run_ids)
    selected = runs[runs["id"].isin(run_ids)] if "id" in runs.columns else runs.iloc[0:0]
    return {
        "score_by_family": score_by_family(runs, task, model),
        "efficiency_frontier": efficiency_frontier(runs, task, model, cost),
        "layer_module_heatmap": layer_module_heatmap(runs, task, model),
        "training_curves": training_curves(events, run_ids, selected),
        "results_table": results_table(runs, layers, model),
        "config_diff": config_diff(selected),
    }
