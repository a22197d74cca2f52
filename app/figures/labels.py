"""How runs are named and ordered on screen: the paper's short module names, GLUE's task order, durations.

Plain functions shared by the charts, the tables and the Runs tab (no Plotly, no database).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from moduletune.tuning.modules import FAMILY_TABLE, short_label
from moduletune.tuning.modules import SHORT_NAMES as SHORT

GLUE_ORDER = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
FAMILY_ORDER = tuple(f.name for f in FAMILY_TABLE if f.name != "full")  # the paper's row order; full is last


def _family_rank(family: str) -> int:
    """Position of a single family in the paper's order (a method's by the family it wraps; unknown names last)."""
    family = family.rpartition(":")[2] if not family.startswith("random:") else family
    return FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)


def canonical_modules(modules) -> str:
    """One key per module set: parts sorted in paper order, so 'value+query' and 'query+value' agree."""
    if modules is None or (isinstance(modules, float) and math.isnan(modules)):
        return "?"
    if isinstance(modules, (list, tuple)):
        parts = [str(p) for p in modules]
    else:
        parts = str(modules).split("+")
    parts = [p.strip() for p in parts if p.strip()]
    if len(parts) == 1:
        return parts[0]
    return "+".join(sorted(parts, key=lambda p: (_family_rank(p), p)))


def short_name(modules) -> str:
    """The paper's label for a module set: 'query+value' -> 'Q+V', 'random:layernorm' -> 'random:LN'."""
    key = canonical_modules(modules)
    if key.startswith("random:"):
        return "random:" + SHORT.get(key.split(":", 1)[1], key.split(":", 1)[1])
    if ":" in key:  # a method's families (lora:query+lora:value): the method named once, 'lora:Q+V'
        return short_label(key.split("+"))
    return "+".join(SHORT.get(p, p) for p in key.split("+"))


def family_sort_key(modules) -> tuple:
    """Row order of the paper's tables: Q K V AO FI FO LN bias embeddings classifier, combos, random:*, full."""
    key = canonical_modules(modules)
    if key in FAMILY_ORDER:
        return (0, _family_rank(key), key)
    if key.startswith("random:"):
        return (2, _family_rank(key.split(":", 1)[1]), key)
    if key == "full":
        return (3, 0, key)
    return (1, _family_rank(key.split("+")[0]), key)


def layer_sort_key(spec) -> tuple:
    """Layer specs in a readable order: all, single layers by number, then the rest alphabetically."""
    spec = str(spec)
    if spec == "all":
        return (0, 0, spec)
    if spec.isdigit():
        return (1, int(spec), spec)
    return (2, 0, spec)


def task_sort_key(task) -> tuple:
    """GLUE tasks in the benchmark's usual order, anything else after, alphabetically."""
    return (GLUE_ORDER.index(task) if task in GLUE_ORDER else len(GLUE_ORDER), str(task))


def id_key(run_id) -> tuple:
    """Sort run ids numerically when they are numbers."""
    return (0, int(run_id), "") if isinstance(run_id, (int, np.integer)) else (1, 0, str(run_id))


def layer_label(layer: int) -> str:
    """Axis label of a magnitudes layer index (-1 holds the embeddings)."""
    return "emb" if int(layer) < 0 else str(int(layer))


def humanize_seconds(seconds) -> str:
    """A duration as a person reads it: '45s', '3m 20s', '2h 5m', '1d 3h'; '' when unknown."""
    if seconds is None or pd.isna(seconds):
        return ""
    s = max(int(round(float(seconds))), 0)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h {m}m"
    d, h = divmod(h, 24)
    return f"{d}d {h}h"


def humanize_age(seconds) -> str:
    """How long ago something happened: 'just now', '40 s ago', '5 min ago', '3 h ago', '2 days ago'."""
    if seconds is None or pd.isna(seconds):
        return ""
    s = float(seconds)
    if s < 10:
        return "just now"
    if s < 60:
        return f"{int(s)} s ago"
    if s < 3600:
        return f"{int(s // 60)} min ago"
    if s < 86400:
        return f"{int(s // 3600)} h ago"
    days = int(s // 86400)
    return "1 day ago" if days == 1 else f"{days} days ago"


def format_pct(value) -> str:
    """A trainable share in percent with three significant digits: '0.00312%', '12.3%', '100%'."""
    if value is None or pd.isna(value):
        return ""
    return f"{float(value):.3g}%"


def cell(value) -> str:
    """One config value as display text: lists joined by commas, missing as ''."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)
