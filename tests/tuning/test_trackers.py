"""Real tiny runs reported to trackio, MLflow and TensorBoard, each read back with that tracker's own API."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from moduletune.tuning import trackers
from moduletune.tuning.config import ConfigError, RunConfig
from moduletune.tuning.train import fine_tune

INSTALLED = [name for name in trackers.TRACKERS if trackers.installed(name)]


def tiny(glue_dir, **kw) -> RunConfig:
    base = dict(
        task="rte",
        modules=("layernorm",),
        layers="5",
        max_train=16,
        max_eval=16,
        batch_size=16,
        max_seq_len=64,
        glue_dir=str(glue_dir),
        device="cpu",
    )
    return RunConfig(**{**base, **kw})


def tensorboard_scalars(folder, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def mlflow_client(home):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{home / 'trackers' / 'mlflow' / 'mlflow.db'}")


def mlflow_run(client, name: str):
    (experiment,) = [e for e in client.search_experiments() if e.name == trackers.EXPERIMENT]
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.{trackers.RUN_TAG} = '{name}'")
    assert len(runs) == 1, f"{len(runs)} MLflow runs named {name}"
    return runs[0]


def mlflow_series(client, run, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


def trackio_logs(name: str) -> tuple[dict, list[dict]]:
    """(config, logged rows) of the one trackio run with this name, from trackio's API and its SQLite store."""
    import trackio
    from trackio.sqlite_storage import SQLiteStorage

    found = [r for r in trackio.Api().runs(trackers.EXPERIMENT) if r.name == name]
    assert len(found) == 1, f"{len(found)} trackio runs named {name}"
    return found[0].config, SQLiteStorage.get_logs(trackers.EXPERIMENT, name, run_id=found[0].id)


def test_report_to_is_checked_and_normalised_like_every_setting():
    assert RunConfig(report_to=" MLflow, tensorboard,mlflow").report_to == "mlflow,tensorboard"
    assert RunConfig(report_to=["trackio"]).report_to == "trackio"
    assert RunConfig(report_to="").report_to is None and RunConfig(report_to="NONE").report_to == "none"
    for bad in ("wandb", "none,mlflow", 5, ["mlflow", 3]):
        with pytest.raises(ConfigError, match="report to must be trackio, mlflow or tensorboard"):
            RunConfig(report_to=bad)
    # A run's own choice wins over the worker's; "none" means none, whatever the worker says.
    assert trackers.chosen(None, "tensorboard") == ("tensorboard",)
    assert trackers.chosen("mlflow", "tensorboard") == ("mlflow",)
    assert trackers.chosen("none", "tensorboard") == () and trackers.chosen(None, None) == ()
    # Trackers only say where a run's curves go: replicates pool across them and checkpoints ignore them.
    from moduletune.tuning.checkpoints import fingerprint
    from moduletune.tuning.replicates import replicate_key

    a, b = RunConfig(report_to="mlflow").to_dict(), RunConfig().to_dict()
    assert replicate_key(a, 1e-2) == replicate_key(b, 1e-2) and fingerprint(a) == fingerprint(b)


def test_a_tracker_that_is_not_installed_is_refused_at_submission_and_nothing_is_queued(home, glue_dir, monkeypatch):
    from moduletune.tasks.queue import close_all
    from moduletune.tasks.registry import Registry, dispose_engines
    from moduletune.tasks.submission import submit

    monkeypatch.setitem(sys.modules, "mlflow", None)  # Python's own "this package cannot be imported"
    registry = Registry()
    try:
        with pytest.raises(trackers.TrackerError, match=r"mlflow, not installed here: pip install mlflow"):
            submit(registry, tiny(glue_dir, report_to="tensorboard,mlflow"))
        assert registry.count() == 0
    finally:
        dispose_engines()
        close_all()


