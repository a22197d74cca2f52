"""Every way in refuses what it cannot take where it enters: one clear line, exit 2, nothing queued or trained.

A GLUE folder that is not there (submit, run, the Python API the web app calls), numbers past what the registry
holds, an output that is a file or a full folder, a submitter longer than its column (SQLite and PostgreSQL)."""

from __future__ import annotations

import time

import pytest

from moduletune.tasks.registry import Registry
from moduletune.tasks.submission import submit
from moduletune.tuning.config import RunConfig
from moduletune.tuning.glue import GlueError

from .conftest import cli

TINY = ["--task", "rte", "--modules", "LN", "--layers", "5", "--max-train", "32", "--max-eval", "32"]


def refused(*args: str) -> str:
    """`moduletune ...` refused: exit 2, one error line (after argparse's usage, if any), no traceback."""
    proc = cli(*args, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("moduletune") and " error: " in lines[-1] and not proc.stdout.strip(), proc.stderr
    assert all(line.startswith(("usage:", " ")) for line in lines[:-1]), proc.stderr  # argparse's usage only
    return lines[-1]


@pytest.mark.parametrize("glue", ["/nonexistent/dir", "abc", "NaN", "../../../../etc/passwd", "/etc"])
def test_submit_and_run_refuse_a_glue_folder_that_is_not_one(env, glue):
    assert "the GLUE folder" in refused("submit", *TINY, "--glue-dir", glue)
    assert Registry().count() == 0
    assert "the GLUE folder" in refused("run", *TINY, "--glue-dir", glue)


def test_the_python_api_the_web_app_calls_refuses_a_bad_glue_folder(env, glue_dir):
    registry = Registry()
    for glue in ("abc", "NaN", "../../../../etc/passwd", "with a \x00 NUL", str(glue_dir / "RTE")):
        with pytest.raises(GlueError, match="the GLUE folder"):
            submit(registry, RunConfig(task="rte", modules=("layernorm",), glue_dir=glue, max_train=32))
    assert registry.count() == 0
    assert submit(registry, RunConfig(task="rte", modules=("layernorm",), glue_dir=str(glue_dir), max_train=32))


@pytest.mark.parametrize(
    "args",
    [
        ("show", "99999999999999999999"),
        ("runs", "--limit", "99999999999999999999999"),
        ("cancel", "0"),
        ("events", "0", "--output", "x.csv"),
        ("study", "show", "99999999999999999999"),
    ],
)
def test_numbers_past_what_the_registry_holds_are_one_line(env, args):
    assert "must be a whole number from 1 to 2,147,483,647" in refused(*args)


def test_run_checks_its_output_before_training_and_never_writes_over_a_file(env, tmp_path):
    existing = tmp_path / "passwd"
    existing.write_text("root:x:0:0\n")
    full = tmp_path / "full"
    (full / "trained.safetensors").parent.mkdir()
    (full / "trained.safetensors").write_text("an earlier run's")
    for output, said in ((existing, "is a file"), (full, "is not empty"), (existing / "out", "cannot be made")):
        started = time.monotonic()
        assert said in refused("run", *TINY, "--output", str(output))
        assert time.monotonic() - started < 60  # refused up front, not after the run trained
    assert existing.read_text() == "root:x:0:0\n" and (full / "trained.safetensors").read_text() == "an earlier run's"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_submitter_longer_than_its_column_is_refused_on_every_registry(env, request, monkeypatch, backend):
    if backend == "postgresql":
        monkeypatch.setenv("MODULETUNE_DB_URL", request.getfixturevalue("pg_url"))
    said = refused("submit", *TINY, "--submitter", "x" * 120_000)
    assert said.endswith("the submitter is a name of at most 200 characters (no NUL), got 120,000 characters")
    assert Registry().count() == 0
    assert cli("submit", *TINY, "--submitter", "y" * 200).returncode == 0
    assert Registry().list_runs()[0].submitter == "y" * 200
