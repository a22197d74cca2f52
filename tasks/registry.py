"""The run registry: every run's config, status, progress, result and live curves, through SQLAlchemy 2.

SQLite in MODULETUNE_HOME by default (WAL: the UI reads while workers write); PostgreSQL when
MODULETUNE_DB_URL says postgresql://..., shared by workers on many machines. The registry is the
source of truth (Huey only carries run ids) and the UI's only interface to runs.

Every status change is one conditional UPDATE (... WHERE status = <expected>), so two workers can
never both claim a run, and a worker that lost its run (declared dead, run handed to another) can
never record over it: worker-side writes also match the claim number the worker got.
"""

from __future__ import annotations

import getpass
import json
import logging
import math
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError

from moduletune.tuning.settings import home
from moduletune.tuning.text import json_safe, one_line
from moduletune.tuning.text import without_password as describe  # noqa: F401  (registry.describe)

DB_URL_ENV = "MODULETUNE_DB_URL"
SCHEMA_VERSION = 2  # 2: kind, parent_id, chance_metric, learned (added in place to a version-1 registry)

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
)
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
RETRYABLE = (FAILED, CANCELLED, INTERRUPTED)

log = logging.getLogger("moduletune.registry")


class RegistryError(ValueError):
    """A registry request that cannot be honoured (unknown run, wrong status, unreachable database)."""


class RunNotFound(RegistryError):
    """No run has this id."""


class RegistryUnavailable(RegistryError):
    """The database could not be reached or opened (its message names the URL, so visitors never see it)."""


metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("status", String(16), nullable=False, index=True),
    # What the run is: the full RunConfig as JSON, plus the columns people filter and group by.
    Column("task", String(16), nullable=False, index=True),
    Column("model", String(300), nullable=False),
    Column("modules", String(200), nullable=False),
    Column("family", String(100), nullable=False),
    Column("layers", String(100), nullable=False),
    Column("seed", Integer, nullable=False),
    Column("lr", Float, nullable=False),
    Column("config", Text, nullable=False),
    Column("submitter", String(200)),
    Column("sweep_id", String(64), index=True),
    Column("retry_of", Integer),
    # "run" (trained and reported), "search" (an lr search: its candidates are its children) or "candidate".
    Column("kind", String(16), nullable=False, default="run", server_default="run", index=True),
    Column("parent_id", Integer, index=True),  # a candidate's search, or a final run's search
    # When and where.
    Column("queued_at", Float, nullable=False),
    Column("started_at", Float),
    Column("heartbeat_at", Float),
    Column("finished_at", Float),
    Column("worker", String(200)),
    Column("device", String(200)),
    # Progress and control.
    Column("step", Integer, nullable=False, default=0),
    Column("total_steps", Integer),
    Column("eta_seconds", Float),
    Column("error", Text),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("claims", Integer, nullable=False, default=0),  # times a worker took it (the claim number)
    Column("completions", Integer, nullable=False, default=0),  # times it succeeded: 1 at most, by design
    Column("resume_count", Integer, nullable=False, default=0),  # re-queues after a worker died
    Column("resumed_from_step", Integer),
    # The result, flat where tables and charts need it, whole in `result`.
    Column("primary_metric_name", String(64)),
    Column("primary_metric", Float),
    Column("chance_metric", Float),  # the primary metric of always predicting the majority class (0 for MCC/r)
    Column("learned", Boolean),  # False: constant predictions or within noise of chance
    Column("module_params", BigInteger),
    Column("head_params", BigInteger),
    Column("trainable_params", BigInteger),
    Column("encoder_params", BigInteger),
    Column("total_params", BigInteger),
    Column("module_pct", Float),
    Column("trainable_pct", Float),
    Column("train_seconds", Float),
    Column("examples_per_second", Float),
    Column("result", Text),
    Column("artifact_dir", Text),
)

