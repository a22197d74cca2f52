"""A study is one thing: queued by `moduletune sweep`, watched, paused, resumed, cancelled and retried as a whole
(real `moduletune` processes and real workers), and a run queued on its own goes before a study's runs."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from moduletune.tasks import submission
from moduletune.tasks.database import runs
from moduletune.tasks.registry import Registry
from moduletune.tasks.studies import SINGLE_PRIORITY, STUDY_PRIORITY, progress_of
from moduletune.tuning.config import RunConfig

from .conftest import TINY, cli, cli_json, wait_for

# A study of several tiny runs: LN and Q on RTE, each of the six layers, one seed (12 runs).
SWEEP = ["--modules", "LN,Q", "--layers", "each", *TINY[TINY.index("--max-train") :], "--task", "rte"]


def statuses(study_id: int) -> list[str]:
    return sorted(r.status for r in Registry().list_runs(study_id=study_id))


def test_a_sweep_is_a_study_shown_and_cancelled_in_one_call(env, workers):
    out = cli_json("sweep", *SWEEP, "--name", "ln vs q by layer")
    study_id = out["study_id"]
    assert len(out["ids"]) == 12 and out["searches"] == 0
    shown = cli_json("study", "show", str(study_id))
    assert shown["name"] == "ln vs q by layer" and shown["status"] == "queued"
    counts = {k: shown["progress"][k] for k in ("total", "done", "queued", "running")}
    assert counts == {"total": 12, "done": 0, "queued": 12, "running": 0}
    assert shown["spec"]["layers"] == ["0", "1", "2", "3", "4", "5"] and shown["spec"]["modules"] == [
        "layernorm",
        "query",
    ]
    assert f"{study_id}" in cli("study", "list").stdout
    workers.start("--workers", "1")
    registry = Registry()
    wait_for(lambda: registry.study(study_id).progress.done >= 1, 300, "the study's first run", pool=workers)
    running = cli_json("study", "show", str(study_id))["progress"]
    assert running["done"] >= 1 and running["done"] + running["queued"] + running["running"] == 12
    done = cli_json("study", "cancel", str(study_id))
    assert done["cancelled"] + done["stopping"] + running["done"] <= 12
    assert "queued" not in statuses(study_id)  # one call: nothing of the study is left to start
    wait_for(lambda: "running" not in statuses(study_id), 120, "the running run to stop", pool=workers)
    final = cli_json("study", "show", str(study_id))
    assert final["status"] == "cancelled" and final["progress"]["queued"] == 0
    assert final["progress"]["cancelled"] + final["progress"]["done"] == 12
    assert "a study id must be a whole number from 1" in cli("study", "show", "0", check=False).stderr
    assert "no study with id 999" in cli("study", "show", "999", check=False).stderr


def test_a_paused_study_keeps_its_runs_queued_untaken_and_resume_releases_them(env, workers):
    study_id = cli_json("sweep", *SWEEP)["study_id"]
    assert cli_json("study", "pause", str(study_id))["status"] == "paused"
    workers.start("--workers", "1")
    registry = Registry()
    # The worker takes each message and leaves the run queued: its log says it waits for the study.
    wait_for(lambda: "its study" in workers.logs() and "paused" in workers.logs(), 120, "the worker to hold a run")
    assert statuses(study_id) == ["queued"] * 12 and registry.queued_ids() == []  # nothing re-sent while paused
    assert cli_json("study", "resume", str(study_id))["status"] in ("queued", "running")
    wait_for(lambda: registry.study(study_id).progress.done == 12, 600, "the resumed study to finish", pool=workers)
    assert registry.study(study_id).status == "done"


def test_a_single_run_goes_before_a_studys_queued_runs(env, workers):
    config = RunConfig.from_dict(
        {"task": "rte", "modules": ["layernorm"], "layers": "5", "max_train": 16, "max_eval": 16, "batch_size": 16}
    ).replace(max_seq_len=64, device="cpu")
    registry = Registry()
    study_id, ids = submission.submit_study(
        registry, [config.replace(seed=s) for s in range(20)], "twenty seeds", {"source": "test"}
    )
    single = submission.submit(registry, config.replace(seed=99))
    assert registry.priority_of(single) == SINGLE_PRIORITY and registry.priority_of(ids[0]) == STUDY_PRIORITY
    workers.start("--workers", "1")
    wait_for(lambda: registry.get(single).status == "succeeded", 300, "the single run", pool=workers)
    started = {r.id: r.times.started_at for r in registry.list_runs() if r.times.started_at}
    assert min(started, key=started.get) == single  # queued last, started first
    cli("study", "cancel", str(study_id))


def test_retry_queues_a_studys_failed_runs_again_in_the_study(env):
    registry = Registry()
    config = RunConfig(task="rte", modules=("layernorm",), layers="5", max_train=16, max_eval=16, device="cpu")
    study_id, ids = submission.submit_study(registry, [config, config.replace(seed=1)], "two", {"source": "test"})
    token = registry.claim(ids[0], "w", "cpu")
    registry.mark_failed(ids[0], token, "RuntimeError: boom")
    assert "1 runs queued again" in cli("study", "retry", str(study_id)).stdout
    again = [r for r in registry.list_runs(study_id=study_id) if r.retry_of == ids[0]]
    assert len(again) == 1 and again[0].status == "queued"
    progress = registry.study(study_id).progress
    assert (progress.total, progress.failed, progress.queued) == (2, 0, 2)  # the failure counts through its retry
    assert "no failed or interrupted run" in cli("study", "retry", str(study_id), check=False).stderr


def test_raising_a_study_puts_its_runs_first_and_lower_puts_them_back(env):
    registry = Registry()
    config = RunConfig(task="rte", modules=("layernorm",), layers="5", max_train=16, max_eval=16, device="cpu")
    study_id, ids = submission.submit_study(registry, [config], "one", {"source": "test"})
    single = submission.submit(registry, config.replace(seed=3))
    assert json.loads(cli("study", "raise", str(study_id), "--json").stdout)["status"] == "queued"
    assert registry.priority_of(ids[0]) > registry.priority_of(single)
    from moduletune.tasks.queue import get_huey

    first = get_huey().dequeue()  # the highest priority message first
    assert first.args == (ids[0],)
    cli("study", "lower", str(study_id))
    assert registry.priority_of(ids[0]) < registry.priority_of(single)


def test_a_search_that_chose_after_its_study_was_cancelled_queues_nothing(env):
    """Its final runs are recorded cancelled in the same transaction, so no worker can start one."""
    registry = Registry()
    search = RunConfig(task="rte", modules=("layernorm",), layers="5", max_train=1000, lr_search=True, device="cpu")
    study_id, (search_id,) = submission.submit_study(registry, [search], "one search", {"source": "test"})
    token = registry.claim(search_id, "w", "cpu")
    registry.cancel_study(study_id)  # the running search is asked to stop; say it finished first
    finals = [search.replace(lr=1e-2, lr_search=False, seed=s) for s in (0, 1)]
    outcome = {"chosen_lr": 1e-2, "primary_metric_name": "accuracy", "primary_metric": 0.6}
    assert registry.complete_search(search_id, token, outcome, [], finals) == []
    children = registry.children(search_id, kind="run")
    assert [r.status for r in children] == ["cancelled", "cancelled"] and registry.queued_ids() == []
    assert {r.study_id for r in children} == {study_id}


def test_a_paused_study_cannot_be_claimed(env):
    registry = Registry()
    config = RunConfig(task="rte", modules=("layernorm",), layers="5", max_train=16, max_eval=16, device="cpu")
    study_id, (run_id,) = submission.submit_study(registry, [config], "one", {"source": "test"})
    submission.pause_study(registry, study_id)
    assert registry.claim(run_id, "w", "cpu") is None and registry.get(run_id).status == "queued"
    submission.resume_study(registry, study_id)
    assert registry.claim(run_id, "w", "cpu") is not None
    with pytest.raises(ValueError, match="only a paused study resumes"):
        submission.resume_study(registry, study_id)


def test_a_study_is_all_or_nothing(env, monkeypatch):
    """A queue that refuses half-way takes the study and its queued runs back out."""
    registry = Registry()
    config = RunConfig(task="rte", modules=("layernorm",), layers="5", max_train=16, max_eval=16, device="cpu")
    sent = []

    def send(registry, run_id, huey=None):
        if sent:
            raise RuntimeError("the queue is gone")
        sent.append(run_id)

    monkeypatch.setattr(submission, "send", send)
    with pytest.raises(RuntimeError, match="the queue is gone"):
        submission.submit_study(registry, [config, config.replace(seed=1)], "two", {"source": "test"})
    assert registry.count() == 0 and registry.studies() == []


def test_progress_counts_a_search_as_its_runs_and_a_retry_through_itself():
    search = json.dumps({"seed": 0, "layers": "all", "extra": {"final_seeds": [0, 1], "final_layers": ["all", "5"]}})
    rows = [
        dict(id=1, kind="search", status="queued", retry_of=None, learned=None, config=search),
        dict(id=2, kind="run", status="failed", retry_of=None, learned=None, config="{}"),
        dict(id=3, kind="run", status="succeeded", retry_of=2, learned=False, config="{}"),
        dict(id=4, kind="candidate", status="succeeded", retry_of=None, learned=True, config="{}"),
    ]
    p = progress_of(rows)
    assert (p.total, p.done, p.failed, p.queued, p.searches, p.learned_not) == (5, 1, 0, 1, 1, 1)


@pytest.fixture
def old_redis_queue(redis_url, monkeypatch):
    """A Redis queue an older release left: a plain list of run ids."""
    monkeypatch.setenv("MODULETUNE_QUEUE_URL", redis_url)
    return redis_url


def test_a_redis_queue_left_as_a_list_becomes_a_priority_queue(env, old_redis_queue):
    from moduletune.tasks import queue

    huey = queue.get_huey()
    storage = huey.storage
    message = huey.serialize_task(huey.moduletune_run.s(7))  # the task as an older release's list held it
    storage.conn.delete(storage.queue_key)
    storage.conn.lpush(storage.queue_key, message)
    queue.enqueue_run(8, huey, priority=SINGLE_PRIORITY)
    assert storage.conn.type(storage.queue_key) in (b"zset", "zset")
    assert [t.args[0] for t in huey.pending()] == [8, 7]  # the single run first, the old message kept


def test_a_run_enters_a_study_only_through_submit_study(env):
    registry = Registry()
    run_id = submission.submit(
        registry, RunConfig(task="rte", modules=("layernorm",), layers="5", max_train=16, device="cpu")
    )
    assert registry.get(run_id).study_id is None
    with registry.engine.begin() as conn:  # a study row that is gone leaves its runs readable
        conn.execute(update(runs).where(runs.c.id == run_id).values(study_id=999))
    assert registry.study_of(run_id) == 999 and registry.priority_of(run_id) == SINGLE_PRIORITY
