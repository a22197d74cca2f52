"""The plain learning-rate grid vs successive halving on one cell: what each chooses and what it costs.

Both select on the same held-out slice of the training rows. The grid trains every candidate for the
full run and keeps the best held-out score; halving is tuning.search.lr_search. Usage:

    python -m bench.lr_search --task stsb --modules query --max-train 2000 --epochs 3 [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time

from moduletune.tuning.config import RunConfig
from moduletune.tuning.search import candidate_config, lr_search
from moduletune.tuning.train import fine_tune
from moduletune.tuning.verdict import rank


def plain_grid(config: RunConfig) -> dict:
    """Every candidate for the full run; the best final held-out score wins (ties: the smaller lr)."""
    t0 = time.perf_counter()
    scores, steps = {}, 0
    for lr in config.search_grid:
        result = fine_tune(candidate_config(config, lr))
        scores[lr] = result.primary_metric
        steps += result.steps
        print(
            f"  grid lr {lr:g}: held-out {result.primary_metric_name} {result.primary_metric:.4f} "
            f"({result.steps} steps)",
            flush=True,
        )
    chosen = rank(scores)[0]
    return {
        "chosen_lr": chosen,
        "score": scores[chosen],
        "scores": scores,
        "steps": steps,
        "seconds": time.perf_counter() - t0,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="stsb")
    parser.add_argument("--modules", default="query", help="families, comma-separated")
    parser.add_argument("--layers", default="all")
    parser.add_argument("--max-train", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--grid", default=None, help="comma-separated lrs (default: the family grid)")
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    args = parser.parse_args(argv)

    config = RunConfig(
        task=args.task,
        modules=tuple(args.modules.split(",")),
        layers=args.layers,
        max_train=args.max_train,
        epochs=args.epochs,
        seed=args.seed,
        device=args.device,
        lr_grid=tuple(float(v) for v in args.grid.split(",")) if args.grid else None,
        glue_dir=os.environ.get("MODULETUNE_GLUE_DIR"),
    )
    print(
        f"{config.task} {'+'.join(config.modules)}@{config.layers}, {config.max_train} rows, {config.epochs} "
        f"epochs, seed {config.seed}; grid {', '.join(f'{v:g}' for v in config.search_grid)}; "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    grid = plain_grid(config)
    with tempfile.TemporaryDirectory() as work:
        halving = lr_search(config, workdir=work)
    # The full-run held-out score of halving's pick, from the grid's runs: like with like.
    halving_full = grid["scores"][halving.chosen_lr]
    picked = next(c for c in halving.candidates if c["lr"] == halving.chosen_lr)
    one_run = halving.full_steps
    out = {
        "config": config.to_dict(),
        "metric": halving.metric,
        "full_steps": one_run,
        "grid": {**grid, "scores": {f"{k:g}": v for k, v in grid["scores"].items()}},
        "halving": {
            "chosen_lr": halving.chosen_lr,
            "score_at_last_rung": picked["score"],
            "score_full_run": halving_full,
            "steps": halving.cost_steps,
            "seconds": halving.seconds,
            "rungs": halving.rungs,
            "candidates": halving.candidates,
        },
        "ratios": {
            "halving_over_grid_steps": halving.cost_steps / grid["steps"],
            "halving_over_grid_seconds": halving.seconds / grid["seconds"],
            "halving_over_one_run_steps": halving.cost_ratio,
            "grid_over_one_run_steps": grid["steps"] / one_run,
        },
    }
    m = halving.metric
    print(
        f"grid:    chose lr {grid['chosen_lr']:g}, held-out {m} {grid['score']:.4f}, "
        f"{grid['steps']} steps, {grid['seconds']:.0f} s"
    )
    print(
        f"halving: chose lr {halving.chosen_lr:g}, held-out {m} {picked['score']:.4f} at step "
        f"{picked['steps']} ({halving_full:.4f} after the full run), {halving.cost_steps} steps, "
        f"{halving.seconds:.0f} s"
    )
    r = out["ratios"]
    print(
        f"ratios:  halving/grid {r['halving_over_grid_steps']:.2f} in steps, {r['halving_over_grid_seconds']:.2f} "
        f"in seconds; halving/one run {r['halving_over_one_run_steps']:.2f} (grid/one run "
        f"{r['grid_over_one_run_steps']:.0f}); load {os.getloadavg()[0]:.1f}"
    )
    if not math.isclose(halving_full, grid["score"]) and halving.chosen_lr != grid["chosen_lr"]:
        print(f"         after a full run, halving's pick scores {grid['score'] - halving_full:.4f} below the grid's")
    if args.json:
        print(json.dumps(out, default=str))
    return out


if __name__ == "__main__":
    main()
