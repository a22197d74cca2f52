"""lr_search(config) -> SearchResult: successive halving over a learning-rate grid, with a stated verdict.

With n candidates and a full run of R steps, k = ceil(log2 n) rungs train the survivors to R/2^k, ...,
R/2 steps (each resumed from its own checkpoint, on the full run's schedule) and keep the better half
after each rung. For 5 candidates that costs 1.5 full runs where trying every one costs 5. Candidates that
learned and cannot be told from the cut go on too, within a budget of MAX_COST runs in all.

Every search ends with a verdict (SearchResult.verdict), judged on the last rung's held-out scores:
- clear: the chosen lr beat every other candidate by more than the noise band;
- tied: several were within noise of the best; the choice among them is the family default if it is tied, else
  the tied lr nearest the middle of the grid (never silently the lowest);
- edge: the best lr was an end of the grid, clearly ahead of its neighbour: the grid is extended by half-decade
  steps beyond that end (EXTEND_POINTS at most, each costing half a run); still at the edge, the chosen lr's
  score is a lower bound on what the module can do;
- no-learner: no candidate beat chance; the lr is chosen as for a tie and the final runs are flagged.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path

from moduletune.tuning.chance import noise_band
from moduletune.tuning.config import RunConfig
from moduletune.tuning.glue import rank_value
from moduletune.tuning.search_state import Rung, SearchResult, load_state, new_state, result_of, save_state, steps_taken
from moduletune.tuning.verdict import EDGE, NO_LEARNER, TIED, SearchError, grid_middle, judge, rank, tie_choice

MAX_COST = 2.5  # a search's steps before any edge extension, in full runs: halving's 1.5 plus near-ties kept
EXTEND_POINTS = 2  # half-decade points added beyond an edge at most (one decade), each trained to the last rung


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


def survivors(
    order: list[float], scores: dict[float, float], noise: float, learned=None, room: int | None = None
) -> list[float]:
    """Who goes on after a rung: the better half, plus candidates that learned and are within `noise` of the worst
    of that half, nearest the cut first, while they fit in `room` (how many more candidates the budget allows).

    Early in training held-out scores may be indistinguishable (STS-B query-only after 21 steps: every Pearson
    within ±0.14 of 0 on 200 rows); pruning an lr that learned on such a coin toss can drop the one that wins
    later, so those go on. A candidate still at chance is never kept for being close: an uninformative rung
    keeps only the better half (ties broken toward the preferred lr), so it does not turn into the whole grid.
    """
    half = order[: math.ceil(len(order) / 2)]
    cutoff = rank_value(scores[half[-1]])
    learned = learned or {}
    close = [lr for lr in order[len(half) :] if learned.get(lr, True) and rank_value(scores[lr]) >= cutoff - noise]
    if room is not None:
        close = close[: max(0, room)]
    return half + close


def candidate_config(config: RunConfig, lr: float) -> RunConfig:
    """The run one candidate is: the config at that lr, scored on the selection set."""
    return config.replace(
        lr=lr, lr_search=False, eval_on="holdout" if config.lr_selection == "holdout" else "validation"
    )


def lr_search(
    config: RunConfig, on_event=None, workdir: str | Path | None = None, owner: dict | None = None
) -> SearchResult:
    """Successive halving over config.search_grid, then a verdict (extending the grid past an edge); resumable:
    a later call with the same workdir goes on.

    on_event gets each candidate's step events (with the search's cumulative step and total), a "rung"
    event after each rung evaluation and a "pruned" event per dropped candidate. Returning True from it
    stops at the end of that step, leaving checkpoints and workdir/search.json to resume from (without a
    workdir, a temporary folder is used, kept only when stopped: result.workdir names it).
    A workdir is resumed only by the search it was made for: the same settings (bar where it runs: a resumed
    search may land on another device) and the same owner (a worker passes its registry and run id, which
    also stamp each candidate's checkpoint; see tuning.checkpoints).
    """
    from moduletune.tuning.train import planned_steps

    config.validate()
    temporary = workdir is None
    root = Path(tempfile.mkdtemp(prefix="lr-search-") if temporary else workdir)
    grid = list(config.search_grid)
    full_steps = planned_steps(candidate_config(config, grid[0]))[1]
    rungs = schedule(len(grid), full_steps)
    state = load_state(root, config, grid, owner) or new_state(config, grid, owner)
    run = _Runner(config, state, root, on_event, owner, rungs, full_steps)
    try:
        if state["chosen_lr"] is None:
            for rung in rungs:
                ins = [c for c in state["candidates"] if _in_at(c, rung)]
                state.setdefault("rung_counts", {})[str(rung.step)] = len(ins)
                if not run.train_all(ins, rung):
                    break
                if rung.index < len(rungs) - 1:
                    run.prune(rung)
            else:
                run.decide()
    finally:
        run.save()
    if state["chosen_lr"] is not None:
        for cand in state["candidates"]:  # the checkpoints were only there to resume; the chosen lr trains afresh
            shutil.rmtree(root / _folder(cand["lr"]), ignore_errors=True)
    result = result_of(state, rungs, full_steps, root)
    if temporary and state["chosen_lr"] is not None:
        shutil.rmtree(root, ignore_errors=True)
        result.workdir = None
    return result


class _Runner:
    """One search's candidates trained to their rungs, its halving, its verdict, and its state (search.json)."""

    def __init__(self, config: RunConfig, state: dict, root: Path, on_event, owner, rungs: list[Rung], full: int):
        self.config, self.state, self.root, self.owner = config, state, root, owner
        self.rungs, self.full_steps = rungs, full
        self.grid = [c["lr"] for c in state["candidates"] if not c.get("extended")]
        self.emit = on_event or (lambda event: None)
        # The steps the search expects to take: grows when near-ties are kept or the grid is extended.
        self.total = max(planned_cost(rungs), steps_taken(state))
        self.started, self.steps_at_start = time.perf_counter(), steps_taken(state)
        self.interrupted = False

    def save(self) -> None:
        save_state(self.root, self.state, self.started)

    def train_all(self, cands: list[dict], rung: Rung) -> bool:
        """Train each candidate to the rung and score it (one scored by an earlier call is not re-run); False when a
        stop was asked for."""
        for cand in cands:
            if _at(cand, rung.step) is None:
                self.train(cand, rung)
                self.save()
                if self.interrupted:
                    return False
        return True

    def prune(self, rung: Rung) -> None:
        """After a rung: keep the better half and the near-ties that fit in MAX_COST runs, drop the rest. The
        decision is recorded, so a resumed search keeps it whatever it has spent since."""
        decided = self.state.setdefault("kept", {})
        ins = [c for c in self.state["candidates"] if _in_at(c, rung)]
        if str(rung.step) not in decided:
            scores = {c["lr"]: _score(c, rung.step) for c in ins}
            order = rank(scores, grid_middle(self.grid))
            half = math.ceil(len(order) / 2)
            spent = steps_taken(self.state) + remaining_cost(self.rungs, rung.index, half)
            each = self.rungs[-1].step - rung.step  # a near-tie kept costs at most its steps to the last rung
            room = int((MAX_COST * self.full_steps - spent) // each) if each > 0 else 0
            learned = {c["lr"]: bool(_at(c, rung.step).get("learned", True)) for c in ins}
            decided[str(rung.step)] = survivors(order, scores, self.state.get("noise", 0.0), learned, room)
        kept = decided[str(rung.step)]
        self.total = max(self.total, steps_taken(self.state) + remaining_cost(self.rungs, rung.index, len(kept)))
        for cand in ins:
            if cand["lr"] not in kept and cand["pruned_at_step"] is None:
                cand["pruned_at_step"] = rung.step
                self.emit({"kind": "pruned", "lr": cand["lr"], "rung": rung.index})
        self.save()

    def decide(self) -> None:
        """The verdict on the last rung's scores; an edge first extends the grid (up to EXTEND_POINTS half-decades,
        each new lr trained to the last rung), then the verdict is taken again."""
        last, cands = self.rungs[-1], self.state["candidates"]
        while True:
            pending = [c for c in cands if c.get("extended") and _at(c, last.step) is None]
            if pending:
                if not self.train_all(pending, last):
                    return
                continue
            scored = [c for c in cands if _at(c, last.step) is not None]
            scores = {c["lr"]: _score(c, last.step) for c in scored}
            learned = {c["lr"] for c in scored if _at(c, last.step).get("learned", True)}
            verdict = judge(scores, learned, self.state.get("noise", 0.0), [c["lr"] for c in cands])
            if verdict["verdict"] in (TIED, NO_LEARNER):
                verdict["chosen_lr"] = tie_choice(verdict["tied"], self.config, self.grid)
            beyond = _beyond(verdict["chosen_lr"], cands) if verdict["verdict"] == EDGE else None
            if beyond is None:
                break
            cands.append({"lr": beyond, "rungs": [], "pruned_at_step": None, "steps": 0, "extended": True})
            self.total += last.step
        self.state["verdict"] = verdict
        self.state["chosen_lr"] = verdict["chosen_lr"]

    def train(self, cand: dict, rung: Rung) -> None:
        """One candidate to the rung's step (resumed from its checkpoint), then its held-out score."""
        from moduletune.tuning.train import fine_tune

        before = steps_taken(self.state) - cand["steps"]  # the other candidates' steps, for the cumulative count

        def forward(event: dict):
            if event.get("kind") != "step":
                return None
            step = before + event["step"]
            rate = (step - self.steps_at_start) / max(time.perf_counter() - self.started, 1e-9)
            total = max(self.total, step)
            stop = self.emit(
                {
                    "kind": "step",
                    "step": step,
                    "total_steps": total,
                    "loss": event["loss"],
                    "lr": event["lr"],
                    "examples_per_second": event["examples_per_second"],
                    "eta_seconds": (total - step) / rate if rate > 0 else event["eta_seconds"],
                    "epoch": event["epoch"],
                    "candidate_lr": cand["lr"],
                }
            )
            self.interrupted = self.interrupted or bool(stop)
            return stop

        result = fine_tune(
            candidate_config(self.config, cand["lr"]),
            forward,
            checkpoint_dir=self.root / _folder(cand["lr"]),
            stop_at_step=rung.step,
            owner=self.owner,
        )
        cand["steps"] = result.steps
        self.state["metric"] = result.primary_metric_name
        if result.chance_metric is not None:  # how far apart two scores must be to tell them apart
            self.state["chance"] = result.chance_metric
            self.state["noise"] = noise_band(result.primary_metric_name, result.chance_metric, result.eval_examples)
        if result.steps >= rung.step:  # reached the rung (a stop asked for at that very step still evaluates)
            score = result.primary_metric
            score = None if score is None or math.isnan(score) else score
            cand["rungs"].append({"step": rung.step, "score": score, "learned": bool(result.learned)})
            self.emit(
                {
                    "kind": "rung",
                    "lr": cand["lr"],
                    "step": rung.step,
                    "score": score,
                    "metric": result.primary_metric_name,
                    "rung": rung.index,
                }
            )


def _beyond(chosen: float, cands: list[dict]) -> float | None:
    """The next half-decade lr past the edge `chosen` sits at, or None once EXTEND_POINTS were added (or past 1)."""
    lrs = sorted(c["lr"] for c in cands)
    if sum(bool(c.get("extended")) for c in cands) >= EXTEND_POINTS:
        return None
    nxt = _half_decade(chosen, up=chosen == lrs[-1])
    return nxt if nxt <= 1 and nxt not in lrs else None


def _half_decade(lr: float, up: bool) -> float:
    """The 1-3-10 neighbour of lr: 1e-2 -> 3e-2 (up) or 3e-3 (down); 3e-2 -> 1e-1 or 1e-2."""
    exponent = math.floor(math.log10(lr) + 1e-9)
    points = [float(f"{m}e{e}") for e in range(exponent - 1, exponent + 2) for m in (1, 3)]
    here = min(range(len(points)), key=lambda i: abs(math.log10(points[i]) - math.log10(lr)))
    return points[here + 1] if up else points[here - 1]


def _in_at(cand: dict, rung: Rung) -> bool:
    """Whether a candidate takes part in a rung: not extended past an edge, and not pruned (or pruned at this rung
    or a later one)."""
    if cand.get("extended"):
        return False
    return cand["pruned_at_step"] is None or cand["pruned_at_step"] >= rung.step


def _at(cand: dict, step: int) -> dict | None:
    """A candidate's score entry at a rung's step, if it reached it."""
    return next((r for r in cand["rungs"] if r["step"] == step), None)


def _score(cand: dict, step: int) -> float:
    entry = _at(cand, step)
    return math.nan if entry is None or entry["score"] is None else entry["score"]


def _folder(lr: float) -> str:
    return f"lr-{lr:.3g}"
