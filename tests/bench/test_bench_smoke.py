"""Smoke tests of the two benches as a user runs them: tiny sizes, JSON shape, positive numbers.

Speed ratios are not asserted: they belong to the benchmarks' own output, not to a test.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import parse_variants

REPO = Path(__file__).resolve().parents[2]


def run_bench(module, args, glue_dir, tmp_path):
    env = {**os.environ, "MODULETUNE_GLUE_DIR": str(glue_dir), "MODULETUNE_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args, "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(proc.stdout.strip().splitlines()[-1])


def test_variants_parse_family_and_layer_spec():
    full, ln, last, qv = parse_variants("full, layernorm ,LN@last,Q+V@0-3")
    assert (full.families, full.layers) == (("full",), "all")
    assert (ln.families, ln.layers) == (("layernorm",), "all")
    assert (last.families, last.layers, last.label) == (("layernorm",), "last:1", "LN@last")
    assert (qv.families, qv.layers) == (("query", "value"), "0-3")
    with pytest.raises(ValueError):
        parse_variants("nonsense@last")


def test_trainer_vs_moduletune_smoke(glue_dir, tmp_path):
    stdout, out = run_bench(
        "bench.trainer_vs_moduletune",
        ["--task", "rte", "--modules", "layernorm@last", "--max-train", "32", "--max-eval", "16", "--device", "cpu"],
        glue_dir,
        tmp_path,
    )
    assert "train ex/s" in stdout and "runner" in stdout
    assert set(out) >= {"rows", "speedup"}
    assert [(r["runner"], r["precision"]) for r in out["rows"]] == [("trainer", "fp32"), ("moduletune", "fp32")]
    for row in out["rows"]:
        assert set(row) >= {
            "runner",
            "modules",
            "precision",
            "wall_seconds",
            "examples_per_second",
            "peak_memory_mb",
            "metric",
        }
        assert row["modules"] == "layernorm@last"
        assert row["wall_seconds"] > 0 and row["examples_per_second"] > 0
        assert 0 <= row["metric"] <= 1
        assert row["peak_memory_mb"] is None or row["peak_memory_mb"] >= 0
    assert set(out["speedup"]) == {"layernorm@last"} and out["speedup"]["layernorm@last"] > 0


def test_sweep_prefix_cache_smoke(glue_dir, tmp_path):
    stdout, out = run_bench(
        "bench.sweep_prefix_cache",
        [
            "--task",
            "rte",
            "--families",
            "LN",
            "--layers",
            "5",
            "--max-train",
            "32",
            "--max-eval",
            "16",
            "--device",
            "cpu",
        ],
        glue_dir,
        tmp_path,
    )
    assert "total wall" in stdout
    assert set(out) >= {"modes", "speedup", "metric_diff", "runs"}
    assert out["runs_per_mode"] == 1 and len(out["runs"]) == 2
    assert {r["mode"] for r in out["runs"]} == {"off", "on"}
    for mode in ("off", "on"):
        assert out["modes"][mode]["runs"] == 1 and out["modes"][mode]["wall_seconds"] > 0
    assert out["speedup"] > 0
    assert 0 <= out["metric_diff"]["mean_abs"] <= out["metric_diff"]["max_abs"] <= 1


def test_step_profile_smoke(glue_dir, tmp_path):
    stdout, out = run_bench(
        "bench.step_profile",
        [
            "--task",
            "rte",
            "--modules",
            "layernorm@last",
            "--max-train",
            "96",
            "--batch-size",
            "16",
            "--warm-steps",
            "2",
            "--steps",
            "3",
            "--device",
            "cpu",
        ],
        glue_dir,
        tmp_path,
    )
    assert "host operation" in stdout and out["steps"] == 3 and out["wall_ms_per_step"] > 0
    assert out["busy_ms_per_step"] is None  # no GPU kernels on a CPU run
    assert out["host_ops"] and all(o["self_cpu_ms_per_step"] > 0 for o in out["host_ops"])
    assert any(o["name"] == "aten::addmm" for o in out["host_ops"])  # the linears' matmuls are in the window


def test_step_profile_says_when_the_run_is_too_short(glue_dir, tmp_path):
    env = {**os.environ, "MODULETUNE_GLUE_DIR": str(glue_dir), "MODULETUNE_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.step_profile",
            "--task",
            "rte",
            "--max-train",
            "32",
            "--batch-size",
            "16",
            "--warm-steps",
            "5",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 2 and "fewer than --warm-steps 5 + 1" in proc.stderr


def test_peft_vs_moduletune_smoke(glue_dir, tmp_path):
    stdout, out = run_bench(
        "bench.peft_vs_moduletune",
        ["--task", "rte", "--modules", "lora:Q+V@last", "--max-train", "32", "--max-eval", "16", "--device", "cpu"],
        glue_dir,
        tmp_path,
    )
    assert "moduletune / peft + Trainer" in stdout and out["ratio"] > 0
    peft_row, ours = out["rows"]
    # The same LoRA on both sides: r=8 on layer 5's query and value, plus the head.
    assert peft_row["trainable_params"] == ours["trainable_params"] == 2 * 8 * (384 + 384) + 770
