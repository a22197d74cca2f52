"""The run registry on SQLite and on a real PostgreSQL: schema, submission, atomic transitions, sweeps, frames."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from moduletune.tasks import queue, submission, worker
from moduletune.tasks.database import SCHEMA_VERSION
from moduletune.tasks.entities import RUN_COLUMNS
from moduletune.tasks.registry import EVENT_COLUMNS, Registry, RegistryError, RunNotFound, normalize_url
from moduletune.tasks.rows import FRAME_COLUMNS
from moduletune.tuning.config import ConfigError, RunConfig

from .conftest import REPO

TINY = dict(
    task="rte",
    modules=("layernorm",),
    layers="5",
    max_train=16,
    max_eval=16,
    batch_size=16,
    max_seq_len=64,
    device="cpu",
)


@pytest.fixture(params=["sqlite", "postgres"])
def registry(request, env, monkeypatch):
    """A Registry on SQLite in MODULETUNE_HOME, or on a throwaway PostgreSQL database; SQLite queue."""
    if request.param == "postgres":
        # Through monkeypatch, so the URL of a dropped database never leaks into later tests.
        monkeypatch.setenv("MODULETUNE_DB_URL", request.getfixturevalue("pg_url"))
    return Registry()


def test_importing_tasks_opens_nothing(env, home):
    """Importing the queue, registry, jobs and worker modules touches no database, model or CUDA."""
    code = (
        "import sys, moduletune.tasks.queue, moduletune.tasks.registry, moduletune.tasks.submission, "
        "moduletune.tasks.jobs, moduletune.tasks.worker, moduletune.cli.main\n"
        "heavy = [m for m in ('torch', 'transformers', 'pandas') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from moduletune.tasks import database, queue\n"
        "assert not queue._HUEYS and not database._ENGINES\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env=dict(env))
    assert not home.exists()


def test_urls_from_settings(env, home, monkeypatch):
    assert Registry().url == f"sqlite:///{home / 'runs.db'}"
    assert queue.queue_url() == f"sqlite:///{home / 'queue.db'}"
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u:p@h:5/db") == "postgresql+psycopg://u:p@h:5/db"
    monkeypatch.setenv("MODULETUNE_QUEUE_URL", "redis://127.0.0.1:6379/3")
    assert type(queue.get_huey()).__name__ == "PriorityRedisHuey"
    monkeypatch.setenv("MODULETUNE_QUEUE_URL", "amqp://nowhere")
    with pytest.raises(queue.QueueError, match="unsupported queue URL"):
        queue.get_huey()
    monkeypatch.setenv("MODULETUNE_DB_URL", "mysql://nowhere/db")
    with pytest.raises(RegistryError, match="unsupported registry URL"):
        Registry().count()


def test_schema_is_created_on_first_use_with_a_version(registry):
    assert registry.count() == 0
    assert registry.schema_version() == SCHEMA_VERSION
    with registry.engine.connect() as conn:
        if registry.url.startswith("sqlite"):
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_submit_records_and_enqueues(registry):
    run_id = submission.submit(registry, RunConfig(**TINY), submitter="session-abc")
    run = registry.get(run_id)
    assert run.status == "queued" and run.submitter == "session-abc"
    assert (run.task, run.modules, run.family, run.layers) == ("rte", "layernorm", "LN", "5")
    assert run.lr == RunConfig(**TINY).learning_rate
    # The family default is stored as the lr used, so a config diff shows it.
    assert run.config_data["lr"] == RunConfig(**TINY).learning_rate
    assert RunConfig.from_dict(run.config_data) == RunConfig(**TINY).replace(lr=RunConfig(**TINY).learning_rate)
    assert run.to_dict()["queued_at"].endswith("+00:00") and run.times.started_at is None
    assert queue.pending_run_ids() == [run_id]
    assert [r.to_dict() for r in registry.list_runs()] == [{k: run.to_dict()[k] for k in RUN_COLUMNS}]
    with pytest.raises(RunNotFound):
        registry.get(run_id + 100)


def test_a_run_is_claimed_exactly_once(registry):
    """Eight workers race for one queued run: exactly one gets it."""
    run_id = submission.submit(registry, RunConfig(**TINY))
    registry.engine  # schema made before the race
    tokens, barrier = [], threading.Barrier(8)

    def race(i):
        barrier.wait()
        tokens.append(registry.claim(run_id, f"worker-{i}", "cpu"))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(tokens, key=lambda t: t is None) == [1] + [None] * 7
    run = registry.get(run_id)
    assert run.status == "running" and run.attempts.claims == 1 and run.times.started_at


def test_worker_side_lifecycle_and_stale_tokens(registry):
    run_id = submission.submit(registry, RunConfig(**TINY))
    token = registry.claim(run_id, "w1", "cpu")
    rows = [
        {"step": s, "epoch": s / 4, "split": "train", "name": "loss", "value": 1.0 / s, "t": time.time()}
        for s in (1, 2, 3)
    ] + [{"step": 3, "epoch": 0.75, "split": "train", "name": "loss", "value": float("nan"), "t": time.time()}]
    assert registry.record_progress(run_id, token, rows, step=3, total_steps=4, eta_seconds=2.5)
    run = registry.get(run_id)
    assert (run.progress.step, run.progress.total_steps, run.progress.fraction, run.progress.eta_seconds) == (
        3,
        4,
        0.75,
        2.5,
    )
    assert registry.heartbeat(run_id, token) == (True, False)
    # A wrong claim number (a worker that lost the run) can write nothing.
    assert not registry.record_progress(run_id, token + 1, rows)
    assert not registry.mark_succeeded(run_id, token + 1, {"primary_metric": 1.0})
    assert registry.record_resume(run_id, token + 1, step=2) == 0  # not ours: nothing happens
    assert registry.record_resume(run_id, token, step=2) == 2
    assert registry.get(run_id).attempts.resumed and registry.get(run_id).attempts.resumed_from_step == 2
    result = {
        "primary_metric_name": "accuracy",
        "primary_metric": 0.75,
        "metrics": {"accuracy": 0.75},
        "module_params": 1536,
        "head_params": 770,
        "trainable_params": 2306,
        "encoder_params": 22e6,
        "total_params": 22713986,
        "module_pct": 0.0068,
        "trainable_pct": 0.0102,
        "steps": 4,
        "train_seconds": 1.5,
        "examples_per_second": float("inf"),
        "artifact_dir": "/x",
        "device": "cpu",
        "resumed_from_step": None,
    }
    assert registry.mark_succeeded(run_id, token, result)
    assert not registry.mark_failed(run_id, token, "late")  # finished runs stay finished
    run = registry.get(run_id)
    assert run.status == "succeeded" and run.attempts.completions == 1 and run.times.finished_at
    assert run.result.primary_metric == 0.75 and run.result.trainable_params == 2306 and run.progress.step == 4
    assert run.result.examples_per_second is None and run.result.details["examples_per_second"] is None
    ev = registry.events_frame([run_id])
    assert list(ev.columns) == EVENT_COLUMNS
    assert ev["step"].tolist() == [1, 2] and ev["value"].tolist() == [1.0, 0.5]


def test_cancel_retry_and_their_refusals(registry):
    queued = submission.submit(registry, RunConfig(**TINY))
    assert registry.request_cancel(queued) == "cancelled"
    assert registry.claim(queued, "w", "cpu") is None  # a cancelled run never starts
    running = submission.submit(registry, RunConfig(**TINY))
    token = registry.claim(running, "w", "cpu")
    assert registry.request_cancel(running) == "cancelling"
    assert registry.heartbeat(running, token) == (True, True)
    assert registry.mark_cancelled(running, token, None)
    with pytest.raises(RegistryError, match="already cancelled"):
        registry.request_cancel(running)
    retried = submission.retry(registry, running, submitter="me")
    new = registry.get(retried)
    assert new.retry_of == running and new.status == "queued" and new.submitter == "me"
    assert new.config_data == registry.get(running).config_data
    with pytest.raises(RegistryError, match="only failed, cancelled, interrupted"):
        submission.retry(registry, retried)
    assert registry.count() == 3 and registry.count("cancelled") == 2


def test_stale_running_runs_are_interrupted_and_requeued_once(registry):
    run_id = submission.submit(registry, RunConfig(**TINY))
    fresh = submission.submit(registry, RunConfig(**TINY))
    queue.flush()
    token = registry.claim(run_id, "dead-worker", "cpu")
    fresh_token = registry.claim(fresh, "live-worker", "cpu")
    time.sleep(1.2)
    registry.heartbeat(fresh, fresh_token)
    assert worker.sweep_stale(registry, timeout=1) == {"interrupted": [run_id], "requeued": [run_id]}
    run = registry.get(run_id)
    assert run.status == "queued" and run.attempts.resume_count == 1 and "heartbeat" in run.error
    assert queue.pending_run_ids() == [run_id]
    assert not registry.heartbeat(run_id, token)[0]  # the old claim is void
    # The second time it dies it stays interrupted: a person retries it.
    registry.claim(run_id, "dead-again", "cpu")
    time.sleep(1.2)
    registry.heartbeat(fresh, fresh_token)
    assert worker.sweep_stale(registry, timeout=1) == {"interrupted": [run_id], "requeued": []}
    assert registry.get(run_id).status == "interrupted"
    assert registry.get(fresh).status == "running"
    assert registry.request_cancel(run_id) == "cancelled"


def test_frames_have_the_documented_columns(registry):
    ids = submission.submit_many(
        registry,
        [RunConfig(**TINY), RunConfig(**{**TINY, "modules": ("query", "key"), "seed": 3})],
        submitter="s",
        sweep_id="sw1",
    )
    frame = registry.runs_frame()
    assert list(frame.columns) == FRAME_COLUMNS
    # Replicates: the two runs differ in modules and seed, so they are different experiments but comparable.
    assert frame["settings_key"].nunique() == 2 and frame["comparison_key"].nunique() == 1
    assert frame["settings"].iloc[0]["lr"] == RunConfig(**TINY).replace(modules=("query", "key")).learning_rate
    assert frame["id"].tolist() == ids[::-1]
    assert frame["modules"].tolist() == ["query+key", "layernorm"] and frame["family"].tolist() == ["Q+K", "LN"]
    assert str(frame["queued_at"].dtype) == "datetime64[ns, UTC]" and frame["finished_at"].isna().all()
    assert registry.runs_frame(sweep_id="nope").empty
    assert list(registry.runs_frame(status="failed").columns) == FRAME_COLUMNS
    assert registry.events_frame([]).empty and list(registry.events_frame(ids).columns) == EVENT_COLUMNS


@pytest.mark.parametrize(
    "change, message",
    [
        ({"task": "nope"}, "Unknown GLUE task"),
        ({"modules": ("XYZ",)}, "unknown module family"),
        ({"layers": "7"}, "layer"),
        ({"layers": "2-x"}, "malformed layer spec"),
        ({"lr": -0.1}, "learning rate"),
        ({"model": "/nowhere/model"}, "does not exist"),
    ],
)
def test_bad_submissions_change_nothing(env, change, message):
    registry = Registry()
    submission.submit(registry, RunConfig(**TINY))
    before = (registry.count(), queue.pending_count())
    with pytest.raises((ConfigError, ValueError), match=message):
        submission.submit(registry, {**RunConfig(**TINY).to_dict(), **change})
    assert (registry.count(), queue.pending_count()) == before


def test_a_failed_enqueue_leaves_no_row(env, monkeypatch):
    registry = Registry()
    registry.count()
    monkeypatch.setenv("MODULETUNE_QUEUE_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    with pytest.raises(queue.QueueError, match="could not enqueue run"):
        submission.submit(registry, RunConfig(**TINY))
    assert registry.count() == 0


def test_a_cancelled_run_whose_worker_died_ends_cancelled(registry):
    run_id = submission.submit(registry, RunConfig(**TINY))
    registry.claim(run_id, "dying-worker", "cpu")
    assert registry.request_cancel(run_id) == "cancelling"
    time.sleep(1.2)
    assert worker.sweep_stale(registry, timeout=1) == {"interrupted": [run_id], "requeued": []}
    run = registry.get(run_id)
    assert run.status == "cancelled" and run.times.finished_at and "cancelled as asked" in run.error


def test_a_version_1_registry_is_upgraded_in_place(tmp_path):
    """A registry from before kind/parent_id/chance_metric/learned opens, keeps its runs, gains the columns."""
    from sqlalchemy import Column, MetaData, Table, create_engine, insert, inspect

    from moduletune.tasks import database as reg

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    old_meta = MetaData()
    new_columns = {"kind", "parent_id", "chance_metric", "learned"}

    def copy(table, skip=()):
        return Table(
            table.name,
            old_meta,
            *[
                Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                for c in table.c
                if c.name not in skip
            ],
        )

    old_runs, _, old_kv = copy(reg.runs, new_columns), copy(reg.events), copy(reg.meta)
    old_meta.create_all(engine)
    config = RunConfig(**TINY)
    with engine.begin() as conn:
        conn.execute(insert(old_kv).values(key="schema_version", value="1"))
        conn.execute(
            insert(old_runs).values(
                status="succeeded",
                task="rte",
                model=config.model,
                modules="layernorm",
                family="LN",
                layers="5",
                seed=0,
                lr=0.01,
                config=config.to_json(),
                queued_at=1.0,
                step=2,
                cancel_requested=False,
                claims=1,
                completions=1,
                resume_count=0,
                primary_metric_name="accuracy",
                primary_metric=0.6,
            )
        )
        conn.execute(insert(reg.events).values(run_id=1, step=1, split="train", name="loss", value=0.7))
    engine.dispose()
    upgraded = Registry(url)
    assert upgraded.schema_version() == reg.SCHEMA_VERSION
    assert new_columns <= {c["name"] for c in inspect(upgraded.engine).get_columns("runs")}
    run = upgraded.get(1)
    assert (run.status, run.result.primary_metric, run.kind, run.result.learned) == ("succeeded", 0.6, "run", None)
    assert upgraded.events_frame([1])["value"].tolist() == [0.7]
    assert upgraded.runs_frame()["settings"].iloc[0]["lr"] == 0.01  # an old null lr reads as the lr it used
    reg.dispose_engines()