@pytest.mark.skipif(not INSTALLED, reason="no tracker installed (pip install -e '.[test]')")
def test_a_stopped_then_resumed_tiny_run_is_one_run_in_every_tracker_with_every_point(home, glue_dir, tmp_path):
    """Two steps, stopped after the first and resumed from its checkpoint: each tracker holds one run whose loss,
    lr and throughput at each step, evaluations, config and final result are the engine's own numbers."""
    config = tiny(glue_dir, epochs=2, report_to=",".join(INSTALLED))  # 16 rows, batch 16: one step an epoch
    events = []
    results = []
    for stop_at in (1, None):
        tracking = trackers.track(config, "run-7")
        result = fine_tune(config, tracking.wrap(events.append), checkpoint_dir=tmp_path / "ckpt", stop_at_step=stop_at)
        tracking.finish(result)
        results.append(result)
    assert results[0].stopped and not results[1].stopped and results[1].resumed_from_step == 1
    steps = {e["step"]: e for e in events if e["kind"] == "step"}
    evals = {e["step"]: e["metrics"]["accuracy"] for e in events if e["kind"] == "eval"}
    assert sorted(steps) == [1, 2] and sorted(evals) == [1, 2]
    loss = [(s, pytest.approx(steps[s]["loss"], rel=1e-6)) for s in (1, 2)]
    lr = [(s, pytest.approx(steps[s]["lr"], rel=1e-6)) for s in (1, 2)]
    accuracy = [(s, pytest.approx(evals[s], rel=1e-6)) for s in (1, 2)]
    final = results[1].metrics["accuracy"]

    if "tensorboard" in INSTALLED:
        folder = home / "trackers" / "tensorboard" / "run-7"
        assert tensorboard_scalars(folder, "train/loss") == loss
        assert tensorboard_scalars(folder, "train/lr") == lr
        assert [s for s, _ in tensorboard_scalars(folder, "train/examples_per_second")] == [1, 2]
        assert tensorboard_scalars(folder, "eval/accuracy") == accuracy
        assert tensorboard_scalars(folder, "final/accuracy") == [(2, pytest.approx(final, rel=1e-6))]
    if "mlflow" in INSTALLED:
        client = mlflow_client(home)
        run = mlflow_run(client, "run-7")  # the resumed attempt went on in the first one's MLflow run
        assert mlflow_series(client, run, "train/loss") == loss
        assert mlflow_series(client, run, "train/lr") == lr
        assert mlflow_series(client, run, "eval/accuracy") == accuracy
        assert mlflow_series(client, run, "final/accuracy") == [(2, pytest.approx(final))]
        assert mlflow_series(client, run, "result/trainable_params") == [(2, results[1].trainable_params)]
        assert (run.data.params["task"], run.data.params["layers"], run.data.params["epochs"]) == ("rte", "5", "2")
        assert (run.info.status, run.data.tags["moduletune_outcome"]) == ("FINISHED", "finished")
    if "trackio" in INSTALLED:
        stored, rows = trackio_logs("run-7")
        assert (stored["task"], stored["layers"], stored["report_to"]) == ("rte", "5", config.report_to)
        by_key = lambda key: sorted((r["step"], r[key]) for r in rows if key in r)  # noqa: E731
        assert by_key("train/loss") == loss and by_key("train/lr") == lr
        assert by_key("eval/accuracy") == accuracy
        assert by_key("final/accuracy") == [(2, pytest.approx(final))]


@pytest.mark.skipif("tensorboard" not in INSTALLED, reason="tensorboard is not installed")
def test_a_run_that_fails_closes_its_trackers_and_a_run_without_trackers_writes_nothing(home, glue_dir):
    tracking = trackers.track(tiny(glue_dir, report_to="tensorboard"), "run-9")
    handler = tracking.wrap()
    handler({"kind": "start", "step": 0, "total_steps": 3, "steps_per_epoch": 3})
    handler({"kind": "step", "step": 1, "total_steps": 3, "epoch": 1 / 3, "loss": 0.7, "lr": 1e-2})
    tracking.finish()  # no result: the run failed
    folder = home / "trackers" / "tensorboard" / "run-9"
    assert tensorboard_scalars(folder, "train/loss") == [(1, pytest.approx(0.7))]
    assert tensorboard_scalars(folder, "train/lr") == [(1, pytest.approx(1e-2))]
    quiet = trackers.track(tiny(glue_dir, report_to="none"), "run-10", default="tensorboard")
    assert quiet.trackers == [] and quiet.wrap(lambda e: True)({"kind": "step", "step": 1}) is True


