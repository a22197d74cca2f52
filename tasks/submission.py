"""Submission: validate a run fully, record it as queued, send its message; undo the record if the send fails.

The one way runs enter the system (the CLI, the UI and the Python API all come here), so a run is
either checked, recorded and on the queue, or not there at all. Tags and a note (tasks.tags) are checked
with the config and recorded with the run. Retrying a run is submitting its config again, linked to the old
run and with its tags (a note is about one run, so it stays with the old one). A study (tasks.studies) is
submitted whole or not at all, and what steers one that needs queue messages (resume, retry, raise) is here,
since the registry never enqueues. Each message carries its run's priority: a run of its own goes before
the queued runs of studies.
"""

from __future__ import annotations

import logging

from moduletune.tasks.queue import enqueue_run, get_huey
from moduletune.tasks.registry import QUEUED, RETRYABLE, Registry, RegistryError
from moduletune.tasks.rows import check_submitter
from moduletune.tasks.studies import ACTIVE, PAUSED, RAISED_PRIORITY, STOPPED, STUDY_PRIORITY
from moduletune.tasks.tags import check_note, check_tags
from moduletune.tuning import models as tuning_models
from moduletune.tuning.config import RunConfig, about
from moduletune.tuning.glue_dirs import check_glue_dir
from moduletune.tuning.modules import architecture_for, num_hidden_layers, parse_layers
from moduletune.tuning.text import one_line
from moduletune.tuning.trackers import check_installed
from moduletune.tuning.verdict import check_searchable

log = logging.getLogger("moduletune.submission")


def check_submission(config):
    """A fully validated RunConfig, or the engine's ValueError naming the field it is about (`field`): settings,
    GLUE folder, trackers, model, architecture, layer range, a search's rows.

    The one place a run is checked: a dict (the CLI's JSON, a retry's stored config) is validated as it becomes a
    RunConfig, a RunConfig was validated when it was made; what the registry records here, a worker and fine_tune
    read back without checking again (RunConfig.from_stored)."""

    config = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
    with about("glue_dir"):
        check_glue_dir(config.task, config.glue_dir)  # a folder that is not there is refused now, not a failed run
    with about("report_to"):
        check_installed(config.report_to)  # a tracker not installed here is refused now, not a failed run later
    model_config = tuning_models.load_config(config.model)  # read once per process
    with about("model"):
        architecture_for(model_config.model_type)
    with about("layers"):
        parse_layers(config.layers, num_hidden_layers(model_config))
    # A search scored on too few rows would choose by coin toss: refused now, beside the rows it scores on.
    with about("max_eval" if config.lr_selection == "eval" else "max_train"):
        check_searchable(config)
    return config


def submit(
    registry: Registry,
    config,
    submitter: str | None = None,
    sweep_id: str | None = None,
    retry_of: int | None = None,
    huey=None,
    tags=(),
    note: str | None = None,
    study_id: int | None = None,
) -> int:
    """Validate fully (the config, the tags and the note), record the run as queued with its tags and note (in a
    study, or none), enqueue it; returns its id. Nothing is left half-made."""
    labels = check_tags(tags), check_note(note)
    check_submitter(submitter)
    config = check_submission(config)
    return _record_and_send(registry, config, submitter, sweep_id, retry_of, huey, *labels, study_id=study_id)


def submit_many(
    registry: Registry,
    configs,
    submitter: str | None = None,
    sweep_id: str | None = None,
    huey=None,
    tags=(),
    note: str | None = None,
) -> list[int]:
    """Validate every config, the tags and the note first (all or nothing), then submit each with those tags and
    that note; returns the ids in order."""
    labels = check_tags(tags), check_note(note)
    check_submitter(submitter)
    checked = [check_submission(c) for c in configs]
    return [_record_and_send(registry, c, submitter, sweep_id, None, huey, *labels) for c in checked]


def submit_study(
    registry: Registry,
    configs,
    name: str,
    spec: dict,
    submitter: str | None = None,
    huey=None,
    tags=(),
    note: str | None = None,
    sweep_id: str | None = None,
) -> tuple[int, list[int]]:
    """Validate every config, the tags and the note first, record a study (what was asked: spec) and queue each run
    in it; returns (study id, run ids). All or nothing: a queue that refuses half-way takes the study and its
    queued runs back out."""
    labels = check_tags(tags), check_note(note)
    check_submitter(submitter)
    checked = [check_submission(c) for c in configs]
    if not checked:
        raise RegistryError("a study needs at least one run")
    study_id = registry.create_study(name, spec, submitter, *labels, priority=STUDY_PRIORITY)
    try:
        ids = [
            _record_and_send(registry, c, submitter, sweep_id, None, huey, *labels, study_id=study_id) for c in checked
        ]
    except BaseException:
        registry.forget_study(study_id)  # messages already sent find no run and are dropped by the worker
        raise
    return study_id, ids


