"""Frozen linears stored in bf16: bitwise the same training step under autocast, half the bytes."""

import math

import pytest
import torch
import transformers
from torch.nn.attention import SDPBackend, sdpa_kernel

from moduletune.tuning.config import RunConfig
from moduletune.tuning.models import build_from_config
from moduletune.tuning.modules import apply_selection, select_parameters
from moduletune.tuning.precision import store_frozen_linears
from moduletune.tuning.train import fine_tune

SMALL = dict(num_hidden_layers=2, num_attention_heads=2)
CONFIGS = [
    transformers.BertConfig(hidden_size=32, intermediate_size=64, **SMALL),
    transformers.RobertaConfig(hidden_size=32, intermediate_size=64, **SMALL),
    transformers.ElectraConfig(hidden_size=32, embedding_size=16, intermediate_size=64, **SMALL),
    transformers.DistilBertConfig(dim=32, hidden_dim=64, n_layers=2, n_heads=2),
    transformers.DebertaV2Config(
        hidden_size=32,
        intermediate_size=64,
        relative_attention=True,
        pos_att_type=["p2c", "c2p"],
        share_att_key=False,
        **SMALL,
    ),
]


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


def autocast_step(model, device: str, seed: int = 1):
    """Logits and trainable gradients of one bf16-autocast training step (dropout on, seeded)."""
    model.zero_grad(set_to_none=True)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (4, 12), generator=gen).to(device)
    mask = torch.ones_like(ids)
    mask[:, 9:] = 0
    labels = torch.tensor([0, 1, 2, 1], device=device)
    torch.manual_seed(seed)
    # The math attention kernel: GPU fused attention backward may add in any order, run to run.
    with torch.autocast(device, dtype=torch.bfloat16), sdpa_kernel(SDPBackend.MATH):
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    return out.logits.detach().clone(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.model_type)
@pytest.mark.parametrize("family", ["layernorm", "bias", "query"])
@pytest.mark.parametrize("device", DEVICES)
def test_stored_bf16_gives_bitwise_the_same_step(config, family, device):
    torch.manual_seed(0)
    model = build_from_config(config, num_labels=3).to(device).train()
    apply_selection(model, select_parameters(model, family, "1"))
    before_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    logits, grads = autocast_step(model, device)

    saved = store_frozen_linears(model)

    after_logits, after_grads = autocast_step(model, device)
    assert torch.equal(logits, after_logits)
    assert grads.keys() == after_grads.keys() and all(torch.equal(grads[k], after_grads[k]) for k in grads)
    after_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert saved == before_bytes - after_bytes > 0
    for name, param in model.named_parameters():
        linear = isinstance(model.get_submodule(name.rsplit(".", 1)[0]), torch.nn.Linear)
        # Trainable tensors, embeddings and LayerNorms keep fp32; only frozen linears are stored in bf16.
        assert param.dtype == (torch.bfloat16 if linear and not param.requires_grad else torch.float32), name


def test_a_tied_weight_is_left_alone():
    linear, embedding = torch.nn.Linear(8, 16), torch.nn.Embedding(16, 8)
    linear.weight = embedding.weight
    model = torch.nn.ModuleDict({"linear": linear, "embedding": embedding}).requires_grad_(False)
    store_frozen_linears(model)
    assert linear.weight.dtype == torch.float32 and linear.bias.dtype == torch.bfloat16


def test_bf16_fine_tune_runs_end_to_end_with_the_prefix_cache(glue_dir, home):
    """Training, the cached prefix and evaluation all run frozen bf16 linears under autocast."""
    config = RunConfig(
        task="rte",
        modules=("layernorm",),
        layers="4-5",
        max_train=48,
        max_eval=48,
        batch_size=16,
        glue_dir=str(glue_dir),
        device="cpu",
        precision="bf16",
        prefix_cache="on",
    )
    result = fine_tune(config)
    assert result.precision == "bf16" and result.prefix_cache["train"] is True
    assert result.steps == 3 and 0.0 <= result.primary_metric <= 1.0
    assert all(math.isfinite(v) for v in result.metrics.values())
