"""fine_tune(config, on_event) -> RunResult: train only the chosen modules, in a loop you can read in one go."""

from __future__ import annotations

import dataclasses
import math
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from moduletune.tuning import batches, chance, checkpoints, glue, graphs, modules, precision, prefix
from moduletune.tuning.checkpoints import CHECKPOINT_FILE
from moduletune.tuning.config import RunConfig
from moduletune.tuning.models import load_classifier, load_tokenizer, resolve_model

# on_event gets dicts: {"kind": "step", ...} every step, {"kind": "eval", ...} after each evaluation.
# Returning True asks the loop to stop at the end of that step (cooperative cancel).
EventHandler = Callable[[dict], "bool | None"]


@dataclass
class RunResult:
    """Everything a run produced, flat enough for a table row and a JSON line."""

    task: str
    model: str
    modules: list[str]
    layers: list[int]
    layer_spec: str
    metrics: dict[str, float]
    primary_metric_name: str
    primary_metric: float | None
    best_metrics: dict[str, float]
    best_step: int | None
    module_params: int
    head_params: int
    trainable_params: int
    encoder_params: int
    total_params: int
    module_pct: float
    trainable_pct: float
    learning_rate: float
    steps: int
    epochs_completed: float
    train_examples: int
    eval_examples: int
    train_seconds: float
    eval_seconds: float
    examples_per_second: float
    device: str
    precision: str
    versions: dict[str, str]
    stopped: bool = False
    resumed_from_step: int | None = None
    history: list[dict] = field(default_factory=list)
    prefix_cache: dict = field(default_factory=dict)
    cuda_graphs: dict = field(default_factory=dict)  # shapes captured, replays, eager steps, capture time
    artifact_dir: str | None = None
    # The last evaluation against chance (tuning/chance.py): majority class, 0 for correlations.
    chance_metric: float | None = None
    chance_metrics: dict[str, float] = field(default_factory=dict)
    constant_predictions: bool = False
    learned: bool = False
    learned_note: str = ""
    eval_on: str = "validation"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_device(name: str = "auto") -> torch.device:
    """auto -> the first GPU when there is one, else the CPU; refuses a GPU that is not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name} was asked for but no CUDA GPU is available; use cpu or auto")
    return device


def versions() -> dict[str, str]:
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
    }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_splits(config: RunConfig):
    """(task, train rows, {split: eval rows}): subsampled, and with eval_on="holdout" a held-out slice.

    The holdout is a seeded, stratified holdout_fraction of the subsampled training rows; the run trains
    on the rest and is evaluated on that slice alone, never on the task's validation split(s).
    """
    task = glue.get_task(config.task)
    data = glue.load_glue(task, config.glue_dir)
    stratify = None if task.is_regression else "label"
    train = glue.subsample(
        glue.require_split(data, "train", task, config.glue_dir), config.max_train, config.seed, stratify
    )
    if config.eval_on == "holdout":
        train, held = glue.split_holdout(train, config.holdout_fraction, config.seed, stratify)
        return task, train, {glue.HOLDOUT: held}
    # Eval samples use a fixed seed so every run of a study is scored on the same examples.
    evals = {
        s: glue.subsample(glue.require_split(data, s, task, config.glue_dir), config.max_eval, 0, stratify)
        for s in task.eval_splits
    }
    return task, train, evals


def prepare_data(config: RunConfig, tokenizer):
    """Load, subsample and tokenize the train split and every eval split of the run (see load_splits)."""
    task, train, evals = load_splits(config)
    encode = lambda ds: batches.encode(tokenizer, ds, task.text_columns, config.max_seq_len)  # noqa: E731
    return task, encode(train), {s: encode(ds) for s, ds in evals.items()}


def planned_steps(config: RunConfig) -> tuple[int, int]:
    """(steps per epoch, total steps) the run will take, from its training rows, without loading a model."""
    _, train, _ = load_splits(config)
    per_epoch = math.ceil(len(train) / config.batch_size)
    return per_epoch, per_epoch * config.epochs


def evaluate(
    model,
    task,
    evals: dict,
    padding: batches.Padding,
    device,
    autocast,
    batch_size: int,
    states: dict | None = None,
    first_trainable: int | None = None,
) -> dict[str, float]:
    """Metrics on every eval split, in large length-sorted batches without autograd."""
    return glue.evaluate_splits(
        task, predict(model, task, evals, padding, device, autocast, batch_size, states, first_trainable)
    )


@torch.inference_mode()
def predict(
    model,
    task,
    evals: dict,
    padding: batches.Padding,
    device,
    autocast,
    batch_size: int,
    states: dict | None = None,
    first_trainable: int | None = None,
) -> dict[str, tuple]:
    """{split: (predictions, labels)} on every eval split: class ids, or scores for regression."""
    was_training = model.training
    model.eval()
    per_split = {}
    for split, enc in evals.items():
        preds = np.empty(len(enc), dtype=np.float32 if task.is_regression else np.int64)
        split_states = (states or {}).get(split)
        for idx in batches.sorted_batches(enc.lengths, batch_size):
            batch = batches.to_device(
                {k: v for k, v in batches.collate(enc, idx, padding).items() if k != "labels"}, device
            )
            hidden = split_states.batch(idx, batch["input_ids"].shape[1], device) if split_states else None
            with autocast():
                logits = prefix.forward(model, batch, hidden, first_trainable).logits.float()
            preds[idx] = (logits.squeeze(-1) if task.is_regression else logits.argmax(-1)).cpu().numpy()
        per_split[split] = (preds, enc.labels)
    model.train(was_training)
    return per_split


def build_optimizer(model, selection: modules.Selection, lr: float, weight_decay: float, device):
    """AdamW: decay on matrices only; masked (random) tensors never decay, so their frozen entries stay put."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and name not in selection.masks else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, fused=device.type == "cuda")


