"""Submission: validate a run fully, record it as queued, send its message; undo the record if the send fails.

The one way runs enter the system (the CLI, the UI and the Python API all come here), so a run is
either checked, recorded and on the queue, or not there at all. Tags and a note (tasks.tags) are checked
with the config and recorded with the run. Retrying a run is submitting its config again, linked to the old
run and with its tags (a note is about one run, so it stays with the old one).
"""

from __future__ import annotations

import logging

from moduletune.tasks.queue import enqueue_run, get_huey
from moduletune.tasks.registry import QUEUED, RETRYABLE, Registry, RegistryError
from moduletune.tasks.tags import check_note, check_tags
from moduletune.tuning.text import one_line

log = logging.getLogger("moduletune.submission")
_MODEL_CONFIGS: dict[str, object] = {}


def check_submission(config):
    """A fully validated RunConfig, or the engine's ValueError: settings, model, architecture, layer range."""
    from moduletune.tuning.config import RunConfig
    from moduletune.tuning.models import check_against_model, load_config
    from moduletune.tuning.trackers import check_installed

    config = RunConfig.from_dict(config if isinstance(config, dict) else config.to_dict())
    check_installed(config.report_to)  # a tracker not installed here is refused now, not a failed run later
    if config.model not in _MODEL_CONFIGS:  # a model's config is read once per process
        _MODEL_CONFIGS[config.model] = load_config(config.model)
    check_against_model(config, _MODEL_CONFIGS[config.model])
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
) -> int:
    """Validate fully (the config, the tags and the note), record the run as queued with its tags and note,
    enqueue it; returns its id. Nothing is left half-made."""
    labels = check_tags(tags), check_note(note)
    return _record_and_send(registry, check_submission(config), submitter, sweep_id, retry_of, huey, *labels)


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
    checked = [check_submission(c) for c in configs]
    return [_record_and_send(registry, c, submitter, sweep_id, None, huey, *labels) for c in checked]


def retry(registry: Registry, run_id: int, submitter: str | None = None, huey=None) -> int:
    """A failed, cancelled or interrupted run again, as a new run linked to it (retry_of); returns the new id."""
    old = registry.get(run_id)
    if old["status"] not in RETRYABLE:
        raise RegistryError(f"run {run_id} is {old['status']}; only {', '.join(RETRYABLE)} runs can be retried")
    return submit(
        registry, old["config"], submitter or old["submitter"], old["sweep_id"], int(run_id), huey, tags=old["tags"]
    )


def send_or_interrupt(registry: Registry, run_id: int, why: str, huey=None) -> bool:
    """Send the message of a run the registry already holds as queued (re-queued, or a search's final run).

    When the queue refuses, the run becomes interrupted with `why` and the queue's error: recorded and
    retryable, never silently lost. True when the message was sent."""
    try:
        enqueue_run(run_id, huey or get_huey())
    except Exception as err:
        registry.interrupt_unsent(run_id, f"{why}: {one_line(err)}")
        return False
    return True


def _record_and_send(registry: Registry, config, submitter, sweep_id, retry_of, huey, tags=(), note=None) -> int:
    run_id = registry.insert_queued(config, submitter, sweep_id, retry_of, tags=tags, note=note)
    try:
        enqueue_run(run_id, huey or get_huey())
    except BaseException:
        registry.delete_queued(run_id)  # nothing half-made: no row without a queue message
        raise
    log.info(
        "run %s %s: %s %s@%s seed %s", run_id, QUEUED, config.task, "+".join(config.modules), config.layers, config.seed
    )
    return run_id
