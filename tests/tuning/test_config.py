"""RunConfig validates itself and round-trips through dicts."""

import json

import pytest

from moduletune.tuning.config import ConfigError, RunConfig
from moduletune.tuning.learning_rates import DEFAULT_LR, LR_SEARCH_RANGE, default_lr, lr_grid, lr_search_range


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


@pytest.mark.parametrize(
    "changes,message",
    [
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
    ],
)
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


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"eval_on": "test"}, "eval on must be one of validation, holdout"),
        ({"holdout_fraction": 0}, r"holdout fraction must be a number in \(0, 0.5\]"),
        ({"holdout_fraction": 0.6}, "holdout fraction"),
        ({"lr_selection": "best"}, "lr selection must be one of holdout, eval"),
        ({"lr_grid": (1e-3,)}, "at least 2 distinct"),
        ({"lr_grid": (1e-3, 2.0)}, r"each a number in \(0, 1\]"),
        ({"lr_search": "yes"}, "lr search must be true or false"),
    ],
)
def test_search_and_holdout_settings_say_what_is_allowed(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**changes)


def test_lr_grid_round_trips_through_json():
    cfg = RunConfig(modules="Q", lr_search=True, lr_selection="eval", lr_grid=[3e-3, 1e-4, 1e-3], eval_on="holdout")
    assert cfg.lr_grid == (1e-4, 1e-3, 3e-3) and cfg.search_grid == cfg.lr_grid
    assert cfg.to_dict()["lr_grid"] == [1e-4, 1e-3, 3e-3]
    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert RunConfig(modules="Q").search_grid == lr_grid("Q")


def test_search_ranges_span_100x_and_hold_the_default():
    for family, (lo, hi) in LR_SEARCH_RANGE.items():
        assert hi / lo >= 100 * (1 - 1e-9) and lo <= DEFAULT_LR[family] <= hi, family
    assert lr_grid("Q") == (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    assert lr_grid("LN") == (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    assert lr_grid("full") == (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
    assert lr_grid("random:LN") == lr_grid("LN")
    assert lr_search_range("LN+Q") == (1e-3, 1e-2)  # the intersection
    # LN and full share only 1e-3: too little to search, so the more conservative family's range.
    assert lr_search_range("LN+full") == LR_SEARCH_RANGE["full"]


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"epochs": 0}, "epochs"),
        ({"task": "nope"}, "task"),
        ({"modules": "no_such_family"}, "modules"),
        ({"layers": "0-x"}, "layers"),
        ({"lr_grid": (1e-3,)}, "lr_grid"),
        ({"device": "tpu"}, "device"),
        ({"max_train": 0}, "max_train"),
    ],
)
def test_a_config_error_names_its_field(changes, field):
    with pytest.raises(ConfigError) as err:
        RunConfig(**changes)
    assert err.value.field == field


def test_a_stored_config_is_read_back_as_recorded_without_checking_it_again():
    cfg = RunConfig(task="rte", modules=("query", "value"), lr_grid=(1e-3, 1e-2), max_train=64)
    stored = json.loads(cfg.to_json())
    assert RunConfig.from_stored(stored) == cfg
    # What the registry recorded was checked where the run entered: read back as it is, a missing key at its default.
    assert RunConfig.from_stored({"task": "rte", "epochs": 0}).epochs == 0
    assert RunConfig.from_stored({"task": "rte"}).batch_size == RunConfig().batch_size
    with pytest.raises(ConfigError, match="unknown setting"):
        RunConfig.from_stored({"learning_rat": 1e-3})
