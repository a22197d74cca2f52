"""A run's artifact exported for others: a peft adapter (LNTuningConfig; a LoRA or (IA)³ run's own LoraConfig or
IA3Config) or a merged transformers model, each with a tokenizer and a model card, and pushed to the Hugging Face Hub;
so a tuned module can be used without moduletune."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from moduletune.tuning import glue, methods, model_card
from moduletune.tuning.config import RunConfig
from moduletune.tuning.models import resolve_model
from moduletune.tuning.modules import adapter_targets, select_parameters
from moduletune.tuning.text import one_line

FORMATS = ("peft", "transformers")
ADAPTER_PREFIX = "base_model.model."  # where peft puts the wrapped model's names in an adapter's state dict
ADAPTER_COPY = ".ln_tuning_layers."  # LNTuning's trainable copy of a targeted module, inside its wrapper
ADAPTER_FILE = "adapter_model.safetensors"  # peft's file of the adapter's tensors
# torch, peft and the artifact loader are imported where they are used: `moduletune --help` loads none of them.
# The messages peft and transformers print while wrapping that say nothing about an export: LNTuning copies any
# module type (a LayerNorm is "unsupported" only for features it does not use), and the deprecation is theirs.
QUIET = (r"Unsupported layer type", r".*is_gradient_checkpointing")


class ExportError(ValueError):
    """An export that cannot be made as asked; the message says why and what can be done instead."""


@dataclass(frozen=True)
class AdapterPlan:
    """The LNTuning adapter that holds a run exactly: the modules it copies and trains, and the head it saves."""

    target_modules: list[str]  # full module names, each trained whole by the run
    modules_to_save: list[str]  # the task head's top-level modules (trained, or frozen at the run's seeded init)
    tensors: list[str]  # every parameter name the adapter must hold: the targets' and the head's


def check_format(fmt: str) -> str:
    """The format's canonical name, or an error naming the allowed ones."""
    key = str(fmt or "").strip().lower()
    if key not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}'; allowed: {', '.join(FORMATS)}")
    return key


def check_output(out_dir) -> Path:
    """The folder to write: new, or an existing empty folder; never one that holds anything (nothing is overwritten)."""
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"output {out} already exists and is not an empty folder; choose a new folder")
    return out


def read_config(artifact_dir) -> RunConfig:
    """The run's config from its artifact folder, or an error naming what the folder lacks."""
    from moduletune.tuning.artifacts import CONFIG_FILE, TENSORS_FILE

    path = Path(artifact_dir).expanduser()
    if not (path / TENSORS_FILE).is_file() or not (path / CONFIG_FILE).is_file():
        raise ExportError(f"no artifact at {path} (expected {TENSORS_FILE} and {CONFIG_FILE} from a succeeded run)")
    return RunConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))


def trained_names(artifact_dir) -> list[str]:
    """The names of the tensors the run trained: exactly what its artifact holds."""
    from moduletune.tuning.artifacts import TENSORS_FILE

    return saved_tensor_names(Path(artifact_dir).expanduser() / TENSORS_FILE)


