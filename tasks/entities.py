"""A run as the registry hands it out: a typed record (mlflow's `entities`), not a dict of its columns.

`Registry.get` and `Registry.list_runs` return `Run`s; `Run.to_dict` is the one JSON form of a run (the API's `run`
and `runs` endpoints, `moduletune show --json`), with the keys and values the registry's dicts always had. The
pandas view (`Registry.runs_frame`) is made from the same records (tasks.rows).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from functools import cached_property

from moduletune.tuning.config import RunConfig

# What a run is: its config's columns, which people filter and group by.
CONFIG_COLUMNS = ["task", "model", "modules", "family", "layers", "seed", "lr"]
SCORE_COLUMNS = ["primary_metric_name", "primary_metric"]
SHARE_COLUMNS = ["trainable_pct", "module_pct"]  # of the model's parameters: what trains, what the families hold
# The keys of a run's dict (Run.to_dict), in order: a list_runs() row; runs_frame() puts NOTE_COLUMNS after its own.
RUN_COLUMNS = [
    "id",
    "status",
    *CONFIG_COLUMNS,
    *SCORE_COLUMNS,
    "chance_metric",
    "learned",
    "kind",
    "parent_id",
    *SHARE_COLUMNS,
    "module_params",
    "head_params",
    "trainable_params",
    "total_params",
    "step",
    "total_steps",
    "progress",
    "eta_seconds",
    "worker",
    "device",
    "submitter",
    "sweep_id",
    "study_id",
    "queued_at",
    "started_at",
    "heartbeat_at",
    "finished_at",
    "error",
    "artifact_dir",
    "retry_of",
    "resumed",
    "resumed_from_step",
    "resume_count",
    "claims",
    "completions",
    "cancel_requested",
    "train_seconds",
    "examples_per_second",
    "peak_memory_mb",
]
NOTE_COLUMNS = ["tags", "notes"]  # a person's labels (tasks.tags): the tags a sorted list, the note text or None
RUN_COLUMNS += NOTE_COLUMNS
TIME_COLUMNS = ("queued_at", "started_at", "heartbeat_at", "finished_at")
# One point of the Compare tab's charts (its `compare` API endpoint): what the run is, its score and its size.
COMPARE_COLUMNS = ["id", *CONFIG_COLUMNS, *SCORE_COLUMNS, *SHARE_COLUMNS, "trainable_params", "module_params"]


@dataclass(frozen=True)
class Outcome:
    """What a run produced, flat where tables read it (all None until it has a result); `details` the whole stored
    result (a RunResult's dict, or a search's outcome), read only by Registry.get."""

    primary_metric_name: str | None = None
    primary_metric: float | None = None
    chance_metric: float | None = None  # the primary metric of always predicting the majority class (0 for MCC/r)
    learned: bool | None = None  # False: constant predictions or within noise of chance
    trainable_pct: float | None = None
    module_pct: float | None = None
    module_params: int | None = None
    head_params: int | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    train_seconds: float | None = None
    examples_per_second: float | None = None
    peak_memory_mb: float | None = None
    details: dict = field(default_factory=dict)  # empty until it has a result, and where listed

    def detail(self, key: str, default=None):
        """One entry of the whole stored result (a search's chosen_lr, a run's learned_note), or default."""
        return self.details.get(key, default)


@dataclass(frozen=True)
class Progress:
    """How far a run is: the optimizer steps done of how many, and when it should finish."""

    step: int = 0
    total_steps: int | None = None
    eta_seconds: float | None = None

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0


@dataclass(frozen=True)
class Placement:
    """Where a run trains: the worker (host:pid) that holds it and the device it trains on."""

    worker: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class Times:
    """When a run was queued, started, last heard from and finished (seconds since the epoch, UTC)."""

    queued_at: float | None = None
    started_at: float | None = None
    heartbeat_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class Attempts:
    """How often workers took a run (the claim number), it succeeded (1 at most) and was resumed from a
    checkpoint after its worker died."""

    claims: int = 0
    completions: int = 0
    resume_count: int = 0
    resumed_from_step: int | None = None

    @property
    def resumed(self) -> bool:
        return self.resumed_from_step is not None


@dataclass(frozen=True)
class Run:
    """One run: what it is (its config's columns, the config itself), where it stands, what it produced, and a
    person's labels. `detailed` runs (Registry.get) carry the stored config and whole result; listed ones do not."""

    id: int
    status: str
    kind: str = "run"  # "run", "search" (an lr search: its candidates are its children) or "candidate"
    task: str = ""
    model: str = ""
    modules: str = ""  # the families joined by "+"
    family: str = ""  # their short label
    layers: str = ""
    seed: int = 0
    lr: float = 0.0  # the lr used (the family default made explicit at submission)
    submitter: str | None = None
    sweep_id: str | None = None
    study_id: int | None = None
    parent_id: int | None = None  # a candidate's or a final run's search
    retry_of: int | None = None
    cancel_requested: bool = False
    error: str | None = None
    artifact_dir: str | None = None
    result: Outcome = field(default_factory=Outcome)
    progress: Progress = field(default_factory=Progress)
    placement: Placement = field(default_factory=Placement)
    times: Times = field(default_factory=Times)
    attempts: Attempts = field(default_factory=Attempts)
    tags: list[str] = field(default_factory=list)  # sorted
    note: str | None = None
    detailed: bool = False
    config_data: dict = field(default_factory=dict)  # the stored config as JSON (detailed runs only; else empty)

    @cached_property
    def config(self) -> RunConfig:
        """The stored config, read back as submission checked it (not checked again); only a detailed run carries it."""
        if not self.detailed:
            raise ValueError(f"run {self.id} was listed without its config: read it with Registry.get")
        return RunConfig.from_stored(self.config_data)

    @property
    def extra(self) -> dict:
        """What moduletune keeps with the run in its stored config (a final run's lr_search), {} when listed."""
        return self.config_data.get("extra") or {}

    @classmethod
    def from_row(cls, row, tags=(), detailed: bool = False) -> Run:
        """A registry row (a mapping of the runs table's columns) and its tags as a Run; NaN read as None."""

        def get(name):
            return _finite(row[name])

        grouped = {
            "result": _part(Outcome, get),
            "progress": _part(Progress, get),
            "placement": _part(Placement, get),
            "times": _part(Times, get),
            "attempts": _part(Attempts, get),
        }
        flat = {f.name: get(f.name) for f in fields(cls) if f.name in row and f.name not in (*grouped, *_SET)}
        if detailed:
            stored = json.loads(row["result"]) if row["result"] else {}
            grouped["result"] = replace(grouped["result"], details=stored)
        return cls(
            **flat,
            **grouped,
            kind=row["kind"] or "run",
            cancel_requested=bool(row["cancel_requested"]),
            tags=sorted(tags),
            note=row["notes"],
            detailed=detailed,
            config_data=json.loads(row["config"]) if detailed else {},
        )

    def to_dict(self, iso: bool = True) -> dict:
        """The run as the registry's JSON-ready dict: the RUN_COLUMNS (times as ISO-8601 UTC strings unless
        iso=False), then a detailed run's config and whole result."""
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name in RUN_COLUMNS}
        for part in (self.result, self.progress, self.placement, self.times, self.attempts):
            flat.update({f.name: getattr(part, f.name) for f in fields(part) if f.name in RUN_COLUMNS})
        flat.update(
            progress=self.progress.fraction, resumed=self.attempts.resumed, tags=list(self.tags), notes=self.note
        )
        if iso:
            flat.update({c: iso_time(flat[c]) for c in TIME_COLUMNS})
        out = {k: flat[k] for k in RUN_COLUMNS}
        if self.detailed:
            out.update(config=self.config_data, result=self.result.details or None)
        return out


_SET = ("kind", "cancel_requested")  # columns from_row reads with a default


def _part(kind, get):
    """One group of a Run (Outcome, Progress, ...) from a row's columns of the same names."""
    return kind(**{f.name: get(f.name) for f in fields(kind) if f.name != "details"})


def _finite(value):
    """A column's value, with a float that is not finite read as None (JSON and tables do not take NaN)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def iso_time(seconds: float | None) -> str | None:
    """A time (seconds since the epoch) as an ISO-8601 UTC string to the second, as the JSON shows it."""
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="seconds")
