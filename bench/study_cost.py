"""The cost of an answer: the paper preset for one task, queued and trained by a real worker, timed end to end.

Queues the Experiment tab's paper preset (every ticked family on all layers and on each layer alone, plus full
fine-tuning, each setting with its lr search) for one task and one seed into a fresh registry, starts one
`moduletune worker` process, and reports the wall time from queueing to the last run, the searches' costs
(training steps against one run's) and the final runs' scores per setting. `--scope family` runs one search per
family on all layers and reuses its lr for the single-layer settings; the bench then also reports how far the
layer-wise scores moved against a `--compare` JSON written by a `--scope setting` run.

    python -m bench.study_cost --task sst2 --max-train 2000 --scope setting --json-out setting.json
    python -m bench.study_cost --task sst2 --max-train 2000 --scope family --compare setting.json

Needs the app's dependencies (gradio for the form's code, huey, sqlalchemy): run it from a checkout with
`make setup` done. Two idle CPU cores: see bench/README.md for the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAPER_SEVEN = ("query", "key", "value", "attention_output", "ffn_intermediate", "ffn_output", "layernorm")


def queue_preset(args) -> list[int]:
    """Queue the preset through the same code the Experiment tab's confirmation calls; returns the queued ids."""
    from moduletune.app.experiment import submit
    from moduletune.app.experiment.form import Form
    from moduletune.tasks.registry import Registry

    form = Form(
        tasks=[args.task],
        families=list(args.families.split(",")),
        seeds=str(args.seed),
        max_train=args.max_train,
        epochs=args.epochs,
        lr_search=True,
    )
    if args.scope != "legacy":  # a release without lr-search scopes has no such form field
        form.lr_search_scope = args.scope
    outcome = submit.submit_preset(Registry(), form, "bench")
    if not outcome.ok:
        raise SystemExit(f"the preset was not queued: {outcome.message}")
    return list(outcome.ids)


def wait_for_all(registry, started: float, timeout: float) -> None:
    """Until no run is queued or running (a search's runs are queued when it chose, so poll until quiet)."""
    quiet_since = None
    while time.perf_counter() - started < timeout:
        busy = registry.count("queued") + registry.count("running")
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.perf_counter()
        elif time.perf_counter() - quiet_since > 5:  # a search's final runs are queued in its last transaction
            return
        done = registry.count("succeeded")
        print(f"\r  {time.perf_counter() - started:7.0f}s  {busy} queued/running, {done} succeeded", end="", flush=True)
        time.sleep(2)
    raise SystemExit(f"timed out after {timeout:.0f}s")


def summarize(registry, wall: float) -> dict:
    """Wall time, search costs and each setting's final score, from the registry."""
    frame = registry.runs_frame()
    searches = frame[frame["kind"] == "search"]
    finals = frame[frame["kind"] == "run"]
    ratios, verdicts, search_steps = [], {}, 0
    for run_id in searches["id"]:
        result = registry.get(int(run_id)).result.details
        if result.get("cost_ratio") is not None:
            ratios.append(float(result["cost_ratio"]))
        search_steps += int(result.get("cost_steps") or 0)
        verdict = (result.get("verdict") or {}).get("verdict") if isinstance(result.get("verdict"), dict) else None
        verdict = verdict or result.get("verdict") or "n/a"
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
    scores = {
        f"{r.family}@{r.layers}": {"score": r.primary_metric, "lr": r.lr, "learned": r.learned}
        for r in finals.itertuples()
    }
    return {
        "wall_seconds": wall,
        "searches": len(searches),
        "final_runs": len(finals),
        "failed": int((frame["status"] == "failed").sum()),
        "search_steps": search_steps,
        "final_steps": int(finals["step"].sum()),
        "cost_ratio": {
            "median": statistics.median(ratios) if ratios else None,
            "max": max(ratios) if ratios else None,
            "min": min(ratios) if ratios else None,
            "all": ratios,
        },
        "verdicts": verdicts,
        "scores": scores,
    }


def score_moves(mine: dict, other: dict) -> dict:
    """How far the single-layer settings' scores moved between two benches, in points (100 × the metric)."""
    moves = [
        100 * abs(mine[k]["score"] - other[k]["score"])
        for k in mine
        if not k.endswith("@all") and k in other and mine[k]["score"] is not None and other[k]["score"] is not None
    ]
    return {
        "settings": len(moves),
        "mean_points": statistics.fmean(moves) if moves else None,
        "max_points": max(moves, default=None),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--families", default=",".join(PAPER_SEVEN), help="the form's ticked families")
    parser.add_argument("--max-train", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scope", default="setting", choices=["setting", "family", "legacy"])
    parser.add_argument("--timeout", type=float, default=4 * 3600)
    parser.add_argument("--json-out", default=None, help="write the summary here")
    parser.add_argument("--compare", default=None, help="a summary JSON to compare the layer-wise scores with")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="study-cost-"))
    os.environ["MODULETUNE_HOME"] = str(home)
    os.environ.pop("MODULETUNE_DB_URL", None)
    os.environ.pop("MODULETUNE_QUEUE_URL", None)
    from moduletune.tasks.registry import Registry
    from moduletune.tuning.text import json_safe

    registry = Registry()
    started = time.perf_counter()
    ids = queue_preset(args)
    print(f"queued {len(ids)} entries in {home}", flush=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "moduletune.cli.main", "worker"],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=open(home / "worker.log", "w"),
    )
    try:
        wait_for_all(registry, started, args.timeout)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    summary = summarize(registry, time.perf_counter() - started)
    summary["settings"] = vars(args)
    if args.compare:
        summary["moved"] = score_moves(summary["scores"], json.loads(Path(args.compare).read_text())["scores"])
    print()
    print(json.dumps({k: v for k, v in summary.items() if k != "scores"}, indent=1))
    if args.json_out:  # json_safe: the frame's numpy booleans and floats as plain JSON
        Path(args.json_out).write_text(json.dumps(json_safe(summary), indent=1))
    return summary


if __name__ == "__main__":
    main()
