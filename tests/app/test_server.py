"""The Blocks as built (tabs, elem_ids, API names) and the embedded worker's supervision, without a browser."""

from __future__ import annotations

import logging
import os
import sys
import time

import pytest

# A stand-in worker: records its pid and each SIGTERM (taking a moment to stop), sleeps until told to stop.
from moduletune.app import server, ui

SLEEPER = """
import os, signal, sys, time
log = sys.argv[1]
def stop(signum, frame):
    open(log, "a").write(f"term {os.getpid()}\\n")
    time.sleep(0.5)  # a graceful stop takes a moment (the real worker checkpoints its run)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)  # before announcing "start", so a prompt SIGTERM is never missed
open(log, "a").write(f"start {os.getpid()}\\n")
while True:
    time.sleep(0.1)
"""


class Sleeper(server.EmbeddedWorker):
    def __init__(self, log, script=SLEEPER, **kw):
        super().__init__(**kw)
        self.log, self.script = log, script

    def command(self):
        return [sys.executable, "-c", self.script, str(self.log)]


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    raise AssertionError("timed out")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_embedded_worker_is_restarted_when_it_dies_and_stopped_gracefully(tmp_path):
    log = tmp_path / "worker.log"
    worker = Sleeper(log, stop_timeout=10).start()
    try:
        wait_for(lambda: log.is_file() and "start" in log.read_text())
        first = worker.proc.pid
        assert worker.status() == f"embedded worker running (pid {first})"
        os.kill(first, 9)  # the worker dies (OOM, a crash): the server keeps serving and restarts it
        wait_for(lambda: worker.proc.pid != first and worker.proc.poll() is None, timeout=30)
        wait_for(lambda: log.read_text().count("start") == 2)
        assert "restarted 1×" in worker.status()
        second = worker.proc.pid
    finally:
        code = worker.stop()
    # One SIGTERM, waited for: the supervising thread outlives the child, so its death signal never adds a second.
    assert code == 0 and log.read_text().count(f"term {second}") == 1
    assert not alive(second)


def test_a_worker_that_keeps_dying_is_given_up_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "MAX_RESTARTS", 1)
    worker = Sleeper(tmp_path / "log", script="import sys; sys.exit(3)").start()
    try:
        wait_for(lambda: worker.gave_up, timeout=30)
    finally:
        worker.stop()
    assert "stopped (exit code 3)" in worker.status() and "runs stay queued" in worker.status()


def test_the_blocks_have_six_labelled_tabs_stable_ids_and_named_endpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("MODULETUNE_HOME", str(tmp_path / "home"))
    from moduletune.tasks.registry import Registry

    demo = ui.build_app(Registry(), worker_status=lambda: "embedded worker running (pid 1)")
    config = demo.get_config_file()
    props = [c.get("props", {}) for c in config["components"]]
    tabs = [p["label"] for c, p in zip(config["components"], props) if c["type"] == "tabitem"]
    assert tabs == ["Experiment", "Runs", "Compare", "Study", "Weights", "Playground"]
    # Nothing but tabs directly under the Tabs: a component made there (a State, a BrowserState) shifts the tab
    # bar, which then draws a clicked tab's button in place of its neighbour's.
    import gradio as gr

    for block in demo.blocks.values():
        if isinstance(block, gr.Tabs):
            strays = [type(c).__name__ for c in block.children if not isinstance(c, gr.Tab)]
            assert not strays, f"components directly under gr.Tabs: {strays}"
    elem_ids = {p.get("elem_id") for p in props}
    missing = [e for ids in ui.ELEM_IDS.values() for e in ids if e not in elem_ids]
    assert not missing
    apis = {d.get("api_name") for d in config["dependencies"] if d.get("api_visibility", "public") == "public"}
    assert {"submit", "preview", "runs", "run", "compare_data", "cancel", "retry", "classify"} <= apis
    assert ui.submitter_of(None) == "web"


def test_importing_the_ui_builds_nothing():
    import subprocess

    code = (
        "import sys, moduletune, moduletune.app.ui, moduletune.app.runs.views, moduletune.app.experiment.submit, "
        "moduletune.app.experiment.preview, moduletune.app.server; "
        "print(all(m not in sys.modules for m in ('gradio', 'torch', 'transformers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=server.REPO, timeout=120)
    assert out.stdout.strip() == "True", out.stderr


def test_serve_refuses_a_busy_port_before_starting_anything():
    import socket

    import pytest

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ValueError, match="already running"):
            server.check_port("127.0.0.1", port)


def test_the_serve_subcommand():
    from moduletune.cli.main import build_parser
    from moduletune.cli.serve import cmd_serve

    args = build_parser().parse_args(["serve", "--no-worker", "--port", "7999", "--host", "0.0.0.0"])
    assert (args.func, args.no_worker, args.port, args.host, args.share) == (cmd_serve, True, 7999, "0.0.0.0", False)
    defaults = build_parser().parse_args(["serve"])
    assert (defaults.host, defaults.port, defaults.no_worker) == ("127.0.0.1", 7860, False)


def test_the_address_comes_from_the_flags_else_gradios_variables(monkeypatch):
    """`moduletune serve` honours GRADIO_SERVER_PORT / GRADIO_SERVER_NAME as Gradio apps do; a bad port is named."""
    import pytest

    from moduletune.cli.main import build_parser

    monkeypatch.setenv("GRADIO_SERVER_PORT", "8123")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == ("0.0.0.0", 8123)
    assert server.address() == ("0.0.0.0", 8123) and server.address("127.0.0.1", 9000) == ("127.0.0.1", 9000)
    assert server.browser_url("0.0.0.0", 8123) == "http://localhost:8123"
    monkeypatch.setenv("GRADIO_SERVER_PORT", "99999")
    with pytest.raises(ValueError, match="from 1 to 65535.*GRADIO_SERVER_PORT.*99999"):
        server.address()


def test_the_stop_timeout_comes_from_the_environment_and_is_checked(monkeypatch):
    monkeypatch.delenv("MODULETUNE_STOP_TIMEOUT", raising=False)
    assert server.stop_timeout_setting() == 60.0
    monkeypatch.setenv("MODULETUNE_STOP_TIMEOUT", "8")
    assert server.stop_timeout_setting() == 8.0 and server.EmbeddedWorker().stop_timeout == 8.0
    for bad in ("0", "-1", "abc", "1e9", "nan"):
        monkeypatch.setenv("MODULETUNE_STOP_TIMEOUT", bad)
        with pytest.raises(ValueError, match="MODULETUNE_STOP_TIMEOUT must be a number of seconds above 0"):
            server.stop_timeout_setting()


def test_the_warm_up_counts_the_default_form(caplog):
    """serve's warm-up thread counts the default form once; a failure there is only logged, so check it is not."""
    with caplog.at_level(logging.WARNING, logger=server.log.name):
        server.warm_up()
    assert not [r for r in caplog.records if "warm-up failed" in r.getMessage()], caplog.text
