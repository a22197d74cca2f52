"""The Experiment tab's logic on the embedded MiniLM: layer specs, the sweep, live counts, the preset, submission."""

from __future__ import annotations

import pytest

from moduletune.app.experiment import submit
from moduletune.app.experiment.fields import FIELDS
from moduletune.app.experiment.form import (
    FAMILY_CHOICES,
    Form,
    compact_spec,
    first_layers,
    last_layers,
    layer_toggle_choices,
    lr_default,
    lr_hint,
)
from moduletune.app.experiment.model_info import model_info
from moduletune.app.experiment.plan import build_configs, final_run_count, plan, sweep_shape
from moduletune.app.experiment.preset import (
    PAPER_FAMILIES,
    paper_study,
    paper_study_message,
    preset_searches,
    quick_study,
)
from moduletune.app.experiment.preview import preview, preview_markdown
from moduletune.app.experiment.submit import error_outcome, submit_form, submit_preset, submit_runs
from moduletune.app.public import actions
from moduletune.app.public.actions import cancel_run, retry_run
from moduletune.app.public.checks import FormError
from moduletune.tasks.submission import check_submission
from moduletune.tuning.config import RunConfig

QUICK = dict(tasks=["rte"], layers=["5"], max_train=256, max_eval=512)  # small runs these tests reason about


def form(**kw) -> Form:
    return Form(**{**QUICK, **kw})


def test_the_defaults_show_the_papers_effect_in_about_a_minute():
    """SST-2, 2,000 examples, 1 epoch, every layer, the whole validation set (RTE at 256 stayed at chance)."""
    (c,) = build_configs(Form())
    assert (c.task, c.modules, c.layers, c.max_train, c.max_eval, c.epochs) == (
        "sst2",
        ("layernorm",),
        "all",
        2000,
        None,
        1,
    )


# ---------------------------------------------------------------------------------------------- layers


def test_layer_toggles_helpers_and_compact_specs():
    assert layer_toggle_choices(3) == [("0", "0"), ("1", "1"), ("2", "2")]
    assert first_layers(2, 6) == ["0", "1"] and last_layers(2, 6) == ["4", "5"]
    assert last_layers(99, 6) == [str(i) for i in range(6)] and first_layers(0, 6) == []
    assert compact_spec([0, 1, 2, 3, 4, 5], 6) == "all"
    assert compact_spec([5, 0, 1, 2], 6) == "0-2,5"
    assert compact_spec([3], 6) == "3"


def test_model_depth_follows_the_model_and_bad_models_name_the_model_control():
    info = model_info("")  # blank = the embedded default
    assert (info.name, info.model_type, info.num_layers) == ("all-MiniLM-L6-v2", "bert", 6)
    assert model_info("all-MiniLM-L6-v2") is info  # cached per name
    with pytest.raises(FormError) as err:
        model_info("/no/such/model")
    assert err.value.field == "model" and "config.json" in str(err.value)


