"""The registry's schema history (Alembic revisions in versions/) and `upgrade`, which brings a database to the
newest revision when a process first opens it: safe when several open it at once, refusing one newer than the code.

- A fresh database is made by running every revision, from the baseline on.
- A registry from before Alembic (its tables but no alembic_version; moduletune_meta says schema_version 2, or 1)
  is stamped at the baseline, which is exactly that release's schema; a version-1 one first gains the four
  columns version 2 added. Then the later revisions run.
- Each revision records the schema version it makes in moduletune_meta, so a release from before Alembic (which
  reads only that) refuses a database a later release upgraded, instead of writing to it.

Alembic runs programmatically on the connection handed over here (env.py reads it), inside one transaction
that holds a lock: PostgreSQL's transaction-level advisory lock, SQLite's write lock (BEGIN IMMEDIATE). One
process upgrades while the others wait, then find the work done. There is no alembic.ini: the scripts are found
beside this file, in the installed package. A new revision is a file in versions/ like the last one, whose
`down_revision` names it, and whose upgrade records its SCHEMA_VERSION (tasks/database.py's SCHEMA_VERSION follows).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
BASELINE = "0001"  # the schema of the last release before Alembic (moduletune_meta schema_version 2)
ADVISORY_LOCK = 0x6D74_5F72_6567  # PostgreSQL's lock id for the registry's upgrade ("mt_reg")

log = logging.getLogger("moduletune.registry")


class NewerSchema(ValueError):
    """The database was made or upgraded by a newer moduletune than this one."""


def upgrade(engine, code_version: int) -> int:
    """Bring engine's database to the newest revision (made, stamped or upgraded); returns code_version.

    NewerSchema when the database says it is newer than code_version, or is at a revision this code lacks."""
    scripts = script_directory()
    head = scripts.get_current_head()
    with engine.connect() as conn:  # the usual start: already at head, nothing to lock
        if current_revision(conn, scripts, code_version) == head:
            return code_version
    with locked(engine) as conn:
        if current_revision(conn, scripts, code_version) != head:  # another process may have done it meanwhile
            migrate(conn, scripts)
    return code_version


def script_directory():
    """Alembic's view of versions/ (read from the installed package)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(SCRIPTS))


def alembic_config(conn):
    """An Alembic Config (no ini file) whose env.py runs the migrations on conn, in conn's transaction."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS).replace("%", "%%"))
    config.attributes["connection"] = conn
    return config


def meta_version(conn) -> int | None:
    """moduletune_meta's schema_version, or None when the database has none (a fresh one)."""
    from sqlalchemy import inspect, text

    if not inspect(conn).has_table("moduletune_meta"):
        return None
    found = conn.execute(text("SELECT value FROM moduletune_meta WHERE key = 'schema_version'")).scalar()
    return None if found is None else int(found)


def current_revision(conn, scripts, code_version: int) -> str | None:
    """The database's Alembic revision (None: fresh, or from before Alembic); NewerSchema for a newer database."""
    from alembic.migration import MigrationContext

    found = meta_version(conn)
    if found is not None and found > code_version:
        raise NewerSchema(
            f"the run registry has schema version {found}, newer than this moduletune "
            f"understands ({code_version}); upgrade moduletune"
        )
    current = MigrationContext.configure(conn).get_current_revision()
    if current is not None and current not in {s.revision for s in scripts.walk_revisions()}:
        raise NewerSchema(
            f"the run registry is at schema revision {current!r}, which this moduletune does not know (its newest "
            f"is {scripts.get_current_head()!r}): a newer moduletune upgraded it; upgrade moduletune"
        )
    return current


def migrate(conn, scripts) -> None:
    """Under the lock: stamp a registry from before Alembic at the baseline (a version-1 one upgraded to it
    first), then run every revision after the database's own."""
    from alembic import command
    from alembic.migration import MigrationContext
    from alembic.operations import Operations
    from sqlalchemy import inspect

    config = alembic_config(conn)
    if MigrationContext.configure(conn).get_current_revision() is None and inspect(conn).has_table("runs"):
        found = meta_version(conn) or 1  # the first release wrote no version row before it wrote runs
        if found < 2:
            scripts.get_revision(BASELINE).module.from_version_1(Operations(MigrationContext.configure(conn)))
        command.stamp(config, BASELINE)
        log.info("registry of schema version %s (from before Alembic) stamped at revision %s", found, BASELINE)
    command.upgrade(config, "head")
    log.info("registry upgraded to revision %s", scripts.get_current_head())


@contextmanager
def locked(engine):
    """A connection in a transaction that holds the registry's upgrade lock, committed when the block ends."""
    from sqlalchemy import text

    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
            yield conn
        return
    path = engine.url.database
    if not path or path == ":memory:":  # a database only this process sees: nothing to race
        with engine.begin() as conn:
            yield conn
        return
    writer = sqlite_immediate(engine.url)
    try:
        with writer.begin() as conn:
            yield conn
    finally:
        writer.dispose()


def sqlite_immediate(url):
    """An engine whose transactions start with BEGIN IMMEDIATE: SQLite's write lock taken before anything is read
    (waiting up to 60 s for it), and the DDL inside the transaction (pysqlite's own BEGINs are off)."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _autocommit(dbapi_conn, _record):
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