events = Table(
    "events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("run_id", Integer, nullable=False),
    Column("step", Integer, nullable=False),
    Column("epoch", Float),
    Column("split", String(32), nullable=False),
    Column("name", String(64), nullable=False),
    Column("value", Float),
    Column("t", Float),
    Index("ix_events_run_step", "run_id", "step"),
)

meta = Table(
    "moduletune_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(200), nullable=False),
)

# The columns of runs_frame() and of each list_runs() row, in order.
RUN_COLUMNS = [
    "id",
    "status",
    "task",
    "model",
    "modules",
    "family",
    "layers",
    "seed",
    "lr",
    "primary_metric_name",
    "primary_metric",
    "chance_metric",
    "learned",
    "kind",
    "parent_id",
    "trainable_pct",
    "module_pct",
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
]
FLOAT_COLUMNS = (
    "lr",
    "primary_metric",
    "chance_metric",
    "trainable_pct",
    "module_pct",
    "progress",
    "eta_seconds",
    "train_seconds",
    "examples_per_second",
)
INT_COLUMNS = ("id", "seed", "step", "resume_count", "claims", "completions")  # never null: int64
NULLABLE_INT_COLUMNS = (
    "module_params",
    "head_params",
    "trainable_params",
    "total_params",
    "total_steps",
    "retry_of",
    "resumed_from_step",
    "parent_id",
)  # null until known: pandas Int64
# runs_frame() adds what each run's config says about replicates (tuning.replicates).
FRAME_COLUMNS = RUN_COLUMNS + ["settings", "settings_key", "comparison_key"]
EVENT_COLUMNS = ["run_id", "step", "epoch", "split", "name", "value"]
TIME_COLUMNS = ("queued_at", "started_at", "heartbeat_at", "finished_at")
_FLAT = [c for c in runs.c if c.name not in ("config", "result")]

_ENGINES: dict[tuple, object] = {}
_ENGINE_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------- settings


def db_url() -> str:
    """MODULETUNE_DB_URL, else a SQLite file in MODULETUNE_HOME."""
    return os.environ.get(DB_URL_ENV) or f"sqlite:///{home() / 'runs.db'}"


def normalize_url(url: str) -> str:
    """postgresql:// and postgres:// -> postgresql+psycopg:// (psycopg 3); other URLs unchanged."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def get_engine(url: str | None = None):
    """The SQLAlchemy engine for url, created (with its schema) on first use, cached per process."""
    url = normalize_url(url or db_url())
    key = (url, os.getpid())
    with _ENGINE_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _create_engine(url)
            try:
                ensure_schema(engine)
            except (OperationalError, ProgrammingError, DBAPIError) as err:
                engine.dispose()
                raise RegistryUnavailable(
                    f"could not open the run registry at {describe(url)}: {one_line(err.orig or err)}"
                ) from None
            _ENGINES[key] = engine
        return engine


def _create_engine(url: str):
    from sqlalchemy import create_engine

    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            # WAL: readers (the UI) never block the writer (a worker) and vice versa.
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if url.startswith("postgresql"):
        return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)
    raise RegistryError(
        f"unsupported registry URL {describe(url)!r}; use sqlite:///path/to/runs.db "
        f"or postgresql://user@host/db (set {DB_URL_ENV})"
    )


def ensure_schema(engine) -> int:
    """Create the tables on first use and record the schema version; refuse a newer schema."""
    for attempt in range(8):
        try:
            metadata.create_all(engine, checkfirst=True)
            with engine.begin() as conn:
                found = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
                if found is None:
                    conn.execute(insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
                    found = SCHEMA_VERSION
            break
        except (IntegrityError, OperationalError, ProgrammingError):
            # Several processes creating the schema at once: one wins, the others retry and find it.
            if attempt == 7:
                raise
            time.sleep(0.1 * (attempt + 1))
    if int(found) > SCHEMA_VERSION:
        raise RegistryError(
            f"the run registry has schema version {found}, newer than this moduletune "
            f"understands ({SCHEMA_VERSION}); upgrade moduletune"
        )
    if int(found) < SCHEMA_VERSION:
        _add_missing_columns(engine)
        with engine.begin() as conn:
            conn.execute(update(meta).where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))
        found = SCHEMA_VERSION
    return int(found)


def _add_missing_columns(engine) -> None:
    """Upgrade an older registry in place: add the columns this release has and it lacks (all nullable or
    with a server default), keeping every run and event."""
    from sqlalchemy import inspect, text

    present = {c["name"] for c in inspect(engine).get_columns("runs")}
    with engine.begin() as conn:
        for column in runs.c:
            if column.name in present:
                continue
            kind = column.type.compile(dialect=engine.dialect)
            default = f" DEFAULT '{column.server_default.arg}'" if column.server_default is not None else ""
            nullable = "" if column.nullable or default else " NULL"
            conn.execute(text(f"ALTER TABLE runs ADD COLUMN {column.name} {kind}{default}{nullable}"))
            log.info("registry upgraded: added runs.%s", column.name)


def dispose_engines() -> None:
    """Close this process's pooled connections (a parent does this before forking workers)."""
    with _ENGINE_LOCK:
        for key, engine in list(_ENGINES.items()):
            if key[1] == os.getpid():
                engine.dispose()
                del _ENGINES[key]


