"""Runs per hour for a small sweep with k runs sharing one device at once (k = 1, 2, 4).

This is what `moduletune worker --device cuda:0 --workers k` does: k worker processes on one GPU,
each taking the next run. A small model leaves most of an H100 idle, so k > 1 can multiply the
sweep's throughput. Usage:

    python -m bench.concurrent_runs --device cuda --k 1,2,4 --runs 12 --max-train 2000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time


def _worker(device: str, threads: int, jobs, results) -> None:
    import torch

    from moduletune.tuning.config import RunConfig
    from moduletune.tuning.train import fine_tune

    torch.set_num_threads(threads)
    while True:
        item = jobs.get()
        if item is None:
            return
        t0 = time.perf_counter()
        result = fine_tune(RunConfig.from_dict({**item, "device": device}))
        results.put(
            {
                "seconds": time.perf_counter() - t0,
                "metric": result.primary_metric,
                "modules": result.modules,
                "layers": result.layer_spec,
            }
        )


def sweep_configs(args) -> list[dict]:
    """The paper's seven modules in single layers, cycled to the requested number of runs."""
    families = ["query", "key", "value", "attention_output", "ffn_intermediate", "ffn_output", "layernorm"]
    configs = []
    for i in range(args.runs):
        configs.append(
            {
                "task": args.task,
                "model": args.model,
                "modules": [families[i % len(families)]],
                "layers": str(i % args.layers),
                "max_train": args.max_train,
                "max_eval": args.max_eval,
                "seed": i // len(families),
                "glue_dir": args.glue_dir,
            }
        )
    return configs


def run_sweep(configs: list[dict], k: int, device: str) -> dict:
    """Wall time for all configs over k spawned processes on one device."""
    ctx = mp.get_context("spawn")  # never fork a process that may have touched CUDA
    jobs, results = ctx.Queue(), ctx.Queue()
    for c in configs:
        jobs.put(c)
    for _ in range(k):
        jobs.put(None)
    threads = max(1, (os.cpu_count() or 2) // k)
    t0 = time.perf_counter()
    procs = [ctx.Process(target=_worker, args=(device, threads, jobs, results)) for _ in range(k)]
    for p in procs:
        p.start()
    done = [results.get() for _ in configs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    return {
        "k": k,
        "runs": len(done),
        "wall_seconds": wall,
        "runs_per_hour": 3600 * len(done) / wall,
        "mean_run_seconds": sum(d["seconds"] for d in done) / len(done),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--k", default="1,2,4")
    p.add_argument("--runs", type=int, default=12)
    p.add_argument("--task", default="sst2")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--layers", type=int, default=6, help="cycle single layers 0..N-1")
    p.add_argument("--max-train", type=int, default=2000)
    p.add_argument("--max-eval", type=int, default=None)
    p.add_argument("--glue-dir", default=os.environ.get("MODULETUNE_GLUE_DIR"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    configs = sweep_configs(args)
    rows = [run_sweep(configs, int(k), args.device) for k in args.k.split(",")]
    base = rows[0]["runs_per_hour"]
    print(f"{'k':>3} {'runs':>5} {'wall s':>8} {'runs/hour':>10} {'mean run s':>11} {'vs k=' + str(rows[0]['k']):>8}")
    for r in rows:
        print(
            f"{r['k']:>3} {r['runs']:>5} {r['wall_seconds']:>8.1f} {r['runs_per_hour']:>10.0f} "
            f"{r['mean_run_seconds']:>11.1f} {r['runs_per_hour'] / base:>7.2f}x"
        )
    if args.json:
        print(json.dumps({"device": args.device, "model": args.model, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
