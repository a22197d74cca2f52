"""TrainStep: a run's model made ready to train, and its step's loss and backward with the device's speed-ups."""

from __future__ import annotations

import time

import numpy as np
import torch

from moduletune.tuning import batches, graphs, modules, precision, prefix
from moduletune.tuning.config import RunConfig
from moduletune.tuning.methods import AdapterSettings
from moduletune.tuning.models import resolve_model


class TrainStep:
    """The speed-ups a run's device allows, chosen once: bf16 autocast, the frozen prefix's states computed
    once (tuning/prefix.py), and CUDA graphs of the step (tuning/graphs.py). The training loop sees none of
    them: it asks for a batch's loss and gradients (backward) and for predictions (predict)."""

    def __init__(self, config: RunConfig, model, pad_token_id: int, device: torch.device, train_enc, evals: dict):
        """Select, freeze and move the model for config, then compute the frozen prefix's states of train_enc
        and of every split in evals where the run caches them."""
        self.config, self.model, self.device = config, model, device
        self.use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
        arch = modules.architecture_for(model.config.model_type)
        use_graphs = device.type == "cuda" and config.cuda_graphs and arch.cuda_graphs and not config.compile
        # On a GPU, lengths rounded up keep tensor cores busy and the number of distinct shapes (each a
        # first-use kernel load, and with CUDA graphs a capture) small; on the CPU every padded token is pure cost.
        self.padding = batches.Padding(
            pad_token_id,
            multiple=(16 if use_graphs else 8) if device.type == "cuda" else None,
            max_len=config.max_seq_len,
        )
        self.selection = modules.select_parameters(
            model, config.modules, config.layers, config.train_head, config.seed, AdapterSettings.of(config)
        )
        model.to(device).train()
        modules.apply_selection(model, self.selection)  # after the move, so random masks live beside their gradients
        if self.use_bf16:
            # The same arithmetic without casting every frozen weight on every use (tuning/precision.py).
            precision.store_frozen_linears(model, torch.bfloat16)
        if config.compile:
            model.compile()  # compiles forward in place; parameter names (and artifacts) stay the same

        # Frozen prefix: layers below `first` never need autograd; their output can be computed once.
        self.first = modules.lowest_trainable_layer(model, self.selection)
        self.cache_eval = bool(self.first) and config.prefix_cache != "off"
        self.cache_train = self.cache_eval and (
            config.prefix_cache == "on" or not prefix.prefix_has_dropout(model, self.first)
        )
        t0 = time.perf_counter()
        self.train_states = self.prefix_states(train_enc) if self.cache_train else None
        self.prefix_train_seconds = time.perf_counter() - t0
        self.eval_states = {s: self.prefix_states(e) for s, e in evals.items()} if self.cache_eval else None
        self.prefix_eval_seconds = time.perf_counter() - t0 - self.prefix_train_seconds
        self.graphed = graphs.GraphedSteps(model, config.batch_size) if use_graphs else None

    def autocast(self, cache: bool = True):
        # cache=False for CUDA graphs: a capture cannot hold autocast's per-forward weight cache.
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16, cache_enabled=cache)

    def prefix_states(self, enc) -> prefix.PrefixStates:
        """The frozen prefix's output for every row of enc, from the process-wide cache when a run made it."""
        key = (resolve_model(self.config.model), enc.key, self.first, str(self.device), self.use_bf16)
        return prefix.shared_cache().get_or_compute(
            key,
            lambda: prefix.compute_states(
                self.model, enc, self.first, self.padding, self.device, self.autocast, self.config.eval_batch_size
            ),
        )

    def loss(self, batch: dict, hidden: torch.Tensor | None, autocast_cache: bool = True) -> torch.Tensor:
        with self.autocast(autocast_cache):
            return prefix.forward(self.model, batch, hidden, self.first).loss

    def expect(self, lengths: np.ndarray, coming: list, epochs: int) -> None:
        """Plan the CUDA-graph captures from the batches still coming this epoch (and as many in each of epochs)."""
        if self.graphed is not None:
            full = (idx for idx in coming if len(idx) == self.config.batch_size)
            self.graphed.expect((batches.padded_width(lengths[idx], self.padding) for idx in full), epochs=epochs)

    def backward(self, enc, idx) -> torch.Tensor:
        """The loss on the rows idx of enc, detached, with its gradients accumulated into the trainable tensors."""
        batch = batches.to_device(batches.collate(enc, idx, self.padding), self.device)
        hidden = self.train_states.batch(idx, batch["input_ids"].shape[1], self.device) if self.train_states else None
        if self.graphed is not None:
            loss = self.graphed.loss(batch, hidden, self.loss, lambda b, h: self.loss(b, h, autocast_cache=False))
        else:
            loss = self.loss(batch, hidden)
        loss.backward()
        # Drop the step's autograd graph now: a graph still alive at the next CUDA-graph capture
        # would tie its parameters' gradient accumulators to the default stream and break the capture.
        return loss.detach()

    @torch.inference_mode()
    def predict(self, task, evals: dict) -> dict[str, tuple]:
        """{split: (predictions, labels)} on every eval split: class ids, or scores for regression."""
        model, device = self.model, self.device
        was_training = model.training
        model.eval()
        per_split = {}
        for split, enc in evals.items():
            preds = np.empty(len(enc), dtype=np.float32 if task.is_regression else np.int64)
            split_states = (self.eval_states or {}).get(split)
            for idx in batches.sorted_batches(enc.lengths, self.config.eval_batch_size):
                batch = batches.to_device(
                    {k: v for k, v in batches.collate(enc, idx, self.padding).items() if k != "labels"}, device
                )
                hidden = split_states.batch(idx, batch["input_ids"].shape[1], device) if split_states else None
                with self.autocast():
                    logits = prefix.forward(model, batch, hidden, self.first).logits.float()
                preds[idx] = (logits.squeeze(-1) if task.is_regression else logits.argmax(-1)).cpu().numpy()
            per_split[split] = (preds, enc.labels)
        model.train(was_training)
        return per_split

    def report(self) -> dict:
        """The speed-ups as RunResult records them."""
        return {
            "prefix_cache": {"first_trainable_layer": self.first, "train": self.cache_train, "eval": self.cache_eval},
            "cuda_graphs": self.graphed.report() if self.graphed is not None else {},
        }
