"""Time the Compare tab's charts on a synthetic 1,000-run registry: `python -m bench.charts_compare`.

A benchmark, not a test: it prints the median seconds of `app.compare.figures.compare_view` and whether it
stays under the one-second budget an interactive tab can afford.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from moduletune.app.compare.figures import compare_view

FAMILIES = (
    "query",
    "key",
    "value",
    "attention_output",
    "ffn_intermediate",
    "ffn_output",
    "layernorm",
    "bias",
    "embeddings",
    "classifier",
    "full",
    "random:layernorm",
    "query+value",
)
LAYER_SPECS = ("all", "all", "all", "0", "1", "2", "3", "4", "5", "last:2")
TASK_METRIC = {
    "cola": "matthews_correlation",
    "sst2": "accuracy",
    "mrpc": "f1",
    "stsb": "pearson",
    "qqp": "f1",
    "mnli": "accuracy_matched",
    "qnli": "accuracy",
    "rte": "accuracy",
    "wnli": "accuracy",
}
FAMILY_PCT = {
    "query": 1.6,
    "key": 1.6,
    "value": 1.6,
    "attention_output": 1.6,
    "ffn_intermediate": 6.5,
    "ffn_output": 6.5,
    "layernorm": 0.02,
    "bias": 0.1,
    "embeddings": 52.0,
    "classifier": 0.01,
    "full": 100.0,
    "random:layernorm": 0.02,
    "query+value": 3.2,
}
STATUSES = ("succeeded",) * 8 + ("failed", "running", "queued", "cancelled")


def synthetic_runs(n: int = 1000, seed: int = 0) -> pd.DataFrame:
    """A registry-shaped runs frame of n runs over all tasks, families, layer specs, seeds and statuses."""
    rng = np.random.default_rng(seed)
    tasks = list(TASK_METRIC)
    now = pd.Timestamp("2026-01-01 12:00:00")
    rows = []
    for i in range(1, n + 1):
        task = tasks[rng.integers(len(tasks))]
        family = FAMILIES[rng.integers(len(FAMILIES))]
        layers = (
            "all" if family in ("embeddings", "classifier", "full") else LAYER_SPECS[rng.integers(len(LAYER_SPECS))]
        )
        status = STATUSES[rng.integers(len(STATUSES))]
        base = 0.9 if family == "full" else 0.85 if family == "layernorm" else 0.8
        metric = float(np.clip(base + rng.normal(0, 0.02), 0, 1)) if status == "succeeded" else np.nan
        total = 500
        step = total if status == "succeeded" else int(rng.integers(0, total))
        pct = FAMILY_PCT[family] * (1.0 if layers == "all" else 1 / 6)
        queued = now - pd.Timedelta(minutes=int(rng.integers(1, 10_000)))
        config = {
            "task": task,
            "modules": family.split("+"),
            "layers": layers,
            "seed": i % 3,
            "lr": 1e-2 if family == "layernorm" else 3e-4,
            "epochs": 1,
            "batch_size": 32,
            "extra": {"note": f"run {i}"},
        }
        rows.append(
            {
                "id": i,
                "status": status,
                "task": task,
                "model": "all-MiniLM-L6-v2",
                "modules": family,
                "family": family,
                "layers": layers,
                "seed": i % 3,
                "lr": config["lr"],
                "primary_metric_name": TASK_METRIC[task],
                "primary_metric": metric,
                "trainable_pct": pct,
                "module_pct": pct * 0.9,
                "module_params": int(pct * 2.2e5),
                "head_params": 770,
                "trainable_params": int(pct * 2.27e5),
                "total_params": 22_700_000,
                "step": step,
                "total_steps": total,
                "eta_seconds": float(rng.integers(5, 600)) if status == "running" else np.nan,
                "worker": f"w{i % 4}",
                "device": "cpu",
                "submitter": "bench",
                "queued_at": queued,
                "started_at": queued + pd.Timedelta(seconds=30),
                "finished_at": queued + pd.Timedelta(minutes=5) if status == "succeeded" else pd.NaT,
                "error": None,
                "train_seconds": 300.0 if status == "succeeded" else np.nan,
                "config": config,
            }
        )
    return pd.DataFrame(rows)


def synthetic_events(
    runs: pd.DataFrame, n_runs: int = 20, steps: int = 500, every: int = 10, seed: int = 0
) -> pd.DataFrame:
    """Loss/lr every `every` steps and five eval points for the first n_runs runs of the frame."""
    rng = np.random.default_rng(seed)
    parts = []
    for rid, task, metric in runs[["id", "task", "primary_metric_name"]].head(n_runs).itertuples(index=False):
        step = np.arange(every, steps + 1, every)
        loss = 0.7 * np.exp(-step / 200) + 0.2 + rng.normal(0, 0.02, len(step))
        split = "validation_matched" if task == "mnli" else "validation"
        name = "accuracy" if task == "mnli" else metric
        eval_step = np.linspace(steps / 5, steps, 5).astype(int)
        parts += [
            pd.DataFrame(
                {"run_id": rid, "step": step, "epoch": step / steps, "split": "train", "name": "loss", "value": loss}
            ),
            pd.DataFrame(
                {"run_id": rid, "step": step, "epoch": step / steps, "split": "train", "name": "lr", "value": 1e-3}
            ),
            pd.DataFrame(
                {
                    "run_id": rid,
                    "step": eval_step,
                    "epoch": eval_step / steps,
                    "split": split,
                    "name": name,
                    "value": 0.6 + 0.3 * eval_step / steps,
                }
            ),
        ]
    return pd.concat(parts, ignore_index=True)


def main(argv=None) -> None:
    """Build the synthetic registry, time compare_view, print the median and the 1 s verdict."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--event-runs", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--task", default="sst2")
    args = p.parse_args(argv)
    runs = synthetic_runs(args.runs)
    events = synthetic_events(runs, args.event_runs)
    ids = runs["id"].head(args.event_runs).tolist()
    compare_view(runs, events, args.task, ids)  # warm-up: imports, plotly validators
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        compare_view(runs, events, args.task, ids)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(
        f"compare_view: {args.runs} runs, {len(events)} events ({args.event_runs} runs with curves), "
        f"task={args.task}, {args.repeats} repeats"
    )
    print(f"  times: {', '.join(f'{t:.3f}' for t in times)} s")
    print(f"  median: {median:.3f} s -> {'under' if median < 1.0 else 'OVER'} the 1 s budget")


if __name__ == "__main__":
    main()
