"""The registry's runs and curves as CSV, Parquet and JSON files: `moduletune runs|events --format ... --output ...`
in a real process, and the Gradio-free functions behind the Runs tab's downloads; the runs are trained by the
worker's own job body, which also reports to the worker's default tracker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from moduletune.app.files import data_export
from moduletune.tuning import trackers
from moduletune.tuning.config import RunConfig


@pytest.fixture(scope="module")
def lab(tmp_path_factory, glue_dir):
    """A registry with two runs trained by tasks.jobs.run_job (the first one reported to the worker's default
    tracker, the second one saying none) and one still queued; yields (home, registry, ids)."""
    from moduletune.tasks import jobs
    from moduletune.tasks.queue import close_all
    from moduletune.tasks.registry import Registry, dispose_engines
    from moduletune.tasks.submission import submit

    home = tmp_path_factory.mktemp("export") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODULETUNE_HOME", str(home))
        for var in ("MODULETUNE_DB_URL", "MODULETUNE_QUEUE_URL"):
            mp.delenv(var, raising=False)
        default = "tensorboard" if trackers.installed("tensorboard") else None
        mp.setattr(jobs.CONTEXT, "report_to", default)  # what `moduletune worker --report-to` sets
        base = dict(task="rte", modules=("layernorm",), layers="5", max_train=16, max_eval=16, batch_size=16)
        base |= dict(max_seq_len=64, glue_dir=str(glue_dir), device="cpu", epochs=2)
        registry = Registry()
        ids = [submit(registry, RunConfig(**base, report_to=r)) for r in (None, "none")]
        assert [jobs.run_job(i, registry) for i in ids] == ["succeeded", "succeeded"]
        ids.append(submit(registry, RunConfig(**base, seed=1)))  # stays queued: no worker here
        yield home, registry, ids
        dispose_engines()
        close_all()


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MODULETUNE_HOME": str(home)}
    for var in ("MODULETUNE_DB_URL", "MODULETUNE_QUEUE_URL"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "moduletune.cli.main", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_runs_export_through_the_cli_in_every_format_reads_back_as_the_registrys_runs_frame(lab, tmp_path):
    home, registry, ids = lab
    expected = registry.runs_frame()
    for fmt, name in (("parquet", "runs.parquet"), (None, "runs.csv"), ("json", "all-runs.txt")):
        out = tmp_path / name
        proc = cli(home, "runs", *(["--format", fmt] if fmt else []), "--output", str(out))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"wrote {out}"
        got = (
            pd.read_parquet(out)
            if name.endswith(".parquet")
            else pd.read_csv(out)
            if name.endswith(".csv")
            else pd.DataFrame(json.loads(out.read_text()))
        )
        assert list(got.columns) == list(expected.columns), name
        assert got["id"].tolist() == expected["id"].tolist() == ids[::-1]
        assert got["status"].tolist() == ["queued", "succeeded", "succeeded"]
        assert got["primary_metric"].tolist()[1:] == pytest.approx(expected["primary_metric"].tolist()[1:])
        assert pd.isna(got["primary_metric"].iloc[0])  # the queued run has none yet
        assert [json.loads(s) for s in got["settings"]] == [json.loads(json.dumps(s)) for s in expected["settings"]]
    typed = pd.read_parquet(tmp_path / "runs.parquet")
    assert str(typed["queued_at"].dt.tz) == "UTC" and typed["trainable_params"].dtype == "Int64"
    # The filters of `moduletune runs` apply to the file too.
    out = tmp_path / "done.json"
    assert cli(home, "runs", "--status", "succeeded", "--limit", "1", "--output", str(out)).returncode == 0
    assert [r["id"] for r in json.loads(out.read_text())] == [ids[1]]


def test_events_export_through_the_cli_holds_every_point_of_the_named_runs_and_series(lab, tmp_path):
    home, registry, ids = lab
    out = tmp_path / "events.parquet"
    proc = cli(home, "events", str(ids[0]), str(ids[1]), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    got, expected = pd.read_parquet(out), registry.events_frame(ids[:2])
    pd.testing.assert_frame_equal(got, expected)
    assert set(got["name"]) >= {"loss", "lr", "accuracy"} and set(got["run_id"]) == set(ids[:2])
    out = tmp_path / "loss.csv"
    proc = cli(home, "events", str(ids[0]), "--format", "csv", "--output", str(out), "--name", "loss", "lr")
    assert proc.returncode == 0, proc.stderr
    got = pd.read_csv(out)
    assert list(got.columns) == ["run_id", "step", "epoch", "split", "name", "value"]
    assert sorted(set(got["name"])) == ["loss", "lr"] and got["step"].tolist() == [1, 1, 2, 2]
    loss = registry.events_frame([ids[0]], names="loss")
    assert got[got["name"] == "loss"]["value"].tolist() == pytest.approx(loss["value"].tolist())


def test_bad_exports_say_what_is_wrong_and_write_nothing(lab, tmp_path, monkeypatch, capsys):
    from moduletune.cli.main import main

    home, _registry, ids = lab
    monkeypatch.setenv("MODULETUNE_HOME", str(home))  # the CLI's main, in this process: the same parser and errors
    for args, message in (
        (["events", "999999", "--output", str(tmp_path / "e.csv")], "no run with id 999999"),
        (["events", str(ids[0]), "--output", str(tmp_path / "e.xlsx")], "got 'xlsx' (from the file name 'e.xlsx')"),
        (["runs", "--format", "csv"], "--format needs --output FILE"),
        (["events", str(ids[0]), "--format", "json"], "events needs --output FILE"),
    ):
        assert main(args) == 2
        assert message in capsys.readouterr().err, args
    with pytest.raises(SystemExit):
        main(["runs", "--format", "xml", "--output", str(tmp_path / "r.xml")])
    assert "invalid choice: 'xml'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_runs_tabs_downloads_are_new_files_each_time_in_the_folder_asked_for(lab, tmp_path, monkeypatch):
    _home, registry, ids = lab
    first = data_export.runs_file(registry, "csv", folder=tmp_path, status="succeeded")
    second = data_export.runs_file(registry, "csv", folder=tmp_path, status="succeeded")
    assert first != second and first.parent == second.parent == tmp_path
    assert first.name.startswith("moduletune-runs-") and first.suffix == ".csv"
    assert pd.read_csv(first)["id"].tolist() == [ids[1], ids[0]]
    events = data_export.events_file(registry, [ids[1]], "json", folder=tmp_path, names=["accuracy"])
    records = json.loads(events.read_text())
    assert events.name.startswith("moduletune-events-") and {r["name"] for r in records} == {"accuracy"}
    assert [r["step"] for r in records] == [1, 2]
    with pytest.raises(data_export.ExportError, match="name at least one run id"):
        data_export.events_file(registry, [], "csv", folder=tmp_path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # Python's own "this package cannot be imported"
    with pytest.raises(data_export.ExportError, match="parquet files need pyarrow: pip install pyarrow"):
        data_export.runs_file(registry, "parquet", folder=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name, events.name])


@pytest.mark.skipif(not trackers.installed("tensorboard"), reason="tensorboard is not installed")
def test_the_workers_jobs_report_to_the_workers_tracker_unless_the_run_says_none(lab):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    home, registry, ids = lab
    assert sorted(p.name for p in (home / "trackers" / "tensorboard").iterdir()) == [f"run-{ids[0]}"]
    acc = EventAccumulator(str(home / "trackers" / "tensorboard" / f"run-{ids[0]}"))
    acc.Reload()
    for tag, name in (("train/loss", "loss"), ("train/lr", "lr"), ("eval/accuracy", "accuracy")):
        recorded = registry.events_frame([ids[0]], names=name)
        assert [(e.step, e.value) for e in acc.Scalars(tag)] == [
            (s, pytest.approx(v, rel=1e-6)) for s, v in zip(recorded["step"], recorded["value"])
        ]
    final = registry.get(ids[0]).result.details["metrics"]["accuracy"]
    assert [(e.step, e.value) for e in acc.Scalars("final/accuracy")] == [(2, pytest.approx(final, rel=1e-6))]


def test_the_readme_lists_the_runs_files_columns_in_order():
    import re

    from moduletune.tasks.rows import EVENT_COLUMNS, FRAME_COLUMNS

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text().split("## Data export", 1)[1]
    runs, events = text.split("these columns:", 1)[1].split(". Times are UTC", 1)[0], text.split("events_frame()`:")[1]
    assert re.findall(r"`(\w+)`", runs) == FRAME_COLUMNS
    assert [c for c in re.findall(r"`(\w+)`", events) if c in EVENT_COLUMNS] == EVENT_COLUMNS
