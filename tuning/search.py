"""lr_search(config) -> SearchResult: successive halving over a learning-rate grid, resumable from a folder.

With n candidates and a full run of R steps, k = ceil(log2 n) rungs train the survivors to R/2^k, ...,
R/2 steps (each resumed from its own checkpoint, on the full run's schedule) and keep the better half
after each rung. For 5 candidates that costs 1.5 full runs where trying every one costs 5.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from moduletune.tuning.chance import noise_band
from moduletune.tuning.config import RunConfig
from moduletune.tuning.glue import rank_value

STATE_FILE = "search.json"


class SearchError(ValueError):
    """A search that cannot go on as asked (e.g. a workdir holding another search); the message says why."""


@dataclass(frozen=True)
class Rung:
    """One rung of the schedule: train the `candidates` still in to `step` steps, then score them."""

    index: int
    step: int
    candidates: int


@dataclass
class SearchResult:
    """What a search tried, what each candidate scored at each rung, what it chose and what it cost."""

    chosen_lr: float | None  # None while the search is unfinished (stopped)
    metric: str
    selection: str  # holdout (a slice of the training rows) or eval (the reported set: optimistic)
    grid: list[float]
    rungs: list[dict]  # the schedule: [{index, step, candidates}]
    candidates: list[dict]  # [{lr, rungs: [{step, score}], score, pruned_at_step, steps}]
    cost_steps: int  # training steps taken by all candidates together
    full_steps: int  # R: one full run of the candidates' training rows
    cost_ratio: float  # cost_steps / full_steps
    grid_cost_ratio: float  # the plain grid's: every candidate for the full run
    seconds: float
    stopped: bool = False
    workdir: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def schedule(n: int, full_steps: int) -> list[Rung]:
    """The rungs for n candidates and an R-step run: budgets R/2^(k-r), counts n, ceil(n/2), ..."""
    if n < 2:
        raise SearchError(f"a search needs at least 2 candidates, got {n}")
    k = math.ceil(math.log2(n))
    rungs, count = [], n
    for r in range(k):
        rungs.append(Rung(r, max(1, round(full_steps / 2 ** (k - r))), count))
        count = math.ceil(count / 2)
    return rungs


def planned_cost(rungs: list[Rung]) -> int:
    """Steps the schedule takes: each candidate runs to the budget of the rung it leaves at."""
    counts = [r.candidates for r in rungs] + [0]
    return sum((counts[i] - counts[i + 1]) * r.step for i, r in enumerate(rungs))


def remaining_cost(rungs: list[Rung], index: int, kept: int) -> int:
    """Steps still to take after rung `index` when `kept` candidates go on (halving from there on)."""
    cost, count, prev = 0, kept, rungs[index].step
    for r in rungs[index + 1 :]:
        cost += count * (r.step - prev)
        prev, count = r.step, math.ceil(count / 2)
    return cost


def rank(scores: dict[float, float]) -> list[float]:
    """Learning rates best first: higher score wins, NaN (diverged) is worst, a tie goes to the smaller lr."""
    return sorted(scores, key=lambda lr: (-rank_value(scores[lr]), lr))


def survivors(order: list[float], scores: dict[float, float], noise: float) -> list[float]:
    """Who goes on after a rung: the better half, plus every candidate within `noise` of the worst of them.

    Early in training the held-out scores of all candidates may still be indistinguishable (STS-B query-only
    after 21 steps: every Pearson within ±0.14 of 0 on 200 rows); pruning then is a coin toss that can drop
    the lr that wins later. Keeping what cannot be told apart costs at most every candidate to the last rung
    (5 candidates: 2.5 runs instead of 1.5), and only when the scores really are too close to call.
    """
    half = order[: math.ceil(len(order) / 2)]
    cutoff = rank_value(scores[half[-1]])
    close = [lr for lr in order[len(half) :] if rank_value(scores[lr]) >= cutoff - noise]
    return half + close


def candidate_config(config: RunConfig, lr: float) -> RunConfig:
    """The run one candidate is: the config at that lr, scored on the selection set."""
    return config.replace(
        lr=lr, lr_search=False, eval_on="holdout" if config.lr_selection == "holdout" else "validation"
    )


def final_config(config: RunConfig, result: SearchResult) -> RunConfig:
    """The config to train for real: the chosen lr, evaluated on the task's validation split(s)."""
    if result.chosen_lr is None:
        raise SearchError("the search has not finished (it was stopped); run it again with the same workdir")
    note = {"chosen_lr": result.chosen_lr, "selection": result.selection, "grid": list(result.grid)}
    return config.replace(
        lr=result.chosen_lr, lr_search=False, eval_on="validation", extra={**config.extra, "lr_search": note}
    )


