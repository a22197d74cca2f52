"""Every lr search states its verdict: clear, tied (and which rule chose), edge (the grid extended, a lower bound
when still at the edge) or no-learner; a search too small to choose is refused before it is queued. The verdict
rules on numbers, then real searches on real SST-2 rows (the classifier head over a cached encoder, seconds each)."""

from __future__ import annotations

import json
import math

import pytest

from moduletune.tuning.config import RunConfig
from moduletune.tuning.search import MAX_COST, diverged, finalists, lr_search, rung_order
from moduletune.tuning.verdict import (
    CLEAR,
    EDGE,
    NO_LEARNER,
    TIED,
    SearchError,
    check_searchable,
    judge,
    selection_rows,
    tie_choice,
)


def test_a_clear_winner_inside_the_grid_is_clear_and_at_its_end_an_edge():
    lrs = [1e-4, 1e-3, 1e-2]
    clear = judge({1e-4: 0.55, 1e-3: 0.80, 1e-2: 0.60}, {1e-3, 1e-2}, 0.05, lrs)
    assert (clear["verdict"], clear["chosen_lr"], clear["tied"]) == (CLEAR, 1e-3, [])
    edge = judge({1e-4: 0.55, 1e-3: 0.62, 1e-2: 0.80}, {1e-3, 1e-2}, 0.05, lrs)
    assert (edge["verdict"], edge["chosen_lr"], edge["lower_bound"]) == (EDGE, 1e-2, True)
    low = judge({1e-4: 0.80, 1e-3: 0.62}, {1e-4, 1e-3}, 0.05, lrs)  # the low end counts too
    assert low["verdict"] == EDGE and low["chosen_lr"] == 1e-4


def test_scores_within_noise_tie_and_the_rule_never_silently_takes_the_lowest():
    scores = {1e-3: 0.80, 3e-3: 0.81, 1e-2: 0.79, 3e-2: 0.50}
    verdict = judge(scores, {1e-3, 3e-3, 1e-2}, 0.05, list(scores))
    assert verdict["verdict"] == TIED and verdict["tied"] == [1e-3, 3e-3, 1e-2]
    layernorm = RunConfig(modules=("layernorm",))  # its default, 1e-2, is tied: it is the choice
    assert tie_choice(verdict["tied"], layernorm, list(scores)) == 1e-2
    query = RunConfig(modules=("query",))  # default 3e-4 is not tied: the tied lr nearest the grid's middle
    assert tie_choice(verdict["tied"], query, [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]) == 1e-3
    # One that did not learn is never in the tie set, however close its score.
    assert judge({1e-3: 0.80, 3e-3: 0.79}, {1e-3}, 0.05, [1e-3, 3e-3])["verdict"] == EDGE


def test_nothing_that_learned_is_a_no_learner():
    verdict = judge({1e-4: 0.0, 1e-3: 0.0, 1e-2: math.nan}, set(), 0.06, [1e-4, 1e-3, 1e-2])
    assert verdict["verdict"] == NO_LEARNER and verdict["tied"] == [1e-4, 1e-3, 1e-2]


def test_the_ranking_rung_orders_learners_by_score_then_the_rest_by_training_loss():
    """At R/4 of the paper preset's searches on SST-2 (2,000 rows, 1 epoch) the held-out scores were mostly still at
    chance, but the training loss of the last steps already told 1e-2 (0.658) from 3e-3 (0.682) and 1e-3 (0.686):
    query-only, all layers; 1e-2 went on to 0.78 at R/2, where 3e-3 reached 0.68."""
    entries = {
        1e-4: {"score": 0.55, "learned": False, "loss": 0.692},
        3e-4: {"score": 0.565, "learned": False, "loss": 0.691},
        1e-3: {"score": 0.56, "learned": False, "loss": 0.686},
        3e-3: {"score": 0.56, "learned": False, "loss": 0.681},
        1e-2: {"score": 0.56, "learned": False, "loss": 0.658},
    }
    assert rung_order(entries, 1e-3)[:2] == [1e-2, 3e-3]
    entries[1e-4] = {"score": 0.70, "learned": True, "loss": 0.69}  # one that learned goes first, whatever its loss
    assert rung_order(entries, 1e-3)[:2] == [1e-4, 1e-2]
    entries[3e-4] = {"score": 0.56, "learned": False, "loss": math.nan}  # a diverged loss goes last
    assert rung_order(entries, 1e-3)[-1] == 3e-4


def test_finalists_are_two_plus_learners_within_noise_within_the_budget():
    order = [1e-2, 1e-3, 1e-4, 3e-4, 3e-3]
    scores = {1e-2: 0.70, 1e-3: 0.68, 1e-4: 0.66, 3e-4: 0.65, 3e-3: 0.64}
    everyone = dict.fromkeys(order, True)
    assert finalists(order, scores, 0.1, everyone) == order  # all learned and are close: all go on
    assert finalists(order, scores, 0.1, everyone, room=1) == order[:3]  # as many as the budget allows
    assert finalists(order, scores, 0.01, everyone) == order[:2]  # clearly apart: the two best
    at_chance = dict.fromkeys(order, False)
    assert finalists(order, scores, 0.1, at_chance) == order[:2]  # near ties at chance never go on for being close
    assert MAX_COST == 2.5


