"""The registry's Alembic revisions, oldest first: 0001 the baseline (schema version 2), then one file per change."""
