"""Fixtures for the queue tests: real Redis and PostgreSQL servers, real `moduletune` processes.

Redis is expected at 127.0.0.1:6379 and PostgreSQL at 127.0.0.1:5432 (trust auth as user postgres);
.ci/run starts them when they are down (MODULETUNE_TEST_REDIS / MODULETUNE_TEST_PG point elsewhere).
Tests that need a server that does not answer are skipped, or fail when MODULETUNE_TEST_REQUIRE_SERVICES=1
(CI sets it, so a missing server can never pass silently). Each test gets its own Redis queue name and
its own throwaway PostgreSQL database, dropped afterwards; nothing is shared between tests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests import polling

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("MODULETUNE_TEST_REDIS", "redis://127.0.0.1:6379/11")
PG_ADMIN_URL = os.environ.get("MODULETUNE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

# Tiny runs: RTE, a few examples, short sequences, LayerNorm of the last layer only.
TINY = [
    "--task",
    "rte",
    "--modules",
    "LN",
    "--layers",
    "5",
    "--max-train",
    "16",
    "--max-eval",
    "16",
    "--batch-size",
    "16",
    "--max-seq-len",
    "64",
    "--device",
    "cpu",
]


def _answers(url: str, default_port: int) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _missing(what: str) -> None:
    message = f"{what} (.ci/run starts it)"
    if os.environ.get("MODULETUNE_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The Redis URL of a real server (redis://127.0.0.1:6379/11 unless MODULETUNE_TEST_REDIS says otherwise)."""
    if not _answers(REDIS_URL, 6379):
        _missing(f"no Redis server answers at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_server() -> str:
    if not _answers(PG_ADMIN_URL, 5432):
        _missing(f"no PostgreSQL server answers at {PG_ADMIN_URL}")
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(postgres_server):
    """A throwaway PostgreSQL database for one test: created empty, dropped at the end."""
    import psycopg

    name = f"moduletune_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.rsplit("/", 1)[0] + "/" + name
    from moduletune.tasks.registry import dispose_engines

    dispose_engines()
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url(redis_server, monkeypatch):
    """A Redis queue of its own for one test (a unique queue name), flushed at the end."""
    name = f"moduletune-test-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("MODULETUNE_QUEUE_NAME", name)
    yield redis_server
    from moduletune.tasks.queue import build_huey

    build_huey(redis_server, name).storage.flush_all()


@pytest.fixture
def env(home, glue_dir, monkeypatch):
    """An isolated MODULETUNE_HOME on SQLite registry + SQLite queue, for this process and its children."""
    for var in ("MODULETUNE_DB_URL", "MODULETUNE_QUEUE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODULETUNE_GLUE_DIR", str(glue_dir))
    monkeypatch.setenv("MODULETUNE_HEARTBEAT_TIMEOUT", "60")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.setenv("MODULETUNE_QUEUE_NAME", os.environ.get("MODULETUNE_QUEUE_NAME") or "moduletune")
    return os.environ


def cli(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `moduletune ...` in a fresh process with this process's environment."""
    proc = subprocess.run(
        [sys.executable, "-m", "moduletune.cli.main", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"moduletune {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def cli_json(*args: str):
    return json.loads(cli(*args, "--json").stdout)


class Workers:
    """Starts `moduletune worker` processes (each its own process group) and always cleans them up."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        log = self.tmp / f"worker{len(self.procs)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "moduletune.cli.main", "worker", *args],
            cwd=REPO,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        self.procs.append((proc, log))
        return proc

    def stop(self, proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 60) -> int:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        finally:
            self.kill(proc)

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        """SIGKILL the worker's whole process group (the consumer and its forked workers): a machine gone."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(30)

    def logs(self, tail: int | None = None) -> str:
        """The workers' logs in start order, each headed '--- workerN.log' (the last `tail` characters of each)."""
        out = []
        for _, log in self.procs:
            text = "\n".join(line for line in log.read_text().splitlines() if "Loading weights" not in line)
            out.append(f"--- {log.name}\n" + (text[-tail:] if tail else text))
        return "\n".join(out)

    def close(self) -> None:
        for proc, _ in self.procs:
            self.kill(proc)


@pytest.fixture
def workers(tmp_path, request):
    pool = Workers(tmp_path)
    yield pool
    pool.close()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(pool.logs(tail=6000))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25, pool: Workers | None = None):
    """polling.wait_for with the workers' logs in the failure."""
    return polling.wait_for(
        predicate, timeout, what, interval, (lambda: pool.logs(tail=6000)) if pool is not None else None
    )


@pytest.fixture(autouse=True)
def _close_connections():
    """Each test's databases and queues are closed with it (per-test files and throwaway databases)."""
    yield
    from moduletune.tasks.queue import close_all
    from moduletune.tasks.registry import dispose_engines

    dispose_engines()
    close_all()
