"""Module families -> exact parameter sets and counts, per architecture, on real configurations."""

import pytest
import torch
import transformers

from moduletune.tuning import modules
from moduletune.tuning.models import build_from_config, load_classifier
from moduletune.tuning.modules import ModuleSpecError, parse_families, parse_layers, select_parameters


@pytest.fixture(scope="module")
def bert_base():
    """bert-base-uncased's architecture with no weights (meta tensors: shapes only)."""
    return build_from_config(transformers.BertConfig(), num_labels=2, on_meta=True)


@pytest.fixture(scope="module")
def minilm():
    return load_classifier("all-MiniLM-L6-v2", 2)


def test_bert_base_layernorm_of_one_layer_is_3072_params(bert_base):
    sel = select_parameters(bert_base, "layernorm", "11")
    assert sel.module_params == 3072
    assert sel.encoder_params == 109_482_240
    assert round(sel.module_pct, 4) == 0.0028
    assert sorted(n.split("layer.11.")[1] for n in sel.module) == [
        "attention.output.LayerNorm.bias",
        "attention.output.LayerNorm.weight",
        "output.LayerNorm.bias",
        "output.LayerNorm.weight",
    ]


def test_bert_base_query_in_all_layers(bert_base):
    assert select_parameters(bert_base, "Q", "all").module_params == 7_087_104


def test_head_is_counted_separately_and_can_be_frozen(bert_base):
    on = select_parameters(bert_base, "LN", "0")
    off = select_parameters(bert_base, "LN", "0", train_head=False)
    assert on.head_params == 768 * 2 + 2 and on.head == ["classifier.weight", "classifier.bias"]
    assert off.head_params == 0 and off.module_params == on.module_params
    assert on.trainable_params == on.module_params + on.head_params
    assert on.total_params == 109_482_240 + 1538


def test_minilm_layer5_layernorms(minilm):
    assert select_parameters(minilm, "LN", "5").module_params == 1536


@pytest.mark.parametrize(
    "family,per_layer",
    [
        ("query", 768 * 768 + 768),
        ("key", 768 * 768 + 768),
        ("value", 768 * 768 + 768),
        ("attention_output", 768 * 768 + 768),
        ("ffn_intermediate", 768 * 3072 + 3072),
        ("ffn_output", 3072 * 768 + 768),
        ("layernorm", 4 * 768),
        ("bias", 768 * 4 + 3072 + 768 + 2 * 768),
    ],
)
def test_every_family_count_per_layer(bert_base, family, per_layer):
    assert select_parameters(bert_base, family, "3").module_params == per_layer
    assert select_parameters(bert_base, family, "0-1,11").module_params == 3 * per_layer


def test_families_partition_each_layer(bert_base):
    """The seven paper modules cover every tensor of a layer exactly once."""
    seven = ["query", "key", "value", "attention_output", "ffn_intermediate", "ffn_output", "layernorm"]
    names = [n for f in seven for n in select_parameters(bert_base, f, "4").module]
    layer4 = [n for n, _ in bert_base.named_parameters() if ".layer.4." in n]
    assert sorted(names) == sorted(layer4)


def test_bitfit_all_layers_includes_embedding_biases(bert_base):
    sel = select_parameters(bert_base, "bias", "all")
    assert all(n.endswith("bias") for n in sel.module)
    assert "bert.embeddings.LayerNorm.bias" in sel.module
    assert "bert.pooler.dense.bias" not in sel.module


def test_full_and_classifier_and_embeddings(bert_base):
    assert select_parameters(bert_base, "full").module_params == 109_482_240
    head_only = select_parameters(bert_base, "classifier", train_head=False)
    assert head_only.module_params == 0 and head_only.head_params == 1538
    emb = select_parameters(bert_base, "embeddings")
    assert emb.module_params == (30522 + 512 + 2) * 768 + 2 * 768


