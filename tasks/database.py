"""The registry's database: its tables, and one engine per URL and process (SQLite by default, PostgreSQL by URL).

SQLite in MODULETUNE_HOME by default (WAL: the UI reads while workers write); PostgreSQL when
MODULETUNE_DB_URL says postgresql://..., shared by workers on many machines. Engines are made on first
use, their schema made or upgraded then by the Alembic migrations in tasks/migrations, so importing this module
opens nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
)
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from moduletune.tasks import migrations
from moduletune.tuning.disk import disk_full
from moduletune.tuning.settings import home
from moduletune.tuning.text import one_line
from moduletune.tuning.text import without_password as describe

DB_URL_ENV = "MODULETUNE_DB_URL"
# The schema version the newest migration (tasks/migrations/versions) records: 4, studies; 3, tags and notes; 2, the
# baseline (kind, parent_id, chance_metric, learned over version 1).
SCHEMA_VERSION = 5

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
)
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
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
    Column("peak_memory_mb", Float),  # the run's own peak (tuning.train.peak_memory_mb); NULL before schema 5
    Column("result", Text),
    Column("artifact_dir", Text),
    Column("notes", Text),  # a person's note on the run (tasks.tags)
    Column("study_id", Integer, index=True),  # the study (tasks.studies) a sweep or the preset queued it in
)

# A study: the grid of runs and searches one sweep or preset queued, with what was asked (tasks.studies). Its
# status and progress are derived from its runs; `state` is what a person asked of it as a whole.
studies = Table(
    "studies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("spec", Text, nullable=False),  # JSON: tasks, families, layers, seeds, sizes, lr-search settings
    Column("owner", String(200)),  # who queued it (a public-mode visitor's id)
    Column("created_at", Float, nullable=False),
    Column("state", String(16), nullable=False, default="active", server_default="active"),
    Column("priority", Integer, nullable=False, default=0, server_default="0"),  # its runs' queue priority
    Column("tags", Text),  # JSON list, given to each of its runs too
    Column("notes", Text),
)

# A run's tags (tasks.tags): short slugs to group and filter runs by, one row each.
run_tags = Table(
    "run_tags",
    metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(40), primary_key=True),
    Index("ix_run_tags_tag", "tag"),
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
            except BaseException:  # refused (a newer schema): no pooled connection left behind
                engine.dispose()
                raise
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

        @event.listens_for(engine, "handle_error")
        def _full(context):
            # A full disk names the registry's file (a run's events, claims and outcomes are written there), as
            # every other file a run writes is named, instead of SQLite's "database or disk is full".
            err = context.original_exception
            if getattr(err, "sqlite_errorcode", None) == 13 or "database or disk is full" in str(err):  # SQLITE_FULL
                raise disk_full(Path(path).expanduser(), "the registry") from None

        return engine
    if url.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401  (an optional backend: the extra moduletune[postgres])
        except ImportError:
            raise RegistryError(
                f"the registry {describe(url)} needs the PostgreSQL driver, which is not installed: "
                "pip install 'moduletune[postgres]'"
            ) from None
        return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)
    raise RegistryError(
        f"unsupported registry URL {describe(url)!r}; use sqlite:///path/to/runs.db "
        f"or postgresql://user@host/db (set {DB_URL_ENV})"
    )


def ensure_schema(engine) -> int:
    """Make or upgrade the registry's schema to this release's through its migrations (tasks/migrations), under a
    lock so that processes starting together do it once; refuse a database newer than this code."""

    try:
        return migrations.upgrade(engine, SCHEMA_VERSION)
    except migrations.NewerSchema as err:
        raise RegistryError(str(err)) from None


def dispose_engines() -> None:
    """Close this process's pooled connections (a parent does this before forking workers)."""
    with _ENGINE_LOCK:
        for key, engine in list(_ENGINES.items()):
            if key[1] == os.getpid():
                engine.dispose()
                del _ENGINES[key]