def lr_search(
    config: RunConfig, on_event=None, workdir: str | Path | None = None, owner: dict | None = None
) -> SearchResult:
    """Successive halving over config.search_grid; resumable: a later call with the same workdir goes on.

    on_event gets each candidate's step events (with the search's cumulative step and total), a "rung"
    event after each rung evaluation and a "pruned" event per dropped candidate. Returning True from it
    stops at the end of that step, leaving checkpoints and workdir/search.json to resume from (without a
    workdir, a temporary folder is used, kept only when stopped: result.workdir names it).
    A workdir is resumed only by the search it was made for: the same settings (bar where it runs: a resumed
    search may land on another device) and the same owner (a worker passes its registry and run id, which
    also stamp each candidate's checkpoint; see tuning.checkpoints).
    """
    from moduletune.tuning.train import fine_tune, planned_steps

    config.validate()
    emit = on_event or (lambda event: None)
    temporary = workdir is None
    root = Path(tempfile.mkdtemp(prefix="lr-search-") if temporary else workdir)
    grid = list(config.search_grid)
    full_steps = planned_steps(candidate_config(config, grid[0]))[1]
    rungs = schedule(len(grid), full_steps)
    total = planned_cost(rungs)  # grows when a rung keeps more candidates than the schedule (see survivors)
    state = _load_state(root, config, grid, owner) or _new_state(config, grid, owner)
    by_lr = {c["lr"]: c for c in state["candidates"]}
    started, steps_at_start = time.perf_counter(), _steps(state)
    interrupted = False

    def run_candidate(cand: dict, rung: Rung) -> None:
        nonlocal interrupted
        before = _steps(state) - cand["steps"]  # the other candidates' steps, for the cumulative count

        def forward(event: dict):
            nonlocal interrupted
            if event.get("kind") != "step":
                return None
            step = before + event["step"]
            done_here = step - steps_at_start
            rate = done_here / max(time.perf_counter() - started, 1e-9)
            stop = emit(
                {
                    "kind": "step",
                    "step": step,
                    "total_steps": max(total, step),
                    "loss": event["loss"],
                    "lr": event["lr"],
                    "examples_per_second": event["examples_per_second"],
                    "eta_seconds": (total - step) / rate if rate > 0 else event["eta_seconds"],
                    "epoch": event["epoch"],
                    "candidate_lr": cand["lr"],
                }
            )
            interrupted = interrupted or bool(stop)
            return stop

        result = fine_tune(
            candidate_config(config, cand["lr"]),
            forward,
            checkpoint_dir=root / _folder(cand["lr"]),
            stop_at_step=rung.step,
            owner=owner,
        )
        cand["steps"] = result.steps
        state["metric"] = result.primary_metric_name
        if result.chance_metric is not None:  # how far apart two scores must be to tell them apart
            state["noise"] = noise_band(result.primary_metric_name, result.chance_metric, result.eval_examples)
        if result.steps >= rung.step:  # reached the rung (a stop asked for at that very step still evaluates)
            score = result.primary_metric
            cand["rungs"].append({"step": rung.step, "score": None if score is None or math.isnan(score) else score})
            emit(
                {
                    "kind": "rung",
                    "lr": cand["lr"],
                    "step": rung.step,
                    "score": score,
                    "metric": result.primary_metric_name,
                    "rung": rung.index,
                }
            )

    try:
        for rung in rungs if state["chosen_lr"] is None else ():
            ins = [by_lr[lr] for lr in grid if _in_at(by_lr[lr], rung)]
            for cand in ins:
                if len(cand["rungs"]) <= rung.index:  # a rung finished by an earlier call is not re-run
                    run_candidate(cand, rung)
                    _save_state(root, state, started)
                    if interrupted:
                        break
            if interrupted:
                break
            order = rank({c["lr"]: _score(c, rung.index) for c in ins})
            if rung.index == len(rungs) - 1:
                state["chosen_lr"] = order[0]  # the last rung picks; its runner-up is not "pruned"
                break
            kept = survivors(order, {c["lr"]: _score(c, rung.index) for c in ins}, state.get("noise", 0.0))
            total = _steps(state) + remaining_cost(rungs, rung.index, len(kept))
            for lr in order[len(kept) :]:
                if by_lr[lr]["pruned_at_step"] is None:
                    by_lr[lr]["pruned_at_step"] = rung.step
                    emit({"kind": "pruned", "lr": lr, "rung": rung.index})
            _save_state(root, state, started)
    finally:
        _save_state(root, state, started)
    if state["chosen_lr"] is not None:
        for lr in grid:  # the checkpoints were only there to resume; the chosen lr is trained afresh
            shutil.rmtree(root / _folder(lr), ignore_errors=True)
    result = _result(state, rungs, full_steps, root)
    if temporary and state["chosen_lr"] is not None:
        shutil.rmtree(root, ignore_errors=True)
        result.workdir = None
    return result


