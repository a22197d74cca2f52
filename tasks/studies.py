"""Studies: the grid of runs and lr searches one sweep or the paper preset queued, as one thing to watch and steer.

A study row records what was asked (tasks, families, layer choices, seeds, sizes, lr-search settings), its owner,
its tags and note, what a person asked of it as a whole (`state`: active, paused or cancelled) and the queue
priority of its runs. Everything else is derived from its runs: progress (reported runs done of those planned),
how many are queued, running, failed or cancelled, and so its status. StudyStore is mixed into the Registry;
what must send queue messages (resume, retry, raise) is tasks.submission's, since the registry never enqueues.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from sqlalchemy import and_, delete, insert, or_, select, update

from moduletune.tasks.database import (
    CANCELLED,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    RegistryError,
    run_tags,
    runs,
    studies,
)
from moduletune.tasks.tags import check_note, check_tags
from moduletune.tuning.finals import final_layers, final_seeds, planned_finals
from moduletune.tuning.modules import short_label

ACTIVE, PAUSED, STOPPED = "active", "paused", "cancelled"  # what a person asked of a study as a whole
# Queue priorities (higher goes first, on SQLite and Redis alike): a run queued on its own goes before the queued
# runs of studies, so one person's single run never waits behind a hundred; a raised study goes before both.
SINGLE_PRIORITY, STUDY_PRIORITY, RAISED_PRIORITY = 10, 0, 20
MAX_NAME_CHARS = 200
COUNTED = {QUEUED: "queued", RUNNING: "running", FAILED: "failed", CANCELLED: "cancelled", INTERRUPTED: "interrupted"}


class StudyNotFound(RegistryError):
    """No study has this id."""


@dataclass
class Progress:
    """A study's progress, derived from its runs: reported runs done of those planned, and its rows by status.

    A search counts as the runs it will queue until it has queued them; a run retried is counted by its retry."""

    total: int = 0  # reported runs planned (a search's final runs included before it queued them)
    done: int = 0  # reported runs that succeeded
    queued: int = 0
    running: int = 0
    failed: int = 0
    cancelled: int = 0
    interrupted: int = 0
    searches: int = 0
    searches_done: int = 0
    learned_not: int = 0  # succeeded runs that did not learn

    @property
    def active(self) -> int:
        return self.queued + self.running + self.interrupted

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


@dataclass
class Study:
    """One study: what was asked, by whom, and where it stands."""

    id: int
    name: str
    spec: dict
    owner: str | None
    created_at: float
    state: str
    priority: int
    tags: list[str] = field(default_factory=list)
    notes: str | None = None
    progress: Progress = field(default_factory=Progress)

    @property
    def status(self) -> str:
        """queued, running, paused, cancelling, cancelled, done or failed (done, with runs that failed)."""
        p = self.progress
        if self.state == STOPPED:
            return "cancelling" if p.running else "cancelled"
        if self.state == PAUSED:
            return "paused"
        if p.running:
            return "running"
        if p.queued or p.interrupted:
            return "queued"
        return "failed" if p.failed or p.cancelled else "done"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["status"] = self.status
        return out


def check_name(name) -> str:
    """A study's name as stored: stripped, one line, at most MAX_NAME_CHARS characters."""
    if not isinstance(name, str) or not name.strip():
        raise RegistryError("a study's name is a line of text")
    text = " ".join(name.split())
    if len(text) > MAX_NAME_CHARS:
        raise RegistryError(f"a study's name has at most {MAX_NAME_CHARS} characters; this one has {len(text):,}")
    return text


def progress_of(rows) -> Progress:
    """A study's progress from its rows (id, kind, status, retry_of, learned, config as JSON text), candidates
    excluded: a row retried by another counts through that one."""
    rows = [r for r in rows if r["kind"] != "candidate"]
    retried = {r["retry_of"] for r in rows if r["retry_of"] is not None}
    p = Progress()
    for r in rows:
        if r["id"] in retried:
            continue
        status = r["status"]
        if r["kind"] == "search":
            p.searches += 1
            if status == SUCCEEDED:  # its runs are rows of their own now
                p.searches_done += 1
                continue
            p.total += planned_finals(json.loads(r["config"]))
        else:
            p.total += 1
            if status == SUCCEEDED:
                p.done += 1
                if r["learned"] is False:
                    p.learned_not += 1
        name = COUNTED.get(status)
        if name:
            setattr(p, name, getattr(p, name) + 1)
    return p