def fine_tune(
    config: RunConfig,
    on_event: EventHandler | None = None,
    checkpoint_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    stop_at_step: int | None = None,
    owner: dict | None = None,
) -> RunResult:
    """Fine-tune only config.modules in config.layers (plus the head) and report honest GLUE metrics.

    With checkpoint_dir, the trainable tensors and optimizer state are saved each epoch (and every
    config.checkpoint_every steps, and when a stop is requested); a checkpoint found there is resumed.
    With output_dir, the trained tensors and the config are written there as the run's artifact.
    With stop_at_step, the run evaluates, checkpoints and returns (stopped=True) once it has taken that
    many steps; the schedule is still the one for config.epochs, so a later call with the same
    checkpoint_dir and a larger stop_at_step (or None) carries on as if never interrupted.
    A checkpoint is resumed only by the run it was made for: the same settings and the same owner (a worker
    passes its registry and run id); any other is moved aside and the run starts from step 0.
    """
    from transformers import get_linear_schedule_with_warmup

    config.validate()
    emit = on_event or (lambda event: None)
    device = resolve_device(config.device)
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")

    # cache=False for CUDA graphs: a capture cannot hold autocast's per-forward weight cache.
    def autocast(cache=True):
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16, cache_enabled=cache)

    seed_everything(config.seed)

    tokenizer = load_tokenizer(config.model)
    task, train_enc, evals = prepare_data(config, tokenizer)
    model = load_classifier(config.model, task.num_labels)
    arch = modules.architecture_for(model.config.model_type)
    use_graphs = device.type == "cuda" and config.cuda_graphs and arch.cuda_graphs and not config.compile
    # On a GPU, lengths rounded up keep tensor cores busy and the number of distinct shapes (each a
    # first-use kernel load, and with CUDA graphs a capture) small; on the CPU every padded token is pure cost.
    padding = batches.Padding(
        tokenizer.pad_token_id or 0,
        multiple=(16 if use_graphs else 8) if device.type == "cuda" else None,
        max_len=config.max_seq_len,
    )
    selection = modules.select_parameters(model, config.modules, config.layers, config.train_head, config.seed)
    model.to(device).train()
    modules.apply_selection(model, selection)  # after the move, so random masks live beside their gradients
    if use_bf16:
        # The same arithmetic without casting every frozen weight on every use (tuning/precision.py).
        precision.store_frozen_linears(model, torch.bfloat16)

    if config.compile:
        model.compile()  # compiles forward in place; parameter names (and artifacts) stay the same

    # Frozen prefix: layers below `first` never need autograd; their output can be computed once.
    first = modules.lowest_trainable_layer(model, selection)
    cache_eval = bool(first) and config.prefix_cache != "off"
    cache_train = cache_eval and (config.prefix_cache == "on" or not prefix.prefix_has_dropout(model, first))

    def prefix_states(enc):
        key = (resolve_model(config.model), enc.key, first, str(device), use_bf16)
        return prefix.shared_cache().get_or_compute(
            key, lambda: prefix.compute_states(model, enc, first, padding, device, autocast, config.eval_batch_size)
        )

    t0 = time.perf_counter()
    train_states = prefix_states(train_enc) if cache_train else None
    prefix_train_seconds = time.perf_counter() - t0
    eval_states = {s: prefix_states(e) for s, e in evals.items()} if cache_eval else None
    prefix_eval_seconds = time.perf_counter() - t0 - prefix_train_seconds

    lr = config.learning_rate
    steps_per_epoch = math.ceil(len(train_enc) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = build_optimizer(model, selection, lr, config.weight_decay, device)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    trainable = [p for p in model.parameters() if p.requires_grad]
    graphed = graphs.GraphedSteps(model, config.batch_size) if use_graphs else None

    def step_loss(batch, hidden, autocast_cache: bool = True):
        with autocast(autocast_cache):
            return prefix.forward(model, batch, hidden, first).loss

    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
    # last_eval: the latest evaluation's {split: (predictions, labels)}, kept for the chance verdict.
    state = {
        "step": 0,
        "epoch": 0,
        "step_in_epoch": 0,
        "history": [],
        "train_seconds": 0.0,
        "eval_seconds": 0.0,
        "examples_seen": 0,
        "resumed_from_step": None,
        "last_eval": None,
    }
    stamp = checkpoints.fingerprint(config.to_dict(), owner)
    found = (
        checkpoints.load(ckpt_path, model, optimizer, scheduler, stamp)
        if ckpt_path is not None and ckpt_path.is_file()
        else None
    )
    if found is not None:
        state.update(found)
        state["resumed_from_step"] = state["step"]
        emit({"kind": "resumed", "step": state["step"], "epoch": state["epoch"]})
    # Computing the prefix is part of the run's cost (zero when another run already paid for it).
    state["train_seconds"] += prefix_train_seconds
    state["eval_seconds"] += prefix_eval_seconds

    _saved_step = state["step"] if state["resumed_from_step"] is not None else None

    def checkpoint():
        nonlocal _saved_step
        if ckpt_path is not None:
            # Announced first, so a recorder can flush every event up to this point before it is saved.
            emit({"kind": "checkpoint", "step": state["step"], "epoch": state["step"] / steps_per_epoch})
            checkpoints.save(ckpt_path, model, selection, optimizer, scheduler, state, stamp)
            _saved_step = state["step"]

    primary = glue.primary_metric(task, evals)

    def run_eval():
        t0 = time.perf_counter()
        per_split = predict(model, task, evals, padding, device, autocast, config.eval_batch_size, eval_states, first)
        metrics = glue.evaluate_splits(task, per_split)
        state["eval_seconds"] += time.perf_counter() - t0
        state["last_eval"] = per_split
        record = {"step": state["step"], "epoch": state["step"] / steps_per_epoch, "metrics": metrics}
        state["history"].append(record)
        emit({"kind": "eval", **record, "primary_metric_name": primary, "primary_metric": metrics[primary]})

    def stop_here():
        """stop_at_step reached: the run's state at this step is evaluated and saved, then it returns."""
        if not state["history"] or state["history"][-1]["step"] != state["step"]:
            run_eval()
        if not ckpt_path or not ckpt_path.is_file() or state["step"] != _saved_step:
            checkpoint()

    # Data and model are ready; a stop asked for during that (long) preparation is honoured here.
    stopped = bool(
        emit({"kind": "start", "step": state["step"], "total_steps": total_steps, "steps_per_epoch": steps_per_epoch})
    )
    # A stop_at_step at or past the end is no stop: the run simply finishes.
    stop_at = stop_at_step if stop_at_step is not None and stop_at_step < total_steps else None
    if not stopped and stop_at is not None and state["step"] >= stop_at:
        stop_here()  # resumed at (or past) the step asked for: nothing to train
        stopped = True
    loss_value = float("nan")
    lengths = train_enc.lengths  # a property that counts every row: once, not once per batch
    while state["epoch"] < config.epochs and not stopped:
        rng = np.random.default_rng([config.seed, state["epoch"]])
        epoch_batches = batches.length_grouped_batches(lengths, config.batch_size, rng)
        coming = epoch_batches[state["step_in_epoch"] :]
        if graphed is not None:
            graphed.expect(
                (batches.padded_width(lengths[idx], padding) for idx in coming if len(idx) == config.batch_size),
                epochs=config.epochs - state["epoch"],
            )
        for idx in coming:
            t0 = time.perf_counter()
            batch = batches.to_device(batches.collate(train_enc, idx, padding), device)
            hidden = train_states.batch(idx, batch["input_ids"].shape[1], device) if train_states else None
            if graphed is not None:
                loss = graphed.loss(batch, hidden, step_loss, lambda b, h: step_loss(b, h, autocast_cache=False))
            else:
                loss = step_loss(batch, hidden)
            loss.backward()
            # Drop the step's autograd graph now: a graph still alive at the next CUDA-graph capture
            # would tie its parameters' gradient accumulators to the default stream and break the capture.
            loss = loss.detach()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["step_in_epoch"] += 1
            state["examples_seen"] += len(idx)
            # A host sync per step is free on the CPU; on a GPU read the loss every 10 steps.
            if device.type == "cpu" or state["step"] % 10 == 0 or state["step"] == total_steps:
                loss_value = loss.item()
            state["train_seconds"] += time.perf_counter() - t0
            rate = state["examples_seen"] / max(state["train_seconds"], 1e-9)
            # train_seconds survives a resume with the step count, so their ratio stays the mean step time.
            remaining = (total_steps - state["step"]) * state["train_seconds"] / state["step"]
            stop = emit(
                {
                    "kind": "step",
                    "step": state["step"],
                    "total_steps": total_steps,
                    "epoch": state["step"] / steps_per_epoch,
                    "loss": loss_value,
                    "lr": scheduler.get_last_lr()[0],
                    "examples_per_second": rate,
                    "eta_seconds": remaining,
                }
            )
            if (
                config.eval_every
                and state["step"] % config.eval_every == 0
                and state["step_in_epoch"] < steps_per_epoch
            ):
                run_eval()
            if stop_at is not None and state["step"] >= stop_at and state["step_in_epoch"] < steps_per_epoch:
                stop_here()  # an epoch's last step is left to the epoch's end below, which evaluates anyway
                stopped = True
                break
            if stop:
                stopped = True
                checkpoint()
                break
            if (
                config.checkpoint_every
                and state["step"] % config.checkpoint_every == 0
                and state["step_in_epoch"] < steps_per_epoch
            ):  # the epoch's end checkpoints anyway
                checkpoint()
        else:
            state["epoch"] += 1
            state["step_in_epoch"] = 0
            run_eval()
            checkpoint()
            if stop_at is not None and state["step"] >= stop_at:
                stop_here()
                stopped = True

    history = state["history"]
    final = history[-1]["metrics"] if history else {}
    best = max(history, key=lambda r: glue.rank_value(r["metrics"][primary])) if history else None
    verdict = chance.judge(task, state["last_eval"], final, primary) if state["last_eval"] else None
    result = RunResult(
        task=task.name,
        model=config.model,
        modules=list(config.modules),
        layers=list(modules.parse_layers(config.layers, modules.num_hidden_layers(model.config))),
        layer_spec=config.layers,
        metrics=final,
        primary_metric_name=primary,
        primary_metric=final.get(primary),
        best_metrics=best["metrics"] if best else {},
        best_step=best["step"] if best else None,
        **selection.counts(),
        learning_rate=lr,
        steps=state["step"],
        epochs_completed=state["step"] / steps_per_epoch,
        train_examples=len(train_enc),
        eval_examples=sum(len(e) for e in evals.values()),
        train_seconds=state["train_seconds"],
        eval_seconds=state["eval_seconds"],
        examples_per_second=state["examples_seen"] / max(state["train_seconds"], 1e-9),
        device=str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        precision="bf16" if use_bf16 else "fp32",
        versions=versions(),
        stopped=stopped,
        resumed_from_step=state["resumed_from_step"],
        history=history,
        prefix_cache={"first_trainable_layer": first, "train": cache_train, "eval": cache_eval},
        cuda_graphs=graphed.report() if graphed is not None else {},
        eval_on=config.eval_on,
        **(
            {
                "chance_metric": verdict.chance_metric,
                "chance_metrics": verdict.chance_metrics,
                "constant_predictions": verdict.constant_predictions,
                "learned": verdict.learned,
                "learned_note": verdict.learned_note,
            }
            if verdict
            else {"learned_note": "not evaluated yet"}
        ),
    )
    if output_dir is not None and not stopped:
        from moduletune.tuning.artifacts import save_artifact

        result.artifact_dir = str(save_artifact(output_dir, model, selection, config, result))
    return result
