"""One launched app for the end-to-end tests: `moduletune serve` on a free port with its embedded worker.

The server runs in its own process group with a fresh MODULETUNE_HOME (SQLite registry, SqliteHuey
queue) and the real GLUE files; it is stopped with SIGTERM at the end of the session, which must also
stop its worker.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import polling

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 180  # seconds: importing gradio and torch on a busy 2-core machine is slow
# Tiny runs: RTE, 32 examples, batch 16, LayerNorm of the last layer.
TINY = dict(
    tasks=["rte"],
    model="all-MiniLM-L6-v2",
    families=["layernorm"],
    together=False,
    random_control=False,
    layers=["5"],
    layer_spec="",
    each_layer=False,
    lr=0.01,
    seeds="0",
    max_train=32,
    max_eval=32,
    epochs=1,
    batch_size=16,
    train_head=True,
)


@dataclass
class App:
    url: str
    home: Path
    log: Path
    proc: subprocess.Popen

    def logs(self, tail: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    def registry(self):
        from moduletune.tasks.registry import Registry

        return Registry(f"sqlite:///{self.home / 'runs.db'}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def app_server(tmp_path_factory, glue_dir):
    """The launched app (url, home, log); stopped with SIGTERM afterwards, worker included."""
    tmp = tmp_path_factory.mktemp("app")
    home, log = tmp / "home", tmp / "serve.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MODULETUNE_DB_URL", "MODULETUNE_QUEUE_URL")}
    env.update(
        MODULETUNE_HOME=str(home),
        MODULETUNE_GLUE_DIR=str(glue_dir),
        TOKENIZERS_PARALLELISM="false",
        GRADIO_ANALYTICS_ENABLED="False",
        MODULETUNE_QUEUE_NAME="moduletune",
        GRADIO_SERVER_PORT=str(port),  # the port as a Space or any Gradio host sets it: no --port flag
    )
    app = launch(["serve"], port, env, home, log)
    ready = f"ready; open http://127.0.0.1:{port} in a browser"
    polling.wait_for(lambda: ready in app.logs(100_000), 30, "the address printed once the app serves", logs=app.logs)
    yield app
    worker_pids = [int(p) for p in re.findall(r"embedded worker started \(pid (\d+)\)", app.logs(100_000))]
    code = _stop(app.proc)
    lingering = [pid for pid in worker_pids if _alive(pid)]
    for pid in lingering:
        os.killpg(pid, signal.SIGKILL)
    print(f"\n--- serve.log (exit {code})\n{app.logs(3000)}")
    assert code == 0 and not lingering, f"server exit {code}; workers left running: {lingering}"


def launch(args: list[str], port: int, env: dict, home: Path, log: Path) -> App:
    """`moduletune <args>` serving on port, in its own process group; fails the test if it never serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "moduletune.cli.main", *args],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    app = App(f"http://127.0.0.1:{port}", home, log, proc)
    deadline = time.monotonic() + START_TIMEOUT
    while not _up(app.url + "/"):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"`moduletune {' '.join(args)}` did not come up (exit {proc.poll()}):\n{app.logs()}")
        time.sleep(0.5)
    return app


def _stop(proc: subprocess.Popen, timeout: float = 90) -> int | None:
    """SIGTERM the server (it stops its worker first), wait; SIGKILL the group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
            return None
    return proc.returncode


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def wait_for(predicate, timeout: float, what: str, app: App | None = None, interval: float = 1.0):
    """polling.wait_for with the app's logs in the failure."""
    return polling.wait_for(predicate, timeout, what, interval, app.logs if app else None)
