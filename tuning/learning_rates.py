"""Each family's and each method's default learning rate and the log-spaced grid an lr search tries for a run."""

from __future__ import annotations

import math

from moduletune.tuning import methods, modules

# Each family's default lr and search range live in its row of the family table (tuning/modules.py); a method's
# (lora, ia3) in its row of the method table (tuning/methods.py), whatever families it wraps.
DEFAULT_LR = {f.name: f.default_lr for f in (*modules.FAMILY_TABLE, *methods.METHOD_TABLE)}
LR_SEARCH_RANGE = {f.name: f.lr_range for f in (*modules.FAMILY_TABLE, *methods.METHOD_TABLE)}


def default_lr(families) -> float:
    """The default learning rate for a family set: the most conservative one among them."""
    fams = modules.parse_families(families)
    return min(DEFAULT_LR[lr_key(f)] for f in fams)


def lr_key(family: str) -> str:
    """Whose lr a canonical family takes: a method's (lora:query -> lora), else its base family's (random:Q -> Q)."""
    method = methods.method_of(family)
    return method.name if method else family.split(":", 1)[-1]


def lr_search_range(families) -> tuple[float, float]:
    """The (lo, hi) a search covers for a family set: the families' intersection, else the most conservative.

    random:<family> uses its base family's range. An intersection holding fewer than two grid points
    counts as empty; then the range of the family with the smallest default learning rate is used.
    """
    bases = [lr_key(f) for f in modules.parse_families(families)]
    lo = max(LR_SEARCH_RANGE[b][0] for b in bases)
    hi = min(LR_SEARCH_RANGE[b][1] for b in bases)
    if len(_half_decades(lo, hi)) >= 2:
        return lo, hi
    return LR_SEARCH_RANGE[min(bases, key=lambda b: (DEFAULT_LR[b], b))]


def lr_grid(families) -> tuple[float, ...]:
    """Log-spaced candidates for a family set: the 1-3-10 half-decade points inside its search range."""
    return _half_decades(*lr_search_range(families))


def _half_decades(lo: float, hi: float) -> tuple[float, ...]:
    """Every 1eN and 3eN from lo to hi inclusive, as clean floats (3e-4, not 0.00030000000000000003)."""
    points = (
        float(f"{m}e{e}") for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1) for m in (1, 3)
    )
    return tuple(p for p in points if lo * (1 - 1e-9) <= p <= hi * (1 + 1e-9))
