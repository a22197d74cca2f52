"""The run registry: every run's config, status, progress, result and live curves, through SQLAlchemy 2.

The registry is the source of truth (Huey only carries run ids) and the UI's only interface to runs.
It stores; it never enqueues: submission (validate, insert, enqueue, roll back) is tasks.submission,
the dead-worker sweep is tasks.worker, the tables and engines are tasks.database (the schema's upgrades
tasks.migrations), and a run's tags and note tasks.tags.

Every status change is one conditional UPDATE (... WHERE status = <expected>), so two workers can
never both claim a run, and a worker that lost its run (declared dead, run handed to another) can
never record over it: worker-side writes also match the claim number the worker got.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from moduletune.tasks import rows
from moduletune.tasks.claims import WorkerWrites

# The registry's vocabulary (statuses, errors) is the database's; re-exported as the interface people import.
from moduletune.tasks.database import (  # noqa: F401
    CANCELLED,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RETRYABLE,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    RegistryError,
    RegistryUnavailable,
    RunNotFound,
    db_url,
    describe,
    dispose_engines,
    events,
    get_engine,
    log,
    meta,
    normalize_url,
    run_tags,
    runs,
)
from moduletune.tasks.entities import Run
from moduletune.tasks.rows import EVENT_COLUMNS
from moduletune.tasks.studies import StudyStore, runnable
from moduletune.tasks.tags import RunTags, check_note, check_tags, tags_of, with_tags
from moduletune.tuning.glue import get_task


class Registry(WorkerWrites, RunTags, StudyStore):
    """Runs and their events in one database; a small plain API that the CLI, the UI and workers share (the
    workers' writes are tasks.claims.WorkerWrites, the tag and note edits tasks.tags.RunTags, the studies
    tasks.studies.StudyStore)."""

    def __init__(self, url: str | None = None):
        self.url = normalize_url(url or db_url())

    # -- plumbing

    @property
    def engine(self):
        return get_engine(self.url)

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
        """The ids of every queued run a worker may take (what the queue should hold a message for), oldest first: a
        paused study's runs wait without one."""
        query = select(runs.c.id).where(runs.c.status == QUEUED, runnable()).order_by(runs.c.id)
        with self.engine.connect() as conn:
            return [int(i) for i in conn.execute(query).scalars()]

    # -- people: record, look, cancel

    def insert_queued(
        self,
        config,
        submitter: str | None = None,
        sweep_id: str | None = None,
        retry_of: int | None = None,
        tags=(),
        note: str | None = None,
        study_id: int | None = None,
    ) -> int:
        """Record a checked RunConfig as a queued run with its tags and note, in a study or none (no queue message
        yet: tasks.submission sends it)."""
        values = {
            **rows.row_values(config, submitter, sweep_id, retry_of, study_id=study_id),
            "notes": check_note(note),
        }
        labels = check_tags(tags)
        with self.engine.begin() as conn:
            run_id = int(conn.execute(insert(runs).values(**values)).inserted_primary_key[0])
            if labels:
                conn.execute(insert(run_tags), [{"run_id": run_id, "tag": t} for t in labels])
        return run_id

    def delete_queued(self, run_id: int) -> bool:
        """Forget a queued run that was never sent (its message could not be enqueued): nothing half-made."""
        with self.engine.begin() as conn:
            gone = conn.execute(delete(runs).where(runs.c.id == int(run_id), runs.c.status == QUEUED)).rowcount == 1
            if gone:
                conn.execute(delete(run_tags).where(run_tags.c.run_id == int(run_id)))
            return gone

    def children(self, run_id: int, kind: str | None = None) -> list[Run]:
        """A search's candidates and final runs (listed, oldest first)."""
        query = select(*rows.FLAT).where(runs.c.parent_id == int(run_id)).order_by(runs.c.id)
        if kind:
            query = query.where(runs.c.kind == kind)
        with self.engine.connect() as conn:
            found = conn.execute(query).mappings().all()
            labels = tags_of(conn, query.with_only_columns(runs.c.id))
        return [Run.from_row(r, tags=labels.get(r["id"], ())) for r in found]

    def get(self, run_id: int) -> Run:
        """Everything about one run: its columns, tags and note, its stored config and whole result (a detailed
        Run)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.id == int(run_id))).mappings().first()
            labels = tags_of(conn, [int(run_id)])
        if row is None:
            raise RunNotFound(f"no run with id {run_id}")
        return Run.from_row(row, tags=labels.get(int(run_id), ()), detailed=True)

    def list_runs(self, status=None, task=None, sweep_id=None, limit=None, tag=None, study_id=None) -> list[Run]:
        """Runs newest first (listed: without their config and whole result; Run.to_dict gives the RUN_COLUMNS
        keys, times as ISO-8601 UTC strings); tag: only the runs that carry it (a list: every one of them);
        study_id: only that study's."""
        found, labels = self._rows(status, task, sweep_id, limit, tag=tag, study_id=study_id)
        return [Run.from_row(r, tags=labels.get(r["id"], ())) for r in found]

    def runs_frame(self, status=None, task=None, sweep_id=None, limit=None, tag=None, study_id=None):
        """A pandas DataFrame with one row per run and the FRAME_COLUMNS columns; times as UTC datetimes; tag and
        study_id as in list_runs."""
        return rows.runs_frame_of(
            *self._rows(status, task, sweep_id, limit, with_config=True, tag=tag, study_id=study_id)
        )

    def _rows(self, status, task, sweep_id, limit, with_config: bool = False, tag=None, study_id=None):
        """The rows the filters select, newest first, and each one's tags (by run id)."""
        if status is not None and status not in STATUSES:
            raise RegistryError(f"unknown status {status!r}; allowed: {', '.join(STATUSES)}")
        columns = [*rows.FLAT, runs.c.config] if with_config else rows.FLAT
        query = select(*columns).order_by(runs.c.id.desc())
        if status:
            query = query.where(runs.c.status == status)
        if task:
            query = query.where(runs.c.task == get_task(task).name)
        if sweep_id:
            query = query.where(runs.c.sweep_id == sweep_id)
        if study_id is not None:
            query = query.where(runs.c.study_id == int(study_id))
        if tag:
            query = with_tags(query, tag)
        if limit:
            query = query.limit(int(limit))
        with self.engine.connect() as conn:
            return conn.execute(query).mappings().all(), tags_of(conn, query.with_only_columns(runs.c.id))

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
            found = conn.execute(query).all()
        frame = pd.DataFrame([tuple(r) for r in found], columns=EVENT_COLUMNS)
        return frame.astype({"run_id": "int64", "step": "int64", "epoch": "float64", "value": "float64"})

    def complete_search(self, run_id: int, token: int, outcome: dict, candidates: list[tuple], finals: list):
        """WorkerWrites.complete_search, then the search's tags given to its candidates and runs (before the caller
        sends the runs' messages), so that a tag filter finds the runs a tagged search queued."""
        ids = super().complete_search(run_id, token, outcome, candidates, finals)
        if ids is not None:
            self.pass_tags_on(run_id)
        return ids

    def request_cancel(self, run_id: int) -> str:
        """Cancel: a queued (or interrupted) run never starts; a running one stops at its next step.

        Returns the status now ('cancelled', or 'cancelling' while a worker stops the run)."""
        run_id = int(run_id)
        for _ in range(5):  # a run can move between our read and our write; look again
            status = self.get(run_id).status
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
