"""How a run is a row: the columns people read, the values a new run starts with, a result's flat columns.

Shared by the registry's reads (tasks.registry) and its workers' writes (tasks.claims), so that a
column is named and typed in one place.
"""

from __future__ import annotations

import getpass
import json
import math
import os
import time

from moduletune.tasks.database import QUEUED, runs
from moduletune.tasks.entities import NOTE_COLUMNS, RUN_COLUMNS, TIME_COLUMNS, Run
from moduletune.tuning.modules import short_label
from moduletune.tuning.replicates import comparison_key, replicate_key, replicate_settings
from moduletune.tuning.text import json_safe

FLOAT_COLUMNS = (
    "lr",
    "primary_metric",
    "chance_metric",
    "trainable_pct",
    "module_pct",
    "progress",
    "eta_seconds",
    "train_seconds",
    "examples_per_second",
    "peak_memory_mb",
)
INT_COLUMNS = ("id", "seed", "step", "resume_count", "claims", "completions")  # never null: int64
NULLABLE_INT_COLUMNS = (
    "module_params",
    "head_params",
    "trainable_params",
    "total_params",
    "total_steps",
    "retry_of",
    "resumed_from_step",
    "parent_id",
    "study_id",
)  # null until known: pandas Int64
# runs_frame() adds how a final run's lr was found (its search's verdict: extra["lr_search"] of its config) and what
# each run's config says about replicates (tuning.replicates), then the labels.
FRAME_COLUMNS = [c for c in RUN_COLUMNS if c not in NOTE_COLUMNS] + [
    "lr_search",
    "settings",
    "settings_key",
    "comparison_key",
]
FRAME_COLUMNS += NOTE_COLUMNS
EVENT_COLUMNS = ["run_id", "step", "epoch", "split", "name", "value"]
FLAT = [c for c in runs.c if c.name not in ("config", "result")]


# ---------------------------------------------------------------------------------------------- new rows


def row_values(
    config,
    submitter,
    sweep_id,
    retry_of,
    kind: str | None = None,
    parent_id: int | None = None,
    study_id: int | None = None,
) -> dict:
    """The columns of a newly queued run; a search config makes a search, and the lr used is made explicit."""

    if config.lr_search:
        kind = "search"  # its candidates and, once it chose, its runs are its children
    elif config.lr is None:
        # The family default made explicit: the config (and so every diff and tooltip) shows the lr used.
        config = config.replace(lr=config.learning_rate)
    return dict(
        status=QUEUED,
        task=config.task,
        model=config.model,
        modules="+".join(config.modules),
        family=short_label(config.modules),
        layers=config.layers,
        seed=config.seed,
        lr=config.learning_rate,
        config=config.to_json(),
        submitter=submitter or default_submitter(),
        sweep_id=sweep_id,
        retry_of=retry_of,
        kind=kind or "run",
        parent_id=parent_id,
        study_id=study_id,
        queued_at=time.time(),
        step=0,
        cancel_requested=False,
        claims=0,
        completions=0,
        resume_count=0,
    )


SUBMITTER_LIMIT = runs.c.submitter.type.length  # the column's: PostgreSQL refuses more, SQLite would keep it


def check_submitter(submitter):
    """Who submits, as given (None: the OS user), checked where runs enter: text of at most SUBMITTER_LIMIT."""
    if submitter is None:
        return None
    if not isinstance(submitter, str) or len(submitter) > SUBMITTER_LIMIT or "\x00" in submitter:
        size = f"{len(submitter):,} characters" if isinstance(submitter, str) else type(submitter).__name__
        raise ValueError(f"the submitter is a name of at most {SUBMITTER_LIMIT} characters (no NUL), got {size}")
    return submitter


def default_submitter() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (some containers)
        return os.environ.get("USER") or "unknown"


def runs_frame_of(found, tags: dict | None = None):
    """A DataFrame of registry rows (with their config; tags: each run id's tags): the FRAME_COLUMNS typed, times
    as UTC datetimes, with what each run's config says about replicates (pooled over seeds) and comparisons (the
    same full-FT reference)."""
    import pandas as pd

    tags = tags or {}
    rows = [Run.from_row(r, tags=tags.get(r["id"], ())).to_dict(iso=False) for r in found]
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    configs = [json.loads(r["config"]) for r in found]
    frame["lr_search"] = pd.Series(
        [(c.get("extra") or {}).get("lr_search") for c in configs], index=frame.index, dtype=object
    )
    # What makes runs replicates (pooled over seeds) and comparable (the same full-FT reference).
    frame["settings"] = pd.Series(
        [replicate_settings(c, r["lr"]) for c, r in zip(configs, found)], index=frame.index, dtype=object
    )
    frame["settings_key"] = [replicate_key(c, r["lr"]) for c, r in zip(configs, found)]
    frame["comparison_key"] = [comparison_key(c, r["lr"]) for c, r in zip(configs, found)]
    for col in FLOAT_COLUMNS:
        frame[col] = frame[col].astype("float64")
    for col in INT_COLUMNS:
        frame[col] = frame[col].astype("int64")
    for col in NULLABLE_INT_COLUMNS:
        frame[col] = frame[col].astype("Int64")
    for col in ("resumed", "cancel_requested"):
        frame[col] = frame[col].astype(bool)
    frame["learned"] = frame["learned"].astype("boolean")
    frame["kind"] = frame["kind"].fillna("run").astype(object)
    for col in TIME_COLUMNS:
        frame[col] = pd.to_datetime(frame[col].astype("float64"), unit="s", utc=True)
    return frame[FRAME_COLUMNS]


def result_columns(result: dict) -> dict:
    """The flat columns of a RunResult dict (non-finite metrics become NULL) plus the whole JSON."""
    out = {
        k: result.get(k)
        for k in (
            "primary_metric_name",
            "module_params",
            "head_params",
            "trainable_params",
            "encoder_params",
            "total_params",
            "artifact_dir",
            "resumed_from_step",
        )
    }
    for k in (
        "primary_metric",
        "chance_metric",
        "module_pct",
        "trainable_pct",
        "train_seconds",
        "examples_per_second",
        "peak_memory_mb",
    ):
        out[k] = finite(result.get(k))
    if result.get("learned") is not None:
        out["learned"] = bool(result["learned"])
    if result.get("steps") is not None:
        out["step"] = int(result["steps"])
    if result.get("device"):
        out["device"] = result["device"]
    out["result"] = json.dumps(json_safe(result))
    return out


def finite(value):
    """A float, or None for a missing or non-finite one (databases and JSON do not take NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
