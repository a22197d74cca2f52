"""Public mode on a real SQLite registry: every limit refuses with its message and queues nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moduletune.app.experiment.form import Form
from moduletune.app.experiment.model_info import model_name
from moduletune.app.experiment.preset import paper_study_message
from moduletune.app.experiment.preview import preview
from moduletune.app.experiment.submit import Outcome, submit_form, submit_preset, submit_runs
from moduletune.app.public import limits as public
from moduletune.app.public.actions import cancel_run, retry_run
from moduletune.app.public.checks import FormError
from moduletune.app.public.limits import LimitError, PublicLimits, public_limits, set_public
from moduletune.app.runs import views
from moduletune.app.weights import models as model_views
from moduletune.tasks.registry import Registry
from moduletune.tuning.config import RunConfig
from moduletune.tuning.text import json_safe

LIMITS = PublicLimits(
    max_active_per_visitor=2,
    max_queued=3,
    max_epochs=3,
    max_train=2000,
    max_eval=1000,
    max_seq_len=128,
    max_batch_size=64,
)
REPO = Path(__file__).resolve().parents[2]


def form(**kw) -> Form:
    return Form(**{"tasks": ["rte"], "layers": ["5"], "max_train": 32, "max_eval": 32, **kw})


@pytest.fixture
def public_mode(monkeypatch, registry):
    """Public mode with LIMITS for one test; no model may be read except the allow-listed embedded one."""
    from moduletune.tuning import models as tuning_models

    real = tuning_models.load_config

    def guarded(name, **kw):
        assert model_name(name) in LIMITS.models, f"public mode read a model it should have refused: {name}"
        return real(name, **kw)

    monkeypatch.setattr(tuning_models, "load_config", guarded)
    set_public(LIMITS, registry)
    yield LIMITS
    set_public(None)


def refused(out: Outcome, text: str) -> str:
    shown = " ".join((out.message, out.field_message))  # beside the button, and beside the control at fault
    assert not out.ok and text in shown and "Nothing was queued" in out.message, shown
    return shown


# ---------------------------------------------------------------------------------------------- the limits


def test_limits_have_documented_defaults_and_come_from_the_environment():
    d = PublicLimits.from_env({})
    assert (
        d.max_active_per_visitor,
        d.max_queued,
        d.max_epochs,
        d.max_train,
        d.max_eval,
        d.max_seq_len,
        d.max_batch_size,
        d.models,
    ) == (2, 20, 3, 2000, 2000, 128, 64, ("all-MiniLM-L6-v2",))
    env = {
        "MODULETUNE_PUBLIC_MAX_ACTIVE_PER_VISITOR": "1",
        "MODULETUNE_PUBLIC_MAX_QUEUED": "5",
        "MODULETUNE_PUBLIC_MAX_EPOCHS": "2",
        "MODULETUNE_PUBLIC_MAX_TRAIN": "64",
        "MODULETUNE_PUBLIC_MAX_EVAL": "48",
        "MODULETUNE_PUBLIC_MAX_SEQ_LEN": "64",
        "MODULETUNE_PUBLIC_MAX_BATCH_SIZE": "16",
        "MODULETUNE_PUBLIC_MODELS": " all-MiniLM-L6-v2, prajjwal1/bert-tiny ,",
    }
    got = PublicLimits.from_env(env)
    assert got == PublicLimits(1, 5, 2, 64, 48, 64, 16, ("all-MiniLM-L6-v2", "prajjwal1/bert-tiny"))
    for var in ("MODULETUNE_PUBLIC_MAX_EPOCHS", "MODULETUNE_PUBLIC_MAX_QUEUED"):
        with pytest.raises(ValueError, match=var):
            PublicLimits.from_env({var: "many"})
        with pytest.raises(ValueError, match="at least 1"):
            PublicLimits.from_env({var: "0"})
    assert public.enabled({"MODULETUNE_PUBLIC": "1"}) and public.enabled({"MODULETUNE_PUBLIC": "True"})
    assert not public.enabled({}) and not public.enabled({"MODULETUNE_PUBLIC": "0"})
    text = d.summary()
    assert all(s in text for s in ("**2**", "**20**", "**3** epochs", "2,000", "all-MiniLM-L6-v2", "own runs"))


def test_models_come_from_the_allow_list_only():
    assert public.check_model(LIMITS, "") == public.check_model(LIMITS, " ALL-minilm-l6-v2 ") == "all-MiniLM-L6-v2"
    with pytest.raises(
        LimitError, match="'bert-base-uncased' is not available in this public demo; pick one of: all-MiniLM-L6-v2"
    ) as err:
        public.check_model(LIMITS, "bert-base-uncased")
    assert err.value.field == "model"
    for path in ("/etc", "./tuning", "~/models/bert", "..\\x", "C:/models", "a/b/c", "../x"):
        with pytest.raises(LimitError, match="local paths cannot be used as models"):
            public.check_model(LIMITS, path)


def test_each_cap_on_a_run_says_what_it_is():
    cases = [
        (dict(epochs=4), "epochs: at most 3 per run in this public demo, you asked for 4"),
        (dict(max_train=5000), "training examples: at most 2,000 per run"),
        (dict(max_train=None), "0 = the whole split is not available here"),
        (dict(max_eval=None), "evaluation examples: at most 1,000"),
        (dict(max_seq_len=256), "max sequence length: at most 128 per run in this public demo, you asked for 256"),
        (dict(batch_size=128), "batch size: at most 64"),
        (dict(modules=("lora:query",), lora_rank=128), "LoRA rank: at most 64 per run in this public demo"),
        (dict(glue_dir="/tmp/glue"), "a data folder cannot be chosen"),
        (dict(model="bert-base-uncased"), "is not available in this public demo"),
    ]
    ok = dict(task="rte", max_train=32, max_eval=32)
    public.check_config(LIMITS, RunConfig(**ok))
    stored = RunConfig.from_dict(RunConfig(**ok).to_dict())  # a stored config (what a retry resubmits)
    public.check_config(LIMITS, stored)
    for change, message in cases:
        with pytest.raises(LimitError, match=message.replace("(", r"\(").replace(")", r"\)")):
            public.check_config(LIMITS, RunConfig(**{**ok, **change}))


# ---------------------------------------------------------------------------------------------- through the gate


def test_a_visitor_over_quota_is_refused_and_others_keep_working(registry, public_mode):
    refused(
        submit_form(registry, form(seeds="0,1,2"), "web-a"),
        "at most 2 runs queued or running per visitor in this public demo: you have none queued or running, "
        "and this would add 3",
    )
    assert registry.count() == 0
    assert len(submit_form(registry, form(seeds="0,1"), "web-a").ids) == 2
    refused(submit_form(registry, form(), "web-a"), "you have 2 queued or running, and this would add 1")
    assert registry.count() == 2
    assert submit_form(registry, form(), "web-b").ok  # the shared queue: 3 of 3
    refused(
        submit_form(registry, form(), "web-c"),
        "the shared queue is full: at most 3 runs may wait in this public demo, 3 are waiting",
    )
    assert registry.count() == 3
    # The preset says so before asking for a confirmation.
    with pytest.raises(FormError, match="at most 2 queued or running runs per visitor"):
        paper_study_message(form())
    refused(submit_preset(registry, form(), "web-d"), "at most 2 runs queued or running per visitor")
    assert registry.count() == 3


def test_capped_settings_are_refused_before_anything_is_queued(registry, public_mode):
    refused(submit_form(registry, form(epochs=5), "web-a"), "epochs: at most 3 per run")
    refused(submit_form(registry, form(max_train=2001), "web-a"), "training examples: at most 2,000 per run")
    refused(submit_form(registry, form(max_train=0), "web-a"), "the whole split is not available here")
    refused(submit_form(registry, form(max_eval=0), "web-a"), "evaluation examples: at most 1,000")
    refused(submit_form(registry, form(batch_size=100), "web-a"), "batch size: at most 64")
    with pytest.raises(LimitError, match="max sequence length: at most 128"):  # not on the form: through the gate
        submit_runs(registry, [RunConfig(task="rte", max_train=32, max_eval=32, max_seq_len=512)], "web-a")
    with pytest.raises(LimitError, match="a data folder cannot be chosen"):
        submit_runs(registry, [RunConfig(task="rte", max_train=32, max_eval=32, glue_dir="/etc")], "web-a")
    refused(
        submit_form(registry, form(advanced={"report_to": "tensorboard"}), "web-a"),
        "experiment trackers cannot be chosen in this public demo",
    )
    assert registry.count() == 0
    assert submit_form(registry, form(epochs=3, max_train=2000, max_eval=1000, batch_size=64), "web-a").ok


def test_typed_models_and_local_paths_are_refused_without_being_read(registry, public_mode, tmp_path):
    # A real local model folder that the open lab would accept: public mode never looks at it.
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2})
    )
    shown = refused(
        submit_form(registry, form(model=str(folder)), "web-a"),
        "local paths cannot be used as models in this public demo",
    )
    assert "pick one of: all-MiniLM-L6-v2" in shown
    out = submit_form(registry, form(model="bert-base-uncased"), "web-a")
    assert "fix the model" in out.message and "is not available in this public demo" in out.model_message
    view = preview(form(model="../../etc"))
    assert view["field"] == "model" and "local paths" in view["error"]
    with pytest.raises(FormError, match="not available"):
        model_views.magnitudes("sentence-transformers/all-mpnet-base-v2")
    assert registry.count() == 0
    assert preview(form())["runs"] == 1  # the allow-listed model still works


def test_cancel_and_retry_only_on_a_visitors_own_runs(registry, public_mode):
    (mine,) = submit_form(registry, form(), "web-a").ids
    with pytest.raises(
        LimitError,
        match=f"run {mine} was queued by another visitor: in this public demo you can cancel only your own runs",
    ):
        cancel_run(registry, mine, "web-b")
    assert registry.get(mine).status == "queued"
    assert cancel_run(registry, mine, "web-a") == "cancelled"
    with pytest.raises(LimitError, match="you can retry only your own runs"):
        retry_run(registry, mine, "web-b")
    assert registry.count() == 1
    again = retry_run(registry, mine, "web-a")
    assert registry.get(again).retry_of == mine and registry.get(again).submitter == "web-a"
    submit_form(registry, form(), "web-a")  # two active now: a retry is one more submission
    cancel_run(registry, again, "web-a")
    submit_form(registry, form(seeds="1"), "web-a")
    with pytest.raises(LimitError, match="at most 2 runs queued or running per visitor"):
        retry_run(registry, again, "web-a")


def test_visitors_never_see_who_submitted_a_run(registry, public_mode):
    (a,) = submit_form(registry, form(), "web-a").ids
    (b,) = submit_form(registry, form(), "web-b").ids
    records = views.runs_records(registry, viewer="web-b")
    assert [(r["id"], r["mine"]) for r in records] == [(b, True), (a, False)]
    assert all("submitter" not in r for r in records) and "web-a" not in json.dumps(records)
    detail = views.run_record(registry, a, viewer="web-b")
    assert "submitter" not in detail and detail["mine"] is False and detail["config"]["task"] == "rte"
    others, own = views.run_detail(registry, a, viewer="web-b"), views.run_detail(registry, b, viewer="web-b")
    assert (others.can_cancel, own.can_cancel) == (False, True)
    assert "web-a" not in json.dumps(json_safe({"c": others.config, "r": others.result})) + others.summary
    assert views.runs_records(registry)[0]["submitter"] == "web-b"  # the open lab shows everything
    assert views.run_detail(registry, a).can_cancel


def test_the_open_lab_is_unchanged_when_public_mode_is_off(registry):
    assert public_limits() is None
    out = submit_form(registry, form(seeds="0,1,2", epochs=5, max_train=0), "web-a")
    assert out.ok and registry.count() == 3
    assert cancel_run(registry, out.ids[0], "someone-else") == "cancelled"


def _request(peer: str, forwarded: str | None = None, session: str = "any-session"):
    """A real Starlette request as Gradio hands it to a handler: a peer address and headers."""
    import gradio as gr
    from starlette.requests import Request

    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": headers,
        "client": (peer, 40000),
        "query_string": b"",
    }
    return gr.Request(request=Request(scope), session_hash=session)


def test_a_visitor_is_their_address_not_their_session_hash():
    from moduletune.app import ui
    from moduletune.app.public import visitors

    a = ui.submitter_of(_request("10.0.0.1", session="s1"))
    # A new connection (a new session hash) from the same address is the same visitor; another address is not.
    assert a == ui.submitter_of(_request("10.0.0.1", session="s2")) and a.startswith("web-") and len(a) == 16
    assert a != ui.submitter_of(_request("10.0.0.2")) and "10.0.0.1" not in a
    # X-Forwarded-For is anyone's to send: the identity is the peer as uvicorn resolved it, never the header.
    assert ui.submitter_of(_request("10.0.0.1", forwarded="6.6.6.6")) == a
    env = {}
    visitors.trust_no_proxy_by_default(env)
    assert env == {"FORWARDED_ALLOW_IPS": ""}  # serve's default: uvicorn applies no X-Forwarded-For
    env = {"FORWARDED_ALLOW_IPS": "10.0.0.254"}
    visitors.trust_no_proxy_by_default(env)
    assert env == {"FORWARDED_ALLOW_IPS": "10.0.0.254"}  # an operator's list of proxies stands


def test_on_an_oauth_space_the_submitter_is_the_logged_in_user():
    import gradio as gr

    from moduletune.app import ui
    from moduletune.app.public import visitors

    profile = gr.OAuthProfile({"name": "Ada", "preferred_username": "ada", "profile": "", "picture": ""})
    assert ui.submitter_of(_request("10.0.0.1"), profile, oauth=True) == "hf:ada"
    assert ui.submitter_of(_request("10.0.0.9"), profile) == "hf:ada"  # the same user from anywhere
    with pytest.raises(visitors.LoginRequired, match="log in with Hugging Face"):
        ui.submitter_of(_request("10.0.0.1"), None, oauth=True)
    assert visitors.oauth_enabled({"OAUTH_CLIENT_ID": "x"}) and not visitors.oauth_enabled({})
    assert not visitors.oauth_enabled({"OAUTH_CLIENT_ID": "x", "MODULETUNE_PUBLIC_OAUTH": "off"})


def test_trust_remote_code_is_never_on():
    sources = [p for d in ("tuning", "tasks", "app") for p in (REPO / d).rglob("*.py")]
    assert not [str(p) for p in sources if "trust_remote_code=True" in p.read_text()]
    assert "trust_remote_code=False" in (REPO / "tuning" / "models.py").read_text()
    assert "trust_remote_code" not in {f.name for f in __import__("dataclasses").fields(RunConfig)}


# ---------------------------------------------------------------------------------------------- the app and the CLI


def test_the_public_blocks_pick_models_from_the_allow_list_and_show_the_limits(home):
    from moduletune.app import ui

    try:
        demo = ui.build_app(Registry(), worker_status=lambda: "ok", public=LIMITS)
        assert public_limits() is LIMITS
        config = demo.get_config_file()
    finally:
        set_public(None)
    props = {
        c["props"].get("elem_id"): (c["type"], c["props"])
        for c in config["components"]
        if c.get("props", {}).get("elem_id")
    }
    assert not [e for ids in ui.ELEM_IDS.values() for e in ids if e not in props]  # elem_ids stay stable
    for elem in ("model", "weights-model"):
        kind, p = props[elem]
        assert kind == "dropdown" and [c[1] for c in p["choices"]] == list(LIMITS.models)
        assert p["value"] == "all-MiniLM-L6-v2"
    assert "**2** runs queued or running per visitor" in props["public-limits"][1]["value"]
    apis = {d.get("api_name") for d in config["dependencies"] if d.get("api_visibility", "public") == "public"}
    assert {"submit", "preview", "runs", "run", "compare_data", "cancel", "retry", "classify"} <= apis
    open_app = ui.build_app(Registry(), worker_status=lambda: "ok").get_config_file()
    assert public_limits() is None
    assert not any(c.get("props", {}).get("elem_id") == "public-limits" for c in open_app["components"])


def test_serve_public_flag_and_environment(monkeypatch):
    from moduletune.app import server as app_server
    from moduletune.cli.main import build_parser
    from moduletune.cli.serve import cmd_serve

    seen = []
    monkeypatch.setattr(app_server, "serve", lambda **kw: seen.append(kw) or 0)
    monkeypatch.delenv("MODULETUNE_PUBLIC", raising=False)
    monkeypatch.setenv("MODULETUNE_PUBLIC_MAX_EPOCHS", "2")
    cmd_serve(build_parser().parse_args(["serve"]))
    cmd_serve(build_parser().parse_args(["serve", "--public", "--no-worker"]))
    monkeypatch.setenv("MODULETUNE_PUBLIC", "1")
    cmd_serve(build_parser().parse_args(["serve"]))
    assert seen[0]["public"] is None
    assert seen[1]["public"] == seen[2]["public"] == PublicLimits(max_epochs=2) and seen[1]["worker"] is False