# ---------------------------------------------------------------------------------------------- submission


def check_submission(config):
    """A fully validated RunConfig, or the engine's ValueError: settings, model, architecture, layer range."""
    from moduletune.tuning.config import RunConfig
    from moduletune.tuning.models import check_against_model, load_config

    config = RunConfig.from_dict(config if isinstance(config, dict) else config.to_dict())
    check_against_model(config, _model_config(config.model, load_config))
    return config


_MODEL_CONFIGS: dict[str, object] = {}


def _model_config(name: str, load_config):
    if name not in _MODEL_CONFIGS:
        _MODEL_CONFIGS[name] = load_config(name)
    return _MODEL_CONFIGS[name]


def family_label(families) -> str:
    """The paper's short names joined by '+': ('layernorm',) -> 'LN', ('random:query',) -> 'random:Q'."""
    from moduletune.tuning.modules import short_label

    return short_label(families)


def _row_values(config, submitter, sweep_id, retry_of, kind: str | None = None, parent_id: int | None = None) -> dict:
    """The columns of a newly queued run; a search config makes a search, and the lr used is made explicit."""
    if config.lr_search:
        kind = "search"  # its candidates and, once it chose, its runs are its children
    elif config.lr is None:
        # The family default made explicit: the config (and so every diff and tooltip) shows the lr used.
        config = config.replace(lr=config.learning_rate)
    return dict(
        status=QUEUED,
        task=config.task,
        model=config.model,
        modules="+".join(config.modules),
        family=family_label(config.modules),
        layers=config.layers,
        seed=config.seed,
        lr=config.learning_rate,
        config=config.to_json(),
        submitter=submitter or default_submitter(),
        sweep_id=sweep_id,
        retry_of=retry_of,
        kind=kind or "run",
        parent_id=parent_id,
        queued_at=time.time(),
        step=0,
        cancel_requested=False,
        claims=0,
        completions=0,
        resume_count=0,
    )


def default_submitter() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (some containers)
        return os.environ.get("USER") or "unknown"


# ---------------------------------------------------------------------------------------------- the registry


