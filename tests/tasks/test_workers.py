"""Real `moduletune worker` processes on SqliteHuey and on RedisHuey, registries on SQLite and PostgreSQL.

Runs are submitted from the CLI, trained by real consumers, killed with SIGKILL and SIGTERM,
cancelled, retried; every test reads the outcome back from the registry.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections import Counter
from pathlib import Path

from moduletune.tasks import queue
from moduletune.tasks.entities import Run
from moduletune.tasks.registry import Registry
from moduletune.tasks.run_folders import run_dir

from .conftest import TINY, cli, cli_json, wait_for

# Enough steps to stop a run in the middle, on a fast machine or a busy one: SST-2, 60 steps of 8,
# checkpointed every 5 (the registry gets every event up to each checkpoint before it is written).
LONG = [
    "--task",
    "sst2",
    "--modules",
    "LN",
    "--layers",
    "5",
    "--max-train",
    "480",
    "--max-eval",
    "32",
    "--batch-size",
    "8",
    "--max-seq-len",
    "32",
    "--device",
    "cpu",
    "--checkpoint-every",
    "5",
]
STEPS = 60


def run_of(run_id: int) -> Run:
    return Registry().get(run_id)


def status_is(run_id: int, *statuses: str):
    def check():
        run = run_of(run_id)
        return run if run.status in statuses else None

    return check


def loss_steps(run_id: int) -> list[int]:
    ev = Registry().events_frame([run_id], names="loss")
    return ev["step"].tolist()


def succeeded_lines(logs: str) -> Counter:
    return Counter(int(m) for m in re.findall(r"run (\d+) succeeded", logs))


def test_cli_runs_finish_with_results_and_curves_on_sqlite(env, workers):
    """SqliteHuey + SQLite registry: CLI submissions are trained by a real consumer and fully recorded."""
    first = cli_json("submit", *TINY)
    assert first["status"] == "queued"
    second = int(cli("submit", *TINY, "--modules", "Q+K", "--max-train", "32", "--eval-every", "1").stdout)
    assert [r["id"] for r in cli_json("runs")] == [second, first["id"]]

    worker = workers.start("--workers", "1")
    wait_for(
        lambda: all(run_of(i).status in ("succeeded", "failed") for i in (first["id"], second)),
        240,
        "both runs to finish",
        pool=workers,
    )
    for run_id, steps, family in ((first["id"], 1, "LN"), (second, 2, "Q+K")):
        run = cli_json("show", str(run_id))
        assert run["status"] == "succeeded", run["error"]
        assert run["family"] == family and run["completions"] == 1 and run["claims"] == 1
        assert run["primary_metric_name"] == "accuracy" and 0 <= run["primary_metric"] <= 1
        assert run["result"]["metrics"]["accuracy"] == run["primary_metric"]
        assert run["trainable_params"] == run["module_params"] + run["head_params"] > 0
        assert run["result"]["versions"]["torch"] and run["train_seconds"] > 0
        assert (run["step"], run["total_steps"], run["progress"]) == (steps, steps, 1.0)
        assert run["started_at"] <= run["finished_at"] and run["device"] == "cpu" and run["worker"]
        assert os.path.isfile(os.path.join(run["artifact_dir"], "trained.safetensors"))
        assert not (run_dir(run_id) / "checkpoint").exists()
        assert loss_steps(run_id) == list(range(1, steps + 1))
    ev = Registry().events_frame([second])
    assert ev[ev.split == "eval"]["step"].tolist() == [1, 2]  # --eval-every 1, then the final evaluation
    table = cli("runs", "--status", "succeeded").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "STATUS", "TASK"] and len(table) == 3 and "accuracy=" in table[1]
    assert workers.stop(worker, signal.SIGINT) == 0


def test_forty_runs_on_two_workers_each_finish_exactly_once_redis_postgres(
    env, redis_url, pg_url, workers, monkeypatch
):
    """RedisHuey + PostgreSQL (the several-machines setup): a 40-run sweep across two worker processes."""
    monkeypatch.setenv("MODULETUNE_QUEUE_URL", redis_url)  # undone after the test, unlike a bare assignment
    monkeypatch.setenv("MODULETUNE_DB_URL", pg_url)
    too_big = cli(
        "sweep",
        "--tasks",
        "rte,mrpc",
        "--modules",
        "LN,Q,K,V,AO,FI,FO,full",
        "--layers",
        "each",
        "--seeds",
        "0,1,2",
        check=False,
    )
    assert too_big.returncode == 2 and "--yes" in too_big.stderr and Registry().count() == 0
    out = cli(
        "sweep",
        *TINY,
        "--modules",
        "LN,Q,K,V,AO,FI,FO,bias",
        "--seeds",
        "0,1,2,3,4",
        "--max-train",
        "8",
        "--max-eval",
        "8",
        "--batch-size",
        "8",
        "--max-seq-len",
        "32",
    ).stdout
    assert out.startswith("study 1: queued 40 runs (ids 1-40)")
    assert queue.pending_count() == 40
    workers.start("--workers", "1")
    workers.start("--workers", "1")

    def all_finished():
        frame = Registry().runs_frame()
        return [frame] if set(frame.status) <= {"succeeded", "failed"} else None

    [frame] = wait_for(all_finished, 420, "all 40 runs to finish", interval=1, pool=workers)
    assert len(frame) == 40 and set(frame.status) == {"succeeded"}, frame[frame.status != "succeeded"].error
    assert (frame.claims == 1).all() and (frame.completions == 1).all()
    assert frame.primary_metric.notna().all() and frame.sweep_id.nunique() == 1
    assert sorted(zip(frame.family, frame.seed)) == sorted(
        (f, s) for f in ("LN", "Q", "K", "V", "AO", "FI", "FO", "bias") for s in range(5)
    )
    assert frame.worker.nunique() == 2  # both workers trained runs
    assert succeeded_lines(workers.logs()) == Counter({int(i): 1 for i in frame.id})
    assert queue.pending_count() == 0


def test_bad_submissions_are_refused_before_anything_is_queued(env):
    cli("submit", *TINY)  # a registry and queue with one run in them
    before = (Registry().count(), queue.pending_count())
    cases = [
        (["--task", "nope"], "Unknown GLUE task 'nope'; allowed:"),
        (["--modules", "XYZ"], "unknown module family 'XYZ'; allowed:"),
        (["--layers", "9"], "this model has layers 0-5"),
        (["--layers", "1-x"], "malformed layer spec"),
        (["--lr", "-0.001"], "learning rate must be a number in (0, 1]"),
        (["--model", "/nowhere/model"], "does not exist"),
    ]
    for flags, message in cases:
        for command in ("submit", "sweep"):
            proc = cli(command, *TINY, *flags, check=False)
            assert proc.returncode == 2, (flags, proc.stderr)
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("moduletune: error: "), proc.stderr
            assert message in lines[0] and "Traceback" not in proc.stderr and proc.stdout == ""
    assert (Registry().count(), queue.pending_count()) == before


def test_cancel_queued_and_running_runs_and_retry_a_failed_one(env, redis_url, workers, tmp_path, monkeypatch):
    """RedisHuey + SQLite: a cancelled queued run never starts; a running one stops and keeps its curves."""
    monkeypatch.setenv("MODULETUNE_QUEUE_URL", redis_url)
    queued = int(cli("submit", *TINY).stdout)
    assert cli("cancel", str(queued)).stdout.strip() == f"run {queued}: cancelled"
    long_run = int(cli("submit", *LONG, "--max-train", "4000").stdout)  # 500 steps: it is cancelled anyway
    # A GLUE folder that passes the check at submission (each file's header and first row read right) but not the
    # run's load: a later row's label is not one of RTE's.
    bad_glue, real = tmp_path / "glue", Path(os.environ["MODULETUNE_GLUE_DIR"]) / "RTE"
    (bad_glue / "RTE").mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        rows = (real / name).read_text(encoding="utf-8-sig").splitlines()[:6] + ["9999\tOne.\tTwo.\tmaybe"]
        (bad_glue / "RTE" / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    failing = int(cli("submit", *TINY, "--glue-dir", str(bad_glue)).stdout)

    workers.start()
    wait_for(lambda: run_of(long_run).progress.step >= 3, 240, "the long run to make progress", pool=workers)
    assert cli_json("cancel", str(long_run)) == {"id": long_run, "status": "cancelling"}
    cancelled = wait_for(status_is(long_run, "cancelled", "succeeded", "failed"), 120, "the cancel", pool=workers)
    assert cancelled.status == "cancelled" and cancelled.attempts.completions == 0
    assert 3 <= cancelled.progress.step < cancelled.progress.total_steps == 500
    assert cancelled.result.details["stopped"] is True and cancelled.times.finished_at
    assert loss_steps(long_run) == list(range(1, cancelled.progress.step + 1))  # the curve is kept, each step once

    failed = wait_for(status_is(failing, "failed", "succeeded"), 120, "the bad-data run to fail", pool=workers)
    assert failed.status == "failed" and failed.attempts.completions == 0
    assert failed.error.startswith("GlueError: ") and "\n" not in failed.error
    assert "label 'maybe' for rte is not one of" in failed.error
    never = run_of(queued)
    assert never.status == "cancelled" and never.attempts.claims == 0 and never.times.started_at is None

    shutil.rmtree(bad_glue / "RTE")
    (bad_glue / "RTE").symlink_to(real)  # the data is mended; retry
    retried = cli_json("retry", str(failing))
    assert retried["retry_of"] == failing
    done = wait_for(status_is(retried["id"], "succeeded", "failed"), 120, "the retry to finish", pool=workers)
    assert done.status == "succeeded" and done.retry_of == failing and done.config_data == failed.config_data
    assert run_of(failing).status == "failed"  # the old run stays as it was
    assert cli("retry", str(done.id), check=False).returncode == 2


def test_kill_9_mid_epoch_resumes_from_the_checkpoint_on_a_new_worker(env, workers):
    """SIGKILL the whole worker mid-epoch; a new worker finds the stale run, re-queues it, it resumes and ends once."""
    run_id = int(cli("submit", *LONG).stdout)
    first = workers.start()
    checkpoint = run_dir(run_id) / "checkpoint" / "checkpoint.pt"
    wait_for(
        lambda: run_of(run_id).progress.step >= 6 and checkpoint.is_file(),
        240,
        "a checkpoint in the middle of the epoch",
        interval=0.05,
        pool=workers,
    )
    workers.kill(first)
    at_kill = run_of(run_id)
    assert at_kill.status == "running" and 6 <= at_kill.progress.step < STEPS

    workers.start("--heartbeat-timeout", "3")
    done = wait_for(status_is(run_id, "succeeded", "failed"), 300, "the resumed run to finish", pool=workers)
    assert done.status == "succeeded", done.error
    tries = done.attempts
    assert tries.resumed and tries.resume_count == 1 and tries.claims == 2 and tries.completions == 1
    resumed_at = done.attempts.resumed_from_step
    assert resumed_at % 5 == 0 and 5 <= resumed_at <= at_kill.progress.step + 5
    assert done.result.details["resumed_from_step"] == resumed_at and done.result.details["steps"] == STEPS
    assert loss_steps(run_id) == list(range(1, STEPS + 1))  # every step recorded exactly once
    ev = Registry().events_frame([run_id])
    assert ev[ev.split == "eval"]["step"].tolist() == [STEPS]
    logs = workers.logs()
    assert (
        succeeded_lines(logs) == Counter({run_id: 1})
        and f"run {run_id} interrupted" not in logs.split("--- worker1.log")[0]
    )
    assert "re-queued to resume" in logs.split("--- worker1.log")[1]
    assert os.path.isfile(os.path.join(done.artifact_dir, "trained.safetensors"))


def test_sigterm_checkpoints_and_requeues_the_running_run_redis_postgres(env, redis_url, pg_url, workers, monkeypatch):
    """A graceful stop (SIGTERM) checkpoints the run and puts it back on the queue; the next worker resumes it."""
    monkeypatch.setenv("MODULETUNE_QUEUE_URL", redis_url)  # undone after the test, unlike a bare assignment
    monkeypatch.setenv("MODULETUNE_DB_URL", pg_url)
    run_id = int(cli("submit", *LONG).stdout)
    first = workers.start()
    wait_for(lambda: run_of(run_id).progress.step >= 3, 240, "the run to make progress", interval=0.1, pool=workers)
    assert workers.stop(first, signal.SIGTERM) == 0
    stopped = run_of(run_id)
    assert stopped.status == "queued" and "re-queued" in (stopped.error or "") and stopped.attempts.claims == 1
    assert (run_dir(run_id) / "checkpoint" / "checkpoint.pt").is_file()
    assert queue.pending_run_ids() == [run_id]

    workers.start()
    done = wait_for(status_is(run_id, "succeeded", "failed"), 300, "the resumed run to finish", pool=workers)
    assert done.status == "succeeded", done.error
    assert done.attempts.resumed_from_step == stopped.progress.step and done.attempts.resume_count == 0
    assert done.attempts.claims == 2 and done.attempts.completions == 1 and done.error is None
    assert loss_steps(run_id) == list(range(1, STEPS + 1))


def test_an_lr_search_is_one_parent_with_candidates_then_a_run_per_seed(env, workers):
    """`submit --lr-search`: a real worker searches (successive halving on a held-out slice), records each
    candidate as a child, then queues and trains one final run per seed at the chosen lr."""
    args = [
        "--task",
        "rte",
        "--modules",
        "LN",
        "--layers",
        "5",
        "--max-train",
        "200",  # the search scores on half of them: the 100 held-out rows a search needs (tuning.verdict)
        "--holdout-fraction",
        "0.5",
        "--max-eval",
        "32",
        "--batch-size",
        "8",
        "--max-seq-len",
        "64",
        "--device",
        "cpu",
    ]
    search_id = cli_json("submit", *args, "--lr-search", "--lr-grid", "1e-4,1e-2")["id"]
    sweep = cli_json("sweep", *args, "--lr-search", "--lr-grid", "1e-4,1e-2", "--seeds", "0,1")
    assert sweep["searches"] == 1 and len(sweep["ids"]) == 1  # one search over both seeds
    workers.start("--workers", "1")
    reg = Registry()
    wait_for(
        lambda: len([r for r in reg.children(sweep["ids"][0], kind="run") if r.status == "succeeded"]) == 2,
        300,
        "the sweep's search and its two final runs",
        pool=workers,
    )
    search = reg.get(search_id)
    assert (search.kind, search.status) == ("search", "succeeded"), search.error
    chosen = search.result.details["chosen_lr"]
    assert chosen in (1e-4, 1e-2) and search.lr == chosen and search.result.details["selection"] == "holdout"
    candidates = reg.children(search_id, kind="candidate")
    assert sorted(c.lr for c in candidates) == [1e-4, 1e-2]
    assert all(c.status == "succeeded" and reg.get(c.id).config_data["eval_on"] == "holdout" for c in candidates)
    scores = reg.events_frame([search_id])
    assert set(scores[scores["split"] == "search"]["name"]) == {"0.0001", "0.01"}  # the metric-vs-lr curve
    wait_for(
        lambda: all(r.status == "succeeded" for r in reg.children(search_id, kind="run")),
        120,
        "the search's final run",
        pool=workers,
    )
    (final,) = reg.children(search_id, kind="run")
    config = reg.get(final.id).config_data
    assert final.lr == chosen and config["eval_on"] == "validation" and not config["lr_search"]
    assert config["extra"]["lr_search"]["chosen_lr"] == chosen
    finals = reg.children(sweep["ids"][0], kind="run")
    assert sorted(r.seed for r in finals) == [0, 1] and len({r.lr for r in finals}) == 1
    # Only the final runs are reported: searches and candidates never reach a score table.
    from moduletune.app.figures import pooling

    reported = pooling.finished_runs(reg.runs_frame())
    assert set(reported["kind"]) == {"run"} and set(reported["id"]) == {final.id, *(r.id for r in finals)}