def retry(registry: Registry, run_id: int, submitter: str | None = None, huey=None) -> int:
    """A failed, cancelled or interrupted run again, as a new run linked to it (retry_of) in its study; returns the
    new id."""
    check_submitter(submitter)
    old = registry.get(run_id)
    if old.status not in RETRYABLE:
        raise RegistryError(f"run {run_id} is {old.status}; only {', '.join(RETRYABLE)} runs can be retried")
    return submit(
        registry,
        old.config,
        submitter or old.submitter,
        old.sweep_id,
        int(run_id),
        huey,
        tags=old.tags,
        study_id=old.study_id,
    )


def send(registry: Registry, run_id: int, huey=None) -> None:
    """Put a recorded run's message on the queue at its priority (its study's, or a single run's)."""
    enqueue_run(run_id, huey or get_huey(), priority=registry.priority_of(run_id))


def pause_study(registry: Registry, study_id: int) -> dict:
    """Its queued runs stay queued but no worker takes them (running ones finish); returns the study's summary."""
    if not registry.set_study_state(study_id, PAUSED, (ACTIVE,)):
        raise RegistryError(f"study {study_id} is {registry.study(study_id).status}; only an active study pauses")
    return registry.study(study_id).to_dict()


def resume_study(registry: Registry, study_id: int, huey=None) -> dict:
    """A paused study's queued runs go back to the workers (their messages sent again); returns its summary."""
    if not registry.set_study_state(study_id, ACTIVE, (PAUSED,)):
        raise RegistryError(f"study {study_id} is {registry.study(study_id).status}; only a paused study resumes")
    for run_id in registry.study_run_ids(study_id):
        send_or_interrupt(registry, run_id, "could not be queued again", huey)
    return registry.study(study_id).to_dict()


def retry_study(registry: Registry, study_id: int, submitter: str | None = None, huey=None) -> list[int]:
    """Every failed or interrupted run and search of a study again, as new runs in it (a cancelled study is active
    again for them); returns the new ids."""
    failed = registry.retryable_in_study(study_id)
    if not failed:
        raise RegistryError(f"study {study_id} has no failed or interrupted run to retry")
    registry.set_study_state(study_id, ACTIVE, (STOPPED,))
    return [retry(registry, run_id, submitter, huey) for run_id in failed]


def raise_study(registry: Registry, study_id: int, raised: bool = True, huey=None) -> dict:
    """Put a study's queued runs before single runs (raised) or back behind them; their messages are sent again at
    the new priority (a run's older message is skipped once it is claimed). Returns its summary."""
    registry.set_study_priority(study_id, RAISED_PRIORITY if raised else STUDY_PRIORITY)
    if registry.study(study_id).state == ACTIVE:
        for run_id in registry.study_run_ids(study_id):
            send_or_interrupt(registry, run_id, "could not be queued again", huey)
    return registry.study(study_id).to_dict()


def send_or_interrupt(registry: Registry, run_id: int, why: str, huey=None) -> bool:
    """Send the message of a run the registry already holds as queued (re-queued, or a search's final run).

    When the queue refuses, the run becomes interrupted with `why` and the queue's error: recorded and
    retryable, never silently lost. True when the message was sent."""
    try:
        send(registry, run_id, huey)
    except Exception as err:
        registry.interrupt_unsent(run_id, f"{why}: {one_line(err)}")
        return False
    return True


def _record_and_send(
    registry: Registry, config, submitter, sweep_id, retry_of, huey, tags=(), note=None, study_id=None
) -> int:
    run_id = registry.insert_queued(config, submitter, sweep_id, retry_of, tags=tags, note=note, study_id=study_id)
    try:
        send(registry, run_id, huey)
    except BaseException:
        registry.delete_queued(run_id)  # nothing half-made: no row without a queue message
        raise
    log.info(
        "run %s %s: %s %s@%s seed %s", run_id, QUEUED, config.task, "+".join(config.modules), config.layers, config.seed
    )
    return run_id
