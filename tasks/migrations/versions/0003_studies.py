"""Studies: a `studies` table (what a sweep or the preset asked, its owner, state and queue priority) and
runs.study_id, indexed, so that a study's runs are one index look-up (schema version 4)."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
SCHEMA_VERSION = 4


def upgrade() -> None:
    # A registry may have the column already (one made by a development build, or by a test that builds an old
    # registry from today's tables): it is kept as it is.
    inspector = sa.inspect(op.get_bind())
    if "study_id" not in {c["name"] for c in inspector.get_columns("runs")}:
        op.add_column("runs", sa.Column("study_id", sa.Integer()))
    if "ix_runs_study_id" not in {i["name"] for i in inspector.get_indexes("runs")}:
        op.create_index("ix_runs_study_id", "runs", ["study_id"])
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(200)),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="active"),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("tags", sa.Text()),
        sa.Column("notes", sa.Text()),
    )
    set_version(SCHEMA_VERSION)


def downgrade() -> None:
    op.drop_index("ix_runs_study_id", "runs")
    with op.batch_alter_table("runs") as batch:  # SQLite: the table rebuilt without the column, rows kept
        batch.drop_column("study_id")
    op.drop_table("studies")
    set_version(3)


def set_version(version: int) -> None:
    meta = sa.table("moduletune_meta", sa.column("key"), sa.column("value"))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(version)))
