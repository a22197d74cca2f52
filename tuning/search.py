"""lr_search(config) -> SearchResult: a learning-rate grid raced on a held-out slice, with a stated verdict.

Every candidate trains on the full run's schedule (R steps, resumed from its own checkpoint between rungs) and is
scored at four rungs. R/8 comes right after the 10% warm-up, when no candidate has learned yet (19 of 19 searches
of the paper preset on SST-2 were at chance there, held-out score and training loss alike): only those that
diverged are dropped. At R/4 the candidates are ranked (those that learned by held-out score, then the rest by
their training loss, which by then says which lrs move the model) and the best two go on, with any that learned
and cannot be told from the second while they fit in MAX_COST runs. At R/4 and 3R/8 a clear winner ends the
search early; otherwise the verdict is taken at R/2. For 5 candidates that costs 1.75 runs at most without a near
tie (1.25 when one is clear at R/4) where trying every one to the end costs 5.

Every search ends with a verdict (SearchResult.verdict; tuning.verdict):
- clear: the chosen lr beat every other candidate by more than the noise band;
- tied: several that learned were within noise of the best; the choice among them is the family default if it is
  tied, else the tied lr nearest the middle of the grid (never silently the lowest);
- edge: a clear best was an end of the grid: the grid is extended by half-decade steps beyond that end
  (EXTEND_POINTS at most, each trained to the deciding rung, at most half a run each) and judged again; still at
  the edge, the chosen lr's score is a lower bound on what the module can do;
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
from moduletune.tuning.verdict import CLEAR, EDGE, NO_LEARNER, TIED, SearchError, grid_middle, judge, tie_choice

MAX_COST = 2.5  # a search's steps before any edge extension, in full runs: halving's 1.5 plus near-ties kept
EXTEND_POINTS = 2  # half-decade points added beyond an edge at most (one decade), each trained to the last rung


RUNG_FRACTIONS = (1 / 8, 1 / 4, 3 / 8, 1 / 2)  # of R: prune the diverged, rank, check, decide
FINALISTS = 2  # candidates that go on from the ranking rung (plus near ties within MAX_COST)
LOSS_STEPS = 3  # a candidate's training loss at a rung: the mean of its last steps (the same batches for all)


def schedule(n: int, full_steps: int) -> list[Rung]:
    """The rungs for n candidates and an R-step run: R/8 and R/4 with every candidate, 3R/8 and R/2 with the two
    finalists (the counts are the plan; what ran is recorded)."""
    if n < 2:
        raise SearchError(f"a search needs at least 2 candidates, got {n}")
    steps = [max(1, round(full_steps * f)) for f in RUNG_FRACTIONS]
    counts = [n, n, min(n, FINALISTS), min(n, FINALISTS)]
    rungs, seen = [], set()
    for step, count in zip(steps, counts):
        if step not in seen:  # a run of a few steps has fewer distinct rungs
            seen.add(step)
            rungs.append(Rung(len(rungs), step, count))
    return rungs


def planned_cost(rungs: list[Rung]) -> int:
    """Steps the schedule takes when nothing ends it early: each candidate runs to the rung it leaves at."""
    counts = [r.candidates for r in rungs] + [0]
    return sum((counts[i] - counts[i + 1]) * r.step for i, r in enumerate(rungs))


def remaining_cost(rungs: list[Rung], index: int, kept: int) -> int:
    """Steps still to take after rung `index` when `kept` candidates go on: all of them to the ranking rung (R/4),
    from there the finalists (or, after it, all that were kept) to the last rung."""
    cost, count, prev = 0, kept, rungs[index].step
    for r in rungs[index + 1 :]:
        cost += count * (r.step - prev)
        prev = r.step
        if r.index == 1:
            count = min(count, FINALISTS)
    return cost


def finalists(order: list[float], scores: dict, noise: float, learned: dict, room: int | None = None) -> list[float]:
    """Who goes on from the ranking rung: the best FINALISTS in `order`, plus candidates that learned and are within
    `noise` of the last of them (when it learned too), nearest first, while they fit in `room` more candidates.

    A candidate still at chance is never kept for being close: near ties at chance are no reason to train every
    candidate to the end (the old rule kept all five in 5 of 6 preset searches on SST-2: 2.46 runs)."""
    best = order[:FINALISTS]
    if not learned.get(best[-1]):
        return best
    cutoff = rank_value(scores[best[-1]])
    close = [lr for lr in order[len(best) :] if learned.get(lr) and rank_value(scores[lr]) >= cutoff - noise]
    return best + (close if room is None else close[: max(0, room)])


def rung_order(entries: dict, prefer: float) -> list[float]:
    """Candidates best first at a rung (entries: lr -> its rung entry): those that learned by held-out score, then
    the rest by training loss (lower first; at R/4 it tells which lrs move the model while every held-out score is
    still at chance), then by nearness to `prefer`."""

    def key(lr: float):
        e = entries[lr]
        loss = e.get("loss")
        loss = loss if loss is not None and math.isfinite(loss) else math.inf
        if e.get("learned"):
            return (0, -rank_value(e["score"]), loss, 0.0)
        return (1, loss, abs(math.log10(lr) - math.log10(prefer)), 0.0)

    return sorted(entries, key=key)


def diverged(entry: dict, chance: float | None, noise: float) -> bool:
    """A candidate that went wrong (no score, a non-finite training loss, or clearly below chance: the minority
    class every time), which no later rung will put right."""
    score, loss = entry.get("score"), entry.get("loss")
    if score is None or (loss is not None and not math.isfinite(loss)):
        return True
    return chance is not None and not entry.get("learned") and score < chance - noise


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
            run.race()
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

    def race(self) -> None:
        """Rung by rung: train, then prune the diverged (R/8), rank and keep the finalists (R/4), and decide as soon
        as a winner is clear (R/4, 3R/8) or at the last rung. Returns early when a stop was asked for."""
        last = self.rungs[-1]
        for rung in self.rungs:
            ins = [c for c in self.state["candidates"] if _in_at(c, rung)]
            self.state.setdefault("rung_counts", {})[str(rung.step)] = len(ins)
            if not self.train_all(ins, rung):
                return
            verdict = self.judge(rung)
            if rung is last or (rung.index > 0 and verdict["verdict"] in (CLEAR, EDGE)):
                self.decide(rung)
                return
            self.prune(rung, ins)

    def judge(self, rung: Rung) -> dict:
        """The verdict on the candidates scored at this rung (tuning.verdict.judge)."""
        scored = [c for c in self.state["candidates"] if _at(c, rung.step) is not None]
        scores = {c["lr"]: _score(c, rung.step) for c in scored}
        learned = {c["lr"] for c in scored if _at(c, rung.step).get("learned", True)}
        return judge(scores, learned, self.state.get("noise", 0.0), [c["lr"] for c in self.state["candidates"]])

    def prune(self, rung: Rung, ins: list[dict]) -> None:
        """After a rung that decides nothing: the first drops the diverged, the next keeps the finalists (and near
        ties within MAX_COST runs). Each rung's decision is recorded, so a resumed search keeps it."""
        decided = self.state.setdefault("kept", {})
        if str(rung.step) not in decided:
            entries = {c["lr"]: _at(c, rung.step) for c in ins}
            noise, chance = self.state.get("noise", 0.0), self.state.get("chance")
            if rung.index == 0:
                kept = [lr for lr, e in entries.items() if not diverged(e, chance, noise)] or list(entries)
            elif rung.index == 1:
                order = rung_order(entries, grid_middle(self.grid))
                scores = {lr: e["score"] for lr, e in entries.items()}
                spent = steps_taken(self.state) + remaining_cost(self.rungs, rung.index, FINALISTS)
                each = self.rungs[-1].step - rung.step  # a near tie kept costs at most its steps to the last rung
                room = int((MAX_COST * self.full_steps - spent) // each) if each > 0 else 0
                learned = {lr: bool(e.get("learned")) for lr, e in entries.items()}
                kept = finalists(order, scores, noise, learned, room)
            else:
                kept = list(entries)
            decided[str(rung.step)] = kept
        kept = decided[str(rung.step)]
        self.total = max(self.total, steps_taken(self.state) + remaining_cost(self.rungs, rung.index, len(kept)))
        for cand in ins:
            if cand["lr"] not in kept and cand["pruned_at_step"] is None:
                cand["pruned_at_step"] = rung.step
                self.emit({"kind": "pruned", "lr": cand["lr"], "rung": rung.index})
        self.save()

    def decide(self, rung: Rung) -> None:
        """The verdict at `rung`; an edge first extends the grid (up to EXTEND_POINTS half-decades, each new lr
        trained to this rung), then the verdict is taken again."""
        cands = self.state["candidates"]
        while True:
            pending = [c for c in cands if c.get("extended") and _at(c, rung.step) is None]
            if pending:
                if not self.train_all(pending, rung):
                    return
                continue
            verdict = self.judge(rung)
            if verdict["verdict"] in (TIED, NO_LEARNER):
                verdict["chosen_lr"] = tie_choice(verdict["tied"], self.config, self.grid)
            beyond = _beyond(verdict["chosen_lr"], cands) if verdict["verdict"] == EDGE else None
            if beyond is None:
                break
            cands.append({"lr": beyond, "rungs": [], "pruned_at_step": None, "steps": 0, "extended": True})
            self.total += rung.step
        self.state["verdict"] = {**verdict, "step": rung.step}
        self.state["chosen_lr"] = verdict["chosen_lr"]

    def train(self, cand: dict, rung: Rung) -> None:
        """One candidate to the rung's step (resumed from its checkpoint), then its held-out score."""
        from moduletune.tuning.train import fine_tune

        before = steps_taken(self.state) - cand["steps"]  # the other candidates' steps, for the cumulative count
        # The training losses of this segment by step, kept in the state so that a stopped and resumed segment ends
        # with the same ones (a step replayed from an older checkpoint is written over, never counted twice).
        losses = cand.setdefault("losses", {})

        def forward(event: dict):
            if event.get("kind") != "step":
                return None
            losses[str(event["step"])] = float(event["loss"])
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
            tail = [losses[str(i)] for i in range(rung.step - LOSS_STEPS + 1, rung.step + 1) if str(i) in losses]
            loss = sum(tail) / len(tail) if tail else None
            cand["rungs"].append({"step": rung.step, "score": score, "learned": bool(result.learned), "loss": loss})
            cand["losses"] = {}
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
