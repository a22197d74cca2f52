"""runs.peak_memory_mb: a run's peak memory as a column, so Compare can draw the frontier against it (schema
version 5). Older runs keep NULL: the peak they recorded in their result was their worker's lifetime maximum."""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None
SCHEMA_VERSION = 5


def upgrade() -> None:
    # A registry built from today's tables (a test's old registry) may have the column already: kept as it is.
    if "peak_memory_mb" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("runs")}:
        op.add_column("runs", sa.Column("peak_memory_mb", sa.Float()))
    set_version(SCHEMA_VERSION)


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:  # SQLite: the table rebuilt without the column, rows kept
        batch.drop_column("peak_memory_mb")
    set_version(4)


def set_version(version: int) -> None:
    meta = sa.table("moduletune_meta", sa.column("key"), sa.column("value"))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(version)))
