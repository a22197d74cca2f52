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

from moduletune.tuning import batches, chance, checkpoints, glue, modules
from moduletune.tuning.artifacts import save_artifact
from moduletune.tuning.checkpoints import CHECKPOINT_FILE
from moduletune.tuning.config import RunConfig
from moduletune.tuning.loop import Checkpointer, LoopState
from moduletune.tuning.models import load_classifier, load_tokenizer
from moduletune.tuning.selection import Selection
from moduletune.tuning.step import TrainStep

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
    # The run's memory high-water mark: on a GPU the tensors torch allocated (max_memory_allocated, reset at the
    # start), on a CPU the process's peak resident set (ru_maxrss: a worker's child runs one run at a time).
    peak_memory_mb: float | None = None

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


def reset_peak_memory(device: torch.device) -> bool:
    """Start the high-water mark at this run: the GPU's allocator stats, or on Linux the process's peak RSS (writing 5
    to /proc/self/clear_refs). A forked worker trains run after run, so without the reset its peak RSS would be the
    largest of every run so far. False when it cannot be reset here (then the run records no peak)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb(device: torch.device, was_reset: bool = True) -> float | None:
    """The run's peak memory in MiB: max_memory_allocated on a GPU, the process's peak RSS (VmHWM) on a CPU;
    None where that peak could not be started at this run."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if not was_reset:
        return None
    try:
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) / 2**10  # kB


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


def build_optimizer(model, selection: Selection, lr: float, weight_decay: float, device):
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
    # No validate(): a RunConfig is checked when made, a worker's where it entered (tasks.submission).
    emit = on_event or (lambda event: None)
    device = resolve_device(config.device)
    peak_from_here = reset_peak_memory(device)
    seed_everything(config.seed)
    tokenizer = load_tokenizer(config.model)
    task, train_enc, evals = prepare_data(config, tokenizer)
    model = load_classifier(config.model, task.num_labels)
    step = TrainStep(config, model, tokenizer.pad_token_id or 0, device, train_enc, evals)

    steps_per_epoch = math.ceil(len(train_enc) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer, scheduler = build_schedule(config, model, step, device, total_steps)
    trainable = [p for p in model.parameters() if p.requires_grad]
    path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
    stamp = checkpoints.fingerprint(config.to_dict(), owner)
    saver = Checkpointer(path, stamp, model, step.selection, optimizer, scheduler, emit, steps_per_epoch)
    state, stop_at, stopped = begin(saver, step, task, evals, emit, stop_at_step, total_steps)
    loss_value = float("nan")
    lengths = train_enc.lengths  # a property that counts every row: once, not once per batch
    while state.epoch < config.epochs and not stopped:
        rng = np.random.default_rng([config.seed, state.epoch])
        coming = batches.length_grouped_batches(lengths, config.batch_size, rng)[state.step_in_epoch :]
        step.expect(lengths, coming, epochs=config.epochs - state.epoch)
        for idx in coming:
            t0 = time.perf_counter()
            loss = step.backward(train_enc, idx)
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.step_in_epoch += 1
            state.examples_seen += len(idx)
            # A host sync per step is free on the CPU; on a GPU read the loss every 10 steps.
            if device.type == "cpu" or state.step % 10 == 0 or state.step == total_steps:
                loss_value = loss.item()
            state.train_seconds += time.perf_counter() - t0
            stop = emit(state.step_event(total_steps, steps_per_epoch, loss_value, scheduler.get_last_lr()[0]))
            # An epoch's last step is left to the epoch's end below, which evaluates and checkpoints anyway.
            mid_epoch = state.step_in_epoch < steps_per_epoch
            at_stop = mid_epoch and state.step >= stop_at
            if at_stop or (mid_epoch and every(state.step, config.eval_every)):
                emit(evaluate(step, task, evals, state, steps_per_epoch))
            if at_stop or stop or (mid_epoch and every(state.step, config.checkpoint_every)):
                saver.save(state)
            if at_stop or stop:
                stopped = True
                break
        else:
            state.epoch += 1
            state.step_in_epoch = 0
            emit(evaluate(step, task, evals, state, steps_per_epoch))
            saver.save(state)
            stopped = state.step >= stop_at

    result = run_result(config, task, train_enc, evals, model, step, state, stopped, peak_from_here)
    if output_dir is not None and not stopped:
        result.artifact_dir = str(save_artifact(output_dir, model, step.selection, config, result))
    return result


def build_schedule(config: RunConfig, model, step: TrainStep, device, total_steps: int):
    """AdamW over the trainable tensors and its linear warmup-then-decay schedule over the whole run."""
    from transformers import get_linear_schedule_with_warmup

    optimizer = build_optimizer(model, step.selection, config.learning_rate, config.weight_decay, device)
    return optimizer, get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)


