"""Submit, cancel and retry: every one from the UI comes here, so public mode's gate (app.public) applies.

A bad value queues nothing and says what to fix; an error that is not a refusal is logged and shown in
one line without internals (app.errors).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from moduletune.app.fields import FIELD_LABELS, field_messages
from moduletune.app.form import Form, FormError, checked, run_id_of
from moduletune.app.plan import FORM_LIMIT, build_configs, final_run_count, shape
from moduletune.app.preset import paper_study, preset_searches
from moduletune.app.public import allow, gate, vet
from moduletune.tasks import submission
from moduletune.tuning import modules
from moduletune.tuning.config import RunConfig


def submit_runs(registry, configs, submitter: str | None, sweep_id: str | None = None) -> list[int]:
    """Queue validated configs through the registry (all or nothing); every UI submission comes here."""
    configs = list(configs)
    if not configs:
        raise FormError(None, "nothing to queue")
    with gate():
        vet(registry, submitter, configs)
        allow("submit", submitter, len(configs))
        if len(configs) == 1 and sweep_id is None:
            return [submission.submit(registry, configs[0], submitter=submitter)]
        return submission.submit_many(
            registry, configs, submitter=submitter, sweep_id=sweep_id or uuid.uuid4().hex[:12]
        )


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


@dataclass
class Outcome:
    """What the form shows after Submit: a message beside the button, one beside the control at fault, the ids."""

    message: str = ""
    control: str | None = None  # the control (app.form.FIELDS) the error is about, if any
    field_message: str = ""
    ids: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.ids)

    @property
    def field_messages(self) -> list[str]:
        """One message per app.form.FIELDS entry, blank but beside the control at fault."""
        return field_messages(self.control, self.field_message)

    @property
    def layers_message(self) -> str:
        return self.field_message if self.control == "layers" else ""

    @property
    def model_message(self) -> str:
        return self.field_message if self.control == "model" else ""


def error_outcome(err: Exception, action: str = "queue these runs") -> Outcome:
    """Put an error beside the control it is about; one about no control (a quota, the queue) stands beside the
    button, and one that is not a refusal is logged and shown as one line without internals (app.errors)."""
    from moduletune.app.errors import error_field, visitor_message

    fld = error_field(err)
    text = f"⚠️ {visitor_message(err, action)}"
    if fld is None:
        return Outcome(message=f"{text}\n\nNothing was queued.")
    return Outcome(message=f"⚠️ Nothing was queued: fix {FIELD_LABELS[fld]}.", control=fld, field_message=text)


def submit_form(registry, form: Form, submitter: str | None) -> Outcome:
    """Validate the whole form, then queue its runs; a bad value queues nothing and says what to fix.

    The runs are counted (and, in public mode, held against the visitor's quota) before any is built, so a
    request for a million runs is refused in microseconds instead of occupying the server."""
    try:
        found = shape(form)
        entries = found.runs // len(found.seeds) if form.lr_search else found.runs  # a search covers its seeds
        if found.runs <= FORM_LIMIT:
            allow("submit", submitter, entries)
        configs = build_configs(form)  # refuses more than FORM_LIMIT runs before listing them
        ids = submit_runs(registry, configs, submitter)
    except Exception as err:  # refusals say what to fix; anything else is logged and named in one safe line
        return error_outcome(err, "queue these runs")
    return Outcome(message=queued_message(configs, ids), ids=ids)


def submit_preset(registry, form: Form, submitter: str | None) -> Outcome:
    """Queue the paper's study (after the user confirmed the count)."""
    try:
        checked(form)
        allow("submit", submitter, preset_searches(form))  # the quota, before a single config is built
        configs = paper_study(form)
        ids = submit_runs(registry, configs, submitter, sweep_id="paper-" + uuid.uuid4().hex[:8])
    except Exception as err:
        return error_outcome(err, "queue the study")
    return Outcome(message=queued_message(configs, ids), ids=ids)


def queued_message(configs: list[RunConfig], ids: list[int]) -> str:
    """'✅ Queued run #12: rte LN @ layer 5, seed 0 ...' or a count with the id range for sweeps."""
    searches = sum(c.lr_search for c in configs)
    if searches:
        runs = final_run_count(configs)
        where = f"#{ids[0]}" if len(ids) == 1 else f"#{min(ids)}–#{max(ids)}"
        return (
            f"✅ Queued **{searches} lr search{'es' if searches != 1 else ''}** ({where}); when it has chosen, "
            f"each queues its runs at that lr ({runs} run{'s' if runs != 1 else ''} in all). Follow them in the "
            "**Runs** tab."
        )
    if len(ids) == 1:
        c = configs[0]
        return (
            f"✅ Queued run **#{ids[0]}**: {c.task} · {modules.short_label(c.modules)} @ layers {c.layers} · "
            f"seed {c.seed} · lr {c.learning_rate:g}. Follow it in the **Runs** tab."
        )
    return (
        f"✅ Queued **{len(ids)} runs** (#{min(ids)}–#{max(ids)}). Follow them in the **Runs** tab; "
        "results appear in **Compare** as they finish."
    )


def tag_run(registry, run_id, tags, note: str | None, submitter: str | None, remove: bool = False) -> dict:
    """Add tags to a run (remove=True: take them off) and set its note (None: left as it is; blank: cleared);
    tags is a list or the text of one box ('baseline, ln-only'). In public mode only on the visitor's own run.
    Returns {"id", "tags", "notes"}; a bad tag or note changes nothing (tasks.tags.TagError says what is allowed)."""
    from moduletune.tasks.tags import check_tags, parse_tags

    run_id = run_id_of(run_id)
    labels = parse_tags(tags) if isinstance(tags, str) else check_tags(tags)
    vet(registry, submitter, run_id=run_id, action="tag or annotate")
    edit = {"remove": labels} if remove else {"add": labels}
    return registry.annotate(run_id, **edit, note=note)


def set_run_labels(registry, run_id, tags, note: str | None, submitter: str | None) -> dict:
    """Make a run's tags exactly `tags` (a list or one box's text; empty: none) and its note `note` (None: left as
    it is; blank: cleared), as an edit form saves them. In public mode only on the visitor's own run. Returns
    {"id", "tags", "notes"}; a bad tag or note changes nothing."""
    from moduletune.tasks.tags import check_tags, parse_tags

    run_id = run_id_of(run_id)
    labels = parse_tags(tags) if isinstance(tags, str) else check_tags(tags)
    vet(registry, submitter, run_id=run_id, action="tag or annotate")
    return registry.annotate(run_id, replace=labels, note=note)
