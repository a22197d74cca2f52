"""Faults that once lost a run or made one silently wrong, with real workers, a real Redis and real registries.

A queued run whose message is lost (a deleted or replaced queue file, a Redis queue wiped by a FLUSHALL or
a restart) is found and run once; a checkpoint left by another registry's run of the same id is refused; a
truncated checkpoint fails its run with a message naming it, and a retry succeeds.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path

import pytest
import torch

from moduletune.tasks import queue, submission
from moduletune.tasks.registry import Registry
from moduletune.tasks.run_folders import run_dir
from moduletune.tuning.checkpoints import fingerprint
from moduletune.tuning.config import RunConfig

from .conftest import TINY, cli, cli_json, wait_for

# A lost message is re-sent within two checks of tasks.worker.lost_check_every (1 s here: the heartbeat
# timeout of 2 s makes the sweep run every second); a tiny run then takes well under a minute.
FAST_SWEEP = {"MODULETUNE_HEARTBEAT_TIMEOUT": "2"}
LOST_BOUND = 120  # seconds from the loss to the run's success, a worker's start (model load) included


def succeeded_once(run_id: int):
    def check():
        run = Registry().get(run_id)
        return run if run.status == "succeeded" else None

    return check


def assert_ran_once(run_id: int) -> None:
    run = Registry().get(run_id)
    assert run.status == "succeeded" and run.attempts.claims == 1 and run.attempts.completions == 1, run


def test_a_queued_run_survives_its_queue_file_being_deleted(env, workers, home):
    (run_id,) = [cli_json("submit", *TINY)["id"]]
    (home / "queue.db").unlink()  # the message is gone with the file
    assert queue.pending_run_ids(queue.build_huey(queue.queue_url(), queue.queue_name())) == []
    t0 = time.monotonic()
    workers.start("--heartbeat-timeout", "2", env=FAST_SWEEP)
    wait_for(succeeded_once(run_id), LOST_BOUND, f"run {run_id} to be found and run", pool=workers)
    assert_ran_once(run_id)
    assert f"run {run_id} was queued but no queue held its message; re-queued" in workers.logs()
    print(f"\nlost message found and run in {time.monotonic() - t0:.1f}s")


def test_a_queue_file_replaced_under_a_running_worker_is_followed(env, workers, home):
    workers.start("--heartbeat-timeout", "2", env=FAST_SWEEP)
    first = cli_json("submit", *TINY)["id"]
    wait_for(succeeded_once(first), LOST_BOUND, f"run {first}", pool=workers)
    # Replace the file under the worker: the next submission creates a new queue.db at the same path.
    (home / "queue.db").unlink()
    t0 = time.monotonic()
    second = cli_json("submit", *TINY, "--seed", "1")["id"]
    assert queue.pending_run_ids(queue.build_huey(queue.queue_url(), queue.queue_name())) in ([second], [])
    wait_for(succeeded_once(second), LOST_BOUND, f"run {second} from the new queue file", pool=workers)
    assert_ran_once(first), assert_ran_once(second)
    assert "the queue file" in workers.logs() and "reopening it" in workers.logs()
    print(f"\nrun from the replaced queue file in {time.monotonic() - t0:.1f}s")


def test_a_queued_run_survives_its_redis_keys_being_wiped(env, redis_url, workers, monkeypatch):
    monkeypatch.setenv("MODULETUNE_QUEUE_URL", redis_url)
    run_id = cli_json("submit", *TINY)["id"]
    huey = queue.build_huey(redis_url, queue.queue_name())
    assert queue.pending_run_ids(huey) == [run_id]
    # What a FLUSHALL or a Redis restarted without persistence does to this queue, without wiping the keys of
    # anyone else's tests on the same server: every key of the queue is gone.
    huey.storage.flush_all()
    assert queue.pending_run_ids(huey) == []
    t0 = time.monotonic()
    workers.start("--heartbeat-timeout", "2", env=FAST_SWEEP)
    wait_for(succeeded_once(run_id), LOST_BOUND, f"run {run_id} after its queue was wiped", pool=workers)
    assert_ran_once(run_id)
    assert f"run {run_id} was queued but no queue held its message; re-queued" in workers.logs()
    print(f"\nrun after its Redis queue was wiped in {time.monotonic() - t0:.1f}s")


def test_lost_messages_are_resent_only_when_missing_twice(env):
    registry = Registry()
    huey = queue.get_huey()
    ids = [
        submission.submit(registry, RunConfig(task="rte", modules=("layernorm",), layers="5", seed=s)) for s in range(3)
    ]
    queue.flush(huey)
    queue.enqueue_run(ids[0], huey)  # one message survived
    missing, lost = queue.requeue_lost(registry, huey)
    assert missing == {ids[1], ids[2]} and lost == []  # the first look only notes them
    missing, lost = queue.requeue_lost(registry, huey, missing)
    assert lost == [ids[1], ids[2]] and missing == frozenset()
    assert sorted(queue.pending_run_ids(huey)) == ids
    assert queue.requeue_lost(registry, huey, frozenset(ids)) == (frozenset(), [])  # nothing missing now


def test_a_checkpoint_from_another_registry_is_refused_and_the_new_run_starts_at_step_0(
    env, workers, home, pg_url, monkeypatch
):
    # Registry A (SQLite) runs run 1; its folder then holds a checkpoint (as one cancelled mid-way once left).
    first = cli_json("submit", *TINY)["id"]
    folder = run_dir(first)
    workers.start()
    wait_for(succeeded_once(first), LOST_BOUND, f"run {first}", pool=workers)
    workers.close()
    stale = folder / "checkpoint"
    stale.mkdir(parents=True)
    (stale / "checkpoint.pt").write_bytes(b"from registry A")
    # Registry B (a fresh PostgreSQL, as the README suggests): ids restart at 1, in the same MODULETUNE_HOME.
    monkeypatch.setenv("MODULETUNE_DB_URL", pg_url)
    second = cli_json("submit", "--task", "mrpc", *TINY[2:])["id"]
    assert second == first
    workers.start()
    wait_for(succeeded_once(second), LOST_BOUND, f"registry B's run {second}", pool=workers)
    run = Registry().get(second)
    assert (
        run.attempts.resumed_from_step is None and run.task == "mrpc" and run.progress.step == run.progress.total_steps
    )
    assert [p.name for p in home.joinpath("runs").glob(f"{first}.stale-*")], "the old folder was not moved aside"
    assert "belongs to another run" in workers.logs()


def test_a_truncated_checkpoint_fails_naming_it_and_a_retry_succeeds(env, workers):
    run_id = cli_json("submit", *TINY)["id"]
    registry = Registry()
    config = registry.get(run_id).config_data
    owner = {"registry": registry.identity(), "run": run_id}
    folder = run_dir(run_id)
    (folder / "checkpoint").mkdir(parents=True)
    # The folder is this run's (as after a worker died mid-run), but its checkpoint was cut short: a real
    # torch zip file, half of it (what once failed the run with "OSError: [Errno 22] Invalid argument").
    (folder / "owner.json").write_text(json.dumps({**owner, "fingerprint": fingerprint(config, owner)}))
    whole = io.BytesIO()
    torch.save({"trainable": {"w": torch.zeros(4096)}, "step": 1, "fingerprint": fingerprint(config, owner)}, whole)
    checkpoint = folder / "checkpoint" / "checkpoint.pt"
    checkpoint.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    workers.start()

    def ended():
        run = registry.get(run_id)
        return run if run.status in ("succeeded", "failed") else None

    run = wait_for(ended, LOST_BOUND, f"run {run_id}", pool=workers)
    assert run.status == "failed", run
    assert f"checkpoint {checkpoint} is unreadable (truncated or corrupt" in run.error, run.error
    aside = re.search(r"moved aside to (\S+); retry the run to start from step 0", run.error)
    assert aside and Path(aside[1]).is_file(), run.error  # kept where the message says, for a person to see
    assert not checkpoint.exists()  # nothing left that a run could resume
    new_id = int(cli("retry", str(run_id)).stdout)
    retried = wait_for(succeeded_once(new_id), LOST_BOUND, f"the retry {new_id}", pool=workers)
    assert retried.attempts.resumed_from_step is None and retried.attempts.claims == 1


def test_the_engine_resumes_only_its_own_checkpoint(tmp_path, glue_dir):
    from moduletune.tuning.train import fine_tune

    small = dict(
        modules=("layernorm",),
        layers="5",
        max_train=32,
        max_eval=16,
        batch_size=8,
        max_seq_len=32,
        device="cpu",
        glue_dir=str(glue_dir),
    )
    folder = tmp_path / "ck"
    a = fine_tune(
        RunConfig(task="rte", **small), checkpoint_dir=folder, stop_at_step=2, owner={"registry": "A", "run": 1}
    )
    assert a.stopped and (folder / "checkpoint.pt").is_file()
    # Another registry's run 1, another task, the same folder: a fresh start, the old checkpoint kept aside.
    b = fine_tune(RunConfig(task="mrpc", **small), checkpoint_dir=folder, owner={"registry": "B", "run": 1})
    assert not b.stopped and b.resumed_from_step is None and b.task == "mrpc"
    assert [p.name for p in folder.glob("checkpoint.pt.stale-*")]
    # The same run again resumes (its own checkpoint, another device setting).
    c = fine_tune(
        RunConfig(task="rte", **small),
        checkpoint_dir=tmp_path / "ck2",
        stop_at_step=2,
        owner={"registry": "A", "run": 1},
    )
    d = fine_tune(
        RunConfig(task="rte", **{**small, "eval_batch_size": 64}),
        checkpoint_dir=tmp_path / "ck2",
        owner={"registry": "A", "run": 1},
    )
    assert c.stopped and d.resumed_from_step == 2


def test_the_fingerprint_ignores_where_a_run_goes_but_not_what_it_computes():
    base = {"task": "rte", "modules": ["layernorm"], "seed": 0, "device": "cpu", "eval_batch_size": 128}
    owner = {"registry": "r1", "run": 3}
    assert fingerprint(base, owner) == fingerprint({**base, "device": "cuda:1", "eval_batch_size": 64}, owner)
    assert fingerprint(base, owner) != fingerprint({**base, "seed": 1}, owner)
    assert fingerprint(base, owner) != fingerprint(base, {**owner, "registry": "r2"})


def test_a_search_workdir_resumes_on_another_device_but_not_for_another_run(tmp_path):
    from moduletune.tuning import search, search_state

    config = RunConfig(task="rte", modules=("layernorm",), lr_search=True, device="cpu")
    grid, owner = list(config.search_grid), {"registry": "A", "run": 4}
    search_state.save_state(tmp_path, search_state.new_state(config, grid, owner), time.perf_counter())
    moved = config.replace(device="cuda:1", eval_batch_size=64)  # a resumed search on another worker
    assert search_state.load_state(tmp_path, moved, grid, owner)["candidates"]
    for other, why in ((config, {"registry": "B", "run": 4}), (config.replace(seed=1), owner)):
        with pytest.raises(search.SearchError, match="other settings or of another run"):
            search_state.load_state(tmp_path, other, grid, why)


@pytest.fixture
def no_write(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    yield folder
    if folder.is_dir():
        folder.chmod(0o700)


def test_an_unwritable_checkpoint_folder_is_named(no_write, glue_dir):
    """The folder exists but cannot be written into: once torch's "inline_container.cc:747" text, now named."""
    from moduletune.tuning.checkpoints import CheckpointError
    from moduletune.tuning.train import fine_tune

    if os.geteuid() == 0:  # root writes anywhere: put a file where the folder is, which nobody can write into
        no_write.chmod(0o700)
        no_write.rmdir()
        no_write.write_text("not a folder")
    config = RunConfig(
        task="rte",
        modules=("layernorm",),
        layers="5",
        max_train=16,
        max_eval=16,
        batch_size=16,
        max_seq_len=32,
        device="cpu",
        glue_dir=str(glue_dir),
    )
    with pytest.raises(
        CheckpointError, match=f"cannot write the checkpoint in {no_write}: .*set MODULETUNE_HOME"
    ) as err:
        fine_tune(config, checkpoint_dir=no_write)
    assert "inline_container" not in str(err.value)
