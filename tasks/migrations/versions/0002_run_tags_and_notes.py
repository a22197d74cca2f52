"""Tags and notes on runs: a `notes` text column on runs and a run_tags table (run_id, tag), indexed by tag so
that a tag filter is an index look-up on SQLite and PostgreSQL alike (schema version 3)."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
SCHEMA_VERSION = 3


def upgrade() -> None:
    # A registry may have the column already (one made by a development build, or by a test that builds an old
    # registry from today's tables): it is kept as it is.
    if "notes" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("runs")}:
        op.add_column("runs", sa.Column("notes", sa.Text()))
    op.create_table(
        "run_tags",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(40), primary_key=True),
    )
    op.create_index("ix_run_tags_tag", "run_tags", ["tag"])
    set_version(SCHEMA_VERSION)


def downgrade() -> None:
    op.drop_table("run_tags")
    with op.batch_alter_table("runs") as batch:  # SQLite: the table rebuilt without the column, rows kept
        batch.drop_column("notes")
    set_version(2)


def set_version(version: int) -> None:
    meta = sa.table("moduletune_meta", sa.column("key"), sa.column("value"))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(version)))
