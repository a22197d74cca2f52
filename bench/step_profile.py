"""Where a training step's time goes: the host (Python, launches, copies) or the GPU, for one module setting.

    python -m bench.step_profile --model config:bert-base-uncased --modules layernorm@last --device cuda

Runs fine_tune once and profiles a window of steady-state steps with torch.profiler, after
--warm-steps steps (by then every common batch shape has had its first step, so its CUDA graph is
captured). It prints wall ms per step, the GPU's busy ms per step (the summed kernel time), their
ratio, and the host operations and kernels that take longest. Busy/wall near 1: the GPU is the
bottleneck, and fewer or cheaper kernels pay. Far below 1: the host is, and the host table says
where its time goes. The profiler adds host time of its own, so the window's wall time is also
shown beside the whole run's unprofiled mean; and where it cannot see the kernels inside CUDA-graph
replays, busy time undercounts (compare a --cuda-graphs off run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import environment, json_line, materialize_model, parse_variants, resolve_device, table
from moduletune.tuning import glue


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.step_profile", description=__doc__.split("\n")[0])
    p.add_argument("--task", default="sst2")
    p.add_argument(
        "--model",
        default="all-MiniLM-L6-v2",
        help="the embedded MiniLM, a Hub id, a folder, or config:bert-base-uncased (random weights)",
    )
    p.add_argument("--tokenizer", default="all-MiniLM-L6-v2", help="tokenizer folder for config: models")
    p.add_argument("--modules", default="layernorm@last", help="one variant, e.g. full or layernorm@last")
    p.add_argument("--max-train", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warm-steps", type=int, default=60, help="steps before the profiled window")
    p.add_argument("--steps", type=int, default=40, help="steps in the profiled window")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--cuda-graphs", default="on", choices=("on", "off"))
    p.add_argument("--top", type=int, default=15, help="rows in each table")
    p.add_argument("--glue-dir", default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)
    if args.warm_steps < 1 or args.steps < 1:
        p.error("--warm-steps and --steps must be at least 1")
    return args


class StepWindow:
    """on_event for fine_tune: profiles the steps after `start` for `count` steps."""

    def __init__(self, device: torch.device, start: int, count: int):
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        self.profiler = profile(activities=activities)
        self.device, self.start, self.end = device, start, start + count
        self.seconds = 0.0
        self.steps = 0
        self.running = False

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, event: dict):
        if event["kind"] != "step":
            return None
        step, last = event["step"], event["total_steps"]
        if step == self.start and step < last:
            self._sync()
            self.profiler.start()
            self.running, self._t0 = True, time.perf_counter()
        elif self.running and step in (self.end, last):  # a short run ends the window early
            self._sync()
            self.seconds = time.perf_counter() - self._t0
            self.steps = step - self.start
            self.profiler.stop()
            self.running = False
        return None


def summarize(window: StepWindow, top: int) -> dict:
    """Per-step wall and busy time, and the costliest host operations and kernels."""
    from torch.autograd import DeviceType

    steps = max(window.steps, 1)
    averages = window.profiler.key_averages()
    host = sorted((e for e in averages if e.self_cpu_time_total > 0), key=lambda e: -e.self_cpu_time_total)
    kernels = [e for e in window.profiler.events() if e.device_type == DeviceType.CUDA]
    by_kernel: dict[str, float] = {}
    for e in kernels:
        by_kernel[e.name] = by_kernel.get(e.name, 0.0) + e.time_range.elapsed_us()
    busy_ms = sum(by_kernel.values()) / 1000 / steps if kernels else None
    wall_ms = window.seconds * 1000 / steps
    return {
        "steps": window.steps,
        "wall_ms_per_step": wall_ms,
        "busy_ms_per_step": busy_ms,
        "busy_fraction": busy_ms / wall_ms if busy_ms is not None and wall_ms else None,
        "host_ops": [
            {
                "name": e.key,
                "calls_per_step": e.count / steps,
                "self_cpu_ms_per_step": e.self_cpu_time_total / 1000 / steps,
            }
            for e in host[:top]
        ],
        "kernels": [
            {"name": name, "ms_per_step": us / 1000 / steps}
            for name, us in sorted(by_kernel.items(), key=lambda kv: -kv[1])[:top]
        ],
    }


def main(argv=None) -> int:
    from transformers.utils import logging as hf_logging

    from moduletune.tuning.config import RunConfig
    from moduletune.tuning.train import fine_tune

    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    (variant,) = parse_variants(args.modules)
    task = glue.get_task(args.task)
    device = resolve_device(args.device)
    env = environment(device)
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        model, _ = materialize_model(args.model, task.num_labels, Path(tmp), tokenizer=args.tokenizer)
        config = RunConfig(
            task=task.name,
            modules=variant.families,
            layers=variant.layers,
            model=model,
            max_train=args.max_train or None,
            max_eval=128,
            batch_size=args.batch_size,
            device=str(device),
            glue_dir=args.glue_dir,
            cuda_graphs=args.cuda_graphs == "on",
        )
        window = StepWindow(device, args.warm_steps, args.steps)
        result = fine_tune(config, window)
    if not window.steps:
        print(
            f"the run had {result.steps} steps, fewer than --warm-steps {args.warm_steps} + 1: "
            "raise --max-train or lower --warm-steps",
            file=sys.stderr,
        )
        return 2
    out = summarize(window, args.top)
    out.update(
        run_examples_per_second=result.examples_per_second,
        run_ms_per_step=1000 * result.train_seconds / max(result.steps, 1),
        cuda_graphs=result.cuda_graphs,
        precision=result.precision,
    )
    print(render(args, variant.label, out, env))
    if args.json:
        print(json_line({"model": args.model, "modules": variant.label, "task": task.name, **out, "environment": env}))
    return 0


def render(args, label: str, out: dict, env: dict) -> str:
    busy = out["busy_ms_per_step"]
    lines = [
        f"step profile -- {args.task}, {args.model}, {label}, batch {args.batch_size}, {out['precision']}, "
        f"CUDA graphs {out['cuda_graphs'] or 'n/a'}",
        "environment: " + ", ".join(f"{k} {v}" for k, v in env.items()),
        f"window: {out['steps']} steps after step {args.warm_steps}: {out['wall_ms_per_step']:.2f} ms/step wall "
        f"(profiled); the whole run: {out['run_ms_per_step']:.2f} ms/step, "
        f"{out['run_examples_per_second']:.1f} ex/s (unprofiled)",
        (
            f"GPU busy {busy:.2f} ms/step = {out['busy_fraction']:.0%} of wall: "
            + ("the GPU is the bottleneck" if out["busy_fraction"] > 0.8 else "the host is the bottleneck")
        )
        if busy is not None
        else "no GPU kernels (CPU run)",
        "",
        table(
            ["host operation", "calls/step", "self CPU ms/step"],
            [[o["name"][:70], o["calls_per_step"], o["self_cpu_ms_per_step"]] for o in out["host_ops"]],
        ),
    ]
    if out["kernels"]:
        lines += ["", table(["kernel", "ms/step"], [[k["name"][:90], k["ms_per_step"]] for k in out["kernels"]])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
