"""Baseline: the registry as the last release before Alembic made it (moduletune_meta schema_version 2).

Frozen history: the tables are written out here, not imported from tasks/database.py, which moves on. A
registry of that release is stamped at this revision without running it; one of version 1 first gains the
columns version 2 added (from_version_1).
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None
SCHEMA_VERSION = 2

RUNS_INDEXED = ("status", "task", "sweep_id", "kind", "parent_id")


def version_2_columns() -> list[sa.Column]:
    """The columns version 2 added to runs (all nullable or with a server default, so old rows stay valid)."""
    return [
        sa.Column("kind", sa.String(16), nullable=False, server_default="run"),
        sa.Column("parent_id", sa.Integer()),
        sa.Column("chance_metric", sa.Float()),
        sa.Column("learned", sa.Boolean()),
    ]


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("task", sa.String(16), nullable=False),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("modules", sa.String(200), nullable=False),
        sa.Column("family", sa.String(100), nullable=False),
        sa.Column("layers", sa.String(100), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("lr", sa.Float(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("submitter", sa.String(200)),
        sa.Column("sweep_id", sa.String(64)),
        sa.Column("retry_of", sa.Integer()),
        sa.Column("kind", sa.String(16), nullable=False, server_default="run"),
        sa.Column("parent_id", sa.Integer()),
        sa.Column("queued_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float()),
        sa.Column("heartbeat_at", sa.Float()),
        sa.Column("finished_at", sa.Float()),
        sa.Column("worker", sa.String(200)),
        sa.Column("device", sa.String(200)),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("total_steps", sa.Integer()),
        sa.Column("eta_seconds", sa.Float()),
        sa.Column("error", sa.Text()),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.Column("completions", sa.Integer(), nullable=False),
        sa.Column("resume_count", sa.Integer(), nullable=False),
        sa.Column("resumed_from_step", sa.Integer()),
        sa.Column("primary_metric_name", sa.String(64)),
        sa.Column("primary_metric", sa.Float()),
        sa.Column("chance_metric", sa.Float()),
        sa.Column("learned", sa.Boolean()),
        sa.Column("module_params", sa.BigInteger()),
        sa.Column("head_params", sa.BigInteger()),
        sa.Column("trainable_params", sa.BigInteger()),
        sa.Column("encoder_params", sa.BigInteger()),
        sa.Column("total_params", sa.BigInteger()),
        sa.Column("module_pct", sa.Float()),
        sa.Column("trainable_pct", sa.Float()),
        sa.Column("train_seconds", sa.Float()),
        sa.Column("examples_per_second", sa.Float()),
        sa.Column("result", sa.Text()),
        sa.Column("artifact_dir", sa.Text()),
    )
    for name in RUNS_INDEXED:
        op.create_index(f"ix_runs_{name}", "runs", [name])
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Float()),
        sa.Column("split", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Float()),
        sa.Column("t", sa.Float()),
    )
    op.create_index("ix_events_run_step", "events", ["run_id", "step"])
    meta = op.create_table(
        "moduletune_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(200), nullable=False),
    )
    op.bulk_insert(meta, [{"key": "schema_version", "value": str(SCHEMA_VERSION)}])


def downgrade() -> None:
    for table in ("moduletune_meta", "events", "runs"):
        op.drop_table(table)


def from_version_1(operations) -> None:
    """A version-1 registry (before kind, parent_id, chance_metric and learned) brought to this revision in place:
    the columns and indexes it lacks are added, every run and event kept."""
    inspector = sa.inspect(operations.get_bind())
    present = {c["name"] for c in inspector.get_columns("runs")}
    for column in version_2_columns():
        if column.name not in present:
            operations.add_column("runs", column)
    indexes = {i["name"] for i in inspector.get_indexes("runs")}
    for name in RUNS_INDEXED:
        if f"ix_runs_{name}" not in indexes:
            operations.create_index(f"ix_runs_{name}", "runs", [name])
    meta = sa.table("moduletune_meta", sa.column("key"), sa.column("value"))
    bind = operations.get_bind()
    if not bind.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION))).rowcount:
        # The first release wrote runs before any version row.
        bind.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
