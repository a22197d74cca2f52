"""The display tables (runs, results, config diff) and the results CSV, apart from the figures in app.figures.charts.

Registry DataFrames in, pandas tables out, with no Plotly: what the Runs and Compare tabs list and the
Download button serves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

import pandas as pd

from moduletune.app.figures import pooling
from moduletune.app.figures.labels import (
    cell,
    family_sort_key,
    format_pct,
    humanize_age,
    humanize_seconds,
    layer_sort_key,
    short_name,
    task_sort_key,
)
from moduletune.app.figures.pooling import frame, str_col

# ---------------------------------------------------------------- runs table

RUNS_TABLE_COLUMNS = [
    "id",
    "status",
    "task",
    "modules",
    "layers",
    "seed",
    "lr",
    "metric",
    "trainable %",
    "progress",
    "ETA",
    "worker/device",
    "sweep",
    "age",
    "duration",
]


def _utc_now(now) -> pd.Timestamp:
    """`now` as a UTC timestamp (naive values are taken as UTC, like the registry's)."""
    ts = pd.Timestamp(datetime.now().astimezone() if now is None else now)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _progress(step, total) -> str:
    """'120/500 (24%)' (rounded down, so 100% means done), or '' when the run has no step count yet."""
    if total is None or pd.isna(total) or int(total) <= 0:
        return ""
    step = 0 if step is None or pd.isna(step) else int(step)
    return f"{step}/{int(total)} ({100 * step // int(total)}%)"


def _run_lr(lr, kind: str, status: str) -> str:
    """The lr a run trains at; a search shows 'searching' while it runs, then 'chose 3e-3' (or that it did not)."""
    if kind == "search":
        if status == "succeeded" and lr is not None and not pd.isna(lr):
            return f"chose {float(lr):g}"
        return "searching" if status in ("queued", "running", "interrupted") else f"none ({status})"
    return "" if lr is None or pd.isna(lr) else f"{float(lr):g}"


def _times(r: pd.DataFrame, name: str) -> pd.Series:
    """A time column as UTC timestamps (NaT where missing or absent)."""
    if name not in r.columns:
        return pd.Series(pd.NaT, index=r.index, dtype="datetime64[ns, UTC]")
    return pd.to_datetime(r[name], utc=True, errors="coerce")


def _durations(r: pd.DataFrame, status: list[str], now) -> list[str]:
    """How long each run has run: since it started while running, from start to finish once finished."""
    started, finished = _times(r, "started_at"), _times(r, "finished_at")
    running = pd.Series([s == "running" for s in status], index=r.index)
    end = finished.where(~running, _utc_now(now))
    return [humanize_seconds(s) for s in (end - started).dt.total_seconds()]


def _membership(sweep, parent, study=None) -> str:
    """The study (else the sweep) a run was queued in and the lr search it belongs to: 'study #2 · search #3'."""
    parts = [str(sweep)] if sweep is not None and not pd.isna(sweep) and str(sweep) else []
    if study is not None and not pd.isna(study):
        parts = [f"study #{int(study)}"]
    if parent is not None and not pd.isna(parent):
        parts.append(f"search #{int(parent)}")
    return " · ".join(parts)


def runs_table(runs, now=None) -> pd.DataFrame:
    """The Runs tab's table, newest first: short module names, formatted metric, progress, ETA, the sweep or
    search a run belongs to, age and duration."""
    runs = frame(runs)
    if runs.empty:
        return pd.DataFrame(columns=RUNS_TABLE_COLUMNS)
    r = runs.sort_values("id", ascending=False) if "id" in runs.columns else runs
    n = len(r)
    col = lambda name: r[name].tolist() if name in r.columns else [None] * n  # noqa: E731
    status = str_col(r, "status", "?").tolist()
    kinds = str_col(r, "kind", "run").tolist()
    at_chance = [x is not None and not pd.isna(x) and not bool(x) for x in col("learned")]
    # A score beside its verdict: a run at chance reads as a failed run, a search's score as a held-out one.
    metrics = [
        ("" if k == "run" else "held-out ") + f"{name} {float(v):.3f}" + (" ✗ at chance" if low else "")
        if v is not None and not pd.isna(v)
        else ""
        for name, v, k, low in zip(str_col(r, "primary_metric_name", "score"), col("primary_metric"), kinds, at_chance)
    ]
    lrs = [_run_lr(x, k, s) for x, k, s in zip(col("lr"), kinds, status)]
    eta = [humanize_seconds(e) if s == "running" else "" for s, e in zip(status, col("eta_seconds"))]
    where = [
        " / ".join(str(x) for x in pair if x is not None and not pd.isna(x) and str(x))
        for pair in zip(col("worker"), col("device"))
    ]
    ages = [humanize_age(s) for s in (_utc_now(now) - _times(r, "queued_at")).dt.total_seconds()]
    return pd.DataFrame(
        {
            "id": col("id"),
            "status": status,
            "task": col("task"),
            "modules": [
                short_name(m)
                + ("" if k == "run" else f" · {k}")
                + (f" (of #{int(p)})" if p is not None and not pd.isna(p) else "")
                for m, k, p in zip(r["modules"] if "modules" in r.columns else col("family"), kinds, col("parent_id"))
            ],
            "layers": str_col(r, "layers", "all").tolist(),
            "seed": col("seed"),
            "lr": lrs,
            "metric": metrics,
            "trainable %": [format_pct(v) for v in col("trainable_pct")],
            "progress": [_progress(s, t) for s, t in zip(col("step"), col("total_steps"))],
            "ETA": eta,
            "worker/device": where,
            "sweep": [_membership(s, p, st) for s, p, st in zip(col("sweep_id"), col("parent_id"), col("study_id"))],
            "age": ages,
            "duration": _durations(r, status, now),
        },
        columns=RUNS_TABLE_COLUMNS,
    )


def grouped_runs_table(runs, rows, studies: dict, expanded=(), now=None) -> pd.DataFrame:
    """The Runs tab's top-level table: run_list.grouped's rows in order, a study as one row ('S12': its name,
    status, runs done of planned, a progress bar, its age) and a parent that folds runs marked ▸ (▾ when open),
    the runs under an open parent indented (↳)."""
    runs = frame(runs)
    if not rows:
        return pd.DataFrame(columns=RUNS_TABLE_COLUMNS)
    shown = runs_table(runs, now).set_index("id", drop=False)
    parents = set(pd.to_numeric(runs.get("parent_id", pd.Series(dtype=float)), errors="coerce").dropna().astype(int))
    out = []
    for kind, key, depth in rows:
        if kind == "study":
            study = studies.get(key)
            if study is not None:
                out.append(_study_row(study, f"study:{key}" in expanded, now))
            continue
        row = shown.loc[key].to_dict()
        if depth:
            row["modules"] = "↳ " + row["modules"]
        elif key in parents:
            row["modules"] = ("▾ " if f"run:{key}" in expanded else "▸ ") + row["modules"]
        out.append(row)
    return pd.DataFrame(out, columns=RUNS_TABLE_COLUMNS)


def _study_row(study, is_open: bool, now=None) -> dict:
    """One study as a row of the Runs table (its id written S<n>, so a click knows it is no run)."""
    p, spec = study.progress, study.spec
    filled = round(10 * p.done / p.total) if p.total else 0
    age = (_utc_now(now) - pd.Timestamp(study.created_at, unit="s", tz="UTC")).total_seconds()
    return {
        "id": f"S{study.id}",
        "status": study.status,
        "task": ", ".join(spec.get("tasks", [])),
        "modules": ("▾ " if is_open else "▸ ") + f"study: {study.name}",
        "layers": f"{len(spec.get('layers', []))} choices",
        "seed": ", ".join(str(x) for x in spec.get("seeds", [])),
        "lr": "searched" if spec.get("lr_search") else "",
        "metric": f"{p.done}/{p.total} runs done",
        "trainable %": "",
        "progress": "▰" * filled + "▱" * (10 - filled),
        "ETA": "",
        "worker/device": "",
        "sweep": f"study #{study.id}",
        "age": humanize_age(age),
        "duration": "",
    }


def matching(runs, text: str | None) -> pd.Series:
    """Which runs a search box's text finds: every word must match the id ('12' or '#12'), the search a run
    belongs to (#12), part of its task, family, modules, layers, status, sweep, tags or note (case-insensitive),
    or, written tag:NAME, one of its tags exactly."""
    runs = frame(runs)
    words = str(text or "").lower().split()
    found = pd.Series(True, index=runs.index)
    if not words or runs.empty:
        return found
    tags = runs["tags"] if "tags" in runs.columns else pd.Series([()] * len(runs), index=runs.index)
    tags = tags.map(lambda t: {str(x).lower() for x in t} if isinstance(t, (list, tuple, set)) else set())
    columns = ("task", "family", "modules", "layers", "status", "sweep_id", "notes")
    fields = [str_col(runs, c, "").str.lower() for c in columns] + [tags.map(" ".join)]
    ids = [pd.to_numeric(runs[c], errors="coerce") if c in runs.columns else None for c in ("id", "parent_id")]
    for word in words:
        if word.startswith("tag:"):
            found &= tags.map(lambda have, want=word[4:]: want in have)
            continue
        number = word.lstrip("#")
        hit = pd.Series(False, index=runs.index)
        if number.isdigit():
            for values in ids:
                if values is not None:
                    hit |= values == int(number)
        if not word.startswith("#"):
            for values in fields:
                hit |= values.str.contains(word, regex=False)
        found &= hit
    return found


# ---------------------------------------------------------------- config diff


def _flatten(d: Mapping, prefix: str = "") -> dict:
    """Nested config dicts as dotted keys: {'extra': {'note': 1}} -> {'extra.note': 1}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(runs, only_differences: bool = True, run_ids: Sequence[int] | None = None) -> pd.DataFrame:
    """Settings side by side: a 'setting' column, then one '#id' column per run; only differing rows by default."""
    runs = frame(runs)
    if not runs.empty and run_ids is not None and "id" in runs.columns:
        runs = runs[runs["id"].isin(list(run_ids))]
    if runs.empty:
        return pd.DataFrame(columns=["setting"])
    ids = runs["id"].tolist() if "id" in runs.columns else list(runs.index)
    use_config = "config" in runs.columns and runs["config"].map(lambda c: isinstance(c, Mapping)).any()
    if use_config:
        flat = [_flatten(c) if isinstance(c, Mapping) else {} for c in runs["config"]]
    else:
        cols = [c for c in runs.columns if c not in ("id", "config")]
        flat = [dict(zip(cols, row)) for row in runs[cols].itertuples(index=False, name=None)]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    missing = object()
    rows = []
    for key in keys:
        raw = [f.get(key, missing) for f in flat]
        same = len({json.dumps(cell(v) if v is not missing else None) for v in raw}) == 1
        if only_differences and len(flat) > 1 and same:
            continue
        rows.append([key] + ["" if v is missing else cell(v) for v in raw])
    return pd.DataFrame(rows, columns=["setting"] + [f"#{i}" for i in ids])


# ---------------------------------------------------------------- results table


def _global_family(group: str) -> bool:
    """Families that ignore the layer spec (their runs count under any layer filter)."""
    return group in ("embeddings", "classifier", "full")


CHANCE_ROW = "chance (majority class; 0 for MCC and r)"
FULL_REFERENCE_ROW = "full fine-tuning reference"
NUMERIC_COLUMNS = [
    "module",
    "family",
    "layers",
    "variant",
    "task",
    "metric",
    "mean",
    "std",
    "n",
    "trainable_pct",
    "lr",
    "chance",
    "full_mean",
    "did_not_learn",
    "full_failed",  # full fine-tuning ran at these settings but did not learn: no reference (full_mean empty)
    "lr_verdict",  # the verdict of the lr search that chose the lr (tuning.verdict), or "not searched"
]
# How a cell reads an lr search's verdict: a tie and an edge are marked, and a cell whose search found no lr that
# learned says so instead of a score (tuning.verdict).
VERDICT_MARKS = {"tied": " ≈", "edge": " ≥"}
NO_LEARNER_CELL = "no lr tried learned"
VERDICT_LEGEND = (
    "≈: the lr search could not tell its best candidates apart (it took the family default or the grid's middle); "
    "≥: the best lr lay at the end of the searched grid, so the score is a lower bound; "
    f"'{NO_LEARNER_CELL}': no candidate of its lr search beat chance."
)


def results_table_numeric(runs, layers: str | None = "all", model: str | None = None) -> pd.DataFrame:
    """Long numeric results, one row per replicate set (module, layers, variant, task): mean, std, n, trainable %,
    lr, the chance level and the full fine-tuning mean at the same settings, and whether it learned (CSV export).

    layers filters one layer choice (families that ignore layers always count); None keeps every choice."""
    d = pooling.finished_runs(runs, None, model)
    if not d.empty and layers is not None:
        d = d[(d["layers"] == str(layers)) | d["group"].map(_global_family)]
    pooled = pooling.with_references(pooling.pool(d))
    if pooled.empty:
        return pd.DataFrame(columns=NUMERIC_COLUMNS)
    out = pooled.rename(columns={"group": "family"}).assign(module=lambda p: p["family"].map(short_name))
    keys = [
        (family_sort_key(f), layer_sort_key(la), v, task_sort_key(t))
        for f, la, v, t in zip(out["family"], out["layers"], out["variant"], out["task"])
    ]
    out = out.iloc[sorted(range(len(keys)), key=keys.__getitem__)]
    return out[NUMERIC_COLUMNS].reset_index(drop=True)


def _result_cell(mean: float, std: float, n: int, did_not_learn: bool = False, verdict: str = "") -> str:
    """'0.812 ± 0.004 (3)'; a single seed has no spread, so just '0.812 (1)'; ' ✗' when it did not learn; the lr
    search's verdict as a mark (VERDICT_MARKS), or NO_LEARNER_CELL instead of a score."""
    if verdict == "no-learner":
        return f"{NO_LEARNER_CELL} ({n})"
    flag = (" ✗" if did_not_learn else "") + VERDICT_MARKS.get(verdict, "")
    if n <= 1 or pd.isna(std):
        return f"{mean:.3f} ({n}){flag}"
    return f"{mean:.3f} ± {std:.3f} ({n}){flag}"


def results_table(runs, layers: str | None = "all", model: str | None = None, planned=None) -> pd.DataFrame:
    """The paper-style table: one row per module (and layer choice when several, and settings variant) in paper
    order, 'trainable %', 'lr', then 'mean ± std (n)' per task (✗: did not learn), closed by a chance row.

    planned: cells a study still expects (task, family, layers, text: 'pending', 'failed' ...), shown where no
    finished run fills them, so a cell reads 'pending' instead of blank."""
    long = results_table_numeric(runs, layers, model)
    planned = frame(planned).reindex(columns=["task", "family", "layers", "text"])
    if not planned.empty and layers is not None:
        planned = planned[(planned["layers"] == str(layers)) | planned["family"].map(_global_family)]
    if long.empty and planned.empty:
        return pd.DataFrame(columns=["module", "trainable %", "lr"])
    key_cols = ["family", "layers", "variant"]
    tasks = sorted(set(long["task"]) | set(planned["task"]), key=task_sort_key)
    layer_wise = [long.loc[~long["family"].map(_global_family), "layers"], planned["layers"]]
    several_layers = pd.concat(layer_wise).astype(str).nunique() > 1
    columns = [*key_cols, "task", "mean", "std", "n", "did_not_learn", "lr_verdict"]
    cells = {
        (f, la, v, t): _result_cell(m, s, n, bool(x), verdict)
        for f, la, v, t, m, s, n, x, verdict in long[columns].itertuples(index=False, name=None)
    }
    waiting = {}
    for t, f, la, text in planned.itertuples(index=False, name=None):
        waiting.setdefault((f, la, ""), {}).setdefault(t, text)
    keys = list(dict.fromkeys([*zip(*(long[c] for c in key_cols)), *waiting]))
    keys.sort(key=lambda k: (family_sort_key(k[0]), layer_sort_key(k[1]), k[2]))
    first = long.drop_duplicates(key_cols).set_index(key_cols)
    rows = []
    for f, la, v in keys:
        mine = long[(long["family"] == f) & (long["layers"] == la) & (long["variant"] == v)]
        lrs = sorted({f"{x:g}" for x in mine["lr"] if pd.notna(x)})
        where = f" @{la}" if several_layers and not _global_family(f) else ""
        share = format_pct(first.loc[(f, la, v), "trainable_pct"]) if (f, la, v) in first.index else ""
        rows.append(
            [short_name(f) + where + (f" ({v})" if v else ""), share, ", ".join(lrs)]
            + [cells.get((f, la, v, t)) or waiting.get((f, la, v), {}).get(t, "") for t in tasks]
        )
    # Full fine-tuning is the last module row (paper order); chance closes the table.
    chance = long.groupby("task")["chance"].mean()
    rows.append([CHANCE_ROW, "", ""] + ["" if pd.isna(chance.get(t)) else f"{chance[t]:.3f}" for t in tasks])
    failed = long.groupby("task")["full_failed"].any()
    if failed.any():  # a full fine-tuning that did not learn is no reference: the table says so
        rows.append([FULL_REFERENCE_ROW, "", ""] + [pooling.FULL_FAILED if failed.get(t) else "" for t in tasks])
    return pd.DataFrame(rows, columns=["module", "trainable %", "lr"] + tasks)


def results_csv(runs, layers: str | None = "all", model: str | None = None) -> str:
    """The numeric results as CSV text (what the Download button serves)."""
    return results_table_numeric(runs, layers, model).to_csv(index=False)
