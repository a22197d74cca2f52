"""The `moduletune run | count | magnitudes` commands, as a user types them."""

import json
import os
import subprocess
import sys

import pytest
import transformers


def cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "moduletune.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ},
    )


def test_count_on_bert_base_configuration(tmp_path):
    transformers.BertConfig().save_pretrained(tmp_path)  # config only: no weights anywhere
    proc = cli("count", "--model", str(tmp_path), "--modules", "LN", "--layers", "11", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["module_params"] == 3072 and out["encoder_params"] == 109_482_240
    assert f"{out['module_pct']:.4f}" == "0.0028" and out["head_params"] == 1538
    proc = cli("count", "--model", str(tmp_path), "--modules", "query", "--layers", "all", "--json")
    assert json.loads(proc.stdout)["module_params"] == 7_087_104


def test_count_on_the_embedded_model():
    out = json.loads(cli("count", "--modules", "layernorm", "--layers", "5", "--json").stdout)
    assert out["module_params"] == 1536 and out["num_layers"] == 6


def test_magnitudes_json():
    proc = cli("magnitudes", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["summary"]["weight"]["layernorm"] > 9 * out["summary"]["weight"]["query"]
    assert {r["family"] for r in out["rows"]} >= {"query", "layernorm", "embeddings"}


@pytest.mark.parametrize(
    "args,message",
    [
        (["--task", "glue"], "allowed: cola, sst2"),
        (["--modules", "attention"], "allowed: query"),
        (["--layers", "0-"], "malformed layer spec"),
        (["--layers", "6"], "layers 0-5"),
        (["--lr", "0"], "learning rate"),
        (["--lr=-1e-3"], "learning rate"),
        (["--epochs", "0"], "epochs must be"),
        (["--model", "/no/such/model"], "/no/such/model does not exist"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, glue_dir):
    proc = cli("run", "--max-train", "8", "--glue-dir", str(glue_dir), *args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("moduletune: error:") and message in lines[-1], proc.stderr


def test_missing_glue_folder_names_the_path(tmp_path):
    proc = cli("run", "--task", "rte", "--max-train", "8", "--glue-dir", str(tmp_path / "nowhere"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert str(tmp_path / "nowhere" / "RTE") in proc.stderr


def test_hub_id_while_offline_is_one_clear_line():
    proc = cli("count", "--model", "no-such-org/no-such-model-xyz", "--json")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "could not load model 'no-such-org/no-such-model-xyz'" in proc.stderr
