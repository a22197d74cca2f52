"""moduletune export: a peft adapter and a merged transformers model that give the run's own logits, the runs with
no exact adapter refused by name, the model card, the Hub push up to the network, and the command on real runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from moduletune.tuning.artifacts import TENSORS_FILE, load_tuned, save_artifact
from moduletune.tuning.config import RunConfig
from moduletune.tuning.export import ADAPTER_FILE, ExportError, adapter_tensor_names, export_artifact, push_to_hub
from moduletune.tuning.models import load_classifier, load_tokenizer
from moduletune.tuning.modules import select_parameters

MODEL = "all-MiniLM-L6-v2"
PAIRS = [
    ("A man is playing a guitar on stage.", "Someone is making music."),
    ("The committee rejected the proposal.", "The proposal was accepted by everyone."),
    ("Stocks fell sharply on Monday.", "Markets dropped at the start of the week."),
]


def make_artifact(folder: Path, modules, layers="all", task="rte", train_head=True, scale=0.3) -> Path:
    """A real artifact (save_artifact) whose trained tensors are moved well away from the pre-trained ones, so the
    export of anything but exactly those tensors shows in the logits."""
    config = RunConfig(task=task, modules=tuple(modules.split("+")), layers=layers, train_head=train_head)
    config.validate()
    model = load_classifier(MODEL, 1 if task == "stsb" else 2)
    selection = select_parameters(model, config.modules, config.layers, config.train_head, config.seed)
    params = dict(model.named_parameters())
    noise = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name in selection.names:
            p = params[name]
            p.add_(scale * max(float(p.std()) if p.numel() > 1 else 0.0, 0.05) * torch.randn(p.shape, generator=noise))
    return save_artifact(folder, model, selection, config)


def logits(model, tokenizer=None) -> torch.Tensor:
    tokenizer = tokenizer or load_tokenizer(MODEL)
    enc = tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model.eval()(**enc).logits.float()


def reference(artifact: Path) -> torch.Tensor:
    """The logits of moduletune's own loader; they must differ from the untouched base's by far more than 1e-5."""
    tuned = logits(load_tuned(artifact)[0])
    base = load_classifier(MODEL, tuned.shape[-1])
    # The base's head is random: compare the encoder alone, through the tuned head, to see the encoder's change.
    base.load_state_dict({k: v for k, v in load_file(str(artifact / TENSORS_FILE)).items() if "classifier" in k}, False)
    encoder_moved = (logits(base) - tuned).abs().max()
    assert encoder_moved > 1e-3, (
        f"the artifact barely changes the logits ({encoder_moved:.2e}): the test would be blind"
    )
    return tuned


def peft_logits(folder: Path, num_labels: int = 2) -> torch.Tensor:
    from peft import PeftModel

    return logits(PeftModel.from_pretrained(load_classifier(MODEL, num_labels), str(folder)))


ADAPTER_RUNS = [
    ("layernorm", "5", ["bert.encoder.layer.5.attention.output.LayerNorm", "bert.encoder.layer.5.output.LayerNorm"]),
    (
        "query+value",
        "all",
        [f"bert.encoder.layer.{i}.attention.self.{m}" for i in range(6) for m in ("query", "value")],
    ),
    ("ffn_output", "0-1", ["bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.output.dense"]),
    (
        "embeddings",
        "all",
        [
            f"bert.embeddings.{m}"
            for m in ("LayerNorm", "position_embeddings", "token_type_embeddings", "word_embeddings")
        ],
    ),
    (
        "layernorm+attention_output",
        "2",
        [
            f"bert.encoder.layer.2.{m}"
            for m in ("attention.output.LayerNorm", "attention.output.dense", "output.LayerNorm")
        ],
    ),
]


@pytest.mark.parametrize("modules,layers,targets", ADAPTER_RUNS, ids=[f"{m}@{layer}" for m, layer, _ in ADAPTER_RUNS])
def test_peft_adapter_gives_the_runs_logits(tmp_path, modules, layers, targets):
    artifact = make_artifact(tmp_path / "artifact", modules, layers)
    out = export_artifact(artifact, "peft", tmp_path / "adapter")
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LN_TUNING" and sorted(adapter["target_modules"]) == sorted(targets)
    assert "classifier" in adapter["modules_to_save"]
    assert adapter["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    # The adapter holds exactly the trained tensors (the targets' copies and the head), with the trained values.
    held = load_file(str(out / ADAPTER_FILE))
    trained = load_file(str(artifact / TENSORS_FILE))
    assert adapter_tensor_names(held) == sorted(trained)
    by_name = {adapter_tensor_names([key])[0]: value for key, value in held.items()}
    assert all(torch.equal(by_name[name], trained[name]) for name in trained)
    assert torch.allclose(peft_logits(out), reference(artifact), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "modules,layers", [("layernorm", "5"), ("query+value", "all"), ("full", "all"), ("bias", "all")]
)
def test_transformers_export_loads_with_the_runs_logits(tmp_path, modules, layers):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    artifact = make_artifact(tmp_path / "artifact", modules, layers)
    out = export_artifact(artifact, "transformers", tmp_path / "merged")
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "entailment", 1: "not_entailment"}
    assert torch.allclose(logits(model, AutoTokenizer.from_pretrained(out)), reference(artifact), atol=1e-5, rtol=0)


METHOD_RUNS = [
    (
        "lora:Q+V",
        "all",
        "LORA",
        [f"bert.encoder.layer.{i}.attention.self.{m}" for i in range(6) for m in ("query", "value")],
    ),
    ("lora:FO", "5", "LORA", ["bert.encoder.layer.5.output.dense"]),
    (
        "ia3:K+V+FO",
        "4-5",
        "IA3",
        [
            f"bert.encoder.layer.{i}.{m}"
            for i in (4, 5)
            for m in ("attention.self.key", "attention.self.value", "output.dense")
        ],
    ),
]


@pytest.mark.parametrize(
    "modules,layers,peft_type,targets", METHOD_RUNS, ids=[f"{m}@{x}" for m, x, _, _ in METHOD_RUNS]
)
def test_method_run_exports_as_its_own_peft_adapter_and_merged(tmp_path, modules, layers, peft_type, targets):
    from transformers import AutoModelForSequenceClassification

    # A fresh adapter is the identity (B = 0, scales = 1): moved far, so a wrong export shows in the logits.
    artifact = make_artifact(tmp_path / "artifact", modules, layers, scale=3.0)
    want = reference(artifact)
    out = export_artifact(artifact, "peft", tmp_path / "adapter")
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == peft_type and sorted(adapter["target_modules"]) == sorted(targets)
    assert "classifier" in adapter["modules_to_save"]
    assert ("LoRA" if peft_type == "LORA" else "(IA)³") in (out / "README.md").read_text()
    assert torch.allclose(peft_logits(out), want, atol=1e-5, rtol=0)
    merged = AutoModelForSequenceClassification.from_pretrained(
        export_artifact(artifact, "transformers", tmp_path / "m")
    )
    assert not [n for n, _ in merged.named_parameters() if "lora_" in n or "ia3_" in n or "base_layer" in n]
    assert torch.allclose(logits(merged), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "modules,layers,message",
    [
        ("bias", "all", "trains part of a module"),
        ("random:layernorm", "5", "random subset of single weights"),
        ("full", "all", "full fine-tuning"),
        ("classifier", "all", "trains no encoder module"),
    ],
)
def test_runs_without_an_exact_adapter_are_refused_for_peft(tmp_path, modules, layers, message):
    artifact = make_artifact(tmp_path / "artifact", modules, layers)
    with pytest.raises(ExportError, match=message) as err:
        export_artifact(artifact, "peft", tmp_path / "adapter")
    assert "transformers format" in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]  # nothing half-made


def test_bias_message_names_the_part_left_out(tmp_path):
    artifact = make_artifact(tmp_path / "artifact", "bias", "3")
    with pytest.raises(ExportError, match=r"encoder\.layer\.3\.[A-Za-z.]+: bias but not weight"):
        export_artifact(artifact, "peft", tmp_path / "adapter")


def test_bad_format_output_and_folder_are_refused(tmp_path):
    artifact = make_artifact(tmp_path / "artifact", "layernorm", "5")
    with pytest.raises(ExportError, match="allowed: peft, transformers"):
        export_artifact(artifact, "onnx", tmp_path / "x")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an empty folder"):
        export_artifact(artifact, "transformers", tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    with pytest.raises(ExportError, match="no artifact at"):
        export_artifact(tmp_path / "taken", "transformers", tmp_path / "y")
    (tmp_path / "empty").mkdir()
    assert (export_artifact(artifact, "peft", tmp_path / "empty") / ADAPTER_FILE).is_file()  # an empty one is fine


def test_model_card_has_hub_metadata_and_the_run(tmp_path):
    import yaml

    artifact = make_artifact(tmp_path / "artifact", "layernorm", "5")
    out = export_artifact(artifact, "peft", tmp_path / "adapter", repo_id="me/minilm-ln5-rte")
    text = (out / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["library_name"] == "peft"
    assert meta["datasets"] == ["nyu-mll/glue"] and meta["metrics"] == ["accuracy"]
    assert {"moduletune", "glue", "rte"} <= set(meta["tags"])
    assert "model-index" not in meta  # no result was recorded: nothing is claimed
    assert "GLUE RTE" in text and "2,306 of 22,713,986 parameters (0.0102%)" in text
    assert '"layers": "5"' in text and '"lr": 0.01' in text and "Exported by moduletune" in text
    assert 'PeftModel.from_pretrained(base, "me/minilm-ln5-rte")' in text


def test_no_head_run_exports_the_head_it_was_evaluated_with(tmp_path, glue_dir):
    """A --no-head run's artifact lacks the head: the export draws it as the run did. On STS-B the Pearson of the
    exported model on the run's evaluation rows is the run's own, and a head drawn otherwise gives another."""
    from moduletune.tuning import glue
    from moduletune.tuning.artifacts import predict
    from moduletune.tuning.train import fine_tune, load_splits

    config = RunConfig(
        task="stsb",
        modules=("layernorm",),
        layers="5",
        train_head=False,
        max_train=16,
        max_eval=64,
        glue_dir=str(glue_dir),
    )
    result = fine_tune(config, output_dir=tmp_path / "artifact")
    out = export_artifact(tmp_path / "artifact", "transformers", tmp_path / "merged")
    task, _, evals = load_splits(config)
    rows = evals["validation"]
    texts = list(zip(*(rows[c] for c in task.text_columns)))

    def pearson(model, tokenizer):
        scores = [p["score"] for p in predict(model, tokenizer, task, texts, max_len=config.max_seq_len)]
        return glue.compute_metrics(task, scores, list(rows["label"]))["pearson"]

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    merged = AutoModelForSequenceClassification.from_pretrained(out)
    exported = pearson(merged, AutoTokenizer.from_pretrained(out))
    assert exported == pytest.approx(result.metrics["pearson"], abs=1e-5)
    adapter = export_artifact(tmp_path / "artifact", "peft", tmp_path / "adapter")  # the frozen head is in it too
    assert torch.allclose(peft_logits(adapter, num_labels=1), logits(merged), atol=1e-5, rtol=0)
    # moduletune's own loader draws the frozen head from the run's seed too, whatever the caller's RNG holds.
    torch.manual_seed(config.seed + 1)
    again = pearson(*load_tuned(tmp_path / "artifact")[:2])
    assert again == pytest.approx(result.metrics["pearson"], abs=1e-5)
    # ... and the seed is what makes it the run's head: one drawn from another seed scores otherwise.
    from moduletune.tuning.models import load_classifier

    torch.manual_seed(config.seed + 1)
    drawn = load_classifier(config.model, 1)
    drawn.load_state_dict(merged.state_dict() | {k: v for k, v in drawn.state_dict().items() if "classifier" in k})
    assert abs(pearson(drawn.eval(), AutoTokenizer.from_pretrained(out)) - result.metrics["pearson"]) > 1e-3


def test_push_to_an_unreachable_hub_is_one_line(tmp_path, monkeypatch):
    artifact = make_artifact(tmp_path / "artifact", "layernorm", "5")
    out = export_artifact(artifact, "peft", tmp_path / "adapter")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    with pytest.raises(ExportError, match="could not push") as err:
        push_to_hub(out, "me/minilm-ln5-rte", endpoint="http://127.0.0.1:9")
    assert "127.0.0.1:9" in str(err.value) and "\n" not in str(err.value) and str(out) in str(err.value)
    with pytest.raises(ExportError, match="not a Hub repo id"):
        push_to_hub(out, "not a repo id!", endpoint="http://127.0.0.1:9")
    assert (out / ADAPTER_FILE).is_file()


def cli(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "moduletune.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def one_error_line(proc) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("moduletune: error:"), proc.stderr
    return lines[-1]


def test_cli_exports_a_trained_run_as_peft(tmp_path, glue_dir):
    run = cli(
        "run", "--task", "rte", "--modules", "LN+V", "--layers", "4-5", "--max-train", "16", "--max-eval", "16",
        "--glue-dir", str(glue_dir), "--output", str(tmp_path / "artifact"), "--quiet",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    proc = cli(
        "export", str(tmp_path / "artifact"), "--format", "peft", "--output", str(tmp_path / "adapter"), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {
        "output": str(tmp_path / "adapter"),
        "format": "peft",
        "url": None,
    }
    expected = logits(load_tuned(tmp_path / "artifact")[0])
    assert torch.allclose(peft_logits(tmp_path / "adapter"), expected, atol=1e-5, rtol=0)
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert "Evaluated on 16 examples" in card and "| accuracy |" in card


def test_cli_exports_a_registry_run_by_id(tmp_path, home, glue_dir):
    from transformers import AutoModelForSequenceClassification

    from moduletune.tasks.artifacts import export_run
    from moduletune.tasks.jobs import run_job
    from moduletune.tasks.registry import Registry
    from moduletune.tasks.submission import submit

    registry = Registry()
    config = RunConfig(
        task="rte", modules=("layernorm",), layers="5", max_train=16, max_eval=16, glue_dir=str(glue_dir)
    )
    run_id = submit(registry, config)
    with pytest.raises(ExportError, match=f"run {run_id} is queued"):
        export_run(registry, run_id, "peft", tmp_path / "early")
    assert run_job(run_id, registry) == "succeeded"
    proc = cli("export", str(run_id), "--format", "peft", "--output", str(tmp_path / "adapter"))
    assert proc.returncode == 0, proc.stderr
    expected = logits(load_tuned(registry.get(run_id).artifact_dir)[0])
    assert torch.allclose(peft_logits(tmp_path / "adapter"), expected, atol=1e-5, rtol=0)
    merged = export_run(registry, run_id, "transformers", tmp_path / "merged")
    assert torch.allclose(logits(AutoModelForSequenceClassification.from_pretrained(merged)), expected, atol=1e-5)
    assert "no run with id 999" in one_error_line(
        cli("export", "999", "--format", "peft", "--output", str(tmp_path / "z"))
    )


def test_cli_refusals_and_push_errors_are_one_line(tmp_path):
    artifact = make_artifact(tmp_path / "artifact", "bias", "all")
    line = one_error_line(cli("export", str(artifact), "--format", "peft", "--output", str(tmp_path / "a")))
    assert "trains part of a module" in line and "transformers format" in line
    assert not (tmp_path / "a").exists()
    line = one_error_line(
        cli("export", str(artifact), "--format", "peft", "--output", str(tmp_path / "b"), "--push-to-hub", "bad id!")
    )
    assert "not a Hub repo id" in line and not (tmp_path / "b").exists()  # refused before anything was exported
    offline = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_not_a_real_token"}
    args = ("export", str(artifact), "--format", "transformers", "--push-to-hub", "me/minilm-bitfit")
    line = one_error_line(cli(*args, "--output", str(tmp_path / "c"), env=offline))
    assert "could not push" in line and "127.0.0.1:9" in line and "the export stays in" in line
    assert (tmp_path / "c" / "model.safetensors").is_file()  # the export itself is kept, loadable
    no_login = {"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf-home"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    line = one_error_line(cli(*args, "--output", str(tmp_path / "d"), env=no_login))
    assert "not logged in" in line and "hf auth login" in line


def test_model_index_only_for_a_whole_validation_split():
    from huggingface_hub import ModelCard

    from moduletune.tuning.model_card import model_card

    counts = {"trainable_params": 2306, "total_params": 22713986, "trainable_pct": 0.0102, "module_params": 1536,
              "module_pct": 0.0068, "head_params": 770}  # fmt: skip
    result = {"metrics": {"accuracy_matched": 0.81234, "accuracy_mismatched": 0.79}, "eval_examples": 19647}
    whole = RunConfig(task="mnli", modules=("layernorm",), layers="5")
    card = ModelCard(model_card(whole, counts, result, "transformers"))  # the Hub library parses and checks it
    assert card.data.library_name == "transformers"
    got = {(r.dataset_config, r.dataset_split, r.metric_type, r.metric_value) for r in card.data.eval_results}
    assert got == {
        ("mnli", "validation_matched", "accuracy", 0.8123),
        ("mnli", "validation_mismatched", "accuracy", 0.79),
    }
    for sampled in (whole.replace(max_eval=500), whole.replace(eval_on="holdout")):
        card = ModelCard(model_card(sampled, counts, result, "transformers"))
        assert not card.data.eval_results and "| accuracy_matched | 0.8123 |" in card.content


def test_every_glue_task_has_a_card():
    from huggingface_hub import ModelCard

    from moduletune.tuning import glue
    from moduletune.tuning.model_card import model_card

    counts = {"trainable_params": 1, "total_params": 2, "trainable_pct": 50.0, "module_params": 1, "module_pct": 50.0,
              "head_params": 0}  # fmt: skip
    for name, task in glue.TASKS.items():
        card = ModelCard(model_card(RunConfig(task=name, train_head=False), counts, None, "peft", ["m"]))
        assert card.data.datasets == ["nyu-mll/glue"] and card.data.metrics and f"GLUE {task.folder}" in card.content


@pytest.mark.parametrize("modules,layers", [("lora:Q+V", "all"), ("ia3:K+V+FO", "4-5")])
def test_an_adapter_runs_deltas_are_what_it_adds_to_the_weights_it_wraps(tmp_path, modules, layers):
    """The Weights tab's deltas of a LoRA or (IA)³ run: ||Δw||/||w|| of each wrapped module once merged, one row per
    wrapped family and layer (an adapter's own tensors are no module's weights)."""
    from moduletune.tuning.magnitudes import run_deltas

    artifact = make_artifact(tmp_path / "artifact", modules, layers, scale=3.0)
    rows = run_deltas(artifact)
    families = {"lora:Q+V": {"query", "value"}, "ia3:K+V+FO": {"key", "value", "ffn_output"}}[modules]
    layer_ids = set(range(6)) if layers == "all" else {4, 5}
    assert {(r["family"], r["layer"]) for r in rows} == {(f, i) for f in families for i in layer_ids}
    assert all(r["kind"] == "weight" and r["relative_change"] > 0.01 for r in rows)
