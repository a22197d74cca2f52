"""An install adds one import name, `moduletune`, and works beside a user's own app.py and tasks.py.

A wheel install into a fresh target folder and an editable install into a fresh virtual environment, each
with --no-deps (the dependencies come from this test's environment): what lands in site-packages is
listed, and `import moduletune` and `moduletune serve` run from a folder that has its own app.py and
tasks.py (the usual layout of a Gradio Space), which the old top-level packages clashed with.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEPS = sysconfig.get_paths()["purelib"]  # this environment's packages (gradio, torch, ...)


def pip(*args: str, python: str | None = None) -> None:
    into = ["--python", python] if python else []  # pip's own option: install into that interpreter
    # Built with this environment's setuptools (found through PYTHONPATH by the interpreter pip installs into).
    out = subprocess.run(
        [sys.executable, "-m", "pip", *into, "install", "-q", "--no-deps", "--no-build-isolation", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": DEPS},
    )
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture
def user_project(tmp_path) -> Path:
    """A folder laid out like a Gradio Space of someone else's: its own app.py and tasks.py."""
    folder = tmp_path / "space"
    folder.mkdir()
    (folder / "app.py").write_text("raise SystemExit('the user app.py was imported')\n")
    (folder / "tasks.py").write_text("raise SystemExit('the user tasks.py was imported')\n")
    return folder


def imports_from(python: str, folder: Path, env: dict) -> str:
    code = (
        "import moduletune, moduletune.cli.main, moduletune.tasks.registry, moduletune.tuning.config; "
        "print(moduletune.cli.main.__file__)"
    )
    out = subprocess.run([python, "-c", code], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_wheel_install_adds_only_moduletune_and_works_beside_app_py(tmp_path, user_project, home):
    target = tmp_path / "site"
    pip("--target", str(target), ".")
    assert {p.name for p in target.iterdir()} == {"moduletune", "moduletune-0.1.0.dist-info", "bin"}
    assert sorted(p.name for p in (target / "moduletune").iterdir() if p.is_dir() and p.name != "__pycache__") == [
        "app",
        "cli",
        "tasks",
        "tuning",
    ]
    assert not (target / "moduletune" / "bench").exists()
    env = {**os.environ, "PYTHONPATH": str(target)}
    assert imports_from(sys.executable, user_project, env).startswith(str(target))
    serve(target / "bin" / "moduletune", user_project, env)


def test_an_editable_install_adds_only_moduletune_with_no_import_hook(tmp_path, user_project):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    before = {p.name for p in site.iterdir()}
    pip("-e", ".", python=python)
    added = {p.name for p in site.iterdir()} - before - {"__pycache__"}  # the finder's bytecode
    # A path file naming src/ (which holds only moduletune), no finder: tools that cannot run an import hook
    # (pyright, mypy, jedi) read the same files Python runs.
    assert added == {"moduletune-0.1.0.dist-info", "__editable__.moduletune-0.1.0.pth"}, added
    assert (site / "__editable__.moduletune-0.1.0.pth").read_text().split() == [str(REPO / "src")]
    # The dependencies from this environment: PYTHONPATH, whose .pth files are not read, so `moduletune` can
    # only come from the fresh environment's editable install.
    env = {**os.environ, "PYTHONPATH": DEPS}
    assert Path(imports_from(python, user_project, env)).resolve() == REPO / "cli" / "main.py"


def serve(script: Path, folder: Path, env: dict) -> None:
    """`moduletune serve` from folder answers over HTTP, then stops on SIGTERM."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = folder / "serve.log"
    proc = subprocess.Popen(
        [str(script), "serve", "--no-worker", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
