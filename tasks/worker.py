"""`moduletune worker`: a Huey consumer that trains registry runs, sweeps dead workers' runs, stops gracefully.

- Each worker is a forked process by default (worker_type "process"): the parent never imports
  torch, so CUDA is only ever initialised in the child that trains. One worker per GPU
  (`moduletune worker --device cuda:0`, `... --device cuda:1`) is the way to use several GPUs;
  workers on several machines share one Redis queue and one PostgreSQL registry.
- The scheduler process sweeps the registry at start and every few seconds: running runs whose
  heartbeat is older than the timeout are marked interrupted and re-queued once to resume, and queued runs
  whose message no queue holds (Redis flushed or restarted empty, a deleted queue file) are re-queued.
- SIGINT and SIGTERM are both graceful: the running run stops at its next step, checkpoints and
  goes back on the queue; then the worker exits. A worker whose parent dies does the same.
- A forked worker whose run failed with an error that spoils its GPU state (a failed CUDA-graph
  capture, a CUDA error) exits after recording the failure, and the consumer starts a fresh one.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time

from huey.consumer import Consumer, ProcessEnvironment, Scheduler, Worker, WorkerRecycle

from moduletune.tasks import jobs
from moduletune.tasks.database import describe as describe_db
from moduletune.tasks.database import dispose_engines
from moduletune.tasks.parent_death import parent_death_signal
from moduletune.tasks.queue import (
    close_all,
    describe,
    get_huey,
    pending_count,
    queue_url,
    reopen_if_replaced,
    requeue_lost,
    set_task_body,
)
from moduletune.tasks.registry import Registry
from moduletune.tasks.submission import send_or_interrupt
from moduletune.tuning.config import DEVICES
from moduletune.tuning.trackers import check_installed, parse_report_to

log = logging.getLogger("moduletune.worker")
WORKER_TYPES = ("process", "thread")


def sweep_stale(registry: Registry, timeout: float, max_resumes: int = 1, huey=None) -> dict:
    """Running runs whose heartbeat is older than timeout -> interrupted; each re-queued (same id) while it has
    resumes left, to resume from the checkpoint under its run folder.

    Returns {"interrupted": [ids], "requeued": [ids]}; concurrent sweepers never both act on a run."""
    interrupted, requeued = [], []
    for run_id, why in registry.interrupt_stale(timeout):
        interrupted.append(run_id)
        if not registry.requeue_interrupted(run_id, why, max_resumes):
            continue
        if send_or_interrupt(registry, run_id, f"{why}; could not re-queue", huey):
            requeued.append(run_id)
            log.warning("run %s re-queued to resume from its checkpoint", run_id)
    return {"interrupted": interrupted, "requeued": requeued}


def sweep_once(timeout: float | None = None, max_resumes: int | None = None) -> dict:
    """One dead-worker sweep of the configured registry (what a starting worker and its scheduler do)."""
    return sweep_stale(
        Registry(),
        timeout if timeout is not None else jobs.heartbeat_timeout(),
        max_resumes if max_resumes is not None else jobs.max_resumes(),
    )


def lost_check_every(sweep_every: float) -> float:
    """Seconds between two looks for queued runs without a queue message: a lost message is re-sent within
    two of them (20 s by default)."""
    return min(sweep_every, 10.0)


class SweepingScheduler(Scheduler):
    """Huey's scheduler, which also sweeps stale running runs every `sweep_every` seconds (first at start) and
    re-sends the messages of queued runs that no queue holds (tasks.queue.requeue_lost)."""

    def __init__(self, huey, stop_flag, interval, periodic, sweep_every: float, timeout: float, max_resumes: int):
        super().__init__(huey, stop_flag, interval, periodic)
        self.sweep_every, self.timeout, self.max_resumes = sweep_every, timeout, max_resumes
        self._next_sweep = self._next_lost_check = time.monotonic()
        self._missing = frozenset()

    def loop(self, now=None):
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.sweep_every
            try:
                found = sweep_once(self.timeout, self.max_resumes)
                if found["interrupted"]:
                    log.warning(
                        "stale runs interrupted: %s; re-queued to resume: %s", found["interrupted"], found["requeued"]
                    )
            except Exception:
                log.exception("stale-run sweep failed (will try again)")
        if time.monotonic() >= self._next_lost_check:
            self._next_lost_check = time.monotonic() + lost_check_every(self.sweep_every)
            try:
                self._missing, _lost = requeue_lost(Registry(), self.huey, self._missing)
            except Exception:
                log.exception("lost-message check failed (will try again)")
        super().loop(now)


class GracefulProcessEnvironment(ProcessEnvironment):
    """Forked workers treat SIGINT, SIGTERM and their parent's death alike: finish the step, checkpoint, re-queue."""

    def get_stop_flag(self):
        self.flag = super().get_stop_flag()
        return self.flag

    def init_child(self, process):
        parent = os.getppid()

        def graceful(signum, frame):
            self.flag.set()

        signal.signal(signal.SIGINT, graceful)
        signal.signal(signal.SIGTERM, graceful)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        ask = parent_death_signal(signal.SIGTERM)
        if ask is not None:
            ask()
        if os.getppid() != parent:  # the parent died before we asked to be told
            self.flag.set()


