"""The registry survives upgrades, on SQLite and on a real PostgreSQL: a database written by the release before
Alembic (schema version 2) is upgraded in place with every run and event intact, a fresh one is made by the
migrations and equals the tables the code describes, processes opening one at once upgrade it once, and a
database newer than the code is refused."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
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
    create_engine,
    insert,
    inspect,
    select,
    text,
)

from moduletune.tasks import database, migrations
from moduletune.tasks.registry import Registry, RegistryError, normalize_url
from moduletune.tuning.config import RunConfig

from .conftest import REPO

# The registry's tables as the release of 2026-12 (the last before Alembic, schema version 2) made them with
# metadata.create_all: copied here literally, because the point is a database that release wrote.
RELEASE_2026_12 = MetaData()
Table(
    "runs",
    RELEASE_2026_12,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("status", String(16), nullable=False, index=True),
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
    Column("kind", String(16), nullable=False, default="run", server_default="run", index=True),
    Column("parent_id", Integer, index=True),
    Column("queued_at", Float, nullable=False),
    Column("started_at", Float),
    Column("heartbeat_at", Float),
    Column("finished_at", Float),
    Column("worker", String(200)),
    Column("device", String(200)),
    Column("step", Integer, nullable=False, default=0),
    Column("total_steps", Integer),
    Column("eta_seconds", Float),
    Column("error", Text),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("claims", Integer, nullable=False, default=0),
    Column("completions", Integer, nullable=False, default=0),
    Column("resume_count", Integer, nullable=False, default=0),
    Column("resumed_from_step", Integer),
    Column("primary_metric_name", String(64)),
    Column("primary_metric", Float),
    Column("chance_metric", Float),
    Column("learned", Boolean),
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
Table(
    "events",
    RELEASE_2026_12,
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
Table(
    "moduletune_meta",
    RELEASE_2026_12,
    Column("key", String(64), primary_key=True),
    Column("value", String(200), nullable=False),
)
OLD_RUNS, OLD_EVENTS, OLD_META = (RELEASE_2026_12.tables[n] for n in ("runs", "events", "moduletune_meta"))
CONFIG = RunConfig(task="rte", modules=("layernorm",), layers="5", max_train=16, max_eval=16, device="cpu")


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    """A database URL, empty: a SQLite file, or a throwaway PostgreSQL database."""
    if request.param == "postgres":
        return normalize_url(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'runs.db'}"


def run_values(i: int) -> dict:
    """Run i as the old release wrote it: every kind of value its columns hold, nulls included."""
    finished = i % 3 != 2
    return dict(
        status="succeeded" if finished else "queued",
        task="rte",
        model=CONFIG.model,
        modules="layernorm" if i % 2 else "query+key",
        family="LN" if i % 2 else "Q+K",
        layers=str(i % 6),
        seed=i,
        lr=1e-2 / (i + 1),
        config=CONFIG.replace(seed=i).to_json(),
        submitter=f"visitor-{i} ✓",
        sweep_id="sw-old" if i < 4 else None,
        retry_of=1 if i == 5 else None,
        kind="search" if i == 0 else ("candidate" if i == 1 else "run"),
        parent_id=1 if i == 1 else None,
        queued_at=1_700_000_000.0 + i,
        started_at=1_700_000_010.5 + i if finished else None,
        heartbeat_at=1_700_000_020.25 + i if finished else None,
        finished_at=1_700_000_030.125 + i if finished else None,
        worker=f"host:{1000 + i}" if finished else None,
        device="cpu" if finished else None,
        step=4 * i if finished else 0,
        total_steps=4 * i if finished else None,
        eta_seconds=None,
        error="worker died; re-queued" if i == 4 else None,
        cancel_requested=i == 4,
        claims=1 if finished else 0,
        completions=1 if finished else 0,
        resume_count=1 if i == 4 else 0,
        resumed_from_step=3 if i == 4 else None,
        primary_metric_name="accuracy" if finished else None,
        primary_metric=0.5 + i / 100 if finished else None,
        chance_metric=0.5 if finished else None,
        learned=(i % 2 == 0) if finished else None,
        module_params=1536 * i if finished else None,
        head_params=770,
        trainable_params=1536 * i + 770,
        encoder_params=22_713_216,
        total_params=22_713_986 + 3_000_000_000 * (i == 3),  # a bigint past 2**31
        module_pct=0.0067 * i,
        trainable_pct=0.01 * i,
        train_seconds=12.5 * i if finished else None,
        examples_per_second=100.0 + i if finished else None,
        result='{"metrics": {"accuracy": %s}}' % (0.5 + i / 100) if finished else None,
        artifact_dir=f"/home/lab/runs/{i + 1}" if finished else None,
    )


def old_registry(url: str, version: str = "2", runs: int = 8, events_per_run: int = 25) -> tuple[list, list]:
    """A registry as the release of 2026-12 left it, filled; returns its runs' and events' rows as written."""
    engine = create_engine(url)
    RELEASE_2026_12.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(OLD_META).values(key="schema_version", value=version))
        conn.execute(insert(OLD_META).values(key="registry_id", value="0123456789abcdef"))
        conn.execute(insert(OLD_RUNS), [run_values(i) for i in range(runs)])
        conn.execute(
            insert(OLD_EVENTS),
            [
                {
                    "run_id": r,
                    "step": s,
                    "epoch": s / 10,
                    "split": "train" if s % 5 else "eval",
                    "name": "loss",
                    "value": 1 / (s + 1),
                    "t": 1_700_000_000.0 + s,
                }
                for r in range(1, runs + 1)
                for s in range(events_per_run)
            ],
        )
    written = old_rows(engine)
    engine.dispose()
    return written


def old_rows(engine) -> tuple[list, list]:
    """Every run and every event, by the old release's columns only, in id order."""
    with engine.connect() as conn:
        found_runs = [dict(r) for r in conn.execute(select(OLD_RUNS).order_by(OLD_RUNS.c.id)).mappings()]
        found_events = [dict(r) for r in conn.execute(select(OLD_EVENTS).order_by(OLD_EVENTS.c.id)).mappings()]
    return found_runs, found_events