class Registry:
    """Runs and their events in one database; a small plain API that the CLI, the UI and workers share."""

    def __init__(self, url: str | None = None, queue_url: str | None = None):
        self.url = normalize_url(url or db_url())
        self.queue_url = queue_url

    # -- plumbing

    @property
    def engine(self):
        return get_engine(self.url)

    def _huey(self):
        from moduletune.tasks.queue import get_huey

        return get_huey(self.queue_url)

    def _enqueue(self, run_id: int) -> None:
        from moduletune.tasks.queue import enqueue_run

        enqueue_run(run_id, self._huey())

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar())

    def identity(self) -> str:
        """This registry's own id (a random uuid stored once in it): a run folder or checkpoint names the
        registry it belongs to, so a reset or switched registry whose ids restart never resumes another's."""
        import uuid

        for _ in range(3):
            with self.engine.connect() as conn:
                found = conn.execute(select(meta.c.value).where(meta.c.key == "registry_id")).scalar()
            if found:
                return found
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(meta).values(key="registry_id", value=uuid.uuid4().hex))
            except IntegrityError:  # another process stored one first: read it
                continue
        raise RegistryError("could not read or store the registry's id")

    def queued_ids(self) -> list[int]:
        """The ids of every queued run (what the queue should hold a message for), oldest first."""
        with self.engine.connect() as conn:
            return [
                int(i)
                for i in conn.execute(select(runs.c.id).where(runs.c.status == QUEUED).order_by(runs.c.id)).scalars()
            ]

    # -- people: submit, look, cancel, retry

    def submit(
        self, config, submitter: str | None = None, sweep_id: str | None = None, retry_of: int | None = None
    ) -> int:
        """Validate fully, record the run as queued, enqueue it; returns its id. Nothing is left half-made."""
        config = check_submission(config)
        return self._insert_and_enqueue(config, submitter, sweep_id, retry_of)

    def submit_many(self, configs, submitter: str | None = None, sweep_id: str | None = None) -> list[int]:
        """Validate every config first (all or nothing), then submit each; returns the ids in order."""
        checked = [check_submission(c) for c in configs]
        return [self._insert_and_enqueue(c, submitter, sweep_id, None) for c in checked]

    def _insert_and_enqueue(self, config, submitter, sweep_id, retry_of) -> int:
        values = _row_values(config, submitter, sweep_id, retry_of)
        with self.engine.begin() as conn:
            run_id = int(conn.execute(insert(runs).values(**values)).inserted_primary_key[0])
        try:
            self._enqueue(run_id)
        except BaseException:
            with self.engine.begin() as conn:  # nothing half-made: no row without a queue message
                conn.execute(delete(runs).where(runs.c.id == run_id))
            raise
        log.info(
            "run %s queued: %s %s %s@%s seed %s",
            run_id,
            values["kind"],
            config.task,
            values["family"],
            config.layers,
            config.seed,
        )
        return run_id

    def complete_search(
        self, run_id: int, token: int, outcome: dict, candidates: list[tuple], finals: list
    ) -> list[int] | None:
        """An lr search finished: in one transaction the search succeeds (its chosen lr in `lr`), its candidates
        are recorded as its children (config, score) and its final runs (one per seed, at the chosen lr) are
        queued as children too. None, and nothing written, when this claim no longer holds the search."""
        parent = self.get(run_id)
        now = time.time()
        values = {
            "status": SUCCEEDED,
            "finished_at": now,
            "error": None,
            "eta_seconds": None,
            "completions": runs.c.completions + 1,
            **_result_columns(outcome),
        }
        values.pop("step", None)  # the search's step count stays the cumulative one it reported
        if outcome.get("chosen_lr") is not None:
            values["lr"] = float(outcome["chosen_lr"])
        with self.engine.begin() as conn:
            if conn.execute(update(runs).where(self._mine(run_id, token)).values(**values)).rowcount != 1:
                return None
            for config, cand in candidates:
                score = _finite(cand.get("score"))
                steps = int(cand.get("steps") or 0)
                conn.execute(
                    insert(runs).values(
                        {
                            **_row_values(
                                config,
                                parent["submitter"],
                                parent["sweep_id"],
                                None,
                                kind="candidate",
                                parent_id=run_id,
                            ),
                            "status": SUCCEEDED,
                            "started_at": now,
                            "finished_at": now,
                            "step": steps,
                            "total_steps": steps,
                            "completions": 1,
                            "primary_metric_name": outcome.get("primary_metric_name"),
                            "primary_metric": score,
                            "result": json.dumps(json_safe(cand)),
                        }
                    )
                )
            ids = [
                int(
                    conn.execute(
                        insert(runs).values(
                            **_row_values(config, parent["submitter"], parent["sweep_id"], None, parent_id=run_id)
                        )
                    ).inserted_primary_key[0]
                )
                for config in finals
            ]
        for new_id in ids:
            try:
                self._enqueue(new_id)
            except Exception as err:  # recorded and retryable, never silently lost
                self.transition(new_id, QUEUED, INTERRUPTED, error=f"could not be queued: {one_line(err)}")
        log.info("search %s chose lr %s; queued runs %s", run_id, outcome.get("chosen_lr"), ids)
        return ids

    def children(self, run_id: int, kind: str | None = None) -> list[dict]:
        """A search's candidates and final runs (flat rows, oldest first)."""
        query = select(*_FLAT).where(runs.c.parent_id == int(run_id)).order_by(runs.c.id)
        if kind:
            query = query.where(runs.c.kind == kind)
        with self.engine.connect() as conn:
            return [_flat(r) for r in conn.execute(query).mappings().all()]

    def get(self, run_id: int) -> dict:
        """Everything about one run: flat columns, the full config and result (JSON-ready values)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.id == int(run_id))).mappings().first()
        if row is None:
            raise RunNotFound(f"no run with id {run_id}")
        out = _flat(row)
        out["config"] = json.loads(row["config"])
        out["result"] = json.loads(row["result"]) if row["result"] else None
        return out

    def list_runs(
        self, status: str | None = None, task: str | None = None, sweep_id: str | None = None, limit: int | None = None
    ) -> list[dict]:
        """Runs newest first as flat dicts (the RUN_COLUMNS keys; times as ISO-8601 UTC strings)."""
        return [_flat(r) for r in self._rows(status, task, sweep_id, limit)]

    def runs_frame(
        self, status: str | None = None, task: str | None = None, sweep_id: str | None = None, limit: int | None = None
    ):
        """A pandas DataFrame with one row per run and the RUN_COLUMNS columns; times as UTC datetimes."""
        import pandas as pd

        from moduletune.tuning.replicates import comparison_key, replicate_key, replicate_settings

        found = self._rows(status, task, sweep_id, limit, with_config=True)
        rows = [_flat(r, iso=False) for r in found]
        frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
        configs = [json.loads(r["config"]) for r in found]
        # What makes runs replicates (pooled over seeds) and comparable (the same full-FT reference).
        frame["settings"] = pd.Series(
            [replicate_settings(c, r["lr"]) for c, r in zip(configs, found)], index=frame.index, dtype=object
        )
        frame["settings_key"] = [replicate_key(c, r["lr"]) for c, r in zip(configs, found)]
        frame["comparison_key"] = [comparison_key(c, r["lr"]) for c, r in zip(configs, found)]
        for col in FLOAT_COLUMNS:
            frame[col] = frame[col].astype("float64")
        for col in INT_COLUMNS:
            frame[col] = frame[col].astype("int64")
        for col in NULLABLE_INT_COLUMNS:
            frame[col] = frame[col].astype("Int64")
        for col in ("resumed", "cancel_requested"):
            frame[col] = frame[col].astype(bool)
        frame["learned"] = frame["learned"].astype("boolean")
        frame["kind"] = frame["kind"].fillna("run").astype(object)
        for col in TIME_COLUMNS:
            frame[col] = pd.to_datetime(frame[col].astype("float64"), unit="s", utc=True)
        return frame

    def _rows(self, status, task, sweep_id, limit, with_config: bool = False):
        if status is not None and status not in STATUSES:
            raise RegistryError(f"unknown status {status!r}; allowed: {', '.join(STATUSES)}")
        columns = [*_FLAT, runs.c.config] if with_config else _FLAT
        query = select(*columns).order_by(runs.c.id.desc())
        if status:
            query = query.where(runs.c.status == status)
        if task:
            from moduletune.tuning.glue import get_task

            query = query.where(runs.c.task == get_task(task).name)
        if sweep_id:
            query = query.where(runs.c.sweep_id == sweep_id)
        if limit:
            query = query.limit(int(limit))
        with self.engine.connect() as conn:
            return conn.execute(query).mappings().all()

    def count(self, status: str | None = None) -> int:
        query = select(func.count()).select_from(runs)
        if status:
            query = query.where(runs.c.status == status)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar())

    def events_frame(self, run_ids, names=None):
        """The runs' event series: a DataFrame(run_id, step, epoch, split, name, value) ordered by run and step."""
        import pandas as pd

        ids = [int(run_ids)] if isinstance(run_ids, (int, str)) else [int(i) for i in run_ids]
        query = (
            select(*(events.c[c] for c in EVENT_COLUMNS))
            .where(events.c.run_id.in_(ids))
            .order_by(events.c.run_id, events.c.step, events.c.id)
        )
        if names:
            query = query.where(events.c.name.in_([names] if isinstance(names, str) else list(names)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        frame = pd.DataFrame([tuple(r) for r in rows], columns=EVENT_COLUMNS)
        return frame.astype({"run_id": "int64", "step": "int64", "epoch": "float64", "value": "float64"})

    def request_cancel(self, run_id: int) -> str:
        """Cancel: a queued (or interrupted) run never starts; a running one stops at its next step.

        Returns the status now ('cancelled', or 'cancelling' while a worker stops the run)."""
        run_id = int(run_id)
        for _ in range(5):  # a run can move between our read and our write; look again
            status = self.get(run_id)["status"]
            if status in (QUEUED, INTERRUPTED):
                if self.transition(
                    run_id, status, CANCELLED, finished_at=time.time(), error=f"cancelled while {status}"
                ):
                    return CANCELLED
            elif status == RUNNING:
                if self.transition(run_id, RUNNING, RUNNING, cancel_requested=True):
                    return "cancelling"
            else:
                raise RegistryError(f"run {run_id} is already {status}; there is nothing to cancel")
        raise RegistryError(f"run {run_id} kept changing status; try again")

    def retry(self, run_id: int, submitter: str | None = None) -> int:
        """A failed, cancelled or interrupted run again, as a new run linked to it (retry_of); returns the new id."""
        old = self.get(run_id)
        if old["status"] not in RETRYABLE:
            raise RegistryError(f"run {run_id} is {old['status']}; only {', '.join(RETRYABLE)} runs can be retried")
        return self.submit(old["config"], submitter or old["submitter"], old["sweep_id"], retry_of=int(run_id))

    # -- workers: claim, heartbeat, progress, outcome

    def claim(self, run_id: int, worker: str, device: str | None = None) -> int | None:
        """queued -> running for exactly one caller; returns its claim number (a token), else None."""
        now = time.time()
        with self.engine.begin() as conn:
            done = conn.execute(
                update(runs)
                .where(runs.c.id == int(run_id), runs.c.status == QUEUED)
                .values(
                    status=RUNNING,
                    claims=runs.c.claims + 1,
                    worker=worker,
                    device=device,
                    error=None,
                    started_at=func.coalesce(runs.c.started_at, now),
                    heartbeat_at=now,
                    eta_seconds=None,
                )
            )
            if done.rowcount != 1:
                return None
            return int(conn.execute(select(runs.c.claims).where(runs.c.id == int(run_id))).scalar())

    def _mine(self, run_id: int, token: int):
        return and_(runs.c.id == int(run_id), runs.c.status == RUNNING, runs.c.claims == int(token))

    def heartbeat(self, run_id: int, token: int) -> tuple[bool, bool]:
        """(still ours, cancel requested): refreshes heartbeat_at only while this claim holds the run."""
        with self.engine.begin() as conn:
            alive = (
                conn.execute(update(runs).where(self._mine(run_id, token)).values(heartbeat_at=time.time())).rowcount
                == 1
            )
            cancel = bool(conn.execute(select(runs.c.cancel_requested).where(runs.c.id == int(run_id))).scalar())
        return alive, cancel

    def record_progress(
        self,
        run_id: int,
        token: int,
        rows: list[dict],
        step: int | None = None,
        total_steps: int | None = None,
        eta_seconds: float | None = None,
    ) -> bool:
        """Append event rows and progress in one transaction; False (and nothing written) if the run is not ours."""
        values = {"heartbeat_at": time.time()}
        if step is not None:
            values.update(step=int(step), total_steps=total_steps, eta_seconds=_finite(eta_seconds))
        with self.engine.begin() as conn:
            if conn.execute(update(runs).where(self._mine(run_id, token)).values(**values)).rowcount != 1:
                return False
            clean = [{**r, "run_id": int(run_id), "value": _finite(r.get("value"))} for r in rows]
            if clean:
                conn.execute(insert(events), clean)
        return True

    def record_resume(self, run_id: int, token: int, step: int) -> int:
        """A run resumed from its checkpoint at `step`: note it, and forget the events recorded past that step
        (they are recorded again, so each step appears once). Returns how many events were dropped."""
        with self.engine.begin() as conn:
            if (
                conn.execute(
                    update(runs).where(self._mine(run_id, token)).values(resumed_from_step=int(step), step=int(step))
                ).rowcount
                != 1
            ):
                return 0
            return conn.execute(
                delete(events).where(events.c.run_id == int(run_id), events.c.step > int(step))
            ).rowcount

    def mark_succeeded(self, run_id: int, token: int, result: dict) -> bool:
        return self._finish(run_id, token, SUCCEEDED, result=result)

    def mark_failed(self, run_id: int, token: int, error: str, result: dict | None = None) -> bool:
        return self._finish(run_id, token, FAILED, result=result, error=error)

    def mark_cancelled(self, run_id: int, token: int, result: dict | None = None) -> bool:
        return self._finish(run_id, token, CANCELLED, result=result, error="cancelled while running")

    def mark_requeued(self, run_id: int, token: int, reason: str = "worker stopped; re-queued") -> bool:
        """running -> queued (a graceful worker stop): the run resumes from its checkpoint on the next worker."""
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    update(runs)
                    .where(self._mine(run_id, token))
                    .values(status=QUEUED, heartbeat_at=None, eta_seconds=None, error=reason)
                ).rowcount
                == 1
            )

    def _finish(self, run_id, token, status, result=None, error=None) -> bool:
        values = {"status": status, "finished_at": time.time(), "error": error, "eta_seconds": None}
        if result is not None:
            values.update(_result_columns(result))
        if status == SUCCEEDED:
            values["completions"] = runs.c.completions + 1
        with self.engine.begin() as conn:
            return conn.execute(update(runs).where(self._mine(run_id, token)).values(**values)).rowcount == 1

    def transition(self, run_id: int, old: str, new: str, **values) -> bool:
        """old -> new (with values) if the run is still `old`; False when it moved first (one conditional UPDATE)."""
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    update(runs).where(runs.c.id == int(run_id), runs.c.status == old).values(status=new, **values)
                ).rowcount
                == 1
            )

    # -- the dead-worker sweep

    def sweep_stale(self, timeout: float, max_resumes: int = 1, enqueue: bool = True) -> dict:
        """Running runs whose heartbeat is older than timeout -> interrupted; each re-queued (same id) once.

        A re-queued run resumes from the checkpoint under its run folder. Returns
        {"interrupted": [ids], "requeued": [ids]}; concurrent sweepers never both act on a run."""
        now = time.time()
        cutoff = now - float(timeout)
        stale = or_(runs.c.heartbeat_at < cutoff, runs.c.heartbeat_at.is_(None))
        with self.engine.connect() as conn:
            found = conn.execute(
                select(runs.c.id, runs.c.worker, runs.c.heartbeat_at).where(runs.c.status == RUNNING, stale)
            ).all()
        interrupted, requeued = [], []
        for run_id, worker, beat in found:
            age = now - beat if beat else float("inf")
            error = f"worker {worker} stopped heartbeating ({age:.0f}s without a heartbeat)"
            with self.engine.begin() as conn:
                if (
                    conn.execute(
                        update(runs)
                        .where(runs.c.id == run_id, runs.c.status == RUNNING, stale)
                        .values(status=INTERRUPTED, error=error, eta_seconds=None)
                    ).rowcount
                    != 1
                ):
                    continue
            interrupted.append(run_id)
            log.warning("run %s interrupted: %s", run_id, error)
            if not enqueue:
                continue
            with self.engine.begin() as conn:
                again = (
                    conn.execute(
                        update(runs)
                        .where(
                            runs.c.id == run_id,
                            runs.c.status == INTERRUPTED,
                            runs.c.resume_count < int(max_resumes),
                            runs.c.cancel_requested.is_(False),
                        )
                        .values(
                            status=QUEUED,
                            resume_count=runs.c.resume_count + 1,
                            error=error + "; re-queued to resume from its checkpoint",
                        )
                    ).rowcount
                    == 1
                )
            if not again:
                # A cancel asked of a run whose worker died ends it here; otherwise a person may retry it.
                with self.engine.begin() as conn:
                    conn.execute(
                        update(runs)
                        .where(runs.c.id == run_id, runs.c.status == INTERRUPTED, runs.c.cancel_requested.is_(True))
                        .values(status=CANCELLED, finished_at=time.time(), error=error + "; cancelled as asked")
                    )
                self.transition(
                    run_id, INTERRUPTED, INTERRUPTED, error=error + "; not resumed again (retry it to start over)"
                )
                continue
            try:
                self._enqueue(run_id)
            except Exception as err:
                self.transition(run_id, QUEUED, INTERRUPTED, error=f"{error}; could not re-queue: {err}")
                continue
            requeued.append(run_id)
            log.warning("run %s re-queued to resume from its checkpoint", run_id)
        return {"interrupted": interrupted, "requeued": requeued}


