"""Compare like with like: pool runs over seeds only, and give every score its chance level and full-FT reference.

Every table and chart of scores starts here. Runs are replicates when they share a task, a module set,
a layer choice and every other setting (tuning.replicates' settings_key); only those are averaged
(mean ± std, n). Each pooled row carries the task's chance level (always predicting the majority class
of the evaluation set; 0 for MCC and Pearson) and the full fine-tuning mean at the same settings
(comparison_key: the same settings less modules, layers and lr), and says when its runs did not learn.
"""

from __future__ import annotations

import json
import math
from typing import NamedTuple

import pandas as pd

from moduletune.app.figures.labels import canonical_modules, family_sort_key, layer_sort_key, task_sort_key
from moduletune.tuning.replicates import ADAPTER_SETTINGS, differing_settings

# Metrics whose chance level is 0 whatever the labels (no registry value needed).
ZERO_CHANCE = ("matthews_correlation", "pearson", "spearman")
# Settings never named in a variant label: the grouping already shows them.
SHOWN_ELSEWHERE = ("task", "modules", "layers")
POOLED_COLUMNS = [
    "task",
    "group",
    "layers",
    "settings_key",
    "comparison_key",
    "variant",
    "metric",
    "mean",
    "std",
    "n",
    "seeds",
    "ids",
    "lr",
    "trainable_pct",
    "train_seconds",  # the seed runs' median training time (evaluation aside)
    "peak_memory_mb",  # their median peak memory (RSS on a CPU, max allocated on a GPU); NaN when not recorded
    "chance",
    "not_learned",
    "did_not_learn",
    "lr_verdict",  # how the lr was found: an lr search's verdict (clear, tied, edge, no-learner) or "not searched"
]


# ---------------------------------------------------------------- frame helpers


def frame(df) -> pd.DataFrame:
    """The frame itself, or an empty one for None, so every chart can start with `.empty`."""
    return pd.DataFrame() if df is None else df


def str_col(df: pd.DataFrame, name: str, default: str) -> pd.Series:
    """A column as strings, or the default everywhere when the registry lacks it."""
    if name in df.columns:
        return df[name].astype(object).where(df[name].notna(), default).astype(str)
    return pd.Series(default, index=df.index, dtype=object)


def module_keys(df: pd.DataFrame) -> pd.Series:
    """Canonical module-set key per run (the `modules` column, else `family`)."""
    source = df["modules"] if "modules" in df.columns else df.get("family")
    if source is None:
        return pd.Series("?", index=df.index, dtype=object)
    cache: dict = {}

    def key(v) -> str:
        """canonical_modules, computed once per distinct string (a registry repeats a few values)."""
        if not isinstance(v, str):
            return canonical_modules(v)
        if v not in cache:
            cache[v] = canonical_modules(v)
        return cache[v]

    return source.astype(object).map(key)


def finished_runs(runs, task: str | None = None, model: str | None = None) -> pd.DataFrame:
    """Succeeded, reported runs with a metric (optionally of one task/model): no lr searches or their candidates.

    Adds `group` (module set), `layers` (as text) and the replicate keys (empty when the frame has none)."""
    runs = frame(runs)
    if runs.empty or not {"status", "primary_metric"} <= set(runs.columns):
        return pd.DataFrame(
            columns=["id", "task", "group", "layers", "primary_metric", "settings_key", "comparison_key"]
        )
    mask = (runs["status"] == "succeeded") & pd.to_numeric(runs["primary_metric"], errors="coerce").notna()
    if "kind" in runs.columns:
        mask &= runs["kind"].fillna("run").astype(str) == "run"
    if task is not None and "task" in runs.columns:
        mask &= runs["task"] == task
    if model is not None and "model" in runs.columns:
        mask &= runs["model"] == model
    out = runs.loc[mask].copy()
    out["primary_metric"] = pd.to_numeric(out["primary_metric"], errors="coerce").astype(float)
    out["group"] = module_keys(out)
    out["layers"] = str_col(out, "layers", "all")
    if "task" not in out.columns:
        out["task"] = task or "?"
    for key in ("settings_key", "comparison_key"):
        out[key] = str_col(out, key, "")
    return out


def metric_name(df: pd.DataFrame, default: str = "score") -> str:
    """The primary metric's name for these runs (the most common one; `default` when unknown)."""
    if "primary_metric_name" not in df.columns:
        return default
    names = df["primary_metric_name"].dropna()
    return str(names.mode().iloc[0]) if len(names) else default


# ---------------------------------------------------------------- what differs


