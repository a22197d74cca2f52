"""What a finished lr search trains: its chosen lr at each of its layer choices (scope family: the single layers
its all-layer search stands for) and each final seed, labelled with how the lr was found."""

from __future__ import annotations

from moduletune.tuning.config import RunConfig
from moduletune.tuning.verdict import SearchError


def final_seeds(config) -> list[int]:
    """The seeds a search trains at its chosen lr (a config or its dict)."""
    extra, seed = (config["extra"], config["seed"]) if isinstance(config, dict) else (config.extra, config.seed)
    return [int(s) for s in extra.get("final_seeds", [seed])]


def final_layers(config) -> list[str]:
    """The layer choices a search's chosen lr is trained at: its own, or (scope family) every one it stands for."""
    extra, layers = (config["extra"], config["layers"]) if isinstance(config, dict) else (config.extra, config.layers)
    return [str(spec) for spec in extra.get("final_layers", [layers])]


def planned_finals(config) -> int:
    """How many runs a search queues once it has chosen (a config or its dict)."""
    return len(final_seeds(config)) * len(final_layers(config))


def final_config(config: RunConfig, result) -> RunConfig:
    """The config to train for real: the chosen lr, evaluated on the task's validation split(s), with the search's
    verdict in extra["lr_search"] (wherever its score shows, so does how its lr was found)."""
    if result.chosen_lr is None:
        raise SearchError("the search has not finished (it was stopped); run it again with the same workdir")
    note = {
        "chosen_lr": result.chosen_lr,
        "selection": result.selection,
        "grid": list(result.grid),
        "verdict": result.verdict,
        "lower_bound": result.lower_bound,
        "searched_layers": config.layers,
    }
    if result.tied:
        note["tied"] = list(result.tied)
    return config.replace(
        lr=result.chosen_lr, lr_search=False, eval_on="validation", extra={**config.extra, "lr_search": note}
    )


def final_configs(config: RunConfig, result) -> list[RunConfig]:
    """Every run a finished search queues: each of its layer choices (scope family: the single layers too) x
    each final seed, at the chosen lr."""
    final = final_config(config, result)
    extra = {k: v for k, v in final.extra.items() if k not in ("final_seeds", "final_layers")}
    return [
        final.replace(layers=layers, seed=seed, extra=extra)
        for layers in final_layers(config)
        for seed in final_seeds(config)
    ]
