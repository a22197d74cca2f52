"""The Space image, built and run for real (`make test-image`; needs a Docker engine, so not part of `make test`).

Built from this checkout with the settings a machine gives in the environment (BASE_IMAGE, TORCH_INDEX_URL,
DOCKER_BUILD_FLAGS; see the README), then run as a Space runs it: it serves on 7860 within SERVE_TIMEOUT, /config
answers, a tiny run submitted through gradio_client succeeds inside it and /classify answers with it, it runs as
uid 1000 with a writable data folder (and /data when mounted), `docker stop` (SIGINT) ends it within Docker's
default 10 s with the running run checkpointed and back on the queue, and a restart of the same container
resumes that run to success. The figures (build time, image size, time to serve, stop times) are printed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests import polling

from .conftest import REPO, TINY, _up, free_port

pytestmark = pytest.mark.image

IMAGE = os.environ.get("MODULETUNE_TEST_IMAGE", "moduletune-test")
BUILD_TIMEOUT = 1800  # seconds: a build without cache on 2 loaded cores (torch alone is ~200 MB)
SERVE_TIMEOUT = 90  # seconds from `docker run` to the page answering (measured 10-30 s on 2 loaded cores)
STOP_LIMIT = 10.0  # Docker's default stop timeout: past it the container is SIGKILLed and the run is lost
RUN_TIMEOUT = 300
# Long enough to be mid-run when stopped (60 steps), short enough to finish soon after the restart.
LONG = {**TINY, "families": ["query"], "max_train": 960, "epochs": 1, "max_eval": 64}


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """One docker command; a failure shows its output."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def image():
    """The image built from this checkout; its build time and size are printed."""
    if not shutil.which("docker") or docker("info", check=False).returncode:
        pytest.fail("no Docker engine answers: start one (on a machine without Docker Hub, see the README's Deploy)")
    flags = shlex.split(os.environ.get("DOCKER_BUILD_FLAGS", ""))
    args = [f"{k}={os.environ[k]}" for k in ("BASE_IMAGE", "TORCH_INDEX_URL") if os.environ.get(k)]
    started = time.monotonic()
    build = docker(
        "build", *flags, *[a for arg in args for a in ("--build-arg", arg)], "-t", IMAGE, str(REPO),
        timeout=BUILD_TIMEOUT, check=False,
    )  # fmt: skip
    assert build.returncode == 0, f"docker build failed:\n{(build.stdout + build.stderr)[-6000:]}"
    size = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGE).stdout)
    print(f"\nimage built in {time.monotonic() - started:.0f}s, {size / 1e9:.2f} GB ({' '.join(args) or 'defaults'})")
    return IMAGE