class ReplaceableWorker(Worker):
    """Huey's worker, which follows a replaced queue file and exits after a run that spoiled its GPU state (the
    consumer starts a fresh one)."""

    def loop(self, now=None):
        reopen_if_replaced(self.huey)  # a deleted or replaced queue file: read the one now at the path
        super().loop(now)
        if jobs.CONTEXT.replace_me:
            raise WorkerRecycle()  # Huey's own way out of a worker process; its health check replaces it


class WorkerConsumer(Consumer):
    """Huey's Consumer with the registry sweep in its scheduler and SIGTERM as graceful as SIGINT."""

    worker_class = ReplaceableWorker

    def __init__(self, huey, sweep_every: float, heartbeat_timeout: float, max_resumes: int, **options):
        self._sweep = (sweep_every, heartbeat_timeout, max_resumes)
        super().__init__(huey, **options)
        self._signal_actions[signal.SIGTERM] = (False, True)
        self._signal_actions[signal.SIGINT] = (False, True)

    def get_environment(self, worker_type):
        if worker_type == "process":
            return GracefulProcessEnvironment(self._graceful_sig, self._interrupt_sig)
        return super().get_environment(worker_type)

    def _create_scheduler(self):
        every, timeout, resumes = self._sweep
        return SweepingScheduler(
            self.huey, self.stop_flag, self.scheduler_interval, self.periodic, every, timeout, resumes
        )


def run_worker(
    device: str | None = None,
    workers: int = 1,
    worker_type: str = "process",
    heartbeat_timeout: float | None = None,
    report_to: str | None = None,
) -> int:
    """Start a consumer on the configured queue and registry; returns when it has stopped (0).

    report_to: the trackers (tuning.trackers) of runs whose config names none; each must be installed here."""
    if device is not None and not re.fullmatch(DEVICES, device):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if not isinstance(workers, int) or not 1 <= workers <= 64:
        raise ValueError(f"workers must be an integer from 1 to 64, got {workers!r}")
    if worker_type not in WORKER_TYPES:
        raise ValueError(f"worker type must be one of {', '.join(WORKER_TYPES)}, got {worker_type!r}")
    check_installed(None, report_to)  # an unknown or missing tracker stops the worker before it takes a run
    timeout = float(heartbeat_timeout if heartbeat_timeout is not None else jobs.heartbeat_timeout())
    if timeout <= 0:
        raise ValueError(f"heartbeat timeout must be a positive number of seconds, got {timeout}")
    os.environ[jobs.HEARTBEAT_TIMEOUT_ENV] = str(timeout)  # the jobs' heartbeat pace follows it

    registry = Registry()
    registry.count()  # fail fast, with the URL, if the registry is unreachable; creates the schema
    huey = get_huey()
    pending_count(huey)  # ... and the same for the queue
    set_task_body(jobs.run_job)  # this process and its forked workers train what the queue hands them
    jobs.CONTEXT.device = None if device in (None, "auto") else device
    jobs.CONTEXT.workers = workers
    jobs.CONTEXT.report_to = parse_report_to(report_to)
    jobs.CONTEXT.replaceable = worker_type == "process"  # a thread shares its process's CUDA state
    if device and device.startswith("cuda") and workers > 1 and worker_type == "process":
        log.warning("%d workers will share %s; one worker per GPU is usually faster", workers, device)
    consumer = WorkerConsumer(
        huey,
        sweep_every=max(1.0, min(30.0, timeout / 2)),
        heartbeat_timeout=timeout,
        max_resumes=jobs.max_resumes(),
        workers=workers,
        worker_type=worker_type,
        periodic=False,
        check_worker_health=True,
        health_check_interval=5,
        initial_delay=0.1,
        max_delay=1.0,
    )
    jobs.CONTEXT.stop_flag = consumer.stop_flag
    print(
        f"moduletune worker: {workers} {worker_type} worker(s), device {device or 'auto'}, "
        f"queue {describe(queue_url())}, registry {describe_db(registry.url)}, "
        f"heartbeat timeout {timeout:g}s (pid {os.getpid()})",
        file=sys.stderr,
        flush=True,
    )
    # Forked children must not inherit pooled database or queue connections.
    dispose_engines()
    close_all()
    consumer.run()
    return 0
