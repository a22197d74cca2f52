"""The API-only endpoints (runs, run, compare_data, cancel, retry, predict) that gradio_client calls.

Each answers a refusal with its own one-line message and any other error with one line naming no
internals (app.public.errors); the form endpoints (preview, submit) live with the Experiment tab."""

import functools

import gradio as gr

from moduletune.app.compare import views as compare_views
from moduletune.app.playground import predict as playground
from moduletune.app.public import actions
from moduletune.app.public.checks import run_id_of
from moduletune.app.public.errors import visitor_message
from moduletune.app.runs import views
from moduletune.tuning.text import json_safe


def register(ctx) -> None:
    """Add the endpoints to the Blocks being built."""
    registry, who, viewer_of = ctx.registry, ctx.who, ctx.viewer_of

    def answered(action: str):
        """An API endpoint's errors as one line a caller can act on: a refusal's own message, anything else
        logged on the server and named without internals (app.public.errors)."""

        def wrap(fn):
            @functools.wraps(fn)
            def endpoint(*args, **kwargs):
                try:
                    return fn(*args, **kwargs)
                except Exception as err:
                    raise gr.Error(visitor_message(err, action), print_exception=False) from None

            return endpoint

        return wrap

    @answered("list the runs")
    def runs(
        status: str = "all", task: str = "all", request: gr.Request = None, profile: gr.OAuthProfile | None = None
    ) -> list[dict]:
        """Runs newest first, as the registry lists them (status and task filters; 'all' = no filter)."""
        return views.runs_records(registry, status, task, viewer=viewer_of(request, profile))

    @answered("read the run")
    def run(run_id: int, request: gr.Request = None, profile: gr.OAuthProfile | None = None) -> dict:
        """Everything about one run: flat columns, config and result."""
        return views.run_record(registry, run_id, viewer=viewer_of(request, profile))

    @answered("read the compare data")
    def compare_data(task: str = "rte") -> list[dict]:
        """The succeeded runs of a task that the Compare charts plot (one point each)."""
        return compare_views.compare_records(registry, task)

    @answered("cancel the run")
    def cancel_run(run_id: int, request: gr.Request, profile: gr.OAuthProfile | None = None) -> str:
        """Cancel a run: 'cancelled' (it was queued) or 'cancelling' (it stops at its next step)."""
        return actions.cancel_run(registry, run_id, who(request, profile))

    @answered("retry the run")
    def retry_run(run_id: int, request: gr.Request, profile: gr.OAuthProfile | None = None) -> int:
        """Queue a failed, cancelled or interrupted run again; returns the new run's id."""
        return actions.retry_run(registry, run_id, who(request, profile))

    @answered("predict")
    def predict(run_id: int, text: str, text_pair: str = "") -> dict:
        """A succeeded run's prediction for a text (or pair) next to the untuned base model's."""
        return json_safe(playground.predict(registry, run_id_of(run_id), text, text_pair))

    gr.api(runs, api_name="runs")
    gr.api(run, api_name="run")
    gr.api(compare_data, api_name="compare_data")
    gr.api(cancel_run, api_name="cancel")
    gr.api(retry_run, api_name="retry")
    # Not "predict": Gradio's browser client takes an endpoint called /predict for the app's first event
    # (the form's preview), and then warns "Too many arguments provided for the endpoint" on every form edit.
    gr.api(predict, api_name="classify")
