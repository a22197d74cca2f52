"""Alembic's environment for the registry: the migrations run on the connection that
moduletune.tasks.migrations.upgrade hands over, inside its locked transaction (there is no alembic.ini)."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the registry's migrations run when moduletune opens the registry (moduletune.tasks.migrations.upgrade), "
        "not through the alembic command"
    )
context.configure(connection=connection)
with context.begin_transaction():  # inside the caller's transaction: no transaction of its own
    context.run_migrations()
