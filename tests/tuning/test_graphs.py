"""CUDA-graph steps compute what eager steps compute; the prefix gather they feed on is exact.

The graph tests need a GPU and are skipped without one (CI has none); run them on a GPU machine with
`pytest tests/tuning/test_graphs.py`. The gather and config tests run everywhere.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file

from moduletune.tuning import artifacts, graphs, prefix
from moduletune.tuning.architectures import ARCHITECTURES
from moduletune.tuning.config import ConfigError, RunConfig
from moduletune.tuning.models import load_classifier, load_tokenizer
from moduletune.tuning.train import fine_tune

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need an NVIDIA GPU")


def cfg(glue_dir, **kw):
    base = dict(
        task="sst2",
        modules=("layernorm",),
        layers="all",
        max_train=640,
        max_eval=256,
        batch_size=32,
        epochs=2,
        glue_dir=str(glue_dir),
        device="cuda" if torch.cuda.is_available() else "cpu",
    )
    return RunConfig(**{**base, **kw})


def test_prefix_gather_matches_row_by_row_copy():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 9, size=20)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    states = prefix.PrefixStates(torch.randn(int(offsets[-1]), 5), offsets)
    idx = np.array([7, 3, 19, 0, 11])
    width = int(lengths[idx].max()) + 2
    expected = torch.zeros(len(idx), width, 5)
    for row, i in enumerate(idx):
        expected[row, : lengths[i]] = states.flat[offsets[i] : offsets[i + 1]]
    assert torch.equal(states.batch(idx, width, "cpu"), expected)


def test_only_shapes_used_often_enough_to_repay_a_capture_are_planned():
    widths = [16] * 9 + [32] * 3 + [48] * 2 + [64]
    assert graphs.MIN_USES == 4
    assert graphs.capture_plan(widths) == {16}
    assert graphs.capture_plan(widths, epochs=2) == {16, 32, 48}  # the same widths come again next epoch
    assert graphs.capture_plan(widths, epochs=4) == {16, 32, 48, 64}
    assert graphs.capture_plan([], epochs=3) == set()


def test_cuda_graphs_is_a_switch_and_cpu_runs_ignore_it(glue_dir, home):
    with pytest.raises(ConfigError, match="cuda graphs must be true or false"):
        RunConfig(cuda_graphs="yes")
    if not torch.cuda.is_available():
        result = fine_tune(cfg(glue_dir, max_train=32, max_eval=32, epochs=1))
        assert result.cuda_graphs == {}


@gpu
@pytest.mark.parametrize("layers", ["all", "last:1"])
def test_graphed_steps_train_what_eager_steps_train(glue_dir, home, tmp_path, no_dropout_model, layers):
    """Without dropout both paths compute the same function: same metrics, same trained tensors."""
    runs = {}
    for graphed in (True, False):
        out = tmp_path / f"graphs-{graphed}-{layers.replace(':', '')}"
        runs[graphed] = fine_tune(
            cfg(glue_dir, model=no_dropout_model, layers=layers, cuda_graphs=graphed), output_dir=out
        )
        runs[graphed].tensors = load_file(str(out / artifacts.TENSORS_FILE))
    on, off = runs[True], runs[False]
    assert on.cuda_graphs["replays"] > on.cuda_graphs["eager_steps"], on.cuda_graphs
    assert on.cuda_graphs["replays"] + on.cuda_graphs["eager_steps"] == on.steps
    assert off.cuda_graphs == {}
    assert abs(on.primary_metric - off.primary_metric) <= 0.01
    for name, tensor in on.tensors.items():
        torch.testing.assert_close(tensor, off.tensors[name], rtol=0, atol=5e-3, msg=name)


@gpu
def test_graphed_steps_keep_dropout_and_random_masks(glue_dir, home, tmp_path):
    """With dropout on, graphs still learn as well; a random mask still keeps its frozen entries put."""
    on = fine_tune(cfg(glue_dir, max_train=2000, max_eval=None, epochs=1))
    off = fine_tune(cfg(glue_dir, max_train=2000, max_eval=None, epochs=1, cuda_graphs=False))
    assert on.cuda_graphs["replays"] > 0
    assert abs(on.primary_metric - off.primary_metric) <= 0.03, (on.primary_metric, off.primary_metric)
    fine_tune(cfg(glue_dir, modules=("random:layernorm",), layers="5", weight_decay=0.1), output_dir=tmp_path / "r")
    tuned = load_file(str(tmp_path / "r" / artifacts.TENSORS_FILE))
    base = dict(load_classifier("all-MiniLM-L6-v2", 2).named_parameters())
    changed = sum(
        int((tuned[k] != base[k].detach().to(tuned[k].dtype)).sum()) for k in tuned if not k.startswith("classifier")
    )
    assert 0 < changed <= 1536


SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2, vocab_size=30522)
TINY = {  # one small random encoder per architecture, on the embedded tokenizer's vocabulary
    "bert": transformers.BertConfig(**SMALL),
    "roberta": transformers.RobertaConfig(**SMALL, pad_token_id=0),
    "electra": transformers.ElectraConfig(**SMALL, embedding_size=32),
    "distilbert": transformers.DistilBertConfig(dim=64, hidden_dim=128, n_layers=3, n_heads=2, vocab_size=30522),
    "deberta-v2": transformers.DebertaV2Config(
        **SMALL, relative_attention=True, pos_att_type=["p2c", "c2p"], share_att_key=True
    ),
}


@gpu
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_graphs_exactly_where_the_architecture_says_capture_works(arch, glue_dir, home, tmp_path):
    """Each run in its own process through the CLI: a failed capture must not spoil the next test."""
    assert set(TINY) == set(ARCHITECTURES)
    path = tmp_path / arch
    transformers.AutoModel.from_config(TINY[arch]).save_pretrained(path)
    load_tokenizer("all-MiniLM-L6-v2").save_pretrained(path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "moduletune.cli.main",
            "run",
            "--model",
            str(path),
            "--task",
            "sst2",
            "--modules",
            "layernorm",
            "--layers",
            "all",
            "--max-train",
            "512",
            "--max-eval",
            "64",
            "--glue-dir",
            str(glue_dir),
            "--device",
            "cuda",
            "--json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    graphs = json.loads(proc.stdout.strip().splitlines()[-1])["cuda_graphs"]
    if ARCHITECTURES[arch].cuda_graphs:
        assert graphs["replays"] > 0, graphs
    else:
        assert graphs == {}
