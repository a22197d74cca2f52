"""The Experiment tab's logic, under one name: the form (app.form), the model facts (app.model_info), the sweep
(app.plan), the preview (app.preview), the paper preset (app.preset) and the actions (app.actions).

No Gradio here: app/ui.py wires these functions to widgets, and tests call them directly. Public mode's
gate lives in app.public.
"""

from moduletune.app.actions import (
    Outcome,
    cancel_run,
    error_outcome,
    queued_message,
    retry_run,
    submit_form,  # noqa: F401
    submit_preset,
    submit_runs,
)
from moduletune.app.form import (
    ADVANCED,
    DEFAULT_FAMILIES,
    DEFAULT_LAYERS,
    DEFAULT_MAX_EVAL,
    DEFAULT_MAX_TRAIN,  # noqa: F401
    DEFAULT_TASKS,
    FAMILY_CHOICES,
    FAMILY_LABELS,
    TASK_NAMES,
    Form,
    FormError,
    advanced_settings,
    checked,
    chosen_layers,
    compact_spec,
    first_layers,
    last_layers,
    layer_toggle_choices,
    lr_default,
    lr_hint,
    parse_seeds,
    resolve_lr,
    run_id_of,
)
from moduletune.app.model_info import ModelInfo, counts, model_info, model_name  # noqa: F401
from moduletune.app.plan import (
    FORM_LIMIT,
    PlannedRun,
    Shape,
    build_configs,
    final_run_count,
    module_sets,
    plan,  # noqa: F401
    search_configs,
    shape,
    sweep_points,
    sweep_shape,
    to_configs,
)
from moduletune.app.preset import (
    PAPER_FAMILIES,
    PRESET_LIMIT,
    estimated_seconds,
    measured_throughput,  # noqa: F401
    paper_study,
    paper_study_message,
    preset_searches,
)
from moduletune.app.preview import preview, preview_markdown, run_lr_text  # noqa: F401
from moduletune.app.public import public_limits, set_public  # noqa: F401
