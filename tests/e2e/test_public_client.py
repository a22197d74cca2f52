"""The Space's entrypoint, started directly (no Docker), in public mode, driven by gradio_client.

scripts/space-entrypoint.sh runs `moduletune serve --public` with an embedded worker on a free port, a
fresh MODULETUNE_HOME and small limits from MODULETUNE_PUBLIC_* variables. Visitors are told apart by
address (never by session hash): the server trusts a proxy on 127.0.0.1 (FORWARDED_ALLOW_IPS), and each
Client sends the address that proxy would forward. A tiny run completes; every limit refuses with its
message and queues nothing (the SQLite registry is read directly to check); SIGINT, the image's stop
signal, stops the UI and the worker.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from .conftest import REPO, START_TIMEOUT, TINY, App, _alive, _stop, _up, free_port, wait_for

ENTRYPOINT = REPO / "scripts" / "space-entrypoint.sh"
RUN_TIMEOUT = 240  # a tiny run on a busy 2-core machine (model load dominates)
LIMITS = dict(
    MODULETUNE_PUBLIC_MAX_ACTIVE_PER_VISITOR="3",
    MODULETUNE_PUBLIC_MAX_QUEUED="2",
    MODULETUNE_PUBLIC_MAX_EPOCHS="2",
    MODULETUNE_PUBLIC_MAX_TRAIN="64",
    MODULETUNE_PUBLIC_MAX_EVAL="64",
    FORWARDED_ALLOW_IPS="127.0.0.1",
)


def visitor(space, address: str) -> Client:
    """A gradio_client Client arriving from `address` through the trusted proxy."""
    return Client(space.url, verbose=False, headers={"X-Forwarded-For": address})


@pytest.fixture(scope="module")
def space(tmp_path_factory, glue_dir):
    """The entrypoint as a Space would start it (public by default), on 127.0.0.1 and a free port."""
    tmp = tmp_path_factory.mktemp("space")
    home, log = tmp / "home", tmp / "space.log"
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MODULETUNE_DB_URL", "MODULETUNE_QUEUE_URL", "MODULETUNE_PUBLIC", "MODULETUNE_SERVE_FLAGS")
        and not k.startswith("MODULETUNE_PUBLIC_")
    }
    env.update(
        LIMITS,
        MODULETUNE_HOME=str(home),
        MODULETUNE_GLUE_DIR=str(glue_dir),
        GRADIO_SERVER_NAME="127.0.0.1",
        PORT=str(port),
        GRADIO_SERVER_PORT=str(port),
        TOKENIZERS_PARALLELISM="false",
        GRADIO_ANALYTICS_ENABLED="False",
        MODULETUNE_QUEUE_NAME="moduletune",
        PATH=os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")]),
    )
    # Started with SIGINT ignored, as `cmd &` in a non-interactive shell (a CI script) starts it: the
    # server must still stop on SIGINT at teardown.
    proc = subprocess.Popen(
        [str(ENTRYPOINT)],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    app = App(f"http://127.0.0.1:{port}", home, log, proc)
    started = time.monotonic()
    while not _up(app.url + "/"):
        if proc.poll() is not None or time.monotonic() - started > START_TIMEOUT:
            _stop(proc)
            pytest.fail(f"the entrypoint did not serve (exit {proc.poll()}):\n{app.logs()}")
        time.sleep(0.5)
    print(f"\nentrypoint serving after {time.monotonic() - started:.1f}s")
    yield app
    workers = [int(p) for p in re.findall(r"embedded worker started \(pid (\d+)\)", app.logs(100_000))]
    code = None
    if proc.poll() is None:  # SIGINT: the image's STOPSIGNAL
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    lingering = [pid for pid in workers if _alive(pid)]
    for pid in lingering:
        os.killpg(pid, signal.SIGKILL)
    print(f"--- space.log (exit {code})\n{app.logs(2500)}")
    assert workers and code == 0 and not lingering, f"exit {code}; workers left running: {lingering}"


def test_public_space_runs_a_tiny_run_and_every_limit_refuses_with_its_message(space):
    t0 = time.monotonic()
    registry = space.registry()
    a, b = visitor(space, "10.0.0.1"), visitor(space, "10.0.0.2")  # two visitors

    # The page says what the limits are, and the model is a pick from the allow-list.
    with urllib.request.urlopen(space.url + "/config", timeout=30) as r:
        config = json.load(r)
    props = {c["props"].get("elem_id"): c for c in config["components"] if c.get("props", {}).get("elem_id")}
    note = props["public-limits"]["props"]["value"]
    assert "**3** runs queued or running per visitor" in note and "**2** epochs" in note and "**64**" in note
    assert props["model"]["type"] == "dropdown"

    message, ids, *_ = a.predict(**TINY, api_name="/submit")  # (message, ids, one message beside each field)
    assert len(ids) == 1 and f"#{ids[0]}" in message, message
    run_id = ids[0]

    def refused(client, expected: str, **change) -> None:
        before = registry.count()
        message, ids, *beside = client.predict(**{**TINY, **change}, api_name="/submit")
        shown = " ".join((message, *beside))
        assert ids == [] and expected in shown and "Nothing was queued" in message, shown
        assert registry.count() == before, f"{change} queued something"

    refused(a, "at most 3 runs queued or running per visitor in this public demo", seeds="0,1,2,3")
    refused(b, "the shared queue is full: at most 2 runs may wait in this public demo", seeds="0,1,2")
    refused(
        b,
        "'bert-base-uncased' is not available in this public demo; pick one of: all-MiniLM-L6-v2",
        model="bert-base-uncased",
    )
    refused(b, "local paths cannot be used as models in this public demo", model=str(REPO / "tuning"))
    refused(b, "epochs: at most 2 per run in this public demo, you asked for 3", epochs=3)
    refused(b, "training examples: at most 64 per run in this public demo, you asked for 65", max_train=65)
    refused(b, "0 = the whole split is not available here", max_train=0)
    refused(b, "evaluation examples: at most 64 per run", max_eval=500)

    # Another visitor's run: neither cancelled nor retried.
    with pytest.raises(
        AppError,
        match=f"run {run_id} was queued by another visitor: in this public demo you can cancel only your own runs",
    ):
        b.predict(run_id, api_name="/cancel")
    with pytest.raises(AppError, match="you can retry only your own runs"):
        b.predict(run_id, api_name="/retry")
    first = registry.get(run_id)
    assert first.status in ("queued", "running") and not first.cancel_requested

    # One's own run: cancelled (it waits behind the first on the one worker).
    _, (second,), *_ = a.predict(**{**TINY, "seeds": "1"}, api_name="/submit")
    assert a.predict(second, api_name="/cancel") in ("cancelled", "cancelling")
    assert registry.count() == 2

    # Nobody sees who submitted a run; each visitor sees which runs are their own.
    seen_by_b = b.predict(api_name="/runs")
    assert {r["id"]: r["mine"] for r in seen_by_b} == {run_id: False, second: False}
    assert all("submitter" not in r for r in seen_by_b) and "submitter" not in b.predict(run_id, api_name="/run")
    assert {r["id"]: r["mine"] for r in a.predict(api_name="/runs")} == {run_id: True, second: True}
    assert registry.get(run_id).submitter.startswith("web-")  # stored, never shown

    def finished():
        run = registry.get(run_id)
        return run if run.status in ("succeeded", "failed", "cancelled", "interrupted") else None

    run = wait_for(finished, RUN_TIMEOUT, f"run {run_id} to finish", space, interval=1)
    assert run.status == "succeeded", run.error
    assert run.progress.step == run.progress.total_steps == 2 and run.placement.device == "cpu"
    print(f"run {run_id} succeeded {time.monotonic() - t0:.1f}s into the test")

    # A visitor's copy of the run names no file path, host or process of the server's (the operator's does).
    seen = b.predict(run_id, api_name="/run")
    assert seen["status"] == "succeeded" and not {"artifact_dir", "worker", "submitter"} & set(seen), sorted(seen)
    assert "artifact_dir" not in (seen.get("result") or {}) and str(space.home) not in json.dumps(seen)
    assert run.artifact_dir and run.placement.worker

    # The app kept serving everyone: the finished run is in the shared Compare data, without its submitter.
    points = b.predict("rte", api_name="/compare_data")
    assert [p["id"] for p in points] == [run_id] and "submitter" not in points[0]
    preview, *_ = b.predict(**TINY, api_name="/preview")
    assert "1 run will be queued" in preview
    wait_for(lambda: registry.get(second).status == "cancelled", 60, "the cancel", space)
    assert registry.count() == 2
