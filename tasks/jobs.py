"""The Huey task body: run one registry run by id with the tuning engine and record everything it does.

run_job(run_id) claims the run (queued -> running, exactly once), trains it with
tuning.train.fine_tune, streams step and eval events into the registry in batches, heartbeats from a
side thread, stops cooperatively on a cancel request or a worker shutdown, and records the outcome.
Checkpoints (trainable tensors + optimizer state) go to <home>/runs/<id>/checkpoint each epoch and
every config.checkpoint_every steps; a run re-queued after its worker died resumes from there.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass

from moduletune.tasks.entities import Run
from moduletune.tasks.registry import QUEUED, Registry, RunNotFound
from moduletune.tasks.run_folders import drop_resume_state, own_run_dir, run_dir
from moduletune.tasks.studies import PAUSED
from moduletune.tasks.submission import send, send_or_interrupt
from moduletune.tuning.config import RunConfig
from moduletune.tuning.finals import final_configs
from moduletune.tuning.search import candidate_config, lr_search
from moduletune.tuning.text import one_line
from moduletune.tuning.trackers import Tracking, track

HEARTBEAT_TIMEOUT_ENV = "MODULETUNE_HEARTBEAT_TIMEOUT"
MAX_RESUMES_ENV = "MODULETUNE_MAX_RESUMES"
THREADS_ENV = "MODULETUNE_TORCH_THREADS"
FLUSH_SECONDS = 1.0  # events reach the registry at most this late (and at every checkpoint)
FLUSH_EVENTS = 1000  # ... or when this many are waiting

log = logging.getLogger("moduletune.jobs")


@dataclass
class WorkerContext:
    """What the worker process tells the jobs it runs (set before the consumer forks)."""

    device: str | None = None  # the worker's --device: used for runs whose config says "auto"
    workers: int = 1  # worker processes on this machine: torch threads are shared out among them
    stop_flag: object | None = None  # the consumer's stop flag: set on SIGINT/SIGTERM (graceful stop)
    replaceable: bool = False  # a forked worker, which the consumer replaces when it exits
    replace_me: bool = False  # set after an error that spoils this process's GPU state (see spoils_process)
    report_to: str | None = None  # the worker's --report-to: the trackers of runs whose config names none


CONTEXT = WorkerContext()


def heartbeat_timeout() -> float:
    """Seconds without a heartbeat after which a running run counts as dead (MODULETUNE_HEARTBEAT_TIMEOUT, 60)."""
    return float(os.environ.get(HEARTBEAT_TIMEOUT_ENV) or 60)


def max_resumes() -> int:
    """How many times a run is re-queued after its worker died (MODULETUNE_MAX_RESUMES, 1)."""
    return int(os.environ.get(MAX_RESUMES_ENV) or 1)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def shutdown_requested() -> bool:
    flag = CONTEXT.stop_flag
    return bool(flag is not None and flag.is_set())


class LostRun(Exception):
    """This worker no longer holds the run (it was declared dead and the run handed on): stop, record nothing."""


def run_job(run_id: int, registry: Registry | None = None) -> str:
    """Run one registry run; returns what happened (succeeded, failed, cancelled, requeued, skipped ...)."""
    registry = registry or Registry()
    try:
        run = registry.get(run_id)
    except RunNotFound:
        log.warning("run %s is not in the registry; message dropped", run_id)
        return "missing"
    if run.status != QUEUED:
        # Cancelled while queued, or already finished: a run is trained to completion exactly once.
        log.info("run %s is %s; skipped", run_id, run.status)
        return f"skipped ({run.status})"
    if run.study_id is not None and registry.study(run.study_id).state == PAUSED:
        # Its study is paused: the run stays queued without a message; resuming the study sends one again.
        log.info("run %s waits: its study %s is paused", run_id, run.study_id)
        return "held (study paused)"
    if shutdown_requested():
        # This worker is stopping: hand the message back instead of starting the run.
        send(registry, run_id)
        return "handed back"
    device = device_for(run)
    token = registry.claim(run_id, worker_name(), device)
    if token is None:
        log.info("run %s was claimed by another worker (or its study paused); skipped", run_id)
        return "skipped (claimed elsewhere)"
    log.info("run %s claimed (claim %s) on %s", run_id, token, worker_name())
    return _execute(registry, run, token, device)


def device_for(run: Run) -> str:
    """The device this worker trains a run on: its config's, or the worker's own (--device) where it says auto."""
    try:
        asked = run.config.device
    except ValueError:  # no longer a config: _execute fails the run and says why
        asked = "auto"
    return CONTEXT.device if CONTEXT.device and asked == "auto" else asked


def _execute(registry: Registry, run: Run, token: int, device: str) -> str:
    """Train a claimed run (or run an lr search) under a heartbeat, streaming its events; then record the outcome."""
    run_id, search = int(run.id), run.kind == "search"
    beat = _Heartbeat(registry, run_id, token, heartbeat_timeout())
    recorder = _Recorder(registry, run_id, token)
    beat.start()
    tracking = Tracking()  # none until the config is read
    try:
        from moduletune.tuning.train import fine_tune

        # Checked where it entered (tasks.submission): read back, not checked again; this worker's device.
        config = RunConfig.from_stored({**run.config_data, "device": device})
        _share_threads()
        owner = {"registry": registry.identity(), "run": run_id}
        folder = own_run_dir(run_id, owner, config)
        tracking = track(config, f"run-{run_id}", default=CONTEXT.report_to)
        on_event = tracking.wrap(_event_handler(registry, run_id, config, recorder, beat))
        if search:
            result = lr_search(config, on_event, workdir=folder / "search", owner=owner)
        else:
            result = fine_tune(
                config, on_event, checkpoint_dir=folder / "checkpoint", output_dir=folder / "artifact", owner=owner
            )
        recorder.flush(force=True)
        tracking.finish(result)
    except LostRun:
        log.warning("run %s was taken from this worker (declared dead); stopped without recording", run_id)
        return "lost"
    except KeyboardInterrupt:
        # Interrupted mid-step (a second Ctrl-C): resume from the last checkpoint on the next worker.
        _flush_quietly(recorder)
        return _requeue(registry, run_id, token, "worker interrupted; re-queued")
    except Exception as err:  # the run failed: say why in one line, keep the worker alive
        log.exception("run %s failed", run_id)
        _flush_quietly(recorder)
        if registry.mark_failed(run_id, token, one_line(err, with_type=True)):
            drop_resume_state(run_id)  # a retry is a new run: nothing here may ever be resumed
        if CONTEXT.replaceable and spoils_process(err):
            log.error("run %s left this process's GPU state unusable: the worker exits and is replaced", run_id)
            CONTEXT.replace_me = True
        return "failed"
    finally:
        beat.stop()
        tracking.finish()  # a run that failed or was lost: its trackers are closed as failed
    if beat.lost.is_set() or recorder.lost:
        return "lost"
    return (_record_search if search else _record_run)(registry, run_id, token, config, result, beat)


def _record_run(registry: Registry, run_id: int, token: int, config, result, beat) -> str:
    outcome = result.to_dict()
    if result.stopped and beat.cancel.is_set():
        if registry.mark_cancelled(run_id, token, outcome):
            drop_resume_state(run_id)
        log.info("run %s cancelled at step %s; its curves are kept", run_id, result.steps)
        return "cancelled"
    if result.stopped:
        return _requeue(registry, run_id, token, f"worker stopped at step {result.steps}; re-queued to resume")
    if registry.mark_succeeded(run_id, token, outcome):
        shutil.rmtree(run_dir(run_id) / "checkpoint", ignore_errors=True)  # the artifact holds the tensors
        log.info("run %s succeeded: %s=%s", run_id, result.primary_metric_name, result.primary_metric)
        return "succeeded"
    return "lost"


def _record_search(registry: Registry, run_id: int, token: int, config, result, beat) -> str:
    """An lr search's outcome: each rung's held-out scores are already its events (split "search", name = the
    lr); a finished search records its candidates and queues one final run per seed at the chosen lr."""

    outcome = {**result.to_dict(), "primary_metric_name": result.metric}
    if result.stopped or result.chosen_lr is None:
        if beat.cancel.is_set():
            if registry.mark_cancelled(run_id, token, outcome):
                drop_resume_state(run_id)
            return "cancelled"
        return _requeue(registry, run_id, token, "worker stopped mid-search; re-queued to resume")
    chosen = next(c for c in result.candidates if c["lr"] == result.chosen_lr)
    outcome["primary_metric"] = chosen["score"]  # the held-out score that chose it, never the reported one
    finals = final_configs(config, result)
    candidates = [(candidate_config(config, c["lr"]), c) for c in result.candidates]
    ids = registry.complete_search(run_id, token, outcome, candidates, finals)
    if ids is None:
        return "lost"
    for final_id in ids:
        send_or_interrupt(registry, final_id, "could not be queued")
    shutil.rmtree(run_dir(run_id) / "search", ignore_errors=True)
    log.info("search %s: %s (%s); runs %s queued", run_id, result.verdict, result.verdict_note, ids)
    return "succeeded"


def spoils_process(err: BaseException) -> bool:
    """Whether, after err, this process's GPU state can no longer be trusted for the next run.

    A failed CUDA-graph capture leaves CUDA's random-number and allocator state mid-capture, and a CUDA
    error (torch.AcceleratorError: an illegal address, a device-side assert) may stick to the context.
    Running out of GPU memory does not: the memory is freed and the next run can go on.
    """
    import torch

    from moduletune.tuning.graphs import GraphCaptureError

    accelerator_error = getattr(torch, "AcceleratorError", None)  # torch >= 2.8
    return isinstance(err, GraphCaptureError) or (accelerator_error is not None and isinstance(err, accelerator_error))


def _event_handler(registry, run_id, config, recorder, beat):
    """on_event for fine_tune: buffer rows, flush at checkpoints, stop on cancel or shutdown."""

    def on_event(event: dict):
        kind, now = event["kind"], time.time()
        if kind == "step":
            step = event["step"]
            recorder.add(
                [
                    {
                        "step": step,
                        "epoch": event["epoch"],
                        "split": "train",
                        "name": name,
                        "value": event[name],
                        "t": now,
                    }
                    # examples_per_second is the run's mean so far (LoopState.step_event): the curves' throughput.
                    for name in ("loss", "lr", "examples_per_second")
                ],
                progress=(step, event["total_steps"], event.get("eta_seconds")),
            )
            recorder.flush()
        elif kind == "start":
            recorder.add([], progress=(event["step"], event["total_steps"], None))  # total known before step 1
            recorder.flush(force=True)
        elif kind == "checkpoint":
            # The engine saves right after this event: the registry must hold every event up to it
            # first, so a resumed run has each step exactly once.
            recorder.flush(force=True)
        elif kind == "rung":  # an lr search's held-out score of one candidate at one budget
            recorder.add(
                [
                    {
                        "step": event["step"],
                        "epoch": None,
                        "split": "search",
                        "name": f"{event['lr']:.6g}",
                        "value": event["score"],
                        "t": now,
                    }
                ]
            )
            recorder.flush(force=True)
        elif kind == "eval":
            recorder.add(
                [
                    {
                        "step": event["step"],
                        "epoch": event["epoch"],
                        "split": "eval",
                        "name": name,
                        "value": value,
                        "t": now,
                    }
                    for name, value in event["metrics"].items()
                ]
            )
            recorder.flush(force=True)
        elif kind == "resumed":
            recorder.flush(force=True)
            dropped = registry.record_resume(run_id, recorder.token, event["step"])
            log.info(
                "run %s resumed from its checkpoint at step %s (%s later events dropped)",
                run_id,
                event["step"],
                dropped,
            )
        if beat.lost.is_set() or recorder.lost:
            raise LostRun(run_id)
        return beat.cancel.is_set() or shutdown_requested()

    return on_event


def _requeue(registry: Registry, run_id: int, token: int, reason: str) -> str:
    if not registry.mark_requeued(run_id, token, reason):
        return "lost"
    if not send_or_interrupt(registry, run_id, f"{reason}, but could not re-queue"):
        return "interrupted"
    log.info("run %s: %s", run_id, reason)
    return "requeued"


class _Recorder:
    """Buffers event rows and progress; writes them in one transaction per FLUSH_SECONDS (or at checkpoints)."""

    def __init__(self, registry: Registry, run_id: int, token: int):
        self.registry, self.run_id, self.token = registry, run_id, token
        self.rows: list[dict] = []
        self.progress = None
        self.last = time.monotonic()
        self.lost = False

    def add(self, rows: list[dict], progress=None) -> None:
        self.rows.extend(rows)
        if progress is not None:
            self.progress = progress

    def flush(self, force: bool = False) -> None:
        due = force or len(self.rows) >= FLUSH_EVENTS or time.monotonic() - self.last >= FLUSH_SECONDS
        if not due or (not self.rows and self.progress is None):
            return
        step, total, eta = self.progress or (None, None, None)
        if not self.registry.record_progress(self.run_id, self.token, self.rows, step, total, eta):
            self.lost = True
        self.rows, self.progress, self.last = [], None, time.monotonic()


class _Heartbeat(threading.Thread):
    """Refreshes the run's heartbeat and reads its cancel flag about once a second, whatever the loop is doing."""

    def __init__(self, registry: Registry, run_id: int, token: int, timeout: float):
        super().__init__(name=f"heartbeat-{run_id}", daemon=True)
        self.registry, self.run_id, self.token = registry, run_id, token
        self.interval = max(0.2, min(1.0, timeout / 4))
        self.cancel, self.lost, self._done = threading.Event(), threading.Event(), threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            try:
                alive, cancel = self.registry.heartbeat(self.run_id, self.token)
            except Exception as err:  # a database blip: keep beating; a long outage ends in the stale sweep
                log.warning("run %s: heartbeat failed: %s", self.run_id, one_line(err, with_type=True))
                continue
            if cancel:
                self.cancel.set()
            if not alive:
                self.lost.set()
                return

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)


def _share_threads() -> None:
    """Share the machine's cores among the worker processes so two CPU runs never thrash each other."""
    import torch

    threads = int(os.environ.get(THREADS_ENV) or max(1, (os.cpu_count() or 1) // max(1, CONTEXT.workers)))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _flush_quietly(recorder: _Recorder) -> None:
    try:
        recorder.flush(force=True)
    except Exception as err:
        log.warning("run %s: could not write its last events: %s", recorder.run_id, one_line(err, with_type=True))