def _in_at(cand: dict, rung: Rung) -> bool:
    """Whether a candidate takes part in a rung: not pruned, or pruned at this rung or a later one."""
    return cand["pruned_at_step"] is None or rung.index < len(cand["rungs"])


def _score(cand: dict, index: int) -> float:
    score = cand["rungs"][index]["score"]
    return math.nan if score is None else score


def _folder(lr: float) -> str:
    return f"lr-{lr:.3g}"


def _steps(state: dict) -> int:
    return sum(c["steps"] for c in state["candidates"])


def _identity(config: RunConfig, grid: list[float], owner: dict | None = None) -> dict:
    """What must match for a workdir's state to be resumed: the run settings bar lr, notes and where it runs
    (the checkpoints' NOT_FINGERPRINTED), the grid and the owner."""
    from moduletune.tuning.checkpoints import NOT_FINGERPRINTED  # imports torch: only when a search runs

    settings = config.replace(lr=None, lr_search=False, extra={}).to_dict()
    return {**_comparable(settings, NOT_FINGERPRINTED), "grid": grid, "owner": owner or {}}


def _comparable(identity: dict, ignored) -> dict:
    """An identity less the settings that never decide a resume (also applied to a stored one, which older
    versions wrote with the device in it)."""
    return {k: v for k, v in identity.items() if k not in ignored}


def _new_state(config: RunConfig, grid: list[float], owner: dict | None = None) -> dict:
    return {
        "version": 1,
        "identity": _identity(config, grid, owner),
        "selection": config.lr_selection,
        "metric": None,
        "chosen_lr": None,
        "seconds": 0.0,
        "candidates": [{"lr": lr, "rungs": [], "pruned_at_step": None, "steps": 0} for lr in grid],
    }


def _load_state(root: Path, config: RunConfig, grid: list[float], owner: dict | None = None) -> dict | None:
    from moduletune.tuning.checkpoints import NOT_FINGERPRINTED

    path = root / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    found = {"owner": {}, **_comparable(state.get("identity") or {}, NOT_FINGERPRINTED)}
    if found != _identity(config, grid, owner):
        raise SearchError(
            f"{path} holds a search with other settings or of another run; use another workdir or remove that one"
        )
    state["base_seconds"] = state["seconds"]
    return state


def _save_state(root: Path, state: dict, started: float) -> None:
    """search.json, written atomically; seconds adds this call's time to earlier calls'."""
    state["seconds"] = state.get("base_seconds", 0.0) + time.perf_counter() - started
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps({k: v for k, v in state.items() if k != "base_seconds"}, indent=1))
    tmp.replace(root / STATE_FILE)


def _result(state: dict, rungs: list[Rung], full_steps: int, root: Path) -> SearchResult:
    cost = _steps(state)
    candidates = [{**c, "score": c["rungs"][-1]["score"] if c["rungs"] else None} for c in state["candidates"]]
    return SearchResult(
        chosen_lr=state["chosen_lr"],
        metric=state["metric"] or "",
        selection=state["selection"],
        grid=[c["lr"] for c in state["candidates"]],
        rungs=[dataclasses.asdict(r) for r in rungs],
        candidates=candidates,
        cost_steps=cost,
        full_steps=full_steps,
        cost_ratio=cost / full_steps,
        grid_cost_ratio=float(len(state["candidates"])),
        seconds=state["seconds"],
        stopped=state["chosen_lr"] is None,
        workdir=str(root),
    )
