"""LoRA and (IA)³ as families: specs parsed, peft adapters on exactly the chosen modules, counts by hand."""

import pytest
import torch

from moduletune.tuning import methods, modules
from moduletune.tuning.config import ConfigError, RunConfig
from moduletune.tuning.learning_rates import default_lr, lr_grid, lr_search_range
from moduletune.tuning.methods import AdapterSettings
from moduletune.tuning.models import build_from_config, load_classifier, load_config
from moduletune.tuning.modules import ModuleSpecError, parse_families, select_parameters
from moduletune.tuning.replicates import comparison_key, replicate_key

HEAD = 384 * 2 + 2  # the embedded MiniLM's classifier for two labels: hidden 384 -> 2


def meta_minilm():
    """The embedded MiniLM's shapes on the meta device: each test wraps its own (injection changes the model)."""
    return build_from_config(load_config("all-MiniLM-L6-v2"), num_labels=2, on_meta=True)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("lora:Q+V", ("lora:query", "lora:value")),
        ("lora", ("lora:query", "lora:value")),  # peft's default targets for BERT
        ("ia3", ("ia3:key", "ia3:value", "ia3:ffn_output")),
        ("ia3:K+V+FO", ("ia3:key", "ia3:value", "ia3:ffn_output")),
        ("LoRA:all-linear", tuple(f"lora:{f}" for f in modules.LINEAR_FAMILIES)),
        (["lora:Q", "V"], ("lora:query", "lora:value")),  # the CLI's sweep splits on + first
        (("lora:query", "lora:value"), ("lora:query", "lora:value")),  # canonical names read back
    ],
)
def test_method_specs_parse_and_read_back(spec, expected):
    assert parse_families(spec) == expected
    assert parse_families(modules.short_label(expected)) == expected


def test_short_label_names_the_method_once():
    assert modules.short_label(("lora:query", "lora:value")) == "lora:Q+V"
    assert modules.short_label(("ia3:key", "ia3:value", "ia3:ffn_output")) == "ia3:K+V+FO"


@pytest.mark.parametrize(
    "spec, words",
    [
        ("lora:LN", "wraps the nn.Linear modules"),
        ("LN+lora:Q", "mixes LoRA and module families"),
        ("lora:Q+ia3:V", "mixes"),
        ("lora:nope", "unknown module family"),
    ],
)
def test_bad_method_specs_say_what_is_allowed(spec, words):
    with pytest.raises(ModuleSpecError, match=words):
        parse_families(spec)


def test_lora_r8_on_query_in_all_six_layers_is_hand_arithmetic():
    sel = select_parameters(meta_minilm(), "lora:Q", "all", adapter=AdapterSettings(rank=8))
    assert sel.module_params == 6 * 8 * (384 + 384) == 36_864
    assert sel.head_params == HEAD
    assert sel.trainable_params == 36_864 + HEAD
    assert sel.encoder_params == 22_713_216  # the model's own parameters: the adapter is not the denominator
    assert sel.trainable_pct == pytest.approx(100 * (36_864 + HEAD) / (22_713_216 + HEAD))
    assert len(sel.module) == 12 and all(".attention.self.query.lora_" in n for n in sel.module)


def test_lora_rank_scales_the_count_and_layers_apply():
    sel = select_parameters(meta_minilm(), "lora:Q+V", "5", adapter=AdapterSettings(rank=4))
    assert sel.module_params == 2 * 4 * (384 + 384)
    assert {n.split(".")[3] for n in sel.module} == {"5"}  # bert.encoder.layer.5...: layer 5 alone


def test_ia3_on_key_value_and_ffn_output_is_hand_arithmetic():
    # (IA)³ learns one vector per module: K and V scale their 384 outputs, FFN-out scales its 1,536 inputs.
    sel = select_parameters(meta_minilm(), "ia3:K+V+FO", "all")
    assert sel.module_params == 6 * (384 + 384 + 1536) == 13_824
    assert sel.trainable_params == 13_824 + HEAD