def revision_of(engine) -> list[str]:
    with engine.connect() as conn:
        return [r for (r,) in conn.execute(text("SELECT version_num FROM alembic_version"))]


def differences(engine, target: MetaData) -> list:
    """What Alembic's autogenerate finds different between the database and target (tables, columns, types,
    nullability, server defaults, indexes); [] when they agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(context, target)


def test_a_release_2026_12_registry_is_upgraded_in_place_with_every_run_and_event(url):
    runs_before, events_before = old_registry(url)
    assert len(runs_before) == 8 and len(events_before) == 200
    registry = Registry(url)
    assert registry.schema_version() == database.SCHEMA_VERSION == 5
    assert revision_of(registry.engine) == [migrations.script_directory().get_current_head()]
    assert old_rows(registry.engine) == (runs_before, events_before)  # every value of every run and event
    assert registry.identity() == "0123456789abcdef"  # the registry keeps its id, so its run folders stay its own
    assert differences(registry.engine, database.metadata) == []
    # Read and written through today's API: the old runs have no tags or note, and take them.
    assert [r.id for r in registry.list_runs()] == list(range(8, 0, -1))
    old = registry.get(4)
    assert (old.tags, old.note, old.result.total_params, old.config_data["seed"]) == ([], None, 3_022_713_986, 3)
    assert registry.events_frame([4])["value"].tolist() == [e["value"] for e in events_before if e["run_id"] == 4]
    assert registry.tag(4, ["before-alembic"]) == ["before-alembic"]
    assert [r.id for r in registry.list_runs(tag="before-alembic")] == [4]
    new_id = registry.insert_queued(CONFIG, submitter="after", tags=["new"], note="queued after the upgrade")
    assert new_id == 9  # the id sequence goes on after the old runs
    frame = registry.runs_frame().set_index("id")
    assert (frame.loc[9, "tags"], frame.loc[4, "tags"], frame.loc[3, "tags"]) == (["new"], ["before-alembic"], [])


def test_a_registry_from_before_alembic_with_no_version_row_is_taken_for_version_1(tmp_path):
    """The first release wrote runs before any version row: such a registry is upgraded from version 1."""
    url = f"sqlite:///{tmp_path / 'first.db'}"
    engine = create_engine(url)
    first = MetaData()
    keep = [c for c in OLD_RUNS.c if c.name not in ("kind", "parent_id", "chance_metric", "learned")]
    Table("runs", first, *[Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable) for c in keep])
    OLD_EVENTS.to_metadata(first)
    OLD_META.to_metadata(first)
    first.create_all(engine)
    values = {k: v for k, v in run_values(2).items() if k in {c.name for c in keep}}
    with engine.begin() as conn:
        conn.execute(insert(first.tables["runs"]).values(**values))
    engine.dispose()
    registry = Registry(url)
    assert registry.schema_version() == database.SCHEMA_VERSION
    run = registry.get(1)
    assert (run.kind, run.result.learned, run.seed, run.tags) == ("run", None, 2, [])
    assert differences(registry.engine, database.metadata) == []


def test_a_fresh_registry_is_made_by_the_migrations_and_matches_the_tables(url):
    registry = Registry(url)
    assert registry.count() == 0 and registry.schema_version() == database.SCHEMA_VERSION
    assert revision_of(registry.engine) == [migrations.script_directory().get_current_head()]
    assert differences(registry.engine, database.metadata) == []
    assert set(inspect(registry.engine).get_table_names()) == {
        "alembic_version",
        "runs",
        "events",
        "moduletune_meta",
        "run_tags",
        "studies",
    }


def test_the_baseline_revision_is_the_release_2026_12_schema_and_the_next_goes_down_and_up(url):
    """Run only to the baseline, a fresh database has exactly the old release's tables; the tags revision comes
    off again (runs kept) and goes back on."""
    from alembic import command

    engine = create_engine(url)
    try:
        with migrations.locked(engine) as conn:
            command.upgrade(migrations.alembic_config(conn), migrations.BASELINE)
        assert differences(engine, RELEASE_2026_12) == []
        with engine.connect() as conn:
            assert migrations.meta_version(conn) == 2
        with migrations.locked(engine) as conn:
            command.upgrade(migrations.alembic_config(conn), "head")
        with engine.begin() as conn:
            conn.execute(insert(OLD_RUNS).values(**run_values(0)))
        with migrations.locked(engine) as conn:
            command.downgrade(migrations.alembic_config(conn), migrations.BASELINE)
        assert differences(engine, RELEASE_2026_12) == []
        with engine.connect() as conn:
            assert conn.execute(select(OLD_RUNS.c.seed, OLD_RUNS.c.lr)).all() == [(0, 1e-2)]
    finally:
        engine.dispose()
    assert Registry(url).schema_version() == database.SCHEMA_VERSION and Registry(url).get(1).note is None


OPEN = """
import sys, time
from moduletune.tasks.registry import Registry
while time.time() < float(sys.argv[2]):  # every process opens the registry at the same moment
    time.sleep(0.005)
