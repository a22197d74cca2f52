"""gradio_client against the launched app and its real embedded worker: submit, watch it finish, compare it."""

from __future__ import annotations

import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from moduletune.app.experiment.form import FIELDS

from .conftest import TINY, wait_for

RUN_TIMEOUT = 240  # seconds for a tiny run on a busy 2-core machine (model load dominates)


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server.url, verbose=False)


def test_a_submitted_run_finishes_and_appears_in_the_compare_data(client, app_server):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/submit", "/preview", "/runs", "/run", "/compare_data", "/cancel", "/retry", "/classify"} <= set(api)

    # /preview: (preview, one message beside each field in app.experiment.fields.FIELDS order)
    preview, *beside = client.predict(**TINY, api_name="/preview")
    assert "1 run will be queued" in preview and "1,536" in preview and not any(beside)

    # A bad selection: the message beside the layers control, nothing queued.
    # /submit: (message, queued ids, one message beside each field)
    message, ids, *beside = client.predict(**{**TINY, "layer_spec": "9"}, api_name="/submit")
    layers_msg = dict(zip(FIELDS, beside))["layers"]
    assert ids == [] and "out of range" in layers_msg and "Nothing was queued" in message
    assert client.predict(api_name="/runs") == []

    message, ids, *beside = client.predict(**TINY, prefix_cache="on", api_name="/submit")
    assert len(ids) == 1 and f"#{ids[0]}" in message and not any(beside)
    run_id = ids[0]
    queued = client.predict(api_name="/runs")
    assert [r["id"] for r in queued] == [run_id] and queued[0]["submitter"].startswith("web-")

    started = time.monotonic()

    def finished():
        run = next(r for r in client.predict(api_name="/runs") if r["id"] == run_id)
        return run if run["status"] in ("succeeded", "failed", "cancelled", "interrupted") else None

    run = wait_for(finished, RUN_TIMEOUT, f"run {run_id} to finish", app_server, interval=2)
    print(f"run {run_id} finished in {time.monotonic() - started:.1f}s")
    assert run["status"] == "succeeded", run["error"]
    assert run["worker"] and run["device"] == "cpu" and run["step"] == run["total_steps"] == 2

    succeeded = client.predict("succeeded", "rte", api_name="/runs")
    assert [r["id"] for r in succeeded] == [run_id]
    detail = client.predict(run_id, api_name="/run")
    assert detail["config"]["max_train"] == 32 and detail["config"]["prefix_cache"] == "on"
    assert detail["result"]["prefix_cache"] == {"first_trainable_layer": 5, "train": True, "eval": True}
    assert detail["result"]["metrics"]["accuracy"] == run["primary_metric"]

    points = client.predict("rte", api_name="/compare_data")
    assert [(p["id"], p["modules"], p["layers"]) for p in points] == [(run_id, "layernorm", "5")]
    assert points[0]["primary_metric"] == run["primary_metric"] and 0 < points[0]["trainable_pct"] < 0.02
    assert client.predict("mrpc", api_name="/compare_data") == []

    # The same run in the playground, next to the untuned model.
    out = client.predict(run_id, "A man is playing a guitar.", "A person plays music.", api_name="/classify")
    assert out["task"] == "rte" and set(out["tuned"]) == {"entailment", "not_entailment"}
    assert set(out["base"]) == set(out["tuned"])


def test_cancel_and_retry_through_the_api(client, app_server):
    # Long enough (96 steps) that the cancel lands while the run is queued or running, never after it ended.
    long_run = {**TINY, "max_train": 512, "epochs": 3, "families": ["query"]}
    _, (run_id,), *_ = client.predict(**long_run, api_name="/submit")
    status = client.predict(run_id, api_name="/cancel")
    assert status in ("cancelled", "cancelling")
    wait_for(lambda: client.predict(run_id, api_name="/run")["status"] == "cancelled", 120, "the cancel", app_server)
    new_id = client.predict(run_id, api_name="/retry")
    again = client.predict(new_id, api_name="/run")
    assert again["retry_of"] == run_id and again["status"] in ("queued", "running", "succeeded")
    try:  # leave the worker idle for the browser test
        client.predict(new_id, api_name="/cancel")
    except AppError:  # it already finished
        pass


def test_a_glue_folder_that_is_not_one_is_refused_through_the_api(client, app_server):
    """The open server's API checks a GLUE folder where the run enters: one line, nothing queued."""
    registry = app_server.registry()
    before = registry.count()
    for glue in ("abc", "NaN", "../../../../etc/passwd", "a\x00b"):
        message, ids, *beside = client.predict(**{**TINY, "glue_dir": glue}, api_name="/submit")
        shown = " ".join((message, *beside))
        assert ids == [] and "the GLUE folder" in shown and "Nothing was queued" in message, shown
    assert registry.count() == before