def mixed_settings(d: pd.DataFrame) -> list[str]:
    """Settings that differ among these runs beyond task, modules and layers; 'lr' only when one module set and
    layer choice was trained at more than one lr (each family having its own default is no mix)."""
    if d.empty or "settings" not in d.columns:
        return []
    settings = [s if isinstance(s, dict) else {} for s in d["settings"]]
    names = differing_settings(settings, ignore=SHOWN_ELSEWHERE + ("lr",) + ADAPTER_SETTINGS)
    # A LoRA's shape (rank, alpha, dropout) is a setting of LoRA runs only: it differs when two LoRA runs differ in
    # it, never because a family's run has none.
    adapters = [s for s in settings if any(k in s for k in ADAPTER_SETTINGS)]
    names += [k for k in differing_settings(adapters, ignore=()) if k in ADAPTER_SETTINGS]
    lrs = pd.to_numeric(d["lr"], errors="coerce") if "lr" in d.columns else None
    if lrs is not None and (lrs.groupby([d["task"], d["group"], d["layers"]]).nunique() > 1).any():
        names = ["lr"] + names
    return names


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if v is None:
        return "default"
    return v if isinstance(v, str) else json.dumps(v, default=str)


def variant_labels(d: pd.DataFrame, names: list[str] | None = None) -> pd.Series:
    """Per run, 'max_train=2000, epochs=3': the values of the settings that differ (empty when none do)."""
    names = mixed_settings(d) if names is None else names
    if not names or d.empty:
        return pd.Series("", index=d.index, dtype=object)
    rows = []
    for settings, lr in zip(d["settings"], d["lr"] if "lr" in d.columns else [None] * len(d)):
        settings = settings if isinstance(settings, dict) else {}
        shown = [k for k in names if k in settings or k not in ADAPTER_SETTINGS]  # a family's run has no rank
        rows.append(", ".join(f"{k}={_value(lr if k == 'lr' and lr is not None else settings.get(k))}" for k in shown))
    return pd.Series(rows, index=d.index, dtype=object)


# ---------------------------------------------------------------- pooling


def _chance_of(g: pd.DataFrame, metric: str) -> float:
    if metric in ZERO_CHANCE:
        return 0.0
    if "chance_metric" in g.columns:
        values = pd.to_numeric(g["chance_metric"], errors="coerce").dropna()
        if len(values):
            return float(values.mean())
    return float("nan")


def _median(g: pd.DataFrame, column: str) -> float:
    return float(pd.to_numeric(g[column], errors="coerce").median()) if column in g.columns else float("nan")


def pool(runs, task: str | None = None, model: str | None = None) -> pd.DataFrame:
    """One row per replicate set (runs that differ only in the seed): mean, std, n, chance and learn verdict.

    `variant` names what sets a row apart from others with the same module set and layers; `did_not_learn`
    is true when most of its runs did not learn (constant predictions or within noise of chance)."""
    d = finished_runs(runs, task, model)
    if d.empty:
        return pd.DataFrame(columns=POOLED_COLUMNS)
    d = d.assign(
        variant=variant_labels(d),
        _seed=d["seed"] if "seed" in d.columns else 0,
        _metric=str_col(d, "primary_metric_name", "score"),
    )
    rows = []
    for key, g in d.groupby(["task", "group", "layers", "settings_key"], sort=False):
        metric = metric_name(g)
        learned = g["learned"] if "learned" in g.columns else pd.Series(dtype=object)
        not_learned = int((learned.astype(object) == False).sum())  # noqa: E712 (null = unknown, not False)
        scores = g["primary_metric"]
        rows.append(
            {
                "task": key[0],
                "group": key[1],
                "layers": key[2],
                "settings_key": key[3],
                "comparison_key": g["comparison_key"].iloc[0],
                "variant": g["variant"].iloc[0],
                "metric": metric,
                "mean": float(scores.mean()),
                "std": float(scores.std()) if len(g) > 1 else float("nan"),
                "n": int(len(g)),
                "seeds": sorted(int(s) for s in g["_seed"] if pd.notna(s)),
                "ids": sorted(int(i) for i in g["id"]) if "id" in g.columns else [],
                "lr": _median(g, "lr"),
                "trainable_pct": _median(g, "trainable_pct"),
                "train_seconds": _median(g, "train_seconds"),
                "peak_memory_mb": _median(g, "peak_memory_mb"),
                "chance": _chance_of(g, metric),
                "not_learned": not_learned,
                "did_not_learn": not_learned * 2 > len(g),
                "lr_verdict": lr_verdict(g),
            }
        )
    out = pd.DataFrame(rows, columns=POOLED_COLUMNS)
    order = sorted(
        range(len(out)),
        key=lambda i: (
            task_sort_key(out["task"].iloc[i]),
            family_sort_key(out["group"].iloc[i]),
            layer_sort_key(out["layers"].iloc[i]),
            out["variant"].iloc[i],
        ),
    )
    return out.iloc[order].reset_index(drop=True)


FULL_FAILED = "full fine-tuning did not learn at these settings"
NOT_SEARCHED = "not searched"  # a run's lr was typed or its family's default