class Container:
    """A container of the image, serving on a free host port, with the GLUE folder mounted read-only."""

    def __init__(self, image: str, glue_dir: Path, data: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        volumes = ["-v", f"{glue_dir}:/glue:ro"] + (["-v", f"{data}:/data"] if data else [])
        started = time.monotonic()
        self.id = docker(
            "run", "-d", "-p", f"127.0.0.1:{self.port}:7860", *volumes, "-e", "MODULETUNE_GLUE_DIR=/glue", image
        ).stdout.strip()
        self.serve_time = self.wait_served(started)

    def wait_served(self, started: float) -> float:
        deadline = started + SERVE_TIMEOUT
        while not _up(self.url + "/config"):
            running = docker("inspect", "-f", "{{.State.Running}}", self.id).stdout.strip() == "true"
            if not running or time.monotonic() > deadline:
                pytest.fail(f"the image did not serve within {SERVE_TIMEOUT}s (running: {running}):\n{self.logs()}")
            time.sleep(0.5)
        return time.monotonic() - started

    def logs(self) -> str:
        out = docker("logs", "--tail", "80", self.id, check=False)
        return out.stdout + out.stderr

    def sh(self, command: str) -> str:
        return docker("exec", self.id, "sh", "-c", command).stdout.strip()

    def stop(self) -> float:
        """`docker stop` with Docker's default timeout; returns the seconds it took and fails past the limit."""
        started = time.monotonic()
        docker("stop", self.id, timeout=60)
        took = time.monotonic() - started
        code = int(docker("inspect", "-f", "{{.State.ExitCode}}", self.id).stdout)
        assert took < STOP_LIMIT and code == 0, f"stop took {took:.1f}s, exit code {code}:\n{self.logs()}"
        return took

    def start(self) -> float:
        started = time.monotonic()
        docker("start", self.id)
        return self.wait_served(started)

    def remove(self) -> None:
        docker("rm", "-f", self.id, check=False)


def client(container: Container):
    from gradio_client import Client

    return Client(container.url, verbose=False)


def wait_status(c, run_id: int, wanted: set[str], timeout: float, container: Container) -> dict:
    """The run as /run shows it once its status is one of `wanted`."""

    def reached():
        run = c.predict(run_id, api_name="/run")
        return run if run["status"] in wanted else None

    return polling.wait_for(reached, timeout, f"run {run_id} to be {'/'.join(sorted(wanted))}", 2, container.logs)


# Read inside a throwaway container of the image, as uid 1000: a file the host made in /data could be one the
# Space's user cannot write.
STORED = """
import json, sys
from moduletune.tasks.registry import Registry
from moduletune.tasks.run_folders import run_dir
run = Registry().get(int(sys.argv[1])).to_dict()
folder = run_dir(int(sys.argv[1])) / "checkpoint"
print(json.dumps([{k: run[k] for k in ("status", "step", "total_steps")}, sorted(p.name for p in folder.glob("*"))]))
"""


def stored(image: str, data: Path, run_id: int) -> tuple[dict, list[str]]:
    """A run's registry row (status, step, total_steps) and its checkpoint folder's files, from /data."""
    out = docker("run", "--rm", "-v", f"{data}:/data", "--entrypoint", "python", image, "-c", STORED, str(run_id))
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_image_serves_a_space_trains_and_classifies_as_uid_1000(image, glue_dir):
    container = Container(image, glue_dir)
    try:
        print(f"served after {container.serve_time:.1f}s")
        with urllib.request.urlopen(container.url + "/config", timeout=30) as r:
            assert json.load(r)["components"]
        # uid 1000 (a Space's), for the server itself (PID 1 is tini, its parent), and its data folder is writable.
        assert container.sh("id -u") == "1000"
        uids = container.sh("for s in /proc/[0-9]*/status; do grep '^Uid:' $s; done | awk '{print $2}' | sort -u")
        assert uids.split() == ["1000"], uids
        assert container.sh("touch ~/.moduletune/probe && ls ~/.moduletune").split().count("probe") == 1

        c = client(container)
        message, ids, *_ = c.predict(**TINY, api_name="/submit")
        assert len(ids) == 1, message
        run = wait_status(c, ids[0], {"succeeded", "failed", "cancelled", "interrupted"}, RUN_TIMEOUT, container)
        assert run["status"] == "succeeded", run
        out = c.predict(ids[0], "A man is playing a guitar.", "A person plays music.", api_name="/classify")
        assert out["task"] == "rte" and set(out["tuned"]) == {"entailment", "not_entailment"}
        assert "runs.db" in container.sh("ls ~/.moduletune")
        print(f"idle stop took {container.stop():.1f}s")
    finally:
        container.remove()


def test_a_stopped_container_checkpoints_its_run_and_a_restart_finishes_it(image, glue_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # a Space's /data is writable by uid 1000
    container = Container(image, glue_dir, data)
    try:
        print(f"served with /data after {container.serve_time:.1f}s")
        c = client(container)
        _, (run_id,), *_ = c.predict(**LONG, api_name="/submit")
        polling.wait_for(
            lambda: (c.predict(run_id, api_name="/run").get("step") or 0) >= 5, RUN_TIMEOUT, "a few steps", 1
        )
        took = container.stop()
        print(f"stop mid-run took {took:.1f}s")

        run, checkpoint = stored(image, data, run_id)
        assert run["status"] == "queued" and run["step"] and run["step"] < run["total_steps"], run
        assert checkpoint, "no checkpoint was written"

        print(f"restarted, served after {container.start():.1f}s")
        run = wait_status(client(container), run_id, {"succeeded", "failed", "cancelled"}, RUN_TIMEOUT, container)
        assert run["status"] == "succeeded", run
        print(f"stop after the resumed run took {container.stop():.1f}s")
    finally:
        container.remove()
