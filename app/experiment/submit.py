"""Submit from the Experiment tab: the form's runs or the paper preset, queued as one study, all or nothing.

Public mode's gate (app.public.limits) applies to each; a bad value queues nothing and says beside which control
what to fix; an error that is not a refusal is logged and shown in one line without internals (app.public.errors).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from moduletune.app.experiment.fields import FIELD_LABELS, error_field, field_messages
from moduletune.app.experiment.form import Form, checked
from moduletune.app.experiment.plan import FORM_LIMIT, build_configs, final_run_count, shape
from moduletune.app.experiment.preset import paper_study, preset_searches, quick_study
from moduletune.app.public.checks import FormError
from moduletune.app.public.errors import visitor_message
from moduletune.app.public.limits import allow, gate, vet
from moduletune.tasks import submission
from moduletune.tasks.studies import default_name, spec_of
from moduletune.tuning import modules
from moduletune.tuning.config import RunConfig


def submit_runs(
    registry, configs, submitter: str | None, sweep_id: str | None = None, study: dict | None = None
) -> tuple[int | None, list[int]]:
    """Queue validated configs through the registry (all or nothing); every UI submission comes here. One config
    is a run of its own; several are a study (study: its spec's extra keys, e.g. source and scope). Returns
    (study id or None, run ids)."""
    configs = list(configs)
    if not configs:
        raise FormError(None, "nothing to queue")
    with gate():
        vet(registry, submitter, configs)
        allow("submit", submitter, len(configs))
        if len(configs) == 1 and study is None:
            return None, [submission.submit(registry, configs[0], submitter=submitter)]
        spec = spec_of(configs, **({"source": "form"} | (study or {})))
        return submission.submit_study(
            registry, configs, default_name(spec), spec, submitter=submitter, sweep_id=sweep_id or uuid.uuid4().hex[:12]
        )


@dataclass
class Outcome:
    """What the form shows after Submit: a message beside the button, one beside the control at fault, the ids."""

    message: str = ""
    control: str | None = None  # the control (app.experiment.fields.FIELDS) the error is about, if any
    field_message: str = ""
    ids: list = field(default_factory=list)
    study_id: int | None = None  # the study a sweep or the preset queued

    @property
    def ok(self) -> bool:
        return bool(self.ids)

    @property
    def field_messages(self) -> list[str]:
        """One message per app.experiment.fields.FIELDS entry, blank but beside the control at fault."""
        return field_messages(self.control, self.field_message)

    @property
    def layers_message(self) -> str:
        return self.field_message if self.control == "layers" else ""

    @property
    def model_message(self) -> str:
        return self.field_message if self.control == "model" else ""


def error_outcome(err: Exception, action: str = "queue these runs") -> Outcome:
    """Put an error beside the control it is about; one about no control (a quota, the queue) stands beside the
    button, and one that is not a refusal is logged and shown as one line without internals (app.public.errors)."""
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
        scope = {"scope": form.lr_search_scope} if form.lr_search else {}
        study_id, ids = submit_runs(registry, configs, submitter, study=scope if len(configs) > 1 else None)
    except Exception as err:  # refusals say what to fix; anything else is logged and named in one safe line
        return error_outcome(err, "queue these runs")
    return Outcome(message=queued_message(configs, ids, study_id), ids=ids, study_id=study_id)


def submit_preset(registry, form: Form, submitter: str | None, quick: bool = False) -> Outcome:
    """Queue the paper's study, whole or at its quick size (after the user confirmed the count), as one study."""
    try:
        checked(form)
        allow("submit", submitter, preset_searches(form, quick))  # the quota, before a single config is built
        configs = quick_study(form) if quick else paper_study(form)
        source = {"source": "paper preset" + (" (quick)" if quick else ""), "scope": form.lr_search_scope}
        study_id, ids = submit_runs(registry, configs, submitter, "paper-" + uuid.uuid4().hex[:8], study=source)
    except Exception as err:
        return error_outcome(err, "queue the study")
    return Outcome(message=queued_message(configs, ids, study_id), ids=ids, study_id=study_id)


def queued_message(configs: list[RunConfig], ids: list[int], study_id: int | None = None) -> str:
    """'✅ Queued run #12: rte LN @ layer 5, seed 0 ...' or a count with the id range for sweeps; a study links to
    its page in the Study tab."""
    text = _queued_runs(configs, ids)
    if study_id is not None:
        text += f" They form **study #{study_id}**: watch, pause or cancel it in the **Study** tab."
    return text


def _queued_runs(configs: list[RunConfig], ids: list[int]) -> str:
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