# ---------------------------------------------------------------------------------------------- helpers


def _result_columns(result: dict) -> dict:
    """The flat columns of a RunResult dict (non-finite metrics become NULL) plus the whole JSON."""
    out = {
        k: result.get(k)
        for k in (
            "primary_metric_name",
            "module_params",
            "head_params",
            "trainable_params",
            "encoder_params",
            "total_params",
            "artifact_dir",
            "resumed_from_step",
        )
    }
    for k in ("primary_metric", "chance_metric", "module_pct", "trainable_pct", "train_seconds", "examples_per_second"):
        out[k] = _finite(result.get(k))
    if result.get("learned") is not None:
        out["learned"] = bool(result["learned"])
    if result.get("steps") is not None:
        out["step"] = int(result["steps"])
    if result.get("device"):
        out["device"] = result["device"]
    out["result"] = json.dumps(json_safe(result))
    return out


def _flat(row, iso: bool = True) -> dict:
    out = {c.name: row[c.name] for c in _FLAT}
    out["progress"] = (row["step"] / row["total_steps"]) if row["total_steps"] else 0.0
    out["resumed"] = row["resumed_from_step"] is not None
    out["cancel_requested"] = bool(row["cancel_requested"])
    for key, value in out.items():
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None
    if iso:
        for col in TIME_COLUMNS:
            if out[col] is not None:
                out[col] = datetime.fromtimestamp(out[col], tz=timezone.utc).isoformat(timespec="seconds")
    return {k: out[k] for k in RUN_COLUMNS}


def _finite(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