def test_injection_is_peft_on_our_model_and_happens_once():
    model = load_classifier("all-MiniLM-L6-v2", 2)
    first = select_parameters(model, "lora:Q", "0-1")
    query = model.bert.encoder.layer[0].attention.self.query
    assert type(query).__module__.startswith("peft.") and type(model).__name__ == "BertForSequenceClassification"
    again = select_parameters(model, "lora:Q", "0-1")
    assert again.module == first.module and again.counts() == first.counts()
    # A fresh LoRA changes nothing yet (B = 0): the wrapped model computes what the base computes.
    base = load_classifier("all-MiniLM-L6-v2", 2)
    base.load_state_dict({methods.base_name(n): p for n, p in model.state_dict().items() if "lora_" not in n})
    ids = torch.tensor([[101, 2023, 2003, 2307, 102]])
    with torch.no_grad():
        assert torch.allclose(model.eval()(input_ids=ids).logits, base.eval()(input_ids=ids).logits, atol=1e-6)


def test_method_adapter_starts_at_its_layer_so_the_prefix_below_stays_frozen():
    model = load_classifier("all-MiniLM-L6-v2", 2)
    assert modules.lowest_trainable_layer(model, select_parameters(model, "ia3", "5")) == 5


def test_each_method_has_its_own_lr_and_a_search_range_of_at_least_100x():
    for method in methods.METHOD_TABLE:
        lo, hi = method.lr_range
        assert hi / lo >= 100 and lo < method.default_lr < hi
    assert default_lr("lora:Q+V") == 3e-3 and lr_search_range("lora:Q+V") == (3e-4, 3e-2)
    assert default_lr("ia3") == 3e-2 and lr_grid("ia3") == (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


def test_lora_settings_are_knobs_with_bounds():
    config = RunConfig(modules="lora:Q+V", lora_rank=16, lora_alpha=32)
    assert config.modules == ("lora:query", "lora:value") and AdapterSettings.of(config).rank == 16
    with pytest.raises(ConfigError, match="LoRA rank"):
        RunConfig(modules="lora", lora_rank=0)
    with pytest.raises(ConfigError, match="LoRA dropout"):
        RunConfig(modules="lora", lora_dropout=1.0)


def test_lora_shape_separates_lora_replicates_and_no_other_run():
    lora = RunConfig(modules="lora").to_dict()
    assert replicate_key(lora) != replicate_key({**lora, "lora_rank": 16})
    assert comparison_key(lora) == comparison_key({**lora, "lora_rank": 16})
    ln = RunConfig(modules="LN").to_dict()
    older = {k: v for k, v in ln.items() if not k.startswith("lora_")}  # a run stored before these settings
    assert replicate_key(ln) == replicate_key(older) and comparison_key(ln) == comparison_key(older)


@pytest.mark.study  # real lr searches on real SST-2 rows: minutes on 2 cores, with the others in `make test-study`
@pytest.mark.parametrize("spec", ["lora:Q+V", "ia3"])
def test_method_learns_sst2_at_its_searched_lr(glue_dir, home, tmp_path, spec):
    """Each method, searched over its own grid, learns SST-2 beyond chance's noise band through the same loop."""
    from moduletune.tuning.finals import final_config
    from moduletune.tuning.search import lr_search
    from moduletune.tuning.train import fine_tune

    cfg = RunConfig(
        task="sst2", modules=spec, layers="all", max_train=1000, max_eval=500, glue_dir=str(glue_dir), device="cpu"
    )
    found = lr_search(cfg, workdir=tmp_path / "search")
    assert tuple(found.grid) == lr_grid(spec) and found.chosen_lr in found.grid
    result = fine_tune(final_config(cfg, found))
    print(f"\n{spec}: searched lr {found.chosen_lr:g} -> accuracy {result.primary_metric:.3f} ({result.learned_note})")
    assert result.learned and result.primary_metric > 0.6
    assert result.module_params == select_parameters(meta_minilm(), spec).module_params