def runnable():
    """The condition a run must meet to be claimed or re-sent: in no study, or in an active one."""
    return or_(runs.c.study_id.is_(None), runs.c.study_id.in_(select(studies.c.id).where(studies.c.state == ACTIVE)))


class StudyStore:
    """A registry's studies (a mixin over tasks.registry.Registry's `engine`)."""

    def create_study(
        self, name: str, spec: dict, owner: str | None = None, tags=(), note: str | None = None, priority: int = 0
    ) -> int:
        """Record a study (no runs yet: tasks.submission queues them with its id); returns its id."""
        values = dict(
            name=check_name(name),
            spec=json.dumps(spec),
            owner=owner,
            created_at=time.time(),
            state=ACTIVE,
            priority=int(priority),
            tags=json.dumps(check_tags(tags)),
            notes=check_note(note),
        )
        with self.engine.begin() as conn:
            return int(conn.execute(insert(studies).values(**values)).inserted_primary_key[0])

    def forget_study(self, study_id: int) -> None:
        """Remove a study and its queued runs that were never trained (a submission that failed half-way)."""
        with self.engine.begin() as conn:
            ids = select(runs.c.id).where(runs.c.study_id == int(study_id), runs.c.status == QUEUED)
            conn.execute(delete(run_tags).where(run_tags.c.run_id.in_(ids)))
            conn.execute(delete(runs).where(runs.c.study_id == int(study_id), runs.c.status == QUEUED))
            conn.execute(delete(studies).where(studies.c.id == int(study_id)))

    def study(self, study_id: int) -> Study:
        """One study with its progress; StudyNotFound when there is none."""
        found = self.studies(ids=[int(study_id)])
        if not found:
            raise StudyNotFound(f"no study with id {study_id}")
        return found[0]

    def studies(self, owner: str | None = None, limit: int | None = None, ids=None) -> list[Study]:
        """Studies newest first, each with its progress (two queries however many there are)."""
        query = select(studies).order_by(studies.c.id.desc())
        if owner is not None:
            query = query.where(studies.c.owner == owner)
        if ids is not None:
            query = query.where(studies.c.id.in_([int(i) for i in ids]))
        if limit:
            query = query.limit(int(limit))
        with self.engine.connect() as conn:
            found = conn.execute(query).mappings().all()
            columns = (runs.c.study_id, runs.c.id, runs.c.kind, runs.c.status, runs.c.retry_of, runs.c.learned)
            rows = (
                conn.execute(
                    select(*columns, runs.c.config).where(
                        runs.c.study_id.in_([s["id"] for s in found]), runs.c.kind != "candidate"
                    )
                )
                .mappings()
                .all()
                if found
                else []
            )
        by_study: dict[int, list] = {}
        for r in rows:
            by_study.setdefault(int(r["study_id"]), []).append(r)
        return [
            Study(
                id=int(s["id"]),
                name=s["name"],
                spec=json.loads(s["spec"]),
                owner=s["owner"],
                created_at=float(s["created_at"]),
                state=s["state"],
                priority=int(s["priority"]),
                tags=json.loads(s["tags"] or "[]"),
                notes=s["notes"],
                progress=progress_of(by_study.get(int(s["id"]), [])),
            )
            for s in found
        ]

    def study_of(self, run_id: int) -> int | None:
        """The study a run belongs to (None: a run of its own)."""
        with self.engine.connect() as conn:
            found = conn.execute(select(runs.c.study_id).where(runs.c.id == int(run_id))).scalar()
        return None if found is None else int(found)

    def priority_of(self, run_id: int) -> int:
        """The queue priority of a run's message: its study's, or SINGLE_PRIORITY for a run of its own."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(studies.c.priority).join(runs, runs.c.study_id == studies.c.id).where(runs.c.id == int(run_id))
            ).scalar()
        return SINGLE_PRIORITY if found is None else int(found)

    def cancel_study(self, study_id: int) -> dict:
        """In one transaction: the study cancelled, its queued and interrupted runs cancelled (they never start) and
        its running ones asked to stop at their next step. Returns {"cancelled": n, "stopping": m}."""
        study_id, now = int(study_id), time.time()
        why = f"cancelled with study {study_id}"
        with self.engine.begin() as conn:
            # The study's row first: it takes the write lock, so a search completing meanwhile sees the state.
            if conn.execute(update(studies).where(studies.c.id == study_id).values(state=STOPPED)).rowcount != 1:
                raise StudyNotFound(f"no study with id {study_id}")
            mine = runs.c.study_id == study_id
            cancelled = conn.execute(
                update(runs)
                .where(mine, runs.c.status.in_([QUEUED, INTERRUPTED]))
                .values(status=CANCELLED, finished_at=now, error=why, eta_seconds=None)
            ).rowcount
            stopping = conn.execute(
                update(runs).where(mine, runs.c.status == RUNNING).values(cancel_requested=True)
            ).rowcount
        return {"id": study_id, "cancelled": int(cancelled), "stopping": int(stopping)}

    def set_study_state(self, study_id: int, state: str, expected: tuple[str, ...]) -> bool:
        """state if the study is in one of `expected` (False when it is not); StudyNotFound when there is none."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(studies).where(studies.c.id == int(study_id), studies.c.state.in_(expected)).values(state=state)
            ).rowcount
        if not done:
            self.study(study_id)  # raises StudyNotFound
        return done == 1

    def set_study_priority(self, study_id: int, priority: int) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(studies).where(studies.c.id == int(study_id)).values(priority=int(priority))
            ).rowcount
        if not done:
            raise StudyNotFound(f"no study with id {study_id}")

    def study_run_ids(self, study_id: int, statuses=(QUEUED,)) -> list[int]:
        """The ids of a study's runs and searches in these statuses, oldest first (candidates never)."""
        query = (
            select(runs.c.id)
            .where(runs.c.study_id == int(study_id), runs.c.status.in_(statuses), runs.c.kind != "candidate")
            .order_by(runs.c.id)
        )
        with self.engine.connect() as conn:
            return [int(i) for i in conn.execute(query).scalars()]

    def retryable_in_study(self, study_id: int) -> list[int]:
        """A study's failed and interrupted runs and searches that no later run retried, oldest first."""
        retried = select(runs.c.retry_of).where(runs.c.study_id == int(study_id), runs.c.retry_of.is_not(None))
        query = (
            select(runs.c.id)
            .where(
                and_(
                    runs.c.study_id == int(study_id),
                    runs.c.status.in_([FAILED, INTERRUPTED]),
                    runs.c.kind != "candidate",
                    runs.c.id.not_in(retried),
                )
            )
            .order_by(runs.c.id)
        )
        with self.engine.connect() as conn:
            return [int(i) for i in conn.execute(query).scalars()]