@pytest.mark.skipif(set(INSTALLED) != set(trackers.TRACKERS), reason="needs trackio, mlflow and tensorboard")
def test_moduletune_run_reports_to_every_tracker_and_keeps_stdout_one_json_line(home, glue_dir):
    args = ["--task", "rte", "--modules", "LN", "--layers", "5", "--max-train", "16", "--max-eval", "16"]
    args += ["--batch-size", "16", "--max-seq-len", "64", "--device", "cpu", "--glue-dir", str(glue_dir)]
    env = {**os.environ, "MODULETUNE_HOME": str(home)}
    for var in ("MLFLOW_TRACKING_URI", "TRACKIO_DIR"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, "-m", "moduletune.cli.main", "run", *args, "--report-to", "trackio,mlflow,tensorboard"]
        + ["--json", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # trackio's chatter went to stderr
    (folder,) = (home / "trackers" / "tensorboard").iterdir()
    assert folder.name.startswith("rte-layernorm-layers5-seed0-")
    accuracy = result["metrics"]["accuracy"]
    assert tensorboard_scalars(folder, "final/accuracy") == [(1, pytest.approx(accuracy, rel=1e-6))]
    client = mlflow_client(home)
    run = mlflow_run(client, folder.name)
    assert mlflow_series(client, run, "final/accuracy") == [(1, pytest.approx(accuracy))]
    # trackio wrote to its folder under MODULETUNE_HOME (read here with sqlite3: this process's trackio, if any,
    # was pointed at another folder when it was first imported).
    import sqlite3

    with sqlite3.connect(home / "trackers" / "trackio" / "moduletune.db") as db:
        names = {row[0] for row in db.execute("SELECT DISTINCT run_name FROM metrics")}
    assert names == {folder.name}

    bad = subprocess.run(
        [sys.executable, "-m", "moduletune.cli.main", "run", *args, "--report-to", "wandb"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert bad.returncode == 2 and "report to must be trackio, mlflow or tensorboard" in bad.stderr


def test_the_forms_advanced_report_to_reaches_the_config_and_a_bad_one_stands_beside_the_settings(home, glue_dir):
    from moduletune.app.experiment.form import Form
    from moduletune.app.experiment.plan import build_configs
    from moduletune.app.experiment.preview import preview

    (config,) = build_configs(Form(tasks=["rte"], layers=["5"], advanced={"report_to": "TensorBoard, mlflow"}))
    assert config.report_to == "tensorboard,mlflow"
    (config,) = build_configs(Form(tasks=["rte"], layers=["5"], advanced={"report_to": ""}))
    assert config.report_to is None  # blank: the worker's --report-to decides
    view = preview(Form(tasks=["rte"], layers=["5"], advanced={"report_to": "wandb"}))
    assert view["runs"] == 0 and view["field"] == "settings"
    assert "report to must be trackio, mlflow or tensorboard" in view["error"]


def test_a_worker_refuses_an_unknown_or_missing_tracker_before_it_takes_a_run(home, monkeypatch, capsys):
    from moduletune.cli.main import main

    assert main(["worker", "--report-to", "wandb"]) == 2
    assert "report to must be trackio, mlflow or tensorboard" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "trackio", None)  # Python's own "this package cannot be imported"
    assert main(["worker", "--report-to", "trackio"]) == 2
    assert "trackio, not installed here: pip install trackio" in capsys.readouterr().err
    assert not home.exists()  # no registry, no queue: the worker never started