def lr_verdict(g: pd.DataFrame) -> str:
    """The verdict of the lr search that chose these runs' lr (NOT_SEARCHED when it was typed or a family default);
    replicates share one search, so the first one found speaks for them."""
    notes = g["lr_search"] if "lr_search" in g.columns else []
    return next((str(n.get("verdict") or NOT_SEARCHED) for n in notes if isinstance(n, dict)), NOT_SEARCHED)


def references(pooled: pd.DataFrame) -> pd.DataFrame:
    """Per (task, comparison_key): the chance level and the full fine-tuning reference (its best pooled mean that
    learned, with std, n and lr) that every score at those settings is read against. A full fine-tuning that did
    not learn is no reference: full_mean stays empty and full_failed says why."""
    columns = ["task", "comparison_key", "chance", "full_mean", "full_std", "full_n", "full_lr", "full_failed"]
    if pooled.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (task, ckey), g in pooled.groupby(["task", "comparison_key"], sort=False):
        chance = g["chance"].dropna()
        tried = g[g["group"] == "full"]
        full = tried[~tried["did_not_learn"].astype(bool)].sort_values("mean", ascending=False)
        best = full.iloc[0] if len(full) else None
        rows.append(
            {
                "task": task,
                "comparison_key": ckey,
                "chance": float(chance.mean()) if len(chance) else math.nan,
                "full_mean": float(best["mean"]) if best is not None else math.nan,
                "full_std": float(best["std"]) if best is not None else math.nan,
                "full_n": int(best["n"]) if best is not None else 0,
                "full_lr": float(best["lr"]) if best is not None else math.nan,
                "full_failed": best is None and len(tried) > 0,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def with_references(pooled: pd.DataFrame) -> pd.DataFrame:
    """pooled plus chance (filled from the task's reference when a row lacks it) and full_mean/std/n/lr columns."""
    if pooled.empty:
        return pooled.assign(full_mean=[], full_std=[], full_n=[], full_lr=[])
    refs = references(pooled)
    out = pooled.merge(refs.rename(columns={"chance": "_ref_chance"}), on=["task", "comparison_key"], how="left")
    out["chance"] = out["chance"].where(out["chance"].notna(), out["_ref_chance"])
    return out.drop(columns=["_ref_chance"])


class References(NamedTuple):
    """One task's reference lines: chance, the full fine-tuning mean ± std (NaN when none learned), whether the
    task's runs come from several comparison settings (the lines are then the most common one's), and whether
    full fine-tuning ran at these settings but did not learn (then a chart says so instead of drawing it)."""

    chance: float
    full_mean: float
    full_std: float
    mixed: bool
    full_failed: bool = False


def task_references(pooled: pd.DataFrame, task: str) -> References:
    """The References of one task's chart (a single line each)."""
    p = pooled[pooled["task"] == task] if not pooled.empty else pooled
    if p.empty:
        return References(math.nan, math.nan, math.nan, False)
    refs = references(p)
    main = p["comparison_key"].value_counts().index[0]
    ref = refs[refs["comparison_key"] == main].iloc[0]
    return References(
        float(ref["chance"]), float(ref["full_mean"]), float(ref["full_std"]), len(refs) > 1, bool(ref["full_failed"])
    )


def seed_means_frontier(pooled: pd.DataFrame, cost: str = "trainable_pct") -> pd.DataFrame:
    """The pooled rows no other row beats at a lower cost (trainable parameters, training time or peak memory):
    the frontier through seed means."""
    p = pooled[pd.to_numeric(pooled[cost], errors="coerce") > 0]
    p = p.sort_values([cost, "mean"], ascending=[True, False])
    best = p["mean"].cummax()
    keep = (p["mean"] >= best) & ~p["mean"].duplicated()
    return p[keep]


def learn_flag(did_not_learn: bool, not_learned: int = 0, n: int = 0) -> str:
    """'' or '✗ did not learn' (with how many seeds) — printed beside a score so a 0 MCC reads as a failed run."""
    if not did_not_learn:
        return ""
    return "✗ did not learn" + (f" ({not_learned}/{n} runs)" if n > 1 else "")


def reference_note(chance: float, full_mean: float, full_std: float, metric: str, full_failed: bool = False) -> str:
    """'chance 0.509 · full FT 0.812 ± 0.004' for titles and table notes (or that full fine-tuning did not learn)."""
    parts = []
    if not math.isnan(chance):
        parts.append(f"chance {chance:.3f}")
    if not math.isnan(full_mean):
        parts.append(f"full FT {full_mean:.3f}" + ("" if math.isnan(full_std) else f" ± {full_std:.3f}"))
    elif full_failed:
        parts.append(FULL_FAILED)
    return f"{metric}: " + " · ".join(parts) if parts else ""
