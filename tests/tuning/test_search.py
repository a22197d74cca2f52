"""Successive halving over the learning-rate grid: the schedule, ranking, resume, and a real STS-B search."""

import json
import math
import time

import pytest

from moduletune.tuning import search
from moduletune.tuning.config import RunConfig
from moduletune.tuning.finals import final_config
from moduletune.tuning.search import Rung, lr_search, planned_cost, schedule
from moduletune.tuning.search_state import STATE_FILE
from moduletune.tuning.train import fine_tune
from moduletune.tuning.verdict import VERDICTS, rank


def test_five_candidates_race_to_two_finalists_and_cost_at_most_one_and_three_quarter_runs():
    rungs = schedule(5, 800)
    # R/8 (drop the diverged), R/4 (rank, keep two), 3R/8 and R/2 (the finalists; a clear winner ends it early).
    assert rungs == [Rung(0, 100, 5), Rung(1, 200, 5), Rung(2, 300, 2), Rung(3, 400, 2)]
    assert planned_cost(rungs) == 5 * 200 + 2 * 200 and planned_cost(rungs) / 800 == 1.75
    assert [(r.step, r.candidates) for r in schedule(2, 800)] == [(100, 2), (200, 2), (300, 2), (400, 2)]
    assert planned_cost(schedule(6, 800)) / 800 == 2.0
    assert [r.step for r in schedule(5, 4)] == [1, 2]  # a run of a few steps has fewer distinct rungs
    assert search.remaining_cost(rungs, 1, 2) == 2 * 200
    with pytest.raises(search.SearchError, match="at least 2"):
        schedule(1, 800)


def test_rank_nan_is_worst_and_ties_go_to_the_smaller_lr():
    assert rank({1e-3: 0.5, 3e-4: 0.5, 1e-2: math.nan, 3e-3: 0.6, 1e-4: None}) == [3e-3, 3e-4, 1e-3, 1e-4, 1e-2]


def tiny(glue_dir, **kw):
    base = dict(
        task="rte",
        modules=("layernorm",),
        layers="last:2",
        max_train=120,
        batch_size=16,
        epochs=2,
        glue_dir=str(glue_dir),
        device="cpu",
        lr_grid=(1e-4, 1e-3, 1e-2, 1e-1, 3e-1),
    )
    return RunConfig(**{**base, **kw})


def test_search_events_cost_and_final_config(glue_dir, home, tmp_path):
    cfg = tiny(glue_dir)
    events = []
    result = lr_search(cfg, events.append, workdir=tmp_path / "s")
    # 108 training rows after the 10% holdout: 7 steps an epoch, R = 14; rungs at 2, 4, 5 and 7 steps.
    assert result.full_steps == 14
    # Every candidate to R/4 unless it diverged at R/8, the finalists on to where a winner was clear (or R/2):
    # never more than MAX_COST runs before an edge extension.
    decided = result.decided_at_step
    assert [r["step"] for r in result.rungs] == [2, 4, 5, 7] and decided in (4, 5, 7)
    original = [c for c in result.candidates if not c["extended"]]
    assert sum(c["steps"] for c in original) <= 2.5 * 14 and result.grid_cost_ratio == 5
    assert result.cost_steps == sum(c["steps"] for c in result.candidates)
    assert result.cost_ratio == pytest.approx(result.cost_steps / 14) and result.metric == "accuracy"
    assert result.selection == "holdout" and result.chosen_lr in result.grid and not result.stopped
    assert all(
        c["steps"] == c["rungs"][-1]["step"] and c["score"] == c["rungs"][-1]["score"] for c in result.candidates
    )
    pruned = [c for c in result.candidates if c["pruned_at_step"]]
    assert all(c["steps"] == c["pruned_at_step"] in (2, 4) for c in pruned)
    assert all(c["steps"] == decided for c in result.candidates if not c["pruned_at_step"])
    assert [r["candidates"] for r in result.rungs][:2] == [5, 5 - sum(c["pruned_at_step"] == 2 for c in pruned)]
    steps = [e for e in events if e["kind"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, result.cost_steps + 1))
    assert steps[-1]["total_steps"] == result.cost_steps  # the planned total follows what the rungs kept
    assert {"loss", "lr", "examples_per_second", "eta_seconds", "epoch", "candidate_lr"} <= steps[0].keys()
    assert sum(e["kind"] == "rung" for e in events) == sum(len(c["rungs"]) for c in result.candidates)
    assert sum(e["kind"] == "pruned" for e in events) == len(pruned)
    assert not any(p.is_dir() for p in (tmp_path / "s").iterdir())  # candidate checkpoints are gone
    assert json.loads(json.dumps(result.to_dict()))["chosen_lr"] == result.chosen_lr
    final = final_config(cfg, result)
    assert final.lr == result.chosen_lr and not final.lr_search and final.eval_on == "validation"
    assert final.extra["lr_search"] == {
        "chosen_lr": result.chosen_lr,
        "selection": "holdout",
        "grid": result.grid,
        "verdict": result.verdict,
        "lower_bound": result.lower_bound,
        "searched_layers": "last:2",
        **({"tied": result.tied} if result.tied else {}),
    }
    assert result.verdict in VERDICTS and result.verdict_note
    # Called again on a finished search, it does no work.
    assert lr_search(cfg, workdir=tmp_path / "s").candidates == result.candidates