def spec_of(configs, source: str, **asked) -> dict:
    """What a study asked, read off its (validated) configs: tasks, module sets, layer choices, seeds, sizes and
    lr-search settings, plus what the caller adds (the lr-search scope, a quick size, ...)."""
    first = configs[0]
    searching = [c for c in configs if c.lr_search]
    spec = {
        "source": source,
        "tasks": list(dict.fromkeys(c.task for c in configs)),
        "modules": list(dict.fromkeys("+".join(c.modules) for c in configs)),
        "layers": list(dict.fromkeys(spec for c in configs for spec in final_layers(c))),
        "seeds": sorted({s for c in configs for s in final_seeds(c)}),
        "model": first.model,
        "max_train": first.max_train,
        "max_eval": first.max_eval,
        "epochs": first.epochs,
        "batch_size": first.batch_size,
        "lr_search": bool(searching),
        "searches": len(searching),
        "planned_runs": sum(planned_finals(c) if c.lr_search else 1 for c in configs),
    }
    if searching:
        spec.update(lr_selection=first.lr_selection, holdout_fraction=first.holdout_fraction)
        if first.lr_grid is not None:
            spec["lr_grid"] = list(first.lr_grid)
    return {**spec, **asked}


def default_name(spec: dict) -> str:
    """'sweep · sst2 · LN, Q × 7 layer choices × 3 seeds' from a study's spec."""
    modules = [short_label(m) for m in spec["modules"]]
    shown = ", ".join(modules[:4]) + (f" +{len(modules) - 4}" if len(modules) > 4 else "")
    parts = [spec["source"], ", ".join(spec["tasks"][:4]), shown]
    if len(spec["layers"]) > 1:
        parts.append(f"{len(spec['layers'])} layer choices")
    if len(spec["seeds"]) > 1:
        parts.append(f"{len(spec['seeds'])} seeds")
    return " · ".join(parts)[:MAX_NAME_CHARS]
