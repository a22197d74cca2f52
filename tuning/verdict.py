"""An lr search's verdict: how its candidates' held-out scores are ranked and judged, and whether they can be.

- clear: the chosen lr beat every other candidate by more than the noise band;
- tied: several that learned were within noise of the best; the choice among them is the family default if it is
  tied, else the tied lr nearest the grid's middle (never silently the lowest);
- edge: a clear best was the lowest or highest lr tried (tuning.search then extends the grid; still at the edge,
  the score is a lower bound);
- no-learner: no candidate beat chance.
A search scored on fewer than MIN_SELECTION_ROWS rows is refused before it is queued: on 20 rows every candidate
ties, and its choice would be a coin toss reported as a finding.
"""

from __future__ import annotations

import math

from moduletune.tuning.config import RunConfig
from moduletune.tuning.glue import rank_value
from moduletune.tuning.glue_sizes import train_rows, validation_rows
from moduletune.tuning.learning_rates import default_lr

CLEAR, TIED, EDGE, NO_LEARNER = "clear", "tied", "edge", "no-learner"
VERDICTS = (CLEAR, TIED, EDGE, NO_LEARNER)
MIN_SELECTION_ROWS = 100  # fewer held-out rows than this cannot tell candidates apart (2 SE >= 0.1 accuracy)


class SearchError(ValueError):
    """A search that cannot go on as asked (too few rows to choose, a workdir holding another search); the message
    says why."""


def grid_middle(grid) -> float:
    """The middle of a log-spaced grid (its geometric mean)."""
    return math.sqrt(min(grid) * max(grid))


def tie_choice(tied, config: RunConfig, grid) -> float:
    """Among candidates that cannot be told apart: the family default when it is one of them, else the one nearest
    the grid's middle (the smaller of two as near)."""
    default = default_lr(config.modules)
    for lr in tied:
        if math.isclose(lr, default, rel_tol=1e-6):
            return lr
    return rank({lr: 0.0 for lr in tied}, grid_middle(grid))[0]


def rank(scores: dict[float, float], prefer: float | None = None) -> list[float]:
    """Learning rates best first: higher score wins, NaN (diverged) is worst; equal scores go to the lr nearest
    `prefer` (log-distance), else to the smaller lr."""

    def distance(lr: float) -> float:
        return abs(math.log10(lr) - math.log10(prefer)) if prefer else 0.0

    return sorted(scores, key=lambda lr: (-rank_value(scores[lr]), distance(lr), lr))


def judge(scores: dict[float, float], learned: set, noise: float, lrs) -> dict:
    """The verdict on the last rung's scores (by lr; learned: the lrs that beat chance), as {verdict, chosen_lr, tied,
    lower_bound}; lrs: every lr tried, an edge extension's included.

    no-learner when none learned; tied when another that learned is within `noise` of the best that learned (the
    caller chooses among them: tie_choice); edge when a clear best is the lowest or highest lr tried; clear
    otherwise."""
    if not learned:
        return {"verdict": NO_LEARNER, "chosen_lr": rank(scores)[0], "tied": sorted(scores)}
    best = rank({lr: scores[lr] for lr in learned})[0]
    tied = sorted(lr for lr in learned if rank_value(scores[lr]) >= rank_value(scores[best]) - noise)
    if len(tied) > 1:
        return {"verdict": TIED, "chosen_lr": best, "tied": tied}
    at_edge = best in (min(lrs), max(lrs))
    return {"verdict": EDGE if at_edge else CLEAR, "chosen_lr": best, "tied": [], "lower_bound": at_edge}


def selection_rows(config: RunConfig) -> int | None:
    """How many rows score the candidates: the held-out slice of the training rows, or the evaluation set (eval
    selection); None when the task's split sizes are not known."""
    if config.lr_selection == "eval":
        rows = validation_rows(config.task)
        return min(config.max_eval, rows) if config.max_eval and rows else (config.max_eval or rows)
    train = train_rows(config.task)
    rows = min(config.max_train, train) if config.max_train and train else (config.max_train or train)
    return None if rows is None else round(config.holdout_fraction * rows)


def check_searchable(config: RunConfig) -> None:
    """Refuse a search whose candidates would be scored on fewer than MIN_SELECTION_ROWS rows, naming the smallest
    number of training (or evaluation) examples that works: on 20 rows every candidate ties, and the choice would
    be a coin toss reported as a finding."""
    if not config.lr_search:
        return
    rows = selection_rows(config)
    if rows is None or rows >= MIN_SELECTION_ROWS:
        return
    if config.lr_selection == "eval":
        raise SearchError(
            f"an lr search that chooses on the evaluation set needs at least {MIN_SELECTION_ROWS} evaluation "
            f"examples to tell candidates apart; this one has {rows}: use max_eval of at least {MIN_SELECTION_ROWS}"
            + (" or choose on a held-out slice (lr selection holdout)" if rows else "")
        )
    need = math.ceil((MIN_SELECTION_ROWS - 0.5) / config.holdout_fraction)
    train = train_rows(config.task)
    fix = (
        f"use at least {need:,} training examples"
        if train is None or need <= train
        else f"{config.task} has only {train:,} training rows: raise the holdout fraction"
    )
    raise SearchError(
        f"an lr search scores its candidates on a held-out {config.holdout_fraction:.0%} of the training rows: "
        f"here {rows} rows, fewer than the {MIN_SELECTION_ROWS} needed to tell candidates apart; {fix} "
        f"(or a larger holdout fraction)"
    )


def verdict_note(result) -> str:
    """A SearchResult's verdict in one sentence: what was chosen and how far to trust it (and that the grid was
    extended past its edge, when it was)."""
    if result.chosen_lr is None:
        return "the search has not finished"
    lr, metric = f"{result.chosen_lr:g}", result.metric
    tied = ", ".join(f"{t:g}" for t in result.tied)
    noise = f"±{result.noise:.3f}" if result.noise is not None else "noise"
    added = ", ".join(f"{e:g}" for e in result.extended)
    extended = f"the best lr sat at an end of the grid, which was extended by {added}; " if added else ""
    if result.verdict == NO_LEARNER:
        return f"{extended}no lr tried learned (each within noise of chance by {metric}); trained at {lr} anyway"
    if result.verdict == TIED:
        return f"{extended}{tied} tied within noise ({noise}); chose {lr}, the family default or the grid's middle"
    if result.verdict == EDGE:
        return f"{extended}chose {lr}, an end of the grid: its score is a lower bound (a better lr may lie beyond)"
    return f"{extended}chose {lr}, ahead of every other candidate beyond noise ({noise}) by {metric}"