def two_layer_model(folder) -> str:
    """A local model folder with only a config (a 2-layer BERT): enough for depth and parameter counts."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bert",
                "num_hidden_layers": 2,
                "hidden_size": 64,
                "num_attention_heads": 2,
                "intermediate_size": 128,
                "vocab_size": 1000,
                "max_position_embeddings": 128,
            }
        )
    )
    return str(folder)


def test_layers_follow_the_chosen_models_depth(tmp_path):
    path = two_layer_model(tmp_path / "tiny-bert")
    assert model_info(path).num_layers == 2
    view = preview(form(model=path, layers=["1"]))
    assert view["error"] is None and view["rows"][0]["module_params"] == 4 * 64  # 2 LayerNorms x (w + b) x 64
    bad = preview(form(model=path, layers=["5"]))
    assert bad["field"] == "layers" and "layers 0-1" in bad["error"]


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(layers=[]), "Pick at least one layer"),
        (dict(layer_spec="9"), "out of range"),
        (dict(layer_spec="0-2-4"), "malformed"),
        (dict(layers=["7"]), "out of range"),
    ],
)
def test_bad_layer_selections_are_layer_errors(kw, needle):
    with pytest.raises(FormError) as err:
        plan(form(**kw))
    assert err.value.field == "layers" and needle in str(err.value) and "0-5" in str(err.value)


def test_typed_spec_overrides_toggles_and_each_means_every_layer():
    assert [p.layers for p in plan(form(layers=["1"], layer_spec="last:2"))] == ["4-5"]
    assert [p.layers for p in plan(form(layer_spec="each"))] == ["0", "1", "2", "3", "4", "5"]
    assert [p.layers for p in plan(form(layers=["0", "1", "2", "3", "4", "5"]))] == ["all"]


# ---------------------------------------------------------------------------------------------- the sweep


def test_sweep_is_families_x_layer_choices_x_seeds_x_tasks():
    f = form(
        tasks=["rte", "mrpc"],
        families=["layernorm", "query", "full"],
        layers=["4", "5"],
        each_layer=True,
        seeds="0, 1, 2",
    )
    runs = plan(f)
    # layer families: 2 tasks x 2 families x 2 layers x 3 seeds; full ignores layers: 2 tasks x 1 x 3 seeds
    assert len(runs) == 2 * 2 * 2 * 3 + 2 * 3
    assert {p.layers for p in runs if p.modules == ("full",)} == {"all"}
    assert {(p.task, p.modules, p.layers, p.seed) for p in runs} >= {("mrpc", ("query",), "5", 2)}
    assert sweep_shape(f, runs) == "2 tasks × 3 module sets × 3 layer choices × 3 seeds"


def test_together_and_random_controls():
    together = plan(form(families=["query", "value"], together=True))
    assert [p.modules for p in together] == [("query", "value")]
    controls = plan(form(families=["layernorm", "classifier"], random_control=True))
    assert [p.modules for p in controls] == [("layernorm",), ("classifier",), ("random:layernorm",)]


@pytest.mark.parametrize(
    "kw, fld",
    [
        (dict(families=[]), "families"),
        (dict(tasks=[]), "tasks"),
        (dict(seeds="0,x"), "seeds"),
        (dict(seeds=""), "seeds"),
        (dict(lr=2.0), "lr"),
        (dict(max_train=-5), "max_train"),
        (dict(max_eval=1.5), "max_eval"),
        (dict(epochs=0), "epochs"),
        (dict(batch_size=-1), "batch_size"),
        (dict(advanced={"warmup_ratio": "lots"}), "settings"),
        (dict(layer_spec="0-99"), "layers"),
    ],
)
def test_form_errors_name_their_control(kw, fld):
    with pytest.raises(FormError) as err:
        build_configs(form(**kw))
    assert err.value.field == fld
    # The preview and Submit put the message beside that control alone, and the preview promises no runs.
    view = preview(form(**kw))
    assert view["field"] == fld and view["runs"] == 0 and "will be queued" not in preview_markdown(view)
    out = error_outcome(err.value)
    beside = dict(zip(FIELDS, out.field_messages))
    assert [f for f, text in beside.items() if text] == [fld] and "Nothing was queued" in out.message


def test_an_entry_checks_refusal_stands_beside_the_control_its_field_names():
    """A search on too few rows is refused by the entry check (tasks.submission), whose error names max_train: the
    preview and Submit put it beside the training examples, with no word matching."""
    view = preview(form(lr_search=True, max_train=50))
    assert view["field"] == "max_train" and view["runs"] == 0 and "training examples" in view["error"]
    out = error_outcome(_entry_refusal())
    assert out.control == "layers" and "out of range" in out.field_message


def _entry_refusal() -> Exception:
    """What the entry check says of a layer the model lacks (a config made without the form's own layer check)."""
    with pytest.raises(ValueError) as err:
        check_submission(RunConfig(task="rte", layers="9"))
    return err.value


def test_learning_rate_shows_the_family_default_and_only_a_change_overrides_it():
    assert lr_default(["layernorm"]) == 1e-2
    assert "default for LN: 1e-2" in lr_hint(["layernorm"])
    assert "Q: 3e-4" in lr_hint(["layernorm", "query"])
    # The box still shows the default: each run keeps its own family's default.
    configs = build_configs(form(families=["layernorm", "query"], lr=lr_default(["layernorm", "query"])))
    assert [c.lr for c in configs] == [None, None] and [c.learning_rate for c in configs] == [1e-2, 3e-4]
    changed = build_configs(form(lr=5e-3))
    assert changed[0].lr == 5e-3


def test_configs_carry_subsampling_and_settings():
    (c,) = build_configs(form(max_train=32, max_eval=0, batch_size=16, epochs=2, train_head=False, seeds="7"))
    assert (c.task, c.modules, c.layers, c.seed) == ("rte", ("layernorm",), "5", 7)
    assert (c.max_train, c.max_eval, c.batch_size, c.epochs, c.train_head) == (32, None, 16, 2, False)
    assert c.model == "all-MiniLM-L6-v2" and c.prefix_cache == "auto"
    (cached,) = build_configs(form(prefix_cache="on"))
    assert cached.prefix_cache == "on"


def test_an_unknown_prefix_cache_setting_says_what_is_allowed():
    with pytest.raises(FormError, match="prefix cache must be one of auto, on, off") as err:
        build_configs(form(prefix_cache="sometimes"))
    assert err.value.field == "settings"


# ---------------------------------------------------------------------------------------------- the preview


def test_preview_counts_match_the_engine_before_anything_is_queued():
    view = preview(form())
    assert view["error"] is None and view["runs"] == 1
    (row,) = view["rows"]
    # LayerNorm of one MiniLM layer: two LayerNorms x (weight + bias) x 384; head 384*2 + 2.
    assert (row["module_params"], row["head_params"]) == (4 * 384, 770)
    assert row["trainable_params"] == 1536 + 770 and 0.01 < row["trainable_pct"] < 0.0102
    text = preview_markdown(view)
    assert "1 run will be queued" in text and "1,536" in text and "LN" in text


def test_preview_of_a_sweep_and_of_a_bad_selection():
    view = preview(form(families=["layernorm", "full"], each_layer=True, layers=["0", "1", "2"], seeds="0,1"))
    assert view["runs"] == (3 + 1) * 2
    by_module = {r["modules"]: r for r in view["rows"]}
    assert by_module["layernorm"]["layers"].startswith("each") and by_module["full"]["trainable_pct"] == 100.0
    bad = preview(form(layer_spec="9"))
    assert bad["field"] == "layers" and bad["runs"] == 0
    assert preview_markdown(bad).startswith("**Nothing to queue yet.**")


# ---------------------------------------------------------------------------------------------- the preset


PAPER_SEVEN = list(PAPER_FAMILIES)


def preset_form(**kw) -> Form:
    """The form for the preset: enough training rows for a search to choose (100 held out, tuning.verdict)."""
    return form(**{"max_train": 1000, **kw})


def test_paper_study_is_the_ticked_families_all_and_each_layer_plus_full():
    configs = paper_study(preset_form(families=PAPER_SEVEN, layers=["2"], lr=0.5))  # the preset ignores those
    assert len(configs) == 7 * (1 + 6) + 1
    assert {c.layers for c in configs if c.modules == ("query",)} == {"all", "0", "1", "2", "3", "4", "5"}
    assert [c.layers for c in configs if c.modules == ("full",)] == ["all"]
    assert all(c.lr is None and c.lr_search for c in configs)  # every setting searches its own lr
    with_options = paper_study(preset_form(families=PAPER_SEVEN + ["bias"], random_control=True))  # controls on request
    assert len(with_options) == 8 * (1 + 6) * 2 + 1
    assert {c.modules for c in with_options} >= {("bias",), ("random:layernorm",)}
    text, n = paper_study_message(preset_form(families=PAPER_SEVEN, tasks=["rte", "mrpc"], seeds="0,1"))
    assert n == 2 * 50 and "100 lr searches, then 200 runs" in text and "rte, mrpc" in text
    assert "No time estimate yet" in text


def test_the_preset_studies_only_the_families_ticked_in_the_form():
    configs = paper_study(preset_form(families=["layernorm", "query"]))
    assert {c.modules for c in configs} == {("layernorm",), ("query",), ("full",)} and len(configs) == 2 * 7 + 1
    assert preset_searches(preset_form(families=["layernorm", "query"])) == len(configs)
    with pytest.raises(FormError, match="tick at least one module family") as err:
        paper_study(preset_form(families=["full"]))
    assert err.value.field == "families"


def test_the_quick_size_and_the_family_scope_cost_less():
    ticked = preset_form(families=["layernorm", "query"], seeds="0,1")
    quick = quick_study(ticked)
    assert sorted((c.modules[0], c.layers) for c in quick) == [
        ("full", "all"),
        ("layernorm", "5"),
        ("layernorm", "all"),
        ("query", "5"),
        ("query", "all"),
    ]
    assert all(c.extra["final_seeds"] == [0] for c in quick) and preset_searches(ticked, quick=True) == 5
    family = paper_study(preset_form(families=["layernorm", "query"], seeds="0,1", lr_search_scope="family"))
    assert [(c.modules[0], c.layers) for c in family] == [("layernorm", "all"), ("query", "all"), ("full", "all")]
    ln = family[0].extra
    assert ln["final_layers"] == ["all", "0", "1", "2", "3", "4", "5"] and ln["final_seeds"] == [0, 1]
    assert final_run_count(family) == 2 * 7 * 2 + 2  # the same runs as the per-setting study, 3 searches
    assert preset_searches(preset_form(families=["layernorm", "query"], lr_search_scope="family")) == 3


def test_the_method_choice_wraps_the_ticked_families_in_its_adapter():
    """method lora/ia3: the ticked families wrapped in peft's adapter (one run each, or together), with the method's
    own lr and exact counts; a family the method cannot wrap, or a random control, is refused beside the families."""
    together = build_configs(form(families=["query", "value"], method="lora", together=True))
    assert [c.modules for c in together] == [("lora:query", "lora:value")]
    alone = build_configs(form(families=["key", "ffn_output"], method="ia3"))
    assert sorted(c.modules for c in alone) == [("ia3:ffn_output",), ("ia3:key",)]
    assert lr_default(["lora:query"]) == 3e-3 and lr_default(["ia3:key"]) == 3e-2
    (row,) = preview(Form(families=["query"], method="lora", layers=[str(i) for i in range(6)]))["rows"]
    assert row["module_params"] == 6 * 8 * (384 + 384)  # rank 8, A: 8x384 and B: 384x8 in each of six layers
    (r16,) = preview(Form(families=["query"], method="lora", advanced={"lora_rank": 16}))["rows"]
    assert r16["module_params"] == 6 * 16 * (384 + 384)  # the count follows the rank set under More settings
    for bad, match in (
        (dict(families=["layernorm"], method="ia3"), "wraps the nn.Linear modules"),
        (dict(families=["query"], method="lora", random_control=True), "random controls are for module families"),
        (dict(families=["query"], method="dora"), "method must be one of modules, lora, ia3"),
    ):
        with pytest.raises(FormError, match=match) as err:
            build_configs(form(**bad))
        assert err.value.field == "families"


def test_the_preset_adds_lora_and_ia3_baselines_when_asked():
    ticked = preset_form(families=["layernorm"], baselines=True)
    configs = paper_study(ticked)
    baselines = [c for c in configs if c.modules[0].partition(":")[0] in ("lora", "ia3")]
    assert sorted((c.modules, c.layers) for c in baselines) == [
        (("ia3:key", "ia3:value", "ia3:ffn_output"), "all"),
        (("lora:query", "lora:value"), "all"),
    ]
    assert len(configs) == 7 + 1 + 2 == preset_searches(ticked)
    assert "LoRA r=8 on Q+V and (IA)³ on K+V+FO" in paper_study_message(ticked)[0]
    family = preset_form(families=["layernorm"], baselines=True, lr_search_scope="family")
    assert len(paper_study(family)) == 1 + 1 + 2 == preset_searches(family)


def test_the_preset_offer_follows_the_form():
    _, one_task = paper_study_message(preset_form(families=PAPER_SEVEN))
    _, two_tasks = paper_study_message(preset_form(families=PAPER_SEVEN, tasks=["rte", "mrpc"]))
    assert (one_task, two_tasks) == (50, 100)


def test_the_preset_estimates_time_from_this_labs_runs_and_says_on_what(registry):
    from sqlalchemy import update

    from moduletune.tasks.database import runs
    from tests.app.test_views import record

    rid = record(registry, build_configs(form(max_train=1000))[0], 0.6)
    finished = registry.runs_frame()["finished_at"].iloc[0].timestamp()
    with registry.engine.begin() as conn:  # 1,000 training examples in 100 s of wall time: 10 examples/s
        conn.execute(update(runs).where(runs.c.id == rid).values(started_at=finished - 100))
    text, _ = paper_study_message(preset_form(seeds="0,1"), registry)
    assert "1 finished run of all-MiniLM-L6-v2" in text and "10 examples/s" in text
    # LN + full fine-tuning: 8 searches x (2.5 runs, no search measured yet, + 2 seeds) x 1,000 rows / 10 ex/s
    assert "full study, one search per setting: 8 searches, 16 runs, about **1h 0m**" in text
    # per family: 2 searches x 2.5 + 16 runs = 21 runs of 100 s
    assert "full study, one search per family: 2 searches, 16 runs, about **35m 0s**" in text
    # quick: 3 searches x (2.5 + 1 seed) = 10.5 runs of 100 s
    assert "quick size (all layers + the last layer, first seed): 3 searches, 3 runs, about **17m 30s**" in text


# ---------------------------------------------------------------------------------------------- submission


def test_submit_form_queues_validated_runs_with_the_submitter(registry):
    out = submit_form(registry, form(max_train=32, seeds="0,1"), "web-abc")
    assert out.ok and len(out.ids) == 2 and "Queued **2 runs**" in out.message
    runs = registry.list_runs()
    assert {r.submitter for r in runs} == {"web-abc"} and {r.layers for r in runs} == {"5"}
    assert len({r.sweep_id for r in runs}) == 1 and runs[0].sweep_id
    single = submit_form(registry, form(), "web-abc")
    assert single.ids == [max(r.id for r in runs) + 1] and "Queued run **#" in single.message


def test_a_bad_selection_queues_nothing_and_says_so_beside_the_control(registry):
    out = submit_form(registry, form(layer_spec="9"), "web-x")
    assert not out.ok and "out of range" in out.layers_message and "Nothing was queued" in out.message
    out = submit_form(registry, form(layers=[]), "web-x")
    assert "Pick at least one layer" in out.layers_message
    out = submit_form(registry, form(model="/no/such/model"), "web-x")
    assert "config.json" in out.model_message and not out.layers_message
    out = submit_form(registry, form(seeds="a"), "web-x")
    assert "seeds" in out.message and "Nothing was queued" in out.message
    too_many = submit_form(
        registry,
        form(
            families=[f for _, f in FAMILY_CHOICES], each_layer=True, layers=[str(i) for i in range(6)], seeds="0,1,2,3"
        ),
        "web-x",
    )
    assert "more than 200" in too_many.message
    assert registry.count() == 0


def test_every_action_goes_through_one_gate(registry, monkeypatch):
    seen = []
    for module in (actions, submit):  # the one gate: submit and the run actions both call limits.allow
        monkeypatch.setattr(module, "allow", lambda action, who, n=1: seen.append((action, who, n)))
    _, (run_id,) = submit_runs(registry, build_configs(form()), "web-1")
    assert cancel_run(registry, run_id, "web-1") == "cancelled"
    new_id = retry_run(registry, run_id, "web-1")
    assert registry.get(new_id).retry_of == run_id
    assert seen == [("submit", "web-1", 1), ("cancel", "web-1", 1), ("retry", "web-1", 1)]

    def refuse(action, who, n=1):
        raise ValueError(f"{who} has reached the limit of queued runs")

    for module in (actions, submit):
        monkeypatch.setattr(module, "allow", refuse)
    out = submit_form(registry, form(), "web-1")
    assert "limit" in out.message and registry.count() == 2


def test_preset_submission_is_one_sweep(registry):
    out = submit_preset(registry, form(families=PAPER_SEVEN, max_train=2000, seeds="0,1"), "web-p")
    assert len(out.ids) == 50 and registry.count() == 50 and "50 lr searches" in out.message
    study = registry.study(out.study_id)
    assert f"study #{out.study_id}" in out.message and study.progress.total == 100 and study.spec["searches"] == 50
    assert {r.study_id for r in registry.list_runs()} == {out.study_id} and study.owner == "web-p"
    assert {r.sweep_id for r in registry.list_runs()} == {registry.get(out.ids[0]).sweep_id}
    assert {r.kind for r in registry.list_runs()} == {"search"}
    assert registry.get(out.ids[0]).config_data["extra"]["final_seeds"] == [0, 1]


def test_cli_sweep_expands_like_the_form():
    """`moduletune sweep` and the Experiment tab share one expansion: same runs for the same choice."""
    from moduletune.cli.main import build_parser
    from moduletune.cli.queue import sweep_configs

    args = build_parser().parse_args(
        ["sweep", "--tasks", "rte,mrpc", "--modules", "LN,Q,full", "--layers", "each", "--seeds", "0,1"]
    )
    cli_runs = {(c.task, tuple(c.modules), c.layers, c.seed) for c in sweep_configs(args)}
    form_runs = {
        (p.task, p.modules, p.layers, p.seed)
        for p in plan(
            form(
                tasks=["rte", "mrpc"],
                families=["layernorm", "query", "full"],
                each_layer=True,
                layers=[str(i) for i in range(6)],
                seeds="0,1",
            )
        )
    }
    assert cli_runs == form_runs and len(cli_runs) == 2 * 2 * 6 * 2 + 2 * 2
