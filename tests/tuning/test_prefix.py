"""The frozen-prefix cache: exact where it claims to be, reused across runs, honest where it is not."""

import torch
from safetensors.torch import load_file

from moduletune.tuning import artifacts, prefix
from moduletune.tuning.config import RunConfig
from moduletune.tuning.train import fine_tune


def cfg(glue_dir, **kw):
    base = dict(
        task="rte",
        modules=("layernorm",),
        layers="4-5",
        max_train=48,
        max_eval=48,
        batch_size=16,
        glue_dir=str(glue_dir),
        device="cpu",
    )
    return RunConfig(**{**base, **kw})


def test_eval_cache_is_exact_and_auto_leaves_dropout_training_alone(glue_dir, home):
    off = fine_tune(cfg(glue_dir, prefix_cache="off"))
    auto = fine_tune(cfg(glue_dir, prefix_cache="auto"))
    assert auto.prefix_cache == {"first_trainable_layer": 4, "train": False, "eval": True}
    assert off.prefix_cache["eval"] is False
    assert auto.metrics == off.metrics and auto.history == off.history


def test_without_dropout_auto_caches_training_and_changes_nothing(glue_dir, home, tmp_path, no_dropout_model):
    off = fine_tune(cfg(glue_dir, model=no_dropout_model, prefix_cache="off"), output_dir=tmp_path / "off")
    auto = fine_tune(cfg(glue_dir, model=no_dropout_model, prefix_cache="auto"), output_dir=tmp_path / "auto")
    assert auto.prefix_cache["train"] is True
    assert auto.metrics == off.metrics
    a, b = (
        load_file(str(tmp_path / "off" / artifacts.TENSORS_FILE)),
        load_file(str(tmp_path / "auto" / artifacts.TENSORS_FILE)),
    )
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


def test_runs_sharing_a_prefix_compute_it_once(glue_dir, home):
    cache = prefix.shared_cache()
    fine_tune(cfg(glue_dir, layers="5", prefix_cache="on"))
    hits = cache.hits
    second = fine_tune(cfg(glue_dir, modules=("query",), layers="5", prefix_cache="on"))
    assert cache.hits >= hits + 2  # train split and eval split both reused
    assert second.prefix_cache == {"first_trainable_layer": 5, "train": True, "eval": True}


def test_head_only_runs_cache_the_whole_encoder(glue_dir, home):
    result = fine_tune(cfg(glue_dir, modules=("classifier",), prefix_cache="on"))
    assert result.prefix_cache["first_trainable_layer"] == 6 and result.module_params == 0


def test_embeddings_or_full_runs_have_no_prefix(glue_dir, home):
    result = fine_tune(cfg(glue_dir, modules=("bias",), layers="all", prefix_cache="on", max_train=16))
    assert result.prefix_cache["train"] is False and result.prefix_cache["first_trainable_layer"] is None