def test_random_matches_family_size_and_masks_gradients(minilm):
    sel = select_parameters(minilm, "random:LN", "5", seed=3)
    assert sel.module_params == 1536
    assert sum(int(m.sum()) for m in sel.masks.values()) == 1536
    again = select_parameters(minilm, "random:LN", "5", seed=3)
    other = select_parameters(minilm, "random:LN", "5", seed=4)
    assert all(torch.equal(sel.masks[n], again.masks[n]) for n in sel.masks)
    assert set(sel.masks) != set(other.masks) or any(not torch.equal(sel.masks[n], other.masks[n]) for n in sel.masks)
    # Only masked entries receive gradient.
    model = load_classifier("all-MiniLM-L6-v2", 2)
    modules.apply_selection(model, sel)
    out = model(input_ids=torch.tensor([[101, 2023, 2003, 102]]), labels=torch.tensor([1]))
    out.loss.backward()
    params = dict(model.named_parameters())
    for name, mask in sel.masks.items():
        grad = params[name].grad
        assert grad is not None and torch.count_nonzero(grad[~mask]) == 0


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("all", tuple(range(12))),
        ("7", (7,)),
        ("0-3,11", (0, 1, 2, 3, 11)),
        ("first:2", (0, 1)),
        ("last:4", (8, 9, 10, 11)),
        (" 3 , 1 ", (1, 3)),
    ],
)
def test_layer_specs(spec, expected):
    assert parse_layers(spec, 12) == expected


@pytest.mark.parametrize("spec", ["12", "-1", "3-1", "a", "last:0", "first:13", "1,,2", "0-12"])
def test_bad_layer_specs_name_the_range(spec):
    with pytest.raises(ModuleSpecError, match="0-11"):
        parse_layers(spec, 12)


def test_family_aliases_and_errors():
    assert parse_families("Q,K,V,AO,FI,FO,LN") == (
        "query",
        "key",
        "value",
        "attention_output",
        "ffn_intermediate",
        "ffn_output",
        "layernorm",
    )
    assert parse_families("random:ln") == ("random:layernorm",)
    with pytest.raises(ModuleSpecError, match="allowed: query"):
        parse_families("attention")
    with pytest.raises(ModuleSpecError, match="random"):
        parse_families("random")
    with pytest.raises(ModuleSpecError):
        parse_families("random:LN+Q")


SMALL = dict(num_hidden_layers=2, num_attention_heads=2)


@pytest.mark.parametrize(
    "config,layer_words",
    [
        (transformers.RobertaConfig(hidden_size=32, intermediate_size=64, **SMALL), "roberta.encoder.layer"),
        (
            transformers.ElectraConfig(hidden_size=32, embedding_size=16, intermediate_size=64, **SMALL),
            "electra.encoder.layer",
        ),
        (transformers.DistilBertConfig(dim=32, hidden_dim=64, n_layers=2, n_heads=2), "distilbert.transformer.layer"),
        (
            transformers.DebertaV2Config(
                hidden_size=32,
                intermediate_size=64,
                relative_attention=True,
                pos_att_type=["p2c", "c2p"],
                share_att_key=True,
                **SMALL,
            ),
            "deberta.encoder.layer",
        ),
    ],
)
def test_other_architectures_map_every_family(config, layer_words):
    model = build_from_config(config, num_labels=3, on_meta=True)
    seven = ["query", "key", "value", "attention_output", "ffn_intermediate", "ffn_output", "layernorm"]
    seen = []
    for family in seven:
        sel = select_parameters(model, family, "1")
        assert sel.module, family
        assert all(n.startswith(layer_words + ".1.") for n in sel.module)
        seen += sel.module
    layer1 = [n for n, _ in model.named_parameters() if n.startswith(layer_words + ".1.")]
    assert sorted(seen) == sorted(layer1)
    assert select_parameters(model, "LN", "1").module_params == 4 * 32


def test_unknown_architecture_lists_supported():
    model = build_from_config(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2), on_meta=True)
    with pytest.raises(ModuleSpecError, match="supported model types: bert"):
        select_parameters(model, "LN", "0")
