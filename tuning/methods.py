"""LoRA and (IA)³ beside the module families: the METHOD_TABLE, and peft's adapters injected into our own model.

peft builds the adapters (LoraConfig, IA3Config, inject_adapter_in_model) and the model stays ours: the same loop,
checkpoints, frozen-prefix cache and lr search train the adapter's tensors as they train a family's. Which of our
families a method can wrap is the architecture's `adapters` (tuning/modules.py); peft is imported only when a run
builds an adapter, so importing this module loads neither peft nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass

# The parameter names peft gives an adapter's tensors (a LoRA's two matrices, an (IA)³ vector): everything else
# under a wrapped module is its frozen base_layer.
ADAPTER_PARTS = frozenset({"lora_A", "lora_B", "ia3_l"})
ADAPTER_NAME = "default"  # peft's adapter name: what an exported adapter is saved under and loaded as


@dataclass(frozen=True)
class Method:
    """One parameter-efficient method: what `lora:<families>` means, its default families and its lr."""

    name: str  # the prefix in a family spec: lora:Q+V
    label: str  # how people read it
    default_families: tuple[str, ...]  # what the bare name (`lora`) wraps: peft's target table for BERT
    feedforward: tuple[str, ...]  # (IA)³ only: families whose input (not output) is scaled
    default_lr: float  # a starting point that learns on the embedded MiniLM (SST-2, 2k examples, 1 epoch)
    lr_range: tuple[float, float]  # where an lr search looks: 100x around the default, log-spaced
    color: str  # its colour in every chart


# LoRA's and (IA)³'s few new tensors start at identity (B = 0, scales = 1), so like LayerNorm they need steps
# far larger than full fine-tuning's: LoRA default 3e-3, searched over 3e-4-3e-2; (IA)³'s scales move slower
# still, default 3e-2, searched over 3e-3-3e-1. Defaults follow peft's tables (bert: LoRA on query and value;
# (IA)³ on key, value and output.dense, read as the FFN's output, fed the FFN's activation, as in the paper).
METHOD_TABLE = (
    Method("lora", "LoRA", ("query", "value"), (), 3e-3, (3e-4, 3e-2), "#e6550d"),
    Method("ia3", "(IA)³", ("key", "value", "ffn_output"), ("ffn_output",), 3e-2, (3e-3, 3e-1), "#31a354"),
)
METHOD = {m.name: m for m in METHOD_TABLE}
ALL_LINEAR = "all_linear"  # lora:all-linear: every family the architecture can wrap (peft's "all-linear")


@dataclass(frozen=True)
class AdapterSettings:
    """A LoRA's shape (rank, alpha, dropout): RunConfig's lora_* settings, peft's defaults otherwise."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0

    @classmethod
    def of(cls, config) -> "AdapterSettings":
        """The settings a RunConfig (or anything with lora_rank/lora_alpha/lora_dropout) asks for."""
        return cls(int(config.lora_rank), float(config.lora_alpha), float(config.lora_dropout))


def method_of(family: str) -> Method | None:
    """The Method of a canonical family name such as 'lora:query', None for a plain family."""
    prefix, sep, _ = family.partition(":")
    return METHOD.get(prefix) if sep else None


def peft_config(method: Method, targets: list[str], feedforward: list[str], settings: AdapterSettings):
    """peft's config for exactly these modules (full names: peft matches a name equal to a target)."""
    if method.name == "lora":
        from peft import LoraConfig

        return LoraConfig(
            r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=list(targets)
        )
    from peft import IA3Config

    return IA3Config(target_modules=list(targets), feedforward_modules=list(feedforward))


def is_adapter_tensor(name: str) -> bool:
    """Whether a parameter name is an adapter's own tensor (not a wrapped module's frozen base)."""
    return not ADAPTER_PARTS.isdisjoint(name.split("."))


def base_name(name: str) -> str:
    """A wrapped module's parameter under the name it had before injection (peft moves it under base_layer)."""
    return name.replace(".base_layer.", ".")


def inject(model, method: Method, targets: list[str], feedforward: list[str], settings: AdapterSettings) -> list[str]:
    """Wrap the target modules of model with the method's adapter (once: a model already wrapped there is kept) and
    return the adapter tensors' names; the base weights stay as they are, frozen by the caller's selection."""
    if not all(hasattr(model.get_submodule(t), "base_layer") for t in targets):
        from peft import inject_adapter_in_model

        inject_adapter_in_model(peft_config(method, targets, feedforward, settings), model, ADAPTER_NAME)
    return [f"{t}.{n}" for t in targets for n, _ in model.get_submodule(t).named_parameters() if is_adapter_tensor(n)]
