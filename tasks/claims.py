"""The writes a worker makes: claim, heartbeat, progress, outcome, each matched to the worker's claim number.

A worker that lost its run (declared dead, the run handed to another) matches no row, so it can never
record over the run's new owner. The dead-worker sweep's steps are here too (tasks.worker runs them).
"""

from __future__ import annotations

import json
import time

from sqlalchemy import and_, delete, func, insert, or_, select, update

from moduletune.tasks.database import (
    CANCELLED,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    events,
    log,
    runs,
    studies,
)
from moduletune.tasks.rows import finite, result_columns, row_values
from moduletune.tasks.studies import STOPPED, runnable
from moduletune.tuning.text import json_safe


class WorkerWrites:
    """The worker side of the Registry (a mixin over its `engine` and `get`): every write is one conditional
    UPDATE, so two workers never both claim a run and a lost worker writes nothing."""

    def claim(self, run_id: int, worker: str, device: str | None = None) -> int | None:
        """queued -> running for exactly one caller; returns its claim number (a token), else None (taken, or its
        study is paused: one conditional UPDATE, so a pause committed first is never overtaken)."""
        now = time.time()
        with self.engine.begin() as conn:
            done = conn.execute(
                update(runs)
                .where(runs.c.id == int(run_id), runs.c.status == QUEUED, runnable())
                .values(
                    status=RUNNING,
                    claims=runs.c.claims + 1,
                    worker=worker,
                    device=device,
                    error=None,
                    started_at=func.coalesce(runs.c.started_at, now),
                    heartbeat_at=now,
                    eta_seconds=None,
                )
            )
            if done.rowcount != 1:
                return None
            return int(conn.execute(select(runs.c.claims).where(runs.c.id == int(run_id))).scalar())

    def _mine(self, run_id: int, token: int):
        return and_(runs.c.id == int(run_id), runs.c.status == RUNNING, runs.c.claims == int(token))

    def heartbeat(self, run_id: int, token: int) -> tuple[bool, bool]:
        """(still ours, cancel requested): refreshes heartbeat_at only while this claim holds the run."""
        with self.engine.begin() as conn:
            alive = (
                conn.execute(update(runs).where(self._mine(run_id, token)).values(heartbeat_at=time.time())).rowcount
                == 1
            )
            cancel = bool(conn.execute(select(runs.c.cancel_requested).where(runs.c.id == int(run_id))).scalar())
        return alive, cancel

    def record_progress(
        self,
        run_id: int,
        token: int,
        rows: list[dict],
        step: int | None = None,
        total_steps: int | None = None,
        eta_seconds: float | None = None,
    ) -> bool:
        """Append event rows and progress in one transaction; False (and nothing written) if the run is not ours."""
        values = {"heartbeat_at": time.time()}
        if step is not None:
            values.update(step=int(step), total_steps=total_steps, eta_seconds=finite(eta_seconds))
        with self.engine.begin() as conn:
            if conn.execute(update(runs).where(self._mine(run_id, token)).values(**values)).rowcount != 1:
                return False
            clean = [{**r, "run_id": int(run_id), "value": finite(r.get("value"))} for r in rows]
            if clean:
                conn.execute(insert(events), clean)
        return True

    def record_resume(self, run_id: int, token: int, step: int) -> int:
        """A run resumed from its checkpoint at `step`: note it, and forget the events recorded past that step
        (they are recorded again, so each step appears once). Returns how many events were dropped."""
        with self.engine.begin() as conn:
            if (
                conn.execute(
                    update(runs).where(self._mine(run_id, token)).values(resumed_from_step=int(step), step=int(step))
                ).rowcount
                != 1
            ):
                return 0
            return conn.execute(
                delete(events).where(events.c.run_id == int(run_id), events.c.step > int(step))
            ).rowcount

    def mark_succeeded(self, run_id: int, token: int, result: dict) -> bool:
        return self._finish(run_id, token, SUCCEEDED, result=result)

    def mark_failed(self, run_id: int, token: int, error: str, result: dict | None = None) -> bool:
        return self._finish(run_id, token, FAILED, result=result, error=error)

    def mark_cancelled(self, run_id: int, token: int, result: dict | None = None) -> bool:
        return self._finish(run_id, token, CANCELLED, result=result, error="cancelled while running")

    def mark_requeued(self, run_id: int, token: int, reason: str = "worker stopped; re-queued") -> bool:
        """running -> queued (a graceful worker stop): the run resumes from its checkpoint on the next worker."""
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    update(runs)
                    .where(self._mine(run_id, token))
                    .values(status=QUEUED, heartbeat_at=None, eta_seconds=None, error=reason)
                ).rowcount
                == 1
            )

    def _finish(self, run_id, token, status, result=None, error=None) -> bool:
        values = {"status": status, "finished_at": time.time(), "error": error, "eta_seconds": None}
        if result is not None:
            values.update(result_columns(result))
        if status == SUCCEEDED:
            values["completions"] = runs.c.completions + 1
        with self.engine.begin() as conn:
            return conn.execute(update(runs).where(self._mine(run_id, token)).values(**values)).rowcount == 1

    def transition(self, run_id: int, old: str, new: str, **values) -> bool:
        """old -> new (with values) if the run is still `old`; False when it moved first (one conditional UPDATE)."""
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    update(runs).where(runs.c.id == int(run_id), runs.c.status == old).values(status=new, **values)
                ).rowcount
                == 1
            )

    def complete_search(
        self, run_id: int, token: int, outcome: dict, candidates: list[tuple], finals: list
    ) -> list[int] | None:
        """An lr search finished: in one transaction the search succeeds (its chosen lr in `lr`), its candidates
        are recorded as its children (config, score) and its final runs (one per seed, at the chosen lr) are
        recorded as queued children of its study; returns their ids (the caller sends their messages). None, and
        nothing written, when this claim no longer holds the search. When its study was cancelled meanwhile, the
        runs are recorded as cancelled (and no id is returned for them)."""
        parent = self.get(run_id)
        study = parent.study_id
        now = time.time()
        values = {
            "status": SUCCEEDED,
            "finished_at": now,
            "error": None,
            "eta_seconds": None,
            "completions": runs.c.completions + 1,
            **result_columns(outcome),
        }
        values.pop("step", None)  # the search's step count stays the cumulative one it reported
        if outcome.get("chosen_lr") is not None:
            values["lr"] = float(outcome["chosen_lr"])
        with self.engine.begin() as conn:
            if conn.execute(update(runs).where(self._mine(run_id, token)).values(**values)).rowcount != 1:
                return None
            # Read after the search's own row is written: a study cancelled in a transaction before ours shows.
            stopped = (
                study is not None
                and conn.execute(select(studies.c.state).where(studies.c.id == int(study))).scalar() == STOPPED
            )
            for config, cand in candidates:
                score = finite(cand.get("score"))
                steps = int(cand.get("steps") or 0)
                conn.execute(
                    insert(runs).values(
                        {
                            **row_values(
                                config,
                                parent.submitter,
                                parent.sweep_id,
                                None,
                                kind="candidate",
                                parent_id=run_id,
                                study_id=study,
                            ),
                            "status": SUCCEEDED,
                            "started_at": now,
                            "finished_at": now,
                            "step": steps,
                            "total_steps": steps,
                            "completions": 1,
                            "primary_metric_name": outcome.get("primary_metric_name"),
                            "primary_metric": score,
                            "result": json.dumps(json_safe(cand)),
                        }
                    )
                )
            placed = dict(parent_id=run_id, study_id=study)
            why = f"cancelled with study {study}"
            over = {"status": CANCELLED, "finished_at": now, "error": why} if stopped else {}
            ids = [
                int(
                    conn.execute(
                        insert(runs).values(
                            **{**row_values(config, parent.submitter, parent.sweep_id, None, **placed), **over}
                        )
                    ).inserted_primary_key[0]
                )
                for config in finals
            ]
        if stopped:
            log.info("search %s chose; its study %s was cancelled, so are the runs it would queue", run_id, study)
            return []
        log.info("search %s chose lr %s; runs %s recorded as queued", run_id, outcome.get("chosen_lr"), ids)
        return ids

    # -- the dead-worker sweep's steps (tasks.worker.sweep_stale runs them and sends the messages)

    def interrupt_stale(self, timeout: float) -> list[tuple[int, str]]:
        """Running runs whose heartbeat is older than timeout -> interrupted; returns (id, why) for each one this
        call moved (concurrent sweepers never both act on a run)."""
        now = time.time()
        cutoff = now - float(timeout)
        stale = or_(runs.c.heartbeat_at < cutoff, runs.c.heartbeat_at.is_(None))
        with self.engine.connect() as conn:
            found = conn.execute(
                select(runs.c.id, runs.c.worker, runs.c.heartbeat_at).where(runs.c.status == RUNNING, stale)
            ).all()
        moved = []
        for run_id, worker, beat in found:
            age = now - beat if beat else float("inf")
            why = f"worker {worker} stopped heartbeating ({age:.0f}s without a heartbeat)"
            with self.engine.begin() as conn:
                done = conn.execute(
                    update(runs)
                    .where(runs.c.id == run_id, runs.c.status == RUNNING, stale)
                    .values(status=INTERRUPTED, error=why, eta_seconds=None)
                ).rowcount
            if done == 1:
                moved.append((int(run_id), why))
                log.warning("run %s interrupted: %s", run_id, why)
        return moved

    def requeue_interrupted(self, run_id: int, why: str, max_resumes: int) -> bool:
        """interrupted -> queued (same id, to resume from its checkpoint) while it has resumes left and no cancel
        was asked; otherwise a cancel asked of it ends it, else it stays interrupted for a person to retry."""
        with self.engine.begin() as conn:
            again = (
                conn.execute(
                    update(runs)
                    .where(
                        runs.c.id == int(run_id),
                        runs.c.status == INTERRUPTED,
                        runs.c.resume_count < int(max_resumes),
                        runs.c.cancel_requested.is_(False),
                    )
                    .values(
                        status=QUEUED,
                        resume_count=runs.c.resume_count + 1,
                        error=why + "; re-queued to resume from its checkpoint",
                    )
                ).rowcount
                == 1
            )
        if again:
            return True
        with self.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == int(run_id), runs.c.status == INTERRUPTED, runs.c.cancel_requested.is_(True))
                .values(status=CANCELLED, finished_at=time.time(), error=why + "; cancelled as asked")
            )
        self.transition(run_id, INTERRUPTED, INTERRUPTED, error=why + "; not resumed again (retry it to start over)")
        return False

    def interrupt_unsent(self, run_id: int, why: str) -> bool:
        """A queued run whose message the queue refused: interrupted (retryable, the reason recorded), never lost."""
        return self.transition(run_id, QUEUED, INTERRUPTED, error=why)