def resume(saver: Checkpointer, step: TrainStep, emit) -> LoopState:
    """The loop's state: the checkpoint's when one fits this run (said in a "resumed" event), else step 0."""
    state = saver.resume()
    if state.resumed_from_step is not None:
        emit({"kind": "resumed", "step": state.step, "epoch": state.epoch})
    # Computing the prefix is part of the run's cost (zero when another run already paid for it).
    state.train_seconds += step.prefix_train_seconds
    state.eval_seconds += step.prefix_eval_seconds
    return state


def begin(saver: Checkpointer, step: TrainStep, task, evals: dict, emit, stop_at_step, total_steps: int):
    """Say the run starts: (its state, the step it stops at, whether it stops before its first step: a stop
    asked for during the preparation, or resumed at stop_at)."""
    state = resume(saver, step, emit)
    # A stop_at_step at or past the end is no stop: the run simply finishes.
    stop_at = stop_at_step if stop_at_step is not None and stop_at_step < total_steps else math.inf
    steps_per_epoch = saver.steps_per_epoch
    # Data and model are ready; a stop asked for during that (long) preparation is honoured here.
    if emit({"kind": "start", "step": state.step, "total_steps": total_steps, "steps_per_epoch": steps_per_epoch}):
        return state, stop_at, True
    if state.step < stop_at:
        return state, stop_at, False
    # Resumed at (or past) the step asked for: nothing to train.
    if not state.evaluated_now:
        emit(evaluate(step, task, evals, state, steps_per_epoch))
    if state.resumed_from_step is None:  # a resumed state is the checkpoint's already
        saver.save(state)
    return state, stop_at, True


def every(step: int, interval: int | None) -> bool:
    """Whether step is one of every interval-th steps (never with no interval)."""
    return bool(interval) and step % interval == 0


def evaluate(step: TrainStep, task, evals: dict, state: LoopState, steps_per_epoch: int) -> dict:
    """Score every eval split now: the record joins state.history, and the "eval" event to emit is returned."""
    t0 = time.perf_counter()
    per_split = step.predict(task, evals)
    metrics = glue.evaluate_splits(task, per_split)
    state.eval_seconds += time.perf_counter() - t0
    state.last_eval = per_split
    record = {"step": state.step, "epoch": state.step / steps_per_epoch, "metrics": metrics}
    state.history.append(record)
    primary = glue.primary_metric(task, evals)
    return {"kind": "eval", **record, "primary_metric_name": primary, "primary_metric": metrics[primary]}


def run_result(
    config: RunConfig,
    task,
    train_enc,
    evals: dict,
    model,
    step: TrainStep,
    state: LoopState,
    stopped: bool,
    peak_from_here: bool = True,
) -> RunResult:
    """The RunResult of a run at state.step, its last evaluation judged against chance."""
    primary = glue.primary_metric(task, evals)
    history = state.history
    final = history[-1]["metrics"] if history else {}
    best = max(history, key=lambda r: glue.rank_value(r["metrics"][primary])) if history else None
    verdict = chance.judge(task, state.last_eval, final, primary) if state.last_eval else None
    device = step.device
    return RunResult(
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
        **step.selection.counts(),
        learning_rate=config.learning_rate,
        steps=state.step,
        epochs_completed=state.step / math.ceil(len(train_enc) / config.batch_size),
        train_examples=len(train_enc),
        eval_examples=sum(len(e) for e in evals.values()),
        train_seconds=state.train_seconds,
        eval_seconds=state.eval_seconds,
        examples_per_second=state.examples_seen / max(state.train_seconds, 1e-9),
        device=str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        precision="bf16" if step.use_bf16 else "fp32",
        versions=versions(),
        stopped=stopped,
        resumed_from_step=state.resumed_from_step,
        history=history,
        **step.report(),
        eval_on=config.eval_on,
        peak_memory_mb=peak_memory_mb(device, peak_from_here),
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