def test_only_what_went_wrong_is_dropped_right_after_the_warm_up():
    assert diverged({"score": 0.44, "learned": False, "loss": 0.72}, 0.56, 0.07)  # the minority class every time
    assert diverged({"score": None, "learned": False, "loss": 0.7}, 0.56, 0.07)
    assert diverged({"score": 0.56, "learned": False, "loss": math.inf}, 0.56, 0.07)
    assert not diverged({"score": 0.52, "learned": False, "loss": 0.69}, 0.56, 0.07)  # within noise: kept


def test_a_search_too_small_to_choose_is_refused_naming_what_would_do():
    small = RunConfig(task="sst2", modules=("layernorm",), max_train=200, lr_search=True)
    assert selection_rows(small) == 20
    with pytest.raises(SearchError, match=r"here 20 rows, fewer than the 100 .* use at least 995 training examples"):
        check_searchable(small)
    check_searchable(small.replace(max_train=995))
    check_searchable(small.replace(holdout_fraction=0.5))  # 100 held out
    check_searchable(small.replace(lr_search=False))  # only a search is judged
    with pytest.raises(SearchError, match="wnli has only 635 training rows: raise the holdout fraction"):
        check_searchable(RunConfig(task="wnli", modules=("layernorm",), lr_search=True))
    with pytest.raises(SearchError, match="needs at least 100 evaluation examples"):
        check_searchable(small.replace(max_train=2000, lr_selection="eval", max_eval=50))


def test_the_cli_refuses_a_too_small_search_in_one_line_and_queues_nothing(home, glue_dir):
    import subprocess
    import sys

    from moduletune.tasks.registry import Registry

    args = ["--task", "sst2", "--modules", "LN", "--max-train", "200", "--lr-search"]
    for command in (["submit", *args], ["sweep", *args], ["run", *args]):
        proc = subprocess.run([sys.executable, "-m", "moduletune.cli.main", *command], capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "use at least 995 training examples" in proc.stderr
    assert Registry().count() == 0 and Registry().studies() == []


# ---------------------------------------------------------------------------------------------- real searches


def head_search(glue_dir, grid) -> RunConfig:
    """The classifier head over the frozen, cached encoder on 1,000 SST-2 rows (100 held out), 4 epochs."""
    return RunConfig(
        task="sst2",
        modules=("classifier",),
        max_train=1000,
        epochs=4,
        max_seq_len=64,
        prefix_cache="on",
        lr_search=True,
        lr_grid=grid,
        glue_dir=str(glue_dir),
        device="cpu",
    )


def shown(result, config: RunConfig) -> str:
    """The search as the Runs tab shows it: recorded by the registry as a worker records it, then summarised."""
    from moduletune.app.runs import views
    from moduletune.tasks import submission
    from moduletune.tasks.registry import Registry
    from moduletune.tuning.finals import final_configs

    registry = Registry()
    search_id = submission.submit(registry, config)
    token = registry.claim(search_id, "test-worker", "cpu")
    outcome = {**result.to_dict(), "primary_metric_name": result.metric}
    registry.complete_search(search_id, token, outcome, [], final_configs(config, result))
    final = registry.children(search_id, kind="run")[0].id
    return views.run_detail(registry, search_id).summary + "\n" + views.run_detail(registry, final).summary


@pytest.mark.study
def test_real_searches_state_tied_edge_and_no_learner(glue_dir, home):
    tied_config = head_search(glue_dir, (1e-2, 1.2e-2))
    tied = lr_search(tied_config)
    assert tied.verdict == TIED and tied.tied == [1e-2, 1.2e-2] and not tied.extended
    assert json.loads(json.dumps(tied.to_dict()))["verdict"] == "tied"  # lr_search.verdict in `run --json`
    assert "**verdict: tied**" in shown(tied, tied_config)

    # 1e-2 clearly beats 3e-3 (0.72 vs chance 0.56 on 100 held-out rows): the best sits at the grid's top, so the
    # grid is extended by half-decades (3e-2, ...) and judged again.
    edge_config = head_search(glue_dir, (3e-3, 1e-2))
    edge = lr_search(edge_config)
    assert edge.extended and edge.extended[0] == 3e-2 and edge.grid == sorted([3e-3, 1e-2, *edge.extended])
    extended = [c for c in edge.candidates if c["extended"]]
    assert all(c["steps"] == edge.decided_at_step for c in extended)  # trained to the deciding rung, as the others
    assert edge.cost_ratio <= 2 * 0.5 + 0.5 * len(extended) + 1e-9  # two candidates to R/2 at most, each extension
    assert edge.verdict in (EDGE, TIED, CLEAR) and edge.lower_bound == (edge.verdict == EDGE)
    assert "was extended by 0.03" in edge.verdict_note and "extended by 0.03" in shown(edge, edge_config)

    none_config = head_search(glue_dir, (1e-7, 1e-6))
    none = lr_search(none_config)
    assert none.verdict == NO_LEARNER and none.chosen_lr in (1e-7, 1e-6) and not none.extended
    screen = shown(none, none_config)
    assert "**verdict: no-learner**" in screen and "verdict **no-learner**" in screen  # the search, its final run
