"""An lr search's state on disk (search.json in its workdir): made, checked against the search resuming it,
saved atomically, and read back as a SearchResult."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from moduletune.tuning.config import RunConfig
from moduletune.tuning.disk import write_text
from moduletune.tuning.verdict import SearchError, verdict_note

STATE_FILE = "search.json"


@dataclass(frozen=True)
class Rung:
    """One rung of the schedule: train the `candidates` still in to `step` steps, then score them."""

    index: int
    step: int
    candidates: int


@dataclass
class SearchResult:
    """What a search tried, what each candidate scored at each rung, what it chose, why, and what it cost."""

    chosen_lr: float | None  # None while the search is unfinished (stopped)
    metric: str
    selection: str  # holdout (a slice of the training rows) or eval (the reported set: optimistic)
    grid: list[float]  # every lr tried, an edge extension's included, ascending
    rungs: list[dict]  # what ran: [{index, step, candidates}], candidates = how many trained to that step
    candidates: list[dict]  # [{lr, rungs: [{step, score, learned}], score, pruned_at_step, steps, extended}]
    cost_steps: int  # training steps taken by all candidates together
    full_steps: int  # R: one full run of the candidates' training rows
    cost_ratio: float  # cost_steps / full_steps
    grid_cost_ratio: float  # the plain grid's: every candidate for the full run
    seconds: float
    stopped: bool = False
    workdir: str | None = None
    verdict: str | None = None  # clear, tied, edge or no-learner (None while unfinished)
    verdict_note: str = ""  # the verdict in one sentence a person reads
    tied: list[float] = field(default_factory=list)  # the lrs within noise of the best (tied)
    extended: list[float] = field(default_factory=list)  # lrs added beyond an edge of the grid
    lower_bound: bool = False  # edge: the chosen lr's score is a lower bound (the best lay beyond the grid)
    noise: float | None = None  # the band two held-out scores must differ by to be told apart
    decided_at_step: int | None = None  # the rung whose scores decided (a clear winner ends a search early)
    chance: float | None = None  # the held-out slice's chance score

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def identity(config: RunConfig, grid: list[float], owner: dict | None = None) -> dict:
    """What must match for a workdir's state to be resumed: the run settings bar lr, notes and where it runs
    (the checkpoints' NOT_FINGERPRINTED), the grid and the owner."""
    from moduletune.tuning.checkpoints import NOT_FINGERPRINTED  # imports torch: only when a search runs

    settings = config.replace(lr=None, lr_search=False, extra={}).to_dict()
    return {**comparable(settings, NOT_FINGERPRINTED), "grid": grid, "owner": owner or {}}


def comparable(identity: dict, ignored) -> dict:
    """An identity less the settings that never decide a resume (also applied to a stored one, which older
    versions wrote with the device in it)."""
    return {k: v for k, v in identity.items() if k not in ignored}


def new_state(config: RunConfig, grid: list[float], owner: dict | None = None) -> dict:
    return {
        "version": 2,
        "identity": identity(config, grid, owner),
        "selection": config.lr_selection,
        "metric": None,
        "chosen_lr": None,
        "seconds": 0.0,
        "candidates": [{"lr": lr, "rungs": [], "pruned_at_step": None, "steps": 0} for lr in grid],
    }


def load_state(root: Path, config: RunConfig, grid: list[float], owner: dict | None = None) -> dict | None:
    from moduletune.tuning.checkpoints import NOT_FINGERPRINTED

    path = root / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    found = {"owner": {}, **comparable(state.get("identity") or {}, NOT_FINGERPRINTED)}
    if found != identity(config, grid, owner):
        raise SearchError(
            f"{path} holds a search with other settings or of another run; use another workdir or remove that one"
        )
    state["base_seconds"] = state["seconds"]
    return state


def save_state(root: Path, state: dict, started: float) -> None:
    """search.json, written atomically; seconds adds this call's time to earlier calls'."""
    state["seconds"] = state.get("base_seconds", 0.0) + time.perf_counter() - started
    shown = json.dumps({k: v for k, v in state.items() if k != "base_seconds"}, indent=1)
    write_text(root / STATE_FILE, shown, "the lr search's state")


def result_of(state: dict, rungs: list[Rung], full_steps: int, root: Path) -> SearchResult:
    cost = steps_taken(state)
    cands = sorted(state["candidates"], key=lambda c: c["lr"])
    candidates = [
        {
            **{k: v for k, v in c.items() if k != "losses"},
            "score": c["rungs"][-1]["score"] if c["rungs"] else None,
            "extended": bool(c.get("extended")),
        }
        for c in cands
    ]
    counts = state.get("rung_counts", {})
    ran = [{**dataclasses.asdict(r), "candidates": counts.get(str(r.step), r.candidates)} for r in rungs]
    verdict = state.get("verdict") or {}
    result = SearchResult(
        chosen_lr=state["chosen_lr"],
        metric=state["metric"] or "",
        selection=state["selection"],
        grid=[c["lr"] for c in cands],
        rungs=ran,
        candidates=candidates,
        cost_steps=cost,
        full_steps=full_steps,
        cost_ratio=cost / full_steps,
        grid_cost_ratio=float(sum(not c.get("extended") for c in cands)),
        seconds=state["seconds"],
        stopped=state["chosen_lr"] is None,
        workdir=str(root),
        verdict=verdict.get("verdict"),
        tied=list(verdict.get("tied") or []),
        extended=[c["lr"] for c in cands if c.get("extended")],
        lower_bound=bool(verdict.get("lower_bound")),
        noise=state.get("noise"),
        chance=state.get("chance"),
        decided_at_step=verdict.get("step"),
    )
    result.verdict_note = verdict_note(result)
    return result


def steps_taken(state: dict) -> int:
    """Training steps the search's candidates have taken together."""
    return sum(c["steps"] for c in state["candidates"])
