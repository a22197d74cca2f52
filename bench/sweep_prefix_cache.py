"""The paper's module grid with and without the frozen-prefix cache: total wall time and metric drift.

    python -m bench.sweep_prefix_cache --task rte --max-train 256

Runs every family x every single layer (the paper's grid; `--layers all` gives one run per family)
twice through tuning.train.fine_tune: prefix_cache="off" and prefix_cache="on". The two modes run
interleaved, pair by pair (which mode goes first alternates), so load from other processes on the
machine falls on both alike; each mode has its own fresh MODULETUNE_HOME, so each pays its own
tokenization and its own cache fills. Prints the total wall time of each mode, the speedup, and how
far the primary metric moved between the modes (the cache runs frozen layers without dropout, so
small differences are expected). A benchmark, not a test; with --json a last line of JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench.common import (
    Stopwatch,
    clear_prefix_cache,
    environment,
    fresh_home,
    json_line,
    prefix_cache_stats,
    release_memory,
    resolve_device,
    table,
)
from moduletune.tuning import glue, modules
from moduletune.tuning.config import RunConfig

PAPER_FAMILIES = "LN,Q,K,V,AO,FI,FO"
MODES = ("off", "on")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def grid(families: str, layers: str, num_layers: int, order: str) -> list[tuple[tuple[str, ...], str]]:
    """(families, layer spec) pairs: each family alone ('+' joins families into one run), per layer or not."""
    sets = [modules.parse_families(part.replace("+", ",")) for part in families.split(",") if part.strip()]
    if not sets:
        raise ValueError(f"no module family in {families!r}; e.g. {PAPER_FAMILIES}")
    each = layers.strip().lower() == "each"
    if not each:
        modules.parse_layers(layers, num_layers)  # refuse a bad spec before any run
    specs = [str(i) for i in range(num_layers)] if each else [layers]
    if order == "layer":
        return [(s, spec) for spec in specs for s in sets]
    return [(s, spec) for s in sets for spec in specs]


def run_one(args, families, spec: str, mode: str, home: Path, device) -> dict:
    from moduletune.tuning.train import fine_tune

    config = RunConfig(
        task=args.task,
        modules=families,
        layers=spec,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_seq_len=args.max_seq_len,
        max_train=args.max_train,
        max_eval=args.max_eval,
        seed=args.seed,
        device=args.device,
        glue_dir=args.glue_dir,
        prefix_cache=mode,
    )
    if args.per_run_cache:
        clear_prefix_cache()
    with fresh_home(str(home)), Stopwatch(device) as wall:
        result = fine_tune(config)
    release_memory()
    cache_info = getattr(result, "prefix_cache", None)  # what fine_tune reports it cached, if anything
    return {
        "modules": "+".join(modules.SHORT_NAMES.get(f, f) for f in families),
        "layers": spec,
        "mode": mode,
        "wall_seconds": wall.seconds,
        "train_seconds": result.train_seconds,
        "eval_seconds": result.eval_seconds,
        "examples_per_second": result.examples_per_second,
        "metric": result.primary_metric,
        "precision": result.precision,
        "prefix_cache": cache_info if isinstance(cache_info, dict) else None,
    }


def summarize(runs: list[dict]) -> dict:
    by_mode = {m: [r for r in runs if r["mode"] == m] for m in MODES}
    totals = {
        m: {
            "runs": len(rs),
            "wall_seconds": sum(r["wall_seconds"] for r in rs),
            "train_seconds": sum(r["train_seconds"] for r in rs),
            "eval_seconds": sum(r["eval_seconds"] for r in rs),
            "mean_metric": statistics.fmean(r["metric"] for r in rs) if rs else None,
        }
        for m, rs in by_mode.items()
    }
    off = {(r["modules"], r["layers"]): r for r in by_mode["off"]}
    diffs = [
        abs(r["metric"] - off[(r["modules"], r["layers"])]["metric"])
        for r in by_mode["on"]
        if (r["modules"], r["layers"]) in off
    ]
    wall_on, wall_off = totals["on"]["wall_seconds"], totals["off"]["wall_seconds"]
    return {
        "modes": totals,
        "speedup": wall_off / wall_on if wall_on else None,
        "train_speedup": (
            totals["off"]["train_seconds"] / totals["on"]["train_seconds"] if totals["on"]["train_seconds"] else None
        ),
        "metric_diff": {
            "mean_abs": statistics.fmean(diffs) if diffs else None,
            "max_abs": max(diffs) if diffs else None,
            "pairs": len(diffs),
        },
    }


def render(runs, summary, args, task, env, n_layers: int) -> str:
    off = {(r["modules"], r["layers"]): r for r in runs if r["mode"] == "off"}
    body = []
    for r in (r for r in runs if r["mode"] == "on"):
        o = off.get((r["modules"], r["layers"]))
        body.append(
            [
                r["modules"],
                r["layers"],
                o["wall_seconds"] if o else None,
                r["wall_seconds"],
                o["train_seconds"] if o else None,
                r["train_seconds"],
                o["metric"] if o else None,
                r["metric"],
                f"{100 * (r['metric'] - o['metric']):+.2f}" if o else None,
            ]
        )
    headers = [
        "modules",
        "layers",
        "wall off",
        "wall on",
        "train off",
        "train on",
        f"{task.primary_metric} off",
        f"{task.primary_metric} on",
        "diff pts",
    ]
    m, d = summary["modes"], summary["metric_diff"]
    lines = [
        f"module grid with and without the prefix cache -- {task.name}, model {args.model}, "
        f"{m['off']['runs']} runs per mode ({n_layers}-layer model)",
        f"train rows {args.max_train or 'all'}, eval rows {args.max_eval or 'all'}, epochs {args.epochs}, "
        f"batch {args.batch_size}, seed {args.seed}; modes interleaved run by run, each with a fresh MODULETUNE_HOME",
        "environment: " + ", ".join(f"{k} {v}" for k, v in env.items()),
        "wall = the whole fine_tune call (load, tokenize, prefix pass, train, evaluate); train = its train_seconds",
        "",
        table(headers, body, right=set(range(2, len(headers)))),
        "",
        f"total wall  off {m['off']['wall_seconds']:.1f} s   on {m['on']['wall_seconds']:.1f} s   "
        f"speedup {_x(summary['speedup'])}",
        f"total train off {m['off']['train_seconds']:.1f} s   on {m['on']['train_seconds']:.1f} s   "
        f"speedup {_x(summary['train_speedup'])}",
        f"metric |on - off|: mean {_pts(d['mean_abs'])} points, max {_pts(d['max_abs'])} points over {d['pairs']} runs",
        f"in-process prefix cache: {summary.get('prefix_cache_stats') or 'n/a'} "
        f"({'emptied before every run' if args.per_run_cache else 'kept across runs in this process'})",
    ]
    return "\n".join(lines)


def _x(v):
    return "n/a" if v is None else f"{v:.2f}x"


def _pts(v):
    return "n/a" if v is None else f"{100 * v:.2f}"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.sweep_prefix_cache", description=__doc__.split("\n")[0])
    p.add_argument("--task", default="rte")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument(
        "--families",
        default=PAPER_FAMILIES,
        help=f"comma list of families, one run each ('+' trains several together); default {PAPER_FAMILIES}",
    )
    p.add_argument(
        "--layers", default="each", help="each (one run per layer, default), all, or a spec like 0-3 / last:2"
    )
    p.add_argument("--max-train", type=int, default=256, help="training rows per run (default 256; 0 = all)")
    p.add_argument("--max-eval", type=int, default=None, help="eval rows per run (default: the full dev set)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--grid-order",
        default="family",
        choices=("family", "layer"),
        help="family: every layer of one family, then the next (as `moduletune sweep` queues them); "
        "layer: every family at one layer, then the next",
    )
    p.add_argument(
        "--per-run-cache",
        action="store_true",
        help="empty the in-process prefix cache before every run, as a worker that forks a process "
        "per run sees it (default: one process keeps it across runs)",
    )
    p.add_argument("--glue-dir", default=None)
    p.add_argument(
        "--home",
        default=None,
        help="a folder for the two MODULETUNE_HOMEs (off/ and on/ inside; default a fresh temp folder)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)
    if args.max_train == 0:
        args.max_train = None
    return args


def main(argv=None) -> int:
    from transformers.utils import logging as hf_logging

    import moduletune.tuning.train  # noqa: F401  (import cost outside the first run's wall time)
    from moduletune.tuning.models import load_config

    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    task = glue.get_task(args.task)
    device = resolve_device(args.device)
    env = environment(device)
    n_layers = modules.num_hidden_layers(load_config(args.model))
    plan = grid(args.families, args.layers, n_layers, args.grid_order)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        root = Path(args.home or tmp)
        homes = {m: root / m for m in MODES}
        for i, (families, spec) in enumerate(plan):
            order = MODES if i % 2 == 0 else MODES[::-1]
            for mode in order:
                row = run_one(args, families, spec, mode, homes[mode], device)
                runs.append(row)
                log(
                    f"[{len(runs)}/{2 * len(plan)}] {row['modules']}@{spec} cache {mode}: wall "
                    f"{row['wall_seconds']:.1f} s, train {row['train_seconds']:.1f} s, metric {row['metric']:.4f}"
                )
    env["load_avg_1m_end"] = environment(device).get("load_avg_1m")
    summary = summarize(runs)
    summary["prefix_cache_stats"] = prefix_cache_stats()
    print(render(runs, summary, args, task, env, n_layers))
    if args.json:
        print(
            json_line(
                {
                    "task": task.name,
                    "model": args.model,
                    "families": args.families,
                    "layers": args.layers,
                    "max_train": args.max_train,
                    "max_eval": args.max_eval,
                    "epochs": args.epochs,
                    "runs_per_mode": len(plan),
                    **summary,
                    "runs": runs,
                    "environment": env,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
