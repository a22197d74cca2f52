"""Experiment trackers (trackio, MLflow, TensorBoard) fed from a run's events: one small class per tracker behind
one interface (start, log, finish), and Tracking, which turns an on_event callback into one that also reports.

Every step's loss, learning rate and throughput, every evaluation's metrics, the config at the start and the
result at the end go to each tracker the run's `report_to` names (a worker's --report-to when it names none).
Each writes under MODULETUNE_HOME/trackers/<tracker>/ unless the tracker's own variable says otherwise
(MLFLOW_TRACKING_URI, TRACKIO_DIR). The trackers are optional installs: `check_installed` is what submission
and `moduletune run` call, so a missing one is refused before a run is queued, never a failed run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import re
import sys
import time
from pathlib import Path

from moduletune.tuning import settings
from moduletune.tuning.text import one_line

TRACKERS = ("trackio", "mlflow", "tensorboard")
EXPERIMENT = "moduletune"  # the MLflow experiment and the trackio project every run goes to
FLUSH_SECONDS = 1.0  # MLflow gets its metrics in batches, at most this late (and at the end)
FLUSH_METRICS = 900  # ... or when this many are waiting (MLflow takes 1000 a batch)
RUN_TAG = "moduletune_run"  # the MLflow tag a resumed run is found again by

log = logging.getLogger("moduletune.trackers")


class TrackerError(ValueError):
    """A tracker that cannot be used: an unknown name, or one that is not installed here."""


def parse_report_to(value) -> str | None:
    """'MLflow, tensorboard' (or a list) -> 'mlflow,tensorboard'; None or blank -> None (the worker decides);
    'none' -> 'none' (no tracker, whatever the worker says). TrackerError for any other value."""
    if value is None or isinstance(value, str) and not value.strip():
        return None
    parts = value.split(",") if isinstance(value, str) else value
    ok = isinstance(parts, (list, tuple)) and len(parts) <= 10 and all(isinstance(p, str) for p in parts)
    names = list(dict.fromkeys(p.strip().lower() for p in parts if p.strip())) if ok else []
    if names == ["none"]:
        return "none"
    if not names or any(n not in TRACKERS for n in names):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:60] + "…"
        raise TrackerError(f"report to must be trackio, mlflow or tensorboard, comma-separated (or none), got {shown}")
    return ",".join(names)


def chosen(report_to, default=None) -> tuple[str, ...]:
    """The trackers a run reports to: its own report_to, else the default (a worker's --report-to); none for 'none'."""
    value = parse_report_to(report_to)
    if value is None:
        value = parse_report_to(default)
    return () if value in (None, "none") else tuple(value.split(","))


def check_installed(report_to, default=None) -> tuple[str, ...]:
    """The trackers chosen, each importable here; TrackerError naming what to install otherwise."""
    names = chosen(report_to, default)
    missing = [n for n in names if not installed(n)]
    if missing:
        raise TrackerError(
            f"report to names {', '.join(missing)}, not installed here: pip install {' '.join(missing)} "
            f"(the {', '.join(missing)} extra), or leave {'it' if len(missing) == 1 else 'them'} out of report to"
        )
    return names


def installed(package: str) -> bool:
    """Whether a package can be imported here (False too where sys.modules blocks it with None)."""
    try:
        return importlib.util.find_spec(package) is not None
    except ValueError:  # sys.modules[package] is None: Python's own way of saying "not importable"
        return False


def tracker_root(name: str) -> Path:
    """Where a tracker writes by default: MODULETUNE_HOME/trackers/<name>."""
    return settings.home() / "trackers" / name


def run_label(config: dict) -> str:
    """A run's name in the trackers when it has no registry id: task, modules, layers, seed and the time."""
    text = f"{config['task']}-{'+'.join(config['modules'])}-layers{config['layers']}-seed{config['seed']}"
    return safe_name(f"{text}-{time.strftime('%Y%m%d-%H%M%S')}")


def safe_name(text: str) -> str:
    """A name fit for a folder and every tracker: letters, digits and . _ + - only."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)[:200]


def event_values(event: dict) -> dict[str, float]:
    """The numbers an engine event gives the trackers, by the names they are logged under."""
    kind = event.get("kind")
    if kind == "step":
        values = {f"train/{k}": event.get(k) for k in ("loss", "lr", "examples_per_second")}
    elif kind == "eval":
        values = {f"eval/{k}": v for k, v in event["metrics"].items()}
    elif kind == "rung":  # an lr search's score of one candidate
        values = {f"search/lr_{event['lr']:g}": event.get("score")}
    else:
        return {}
    return {k: float(v) for k, v in values.items() if is_number(v)}


def final_values(result: dict) -> dict[str, float]:
    """A result's numbers: its last and best metrics, and every top-level number (counts, times, the lr)."""
    out = {f"final/{k}": v for k, v in (result.get("metrics") or {}).items()}
    out |= {f"best/{k}": v for k, v in (result.get("best_metrics") or {}).items()}
    out |= {f"result/{k}": v for k, v in result.items() if is_number(v)}
    return {k: float(v) for k, v in out.items() if is_number(v)}


def is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def outcome(result: dict | None) -> str:
    """finished, stopped (to be resumed, or cancelled) or failed (no result)."""
    return "failed" if result is None else "stopped" if result.get("stopped") else "finished"


class Tracker:
    """One run in one tracker. start(config, step): open it (step > 0: a resumed run, whose later points a dead
    attempt may have logged); log(step, metrics); finish(result): close it (result None: the run failed)."""

    name = ""

    def __init__(self, run_name: str):
        self.run_name = run_name
        self.root = tracker_root(self.name)
        self.where = str(self.root)  # what a person opens to see the run (a folder or a URI)

    def start(self, config: dict, step: int = 0) -> None:
        raise NotImplementedError

    def log(self, step: int, metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def finish(self, result: dict | None) -> None:
        raise NotImplementedError


class TensorBoardTracker(Tracker):
    """A SummaryWriter log dir per run: MODULETUNE_HOME/trackers/tensorboard/<run name>."""

    name = "tensorboard"

    def start(self, config: dict, step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.where = str(self.root / self.run_name)
        # A resumed run drops what a dead attempt wrote after the checkpoint it resumes from.
        self.writer = SummaryWriter(self.where, purge_step=step + 1 if step else None)
        self.writer.add_text("config", as_code(config), step)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def finish(self, result: dict | None) -> None:
        self.writer.add_text("outcome", outcome(result) + ("\n\n" + as_code(result) if result else ""))
        self.writer.close()


class MlflowTracker(Tracker):
    """An MLflow run in the experiment "moduletune": MLFLOW_TRACKING_URI, else a SQLite store in
    MODULETUNE_HOME/trackers/mlflow (MLflow 3 keeps its plain-file store read-only: mlflow.db is its own advice)."""

    name = "mlflow"

    def start(self, config: dict, step: int = 0) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            self.root.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{self.root / 'mlflow.db'}"
        self.where, self.client = uri, MlflowClient(tracking_uri=uri)
        experiment = self._experiment()
        found = step and self.client.search_runs(
            [experiment],
            filter_string=f"tags.{RUN_TAG} = '{self.run_name}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if found:  # a resumed run goes on in the MLflow run its first attempt opened (params already there)
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(experiment, run_name=self.run_name, tags={RUN_TAG: self.run_name})
            self.run_id = run.info.run_id
            params = [Param(k, clipped(v)) for k, v in sorted(config.items())]
            for i in range(0, len(params), 100):  # MLflow takes 100 params a batch
                self.client.log_batch(self.run_id, params=params[i : i + 100])
        self.pending, self.last = [], time.monotonic()

    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name(EXPERIMENT)
        if found is not None:
            return found.experiment_id
        default = os.environ.get("MLFLOW_TRACKING_URI") is None
        try:
            return self.client.create_experiment(
                EXPERIMENT, artifact_location=(self.root / "artifacts").as_uri() if default else None
            )
        except Exception:  # another process created it first
            found = self.client.get_experiment_by_name(EXPERIMENT)
            if found is None:
                raise
            return found.experiment_id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, v, now, step) for k, v in metrics.items()]
        if len(self.pending) >= FLUSH_METRICS or time.monotonic() - self.last >= FLUSH_SECONDS:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.client.log_batch(self.run_id, metrics=self.pending)
        self.pending, self.last = [], time.monotonic()

    def finish(self, result: dict | None) -> None:
        self._flush()
        status = outcome(result)
        self.client.set_tag(self.run_id, "moduletune_outcome", status)
        if result and result.get("learned_note"):
            self.client.set_tag(self.run_id, "moduletune_learned_note", clipped(result["learned_note"]))
        self.client.set_terminated(self.run_id, {"finished": "FINISHED", "stopped": "KILLED"}.get(status, "FAILED"))


class TrackioTracker(Tracker):
    """A trackio run in its local project "moduletune": TRACKIO_DIR, else MODULETUNE_HOME/trackers/trackio (read
    when trackio is first imported in a process: a process logs to one trackio folder)."""

    name = "trackio"

    def start(self, config: dict, step: int = 0) -> None:
        self.trackio = import_trackio(self.root)
        self.where = str(self.trackio.utils.TRACKIO_DIR)
        with contextlib.redirect_stdout(sys.stderr):  # trackio talks on stdout; `moduletune run --json` owns it
            self.run = self.trackio.init(
                project=EXPERIMENT,
                name=self.run_name,
                config=config,
                resume="allow" if step else "never",
                embed=False,
                auto_log_gpu=False,
                auto_log_cpu=False,
            )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def finish(self, result: dict | None) -> None:
        with contextlib.redirect_stdout(sys.stderr):
            self.trackio.finish()  # the current run of this thread: the one start opened


def import_trackio(root: Path):
    """trackio, its folder TRACKIO_DIR when that is set, else root (trackio reads it once, when first imported)."""
    if "trackio" not in sys.modules and not os.environ.get("TRACKIO_DIR"):
        os.environ["TRACKIO_DIR"] = str(root)
        try:
            import trackio
        finally:
            del os.environ["TRACKIO_DIR"]
    import trackio

    where = Path(trackio.utils.TRACKIO_DIR)
    if not os.environ.get("TRACKIO_DIR") and where != root:
        log.warning("trackio writes to %s (its folder at its first import here), not %s", where, root)
    return trackio


CLASSES = {c.name: c for c in (TrackioTracker, MlflowTracker, TensorBoardTracker)}
assert set(CLASSES) == set(TRACKERS)


def as_code(value) -> str:
    """A mapping as indented JSON in a Markdown code block (TensorBoard's text panel renders Markdown)."""
    return "```\n" + json.dumps(value, indent=2, sort_keys=True, default=str) + "\n```"


def clipped(value, limit: int = 500) -> str:
    """A value as MLflow takes it: text, cut short (a param holds at most 6000 characters)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Tracking:
    """The trackers of one run, fed from its events: wrap(on_event) gives the engine's callback, finish(result)
    closes them. A tracker is opened at the run's first event (so a resumed run knows its step); one that fails
    later is dropped with a warning, so a tracker's hiccup never costs a trained run."""

    def __init__(self, trackers: list[Tracker] | tuple = (), config: dict | None = None):
        self.trackers, self.config = list(trackers), config or {}
        self.started = self.done = False
        self.last_step = 0

    def wrap(self, on_event=None):
        """on_event that also reports each event to the trackers, then returns what on_event returns."""

        def handler(event: dict):
            if self.trackers and not self.done:
                self.feed(event)
            return on_event(event) if on_event is not None else None

        return handler

    def feed(self, event: dict) -> None:
        kind = event.get("kind")
        if not self.started and kind in ("resumed", "start", "step", "eval", "rung"):
            self.started = True
            step = int(event.get("step") or 0) if kind in ("resumed", "start") else 0
            for tracker in self.trackers:  # a tracker that cannot open is bad input: the run stops here
                tracker.start(self.config, step)
        values = event_values(event)
        if values:
            self.last_step = int(event["step"])
            self._each("log", self.last_step, values)

    def finish(self, result=None) -> None:
        """Log a finished run's numbers and close every tracker (result None: the run failed); once only."""
        if self.done:
            return
        self.done = True
        if not self.started:
            return
        result = result.to_dict() if hasattr(result, "to_dict") else result
        if result is not None and not result.get("stopped"):  # a stopped run's numbers are not its final ones
            self._each("log", int(result.get("steps") or self.last_step), final_values(result))
        self._each("finish", result)

    def _each(self, method: str, *args) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as err:
                log.warning("%s stopped logging %s: %s", tracker.name, tracker.run_name, one_line(err, with_type=True))
                self.trackers.remove(tracker)


def track(config, run_name: str | None = None, default=None) -> Tracking:
    """The Tracking of a run (a RunConfig or its dict): its report_to, else default; TrackerError when one named
    is not installed here. run_name: "run-<id>" for a registry run, else a label made from the config."""
    data = config if isinstance(config, dict) else config.to_dict()
    names = check_installed(data.get("report_to"), default)
    name = safe_name(run_name) if run_name else run_label(data)
    return Tracking([CLASSES[n](name) for n in names], data)