def test_interrupted_search_resumes_to_the_same_choice(glue_dir, home, tmp_path):
    cfg = tiny(glue_dir)
    whole = lr_search(cfg)
    stopped = lr_search(cfg, lambda e: e["kind"] == "step" and e["step"] == 13, workdir=tmp_path / "s")
    assert stopped.stopped and stopped.chosen_lr is None and stopped.cost_steps == 13
    assert (tmp_path / "s" / STATE_FILE).is_file()
    events = []
    resumed = lr_search(cfg, events.append, workdir=tmp_path / "s")
    assert [e["step"] for e in events if e["kind"] == "step"][0] == 14  # carries on; finished rungs not re-run
    assert resumed.chosen_lr == whole.chosen_lr and resumed.cost_steps == whole.cost_steps
    assert [c["rungs"] for c in resumed.candidates] == [c["rungs"] for c in whole.candidates]
    with pytest.raises(search.SearchError, match="other settings"):
        lr_search(cfg.replace(seed=1), workdir=tmp_path / "s")


@pytest.mark.study
def test_stsb_query_only_search_finds_an_lr_that_learns(glue_dir, home, tmp_path):
    """The case the search exists for: query-only at its default lr barely moves STS-B; the searched lr does."""
    cfg = RunConfig(
        task="stsb",
        modules=("query",),
        layers="all",
        max_train=2000,
        epochs=3,
        seed=0,
        glue_dir=str(glue_dir),
        device="cpu",
    )
    t0 = time.perf_counter()
    default = fine_tune(cfg)
    default_seconds = time.perf_counter() - t0
    found = lr_search(cfg, workdir=tmp_path / "search")
    t0 = time.perf_counter()
    tuned = fine_tune(final_config(cfg, found))
    tuned_seconds = time.perf_counter() - t0
    print(
        f"\nSTS-B query-only, 2000 rows, 3 epochs, seed 0: default lr {cfg.learning_rate:g} -> Pearson "
        f"{default.primary_metric:.3f} ({default_seconds:.0f}s); searched lr {found.chosen_lr:g} (holdout "
        f"{found.candidates[cfg.search_grid.index(found.chosen_lr)]['score']:.3f}) -> Pearson "
        f"{tuned.primary_metric:.3f} ({tuned_seconds:.0f}s); search cost {found.cost_ratio:.2f} runs "
        f"({found.cost_steps}/{found.full_steps} steps, grid {found.grid_cost_ratio:.0f}), {found.seconds:.0f}s"
    )
    print("candidates:", [(c["lr"], [round(r["score"], 3) for r in c["rungs"]]) for c in found.candidates])
    assert default.primary_metric < 0.2
    assert tuned.primary_metric > 0.3 and tuned.learned
    # At most every candidate to the last rung (R/2, rounded up to whole steps): about 2.5 runs.
    assert found.cost_steps <= len(found.grid) * found.rungs[-1]["step"] and found.cost_ratio < 2.55