registry = Registry(sys.argv[1])
print(registry.schema_version(), registry.count(), len(registry.list_runs(tag="none-yet")))
"""


def test_processes_opening_an_old_registry_at_once_upgrade_it_once(url):
    """Workers and the UI start together on a registry of the old release: each waits for the one upgrading."""
    runs_before, events_before = old_registry(url, runs=5, events_per_run=4)
    start = time.time() + 8  # after every interpreter has imported what it needs
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN, url, str(start)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err.decode()[-2000:] for _, err in outs]
    assert [out.decode().split() for out, _ in outs] == [[str(database.SCHEMA_VERSION), "5", "0"]] * 4
    engine = create_engine(url)
    try:
        assert revision_of(engine) == [migrations.script_directory().get_current_head()]
        assert old_rows(engine) == (runs_before, events_before)
        assert differences(engine, database.metadata) == []
    finally:
        engine.dispose()


def test_a_registry_newer_than_the_code_is_refused_and_left_alone(url):
    Registry(url).count()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE moduletune_meta SET value = '99' WHERE key = 'schema_version'"))
    database.dispose_engines()
    newer = rf"schema version 99, newer than this moduletune understands \({database.SCHEMA_VERSION}\)"
    with pytest.raises(RegistryError, match=newer):
        Registry(url).count()
    with engine.begin() as conn:
        conn.execute(
            text(f"UPDATE moduletune_meta SET value = '{database.SCHEMA_VERSION}' WHERE key = 'schema_version'")
        )
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    with pytest.raises(RegistryError, match=r"schema revision 'f00d', which this moduletune does not know"):
        Registry(url).count()
    assert revision_of(engine) == ["f00d"]
    engine.dispose()