def saved_tensor_names(path: Path) -> list[str]:
    """The tensor names in a safetensors file, without reading the tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return sorted(f.keys())


def rebuild(artifact_dir):
    """(model, tokenizer, config): the trained model as the run left it, on the CPU (a frozen head included:
    load_tuned draws it again from the run's seed)."""
    from moduletune.tuning.artifacts import load_tuned

    return load_tuned(Path(artifact_dir).expanduser())


def head_modules(model) -> list[str]:
    """The task head's top-level modules (BERT: classifier; DistilBERT: pre_classifier, classifier)."""
    return [
        name
        for name, child in model.named_children()
        if name != model.base_model_prefix and next(child.parameters(), None) is not None
    ]


def adapter_plan(model, trained: list[str], config: RunConfig) -> AdapterPlan:
    """The LNTuning adapter that reproduces the run exactly, or an ExportError saying why none does.

    LNTuning replaces each targeted module by a wrapper holding a trainable copy of it, so an adapter holds whole
    modules: it expresses a run exactly when every tensor the run trained is one of a module trained whole."""
    label = "+".join(config.modules)
    instead = "export it in the transformers format instead (a merged model)"
    if any(f.startswith("random:") for f in config.modules):
        raise ExportError(
            f"{label} trains a random subset of single weights, which no peft adapter holds exactly; {instead}"
        )
    if "full" in config.modules:
        raise ExportError(f"{label} is full fine-tuning: every weight is trained, so there is no adapter; {instead}")
    prefix = model.base_model_prefix + "."
    encoder = [n for n in trained if n.startswith(prefix)]
    if not encoder:
        raise ExportError(f"{label} trains no encoder module (the head alone), so there is no adapter; {instead}")
    by_module: dict[str, set[str]] = {}
    for name in encoder:
        module, _, param = name.rpartition(".")
        by_module.setdefault(module, set()).add(param)
    for module, params in by_module.items():
        whole = {n for n, _ in model.get_submodule(module).named_parameters(recurse=False)}
        if params != whole:
            raise ExportError(
                f"{label} trains part of a module ({module}: {', '.join(sorted(params))} but not "
                f"{', '.join(sorted(whole - params))}), and a peft LNTuning adapter trains whole modules; {instead}"
            )
    heads = head_modules(model)
    head_tensors = [n for n, _ in model.named_parameters() if n.split(".", 1)[0] in heads]
    return AdapterPlan(sorted(by_module), heads, sorted(set(encoder) | set(head_tensors)))


def adapter_tensor_names(state_dict_keys) -> list[str]:
    """An adapter's state-dict names as the model's own (the copy inside LNTuning's wrapper is the module)."""
    return sorted(k.removeprefix(ADAPTER_PREFIX).replace(ADAPTER_COPY, ".") for k in state_dict_keys)


def save_adapter(model, plan: AdapterPlan, folder: Path, base_model: str) -> None:
    """Wrap the trained model in the plan's LNTuning adapter (its copies are the trained modules) and save it."""
    from peft import LNTuningConfig, TaskType, get_peft_model

    adapter = LNTuningConfig(
        task_type=TaskType.SEQ_CLS, target_modules=plan.target_modules, modules_to_save=plan.modules_to_save
    )
    with warnings.catch_warnings():
        for message in QUIET:
            warnings.filterwarnings("ignore", message=message)
        peft_model = get_peft_model(model, adapter)
    # Where the base comes from for whoever loads the adapter: a Hub id where there is one, not this machine's path.
    peft_model.peft_config["default"].base_model_name_or_path = base_model
    # save_embedding_layers=False: the vocabulary is the base's (no run resizes it), so peft need not ask the Hub, and
    # adds no embedding matrix beside the trained copies.
    peft_model.save_pretrained(str(folder), save_embedding_layers=False)
    held = adapter_tensor_names(saved_tensor_names(folder / ADAPTER_FILE))
    if held != plan.tensors:
        # A peft version that matches or saves differently must not produce an adapter that silently differs.
        extra, missing = sorted(set(held) - set(plan.tensors)), sorted(set(plan.tensors) - set(held))
        raise ExportError(
            f"the peft adapter would not hold exactly the run's tensors (extra: {extra[:3]}, missing: {missing[:3]}); "
            "export it in the transformers format instead"
        )


def method_peft_model(artifact_dir, config: RunConfig):
    """A LoRA or (IA)³ run as peft's own PeftModel: the run's base (its seeded head), the method's config on the same
    modules with the head saved whole, and the run's trained tensors put in place."""
    from peft import TaskType, get_peft_model
    from safetensors.torch import load_file

    from moduletune.tuning.artifacts import TENSORS_FILE, base_classifier

    model = base_classifier(config)
    method, targets, feedforward = adapter_targets(model, config.modules, config.layers)
    adapter = methods.peft_config(method, targets, feedforward, methods.AdapterSettings.of(config))
    adapter.task_type, adapter.modules_to_save = TaskType.SEQ_CLS, head_modules(model)
    peft_model = get_peft_model(model, adapter)
    params = dict(peft_model.base_model.model.named_parameters())
    heads = set(adapter.modules_to_save)
    for name, tensor in load_file(str(Path(artifact_dir).expanduser() / TENSORS_FILE)).items():
        top, _, rest = name.partition(".")
        # The head trains inside peft's ModulesToSaveWrapper, as the copy it saves; an adapter tensor is where it was.
        key = f"{top}.modules_to_save.{methods.ADAPTER_NAME}.{rest}" if top in heads else name
        params[key].data.copy_(tensor)
    return peft_model.eval()


def save_peft_model(peft_model, folder: Path, base_model: str) -> None:
    """peft's own adapter folder (adapter_config.json and its tensors), naming where the base comes from."""
    peft_model.peft_config[methods.ADAPTER_NAME].base_model_name_or_path = base_model
    peft_model.save_pretrained(str(folder), save_embedding_layers=False)


def save_merged(model, task: glue.GlueTask, folder: Path) -> None:
    """The whole model, trained tensors in place, as save_pretrained writes it; labels named for pipelines."""
    if not task.is_regression:
        model.config.id2label = dict(enumerate(task.label_names))
        model.config.label2id = {name: i for i, name in enumerate(task.label_names)}
    model.save_pretrained(str(folder))


def export_artifact(artifact_dir, fmt: str, out_dir, repo_id: str | None = None) -> Path:
    """Write the run whose artifact is at artifact_dir to out_dir as fmt ("peft" or "transformers"): the model or
    adapter, its tokenizer and a model card (README.md; repo_id: the Hub repo its usage names). Nothing is left
    behind when it fails."""
    from moduletune.tuning.artifacts import RESULT_FILE

    fmt, out = check_format(fmt), check_output(out_dir)
    config = read_config(artifact_dir)
    if fmt == "peft":
        require_peft()
    model, tokenizer, config = rebuild(artifact_dir)
    settings = methods.AdapterSettings.of(config)
    counts = select_parameters(model, config.modules, config.layers, config.train_head, config.seed, settings).counts()
    method = methods.method_of(config.modules[0])
    plan = adapter_plan(model, trained_names(artifact_dir), config) if fmt == "peft" and not method else None
    base = model_card.hub_base_model(config.model) or resolve_model(config.model)
    result_file = Path(artifact_dir).expanduser() / RESULT_FILE
    result = json.loads(result_file.read_text()) if result_file.is_file() else None

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        if method is not None:
            peft_model = method_peft_model(artifact_dir, config)
            targets = sorted(peft_model.peft_config[methods.ADAPTER_NAME].target_modules)
            if fmt == "peft":
                save_peft_model(peft_model, partial, base)
            else:
                save_merged(peft_model.merge_and_unload(), glue.get_task(config.task), partial)
        elif plan is not None:
            save_adapter(model, plan, partial, base)
        else:
            save_merged(model, glue.get_task(config.task), partial)
        tokenizer.save_pretrained(str(partial))
        targets = plan.target_modules if plan else targets if method and fmt == "peft" else None
        card = model_card.model_card(config, counts, result, fmt, targets, repo_id)
        (partial / "README.md").write_text(card)  # replaces the template peft writes
        if out.exists():
            out.rmdir()  # empty, as check_output made sure
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def require_peft() -> None:
    """peft is an optional extra: say how to get it rather than fail on an import."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ExportError(
            "the peft format needs peft: pip install 'moduletune[export]' (or pip install peft)"
        ) from None


HUB_HINT = "log in with `hf auth login` or set HF_TOKEN"


def check_repo_id(repo_id: str) -> str:
    """A Hub repo id (name or owner/name), checked before anything is exported."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = str(repo_id or "").strip()
    try:
        validate_repo_id(text)
    except HFValidationError as err:
        raise ExportError(f"'{text}' is not a Hub repo id (name or owner/name): {one_line(err)}") from None
    return text


def push_to_hub(folder, repo_id: str, private: bool = False, endpoint: str | None = None) -> str:
    """Upload an exported folder to a Hub model repo (created if missing); its URL, or an ExportError of one line
    when the Hub cannot be reached or the login is missing or refused. endpoint: default HF_ENDPOINT, else the Hub."""
    import huggingface_hub
    from huggingface_hub.errors import HTTPError

    repo_id, folder = check_repo_id(repo_id), Path(folder)
    token = huggingface_hub.get_token()
    if not token:
        raise ExportError(f"cannot push to the Hub: not logged in; {HUB_HINT} (the export is in {folder})")
    api = huggingface_hub.HfApi(endpoint=endpoint, token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=url.repo_id, folder_path=str(folder), repo_type="model", commit_message="moduletune export"
        )
    except (HTTPError, OSError, ValueError) as err:
        where = endpoint or huggingface_hub.constants.ENDPOINT
        raise ExportError(
            f"could not push {folder} to {repo_id} on {where}: {one_line(err)}; check the network and the login "
            f"({HUB_HINT}); the export stays in {folder}"
        ) from None
    return str(url)
