"""RunConfig validates itself and round-trips through dicts."""
import pytest

from tuning.config import DEFAULT_LR, ConfigError, RunConfig, default_lr


def test_defaults_and_normalisation():
    cfg = RunConfig(task="SST-2", modules="LN", layers=" last:2 ")
    assert cfg.task == "sst2" and cfg.modules == ("layernorm",) and cfg.layers == "last:2"
    assert cfg.learning_rate == DEFAULT_LR["layernorm"] == 1e-2


def test_per_family_learning_rates_are_visible_and_overridable():
    assert RunConfig(modules="full").learning_rate == 5e-5
    assert RunConfig(modules="bias").learning_rate == 1e-3
    assert 1e-4 <= RunConfig(modules="Q").learning_rate <= 3e-4
    assert RunConfig(modules="LN", lr=3e-3).learning_rate == 3e-3
    assert default_lr("LN+Q") == DEFAULT_LR["query"]  # the most conservative of the set
    assert RunConfig(modules="random:LN").learning_rate == DEFAULT_LR["layernorm"]


@pytest.mark.parametrize("changes,message", [
    ({"task": "glue"}, "allowed: cola, sst2"),
    ({"modules": "attention"}, "allowed: query"),
    ({"layers": "1-"}, "malformed layer spec"),
    ({"lr": -1e-3}, r"learning rate must be a number in \(0, 1\]"),
    ({"lr": 0}, "learning rate"),
    ({"epochs": 0}, "epochs must be an integer from 1"),
    ({"batch_size": 2.5}, "batch size must be an integer"),
    ({"max_train": 0}, "max train"),
    ({"warmup_ratio": 1.5}, "warmup ratio"),
    ({"device": "tpu"}, "device must be auto, cpu, cuda"),
    ({"precision": "fp8"}, "precision must be one of"),
    ({"seed": -1}, "seed"),
])
def test_invalid_values_say_what_is_allowed(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**changes)


def test_dict_round_trip_and_unknown_keys():
    cfg = RunConfig(task="rte", modules=("query", "value"), layers="0-3,5", lr=2e-4, max_train=100, seed=3)
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert RunConfig.from_dict(__import__("json").loads(cfg.to_json())) == cfg
    with pytest.raises(ConfigError, match="unknown setting.*learning_rat"):
        RunConfig.from_dict({**cfg.to_dict(), "learning_rat": 1e-3})
    assert cfg.replace(seed=4).seed == 4 and cfg.seed == 3
