"""Cancel, retry, tag and the study actions: every one from the UI comes here, so public mode's gate applies."""

from __future__ import annotations

from moduletune.app.public.checks import run_id_of
from moduletune.app.public.limits import allow, gate, vet, vet_study
from moduletune.tasks import submission
from moduletune.tasks.tags import check_tags, parse_tags


def study_action(registry, study_id, action: str, submitter: str | None) -> dict:
    """cancel, pause, resume, retry, raise or lower a whole study; in public mode only the visitor's own, and never
    raised over other visitors' runs. Returns the study's record (retry: also the new run ids)."""
    study_id = run_id_of(study_id)
    vet_study(registry, study_id, submitter, action)
    with gate():
        if action == "cancel":
            registry.cancel_study(study_id)
        elif action == "pause":
            submission.pause_study(registry, study_id)
        elif action == "resume":
            submission.resume_study(registry, study_id)
        elif action == "retry":
            allow("retry", submitter, len(registry.retryable_in_study(study_id)))
            ids = submission.retry_study(registry, study_id, submitter)
            return {**registry.study(study_id).to_dict(), "retried": ids}
        elif action in ("raise", "lower"):
            submission.raise_study(registry, study_id, action == "raise")
        else:
            raise ValueError(f"unknown study action {action!r}; allowed: cancel, pause, resume, retry, raise, lower")
    return registry.study(study_id).to_dict()


def cancel_run(registry, run_id, submitter: str | None) -> str:
    """Cancel a run (queued: never starts; running: stops at its next step); returns the new status."""
    run_id = run_id_of(run_id)
    vet(registry, submitter, run_id=run_id, action="cancel")
    allow("cancel", submitter)
    return registry.request_cancel(run_id)


def retry_run(registry, run_id, submitter: str | None) -> int:
    """Queue a failed, cancelled or interrupted run again as a new run; returns the new id."""
    run_id = run_id_of(run_id)
    with gate():
        vet(registry, submitter, run_id=run_id, action="retry")
        allow("retry", submitter)
        return submission.retry(registry, run_id, submitter=submitter)


def tag_run(registry, run_id, tags, note: str | None, submitter: str | None, remove: bool = False) -> dict:
    """Add tags to a run (remove=True: take them off) and set its note (None: left as it is; blank: cleared);
    tags is a list or the text of one box ('baseline, ln-only'). In public mode only on the visitor's own run.
    Returns {"id", "tags", "notes"}; a bad tag or note changes nothing (tasks.tags.TagError says what is allowed)."""

    run_id = run_id_of(run_id)
    labels = parse_tags(tags) if isinstance(tags, str) else check_tags(tags)
    vet(registry, submitter, run_id=run_id, action="tag or annotate")
    edit = {"remove": labels} if remove else {"add": labels}
    return registry.annotate(run_id, **edit, note=note)


def set_run_labels(registry, run_id, tags, note: str | None, submitter: str | None) -> dict:
    """Make a run's tags exactly `tags` (a list or one box's text; empty: none) and its note `note` (None: left as
    it is; blank: cleared), as an edit form saves them. In public mode only on the visitor's own run. Returns
    {"id", "tags", "notes"}; a bad tag or note changes nothing."""

    run_id = run_id_of(run_id)
    labels = parse_tags(tags) if isinstance(tags, str) else check_tags(tags)
    vet(registry, submitter, run_id=run_id, action="tag or annotate")
    return registry.annotate(run_id, replace=labels, note=note)
