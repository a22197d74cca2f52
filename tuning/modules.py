"""Module families -> parameter names, per architecture; layer specs; the Selection (tuning/selection.py) a run trains.

The architectures (tuning/architectures.py) map where each family lives, one small entry per encoder, not an
if-chain through the code; methods (tuning/methods.py) wrap families with a peft adapter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from moduletune.tuning import methods
from moduletune.tuning.architectures import LINEAR_FAMILIES, Architecture, ModuleSpecError, architecture_for
from moduletune.tuning.methods import AdapterSettings
from moduletune.tuning.selection import Selection, random_masks
from moduletune.tuning.text import clip


@dataclass(frozen=True)
class Family:
    """One module family: every fact about it that the engine, the CLI, the form and the charts use."""

    name: str  # the interface name (config, registry, CLI)
    short: str  # the paper's short name, used in tables, charts and the registry's family column
    label: str  # the Experiment tab's checkbox
    aliases: tuple[str, ...]  # other names accepted on input (case-insensitive)
    default_lr: float  # a starting point that learns on the embedded MiniLM (SST-2, 2k examples, 1 epoch)
    lr_range: tuple[float, float]  # where an lr search looks: at least 100x around the default
    scope: str  # "layer": lives in each transformer layer (the layer spec applies); "global": ignores it
    selects: str  # how its parameters are found: "layer" (the architecture's regex), "bias", "embeddings",
    #               "head" (the classifier only) or "encoder" (everything)
    color: str  # its colour in every chart


# The paper's seven modules, then BitFit, then the families that ignore layers. LayerNorm at 1e-3 stayed at
# chance on SST-2 while 1e-2 matched full fine-tuning, so small modules need far larger steps than the dense
# matrices; dense matrices need more than their default on small data (query-only on STS-B, 2k rows, 3
# epochs: Pearson 0.12 at 3e-4, 0.35 at 1e-3, 0.55 at 3e-3), so their search range reaches 1e-2.
FAMILY_TABLE = (
    Family("query", "Q", "Q · attention query", ("q",), 3e-4, (1e-4, 1e-2), "layer", "layer", "#1f77b4"),
    Family("key", "K", "K · attention key", ("k",), 3e-4, (1e-4, 1e-2), "layer", "layer", "#17becf"),
    Family("value", "V", "V · attention value", ("v",), 3e-4, (1e-4, 1e-2), "layer", "layer", "#2ca02c"),
    Family("attention_output", "AO", "AO · attention output", ("ao",), 3e-4, (1e-4, 1e-2), "layer", "layer", "#d62728"),
    Family("ffn_intermediate", "FI", "FI · FFN in", ("fi",), 2e-4, (1e-4, 1e-2), "layer", "layer", "#9467bd"),
    Family("ffn_output", "FO", "FO · FFN out", ("fo",), 2e-4, (1e-4, 1e-2), "layer", "layer", "#8c564b"),
    Family("layernorm", "LN", "LN · LayerNorms", ("ln",), 1e-2, (1e-3, 1e-1), "layer", "layer", "#ff7f0e"),
    Family("bias", "bias", "bias · all biases (BitFit)", ("bitfit",), 1e-3, (1e-4, 3e-2), "layer", "bias", "#bcbd22"),
    Family(
        "embeddings",
        "embeddings",
        "embeddings · token, position and type embeddings",
        ("emb",),
        1e-4,
        (3e-5, 3e-3),
        "global",
        "embeddings",
        "#e377c2",
    ),
    Family(
        "classifier",
        "classifier",
        "classifier · the head only",
        ("head", "cls"),
        1e-3,
        (1e-4, 3e-2),
        "global",
        "head",
        "#393b79",
    ),
    Family("full", "full", "full fine-tuning", (), 5e-5, (1e-5, 1e-3), "global", "encoder", "#222222"),
)
FAMILY = {f.name: f for f in FAMILY_TABLE}

# Views of the table, for the code that needs just one column.
LAYER_FAMILIES = tuple(f.name for f in FAMILY_TABLE if f.scope == "layer")
GLOBAL_FAMILIES = tuple(f.name for f in FAMILY_TABLE if f.scope == "global")
FAMILIES = LAYER_FAMILIES + GLOBAL_FAMILIES + ("random",)  # random:<family>: the lottery-ticket control
ALIASES = {alias: f.name for f in FAMILY_TABLE for alias in f.aliases}
SHORT_NAMES = {f.name: f.short for f in FAMILY_TABLE}


def short_label(families) -> str:
    """The paper's short names joined by '+': ('layernorm',) -> 'LN', ('random:query',) -> 'random:Q',
    ('lora:query', 'lora:value') -> 'lora:Q+V' (a method named once, as parse_families reads it back)."""
    parts = families.split("+") if isinstance(families, str) else list(families)
    out, said = [], None
    for fam in parts:
        prefix, _, base = fam.rpartition(":")
        shown = SHORT_NAMES.get(base, base)
        if prefix and prefix == said and prefix in methods.METHOD:
            out.append(shown)
        else:
            out.append((prefix + ":" if prefix else "") + shown)
        said = prefix
    return "+".join(out)


def canonical_family(name: str) -> str:
    """'LN' -> 'layernorm', 'random:Q' -> 'random:query'; unknown names are refused."""
    raw = name.strip()
    key = raw.lower().replace("-", "_")
    if key.startswith("random"):
        _, _, base = key.partition(":")
        if not base:
            raise ModuleSpecError(f"'{raw}': random needs a family to match in size, e.g. random:layernorm or random:Q")
        base = canonical_family(base)
        if base not in LAYER_FAMILIES:
            raise ModuleSpecError(f"'{raw}': random can match one of {', '.join(LAYER_FAMILIES)}")
        return f"random:{base}"
    key = ALIASES.get(key, key)
    if key not in FAMILIES:
        allowed = (
            ", ".join(FAMILIES[:-1])
            + ", random:<family>; aliases "
            + ", ".join(a.upper() for a in ("q", "k", "v", "ao", "fi", "fo", "ln"))
        )
        raise ModuleSpecError(f"unknown module family '{raw}'; allowed: {allowed}")
    return key


def parse_families(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """A comma- or plus-separated family list (trained together in one run) -> canonical names."""
    parts = spec if isinstance(spec, (list, tuple)) else re.split(r"[,+]", spec)
    families = tuple(dict.fromkeys(_with_methods([p for p in parts if p.strip()])))
    if not families:
        raise ModuleSpecError("no module family given; allowed: " + ", ".join(FAMILIES))
    if sum(f.startswith("random:") for f in families) and len(families) > 1:
        raise ModuleSpecError("random:<family> is a control and is trained alone, not with other families")
    used = {methods.method_of(f) for f in families}
    if len(used) > 1:
        names = " and ".join(sorted(m.label if m else "module families" for m in used))
        raise ModuleSpecError(
            f"{'+'.join(families)} mixes {names}; a method's run trains its adapter (and the head) alone, "
            "e.g. lora:Q+V or ia3:K+V+FO"
        )
    return families


def _with_methods(parts) -> list[str]:
    """Each part canonical, a method's prefix carried on to the parts after it: lora:Q, V -> lora:query, lora:value."""
    out, method = [], None
    for part in parts:
        head, sep, rest = part.strip().partition(":")
        if head.lower() in methods.METHOD:
            method = methods.METHOD[head.lower()]
            out += _method_targets(method, rest if sep else "", part)
        elif method is not None:
            out += _method_targets(method, part, part)
        else:
            out.append(canonical_family(part))
    return out


def _method_targets(method: methods.Method, spec: str, raw: str) -> list[str]:
    """'lora' + 'Q' -> ['lora:query']; no family: the method's defaults; all-linear: every family it can wrap."""
    key = spec.strip().lower().replace("-", "_")
    if not key:
        return [f"{method.name}:{f}" for f in method.default_families]
    if key == methods.ALL_LINEAR:
        return [f"{method.name}:{f}" for f in LINEAR_FAMILIES]
    family = canonical_family(spec)
    if family not in LINEAR_FAMILIES:
        raise ModuleSpecError(
            f"'{raw.strip()}': {method.label} wraps the nn.Linear modules Q, K, V, AO, FI, FO (or all-linear), "
            f"not {family}"
        )
    return [f"{method.name}:{family}"]


MAX_LAYER_SPEC_CHARS = 200  # far more than any real spec ("0-3,5,7-11"); a longer text is refused unread


def layer_spec_parts(spec: str | int, allowed: str | None = None) -> tuple[str, object]:
    """A layer spec's syntax, without a model and without listing layers: ("all", None), ("none", None),
    ("first" | "last", K), or ("ranges", [(lo, hi), ...]); ModuleSpecError (ending in `allowed`) if not a spec."""
    text = str(spec).strip().lower().replace(" ", "")
    allowed = allowed or "allowed: all, a layer such as 5, a range like 0-3, a list like 0-3,5, first:K or last:K"
    if len(text) > MAX_LAYER_SPEC_CHARS:
        raise ModuleSpecError(
            f"layer spec is {len(text):,} characters long, more than {MAX_LAYER_SPEC_CHARS}; {allowed}"
        )
    if text in ("all", "none"):
        return text, None
    m = re.fullmatch(r"(first|last):(\d{1,6})", text)
    if m:
        return m.group(1), int(m.group(2))
    ranges = []
    for part in text.split(","):
        m = re.fullmatch(r"(\d{1,6})(?:-(\d{1,6}))?", part)
        if not m:
            raise ModuleSpecError(f"malformed layer spec '{clip(spec, as_text=True)}'; {allowed}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if lo > hi:
            raise ModuleSpecError(
                f"layer spec '{clip(spec, as_text=True)}' is out of range ({lo}-{hi} runs backwards); {allowed}"
            )
        ranges.append((lo, hi))
    return "ranges", ranges


def parse_layers(spec: str | int, num_layers: int) -> tuple[int, ...]:
    """'all', '7', '0-3,11', 'first:2', 'last:4' -> sorted layer indices within 0..num_layers-1."""
    allowed = (
        f"allowed: all, a layer 0-{num_layers - 1}, a range like 0-3, a list like 0-3,5, "
        f"first:K or last:K (this model has layers 0-{num_layers - 1})"
    )
    kind, value = layer_spec_parts(spec, allowed)
    if kind == "all":
        return tuple(range(num_layers))
    if kind == "none":
        return ()
    if kind in ("first", "last"):
        if not 1 <= value <= num_layers:
            raise ModuleSpecError(f"layer spec '{clip(spec, as_text=True)}': K must be 1-{num_layers}; {allowed}")
        return tuple(range(value)) if kind == "first" else tuple(range(num_layers - value, num_layers))
    if any(hi >= num_layers for _, hi in value):
        raise ModuleSpecError(f"layer spec '{clip(spec, as_text=True)}' is out of range; {allowed}")
    return tuple(sorted({i for lo, hi in value for i in range(lo, hi + 1)}))


def num_hidden_layers(config) -> int:
    """Layer count across config spellings (DistilBERT says n_layers)."""
    return int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers"))


def _layer_family_names(arch: Architecture, encoder_names, family: str, layers) -> list[str]:
    """Names under the encoder of one in-layer family restricted to the chosen layers."""
    wanted = set(layers)
    out = []
    for name in encoder_names:
        m = re.match(arch.layer_pattern, name)
        if not m or int(m.group(1)) not in wanted:
            continue
        inner = name[m.end() :]
        if FAMILY[family].selects == "bias":
            hit = inner.endswith("bias")
        else:
            hit = re.match(arch.families[family], inner) is not None
        if hit:
            out.append(name)
    return out


# How each family's parameters are found (Family.selects), as peft maps a tuner to its targets: names
# under the encoder. The head is not among them: it is added by train_head (and is all "classifier" trains).
_SELECTS = {
    "layer": _layer_family_names,
    "bias": _layer_family_names,
    "embeddings": lambda arch, encoder, family, layers: [n for n in encoder if re.match(arch.embeddings, n)],
    "head": lambda arch, encoder, family, layers: [],
    "encoder": lambda arch, encoder, family, layers: list(encoder),
}


def select_parameters(
    model, families, layers="all", train_head: bool = True, seed: int = 0, adapter: AdapterSettings | None = None
) -> Selection:
    """Resolve families x layers on a sequence-classification model into exact parameter names.

    A method's families (lora:Q+V) wrap those modules with its peft adapter first (in place, once; adapter: its
    rank, alpha and dropout), and the selection is the adapter's tensors."""
    families = parse_families(families)
    arch = architecture_for(model.config.model_type)
    n_layers = num_hidden_layers(model.config)
    layer_ids = parse_layers(layers, n_layers) if not isinstance(layers, tuple) else layers
    base = model.base_model
    prefix = model.base_model_prefix + "."
    encoder = dict(base.named_parameters())
    everything = dict(model.named_parameters())
    head = [n for n in everything if not n.startswith(prefix)]

    if methods.method_of(families[0]) is not None:
        return _adapter_selection(model, families, layer_ids, train_head, adapter)
    module: list[str] = []
    masks: dict = {}
    for family in families:
        if family.startswith("random:"):
            matched = _layer_family_names(arch, encoder, family.split(":", 1)[1], layer_ids)
            k = sum(encoder[n].numel() for n in matched)
            masks = {prefix + n: m for n, m in random_masks(arch.layer_pattern, encoder, k, seed).items()}
            module += list(masks)
            continue
        names = _SELECTS[FAMILY[family].selects](arch, encoder, family, layer_ids)
        if family == "bias" and len(layer_ids) == n_layers:
            # BitFit trains every bias, including the embeddings' LayerNorm bias.
            names += [n for n in encoder if re.match(arch.embeddings, n) and n.endswith("bias")]
        module += [prefix + n for n in names]
    module = list(dict.fromkeys(module))
    if not module and families != ("classifier",):
        raise ModuleSpecError(
            f"{'+'.join(families)} in layers {layers} selects no parameters of this {arch.name} model"
        )
    use_head = train_head or families == ("classifier",)
    head_names = head if use_head else []
    module_params = sum(int(masks[n].sum()) if n in masks else everything[n].numel() for n in module)
    return Selection(
        module=module,
        head=head_names,
        masks=masks,
        module_params=module_params,
        head_params=sum(everything[n].numel() for n in head_names),
        encoder_params=sum(p.numel() for p in encoder.values()),
        total_params=sum(p.numel() for p in everything.values()),
    )


def adapter_targets(model, families, layers="all") -> tuple[methods.Method, list[str], list[str]]:
    """(method, target modules, feedforward modules): the full names a method's families wrap in the chosen layers,
    read from the model's own names (before or after injection: peft moves a wrapped weight under base_layer)."""
    families = parse_families(families)
    method = methods.method_of(families[0])
    if method is None:
        raise ModuleSpecError(f"{'+'.join(families)} is no method's (lora:<families> or ia3:<families>)")
    arch = architecture_for(model.config.model_type)
    layer_ids = parse_layers(layers, num_hidden_layers(model.config)) if not isinstance(layers, tuple) else layers
    wanted = [f.split(":", 1)[1] for f in families]
    refused = [f for f in wanted if f not in arch.adapters]
    if refused:
        raise ModuleSpecError(
            f"{method.label} cannot wrap {', '.join(refused)} in a {arch.name} model; it wraps "
            + ", ".join(SHORT_NAMES[f] for f in arch.adapters)
        )
    prefix = model.base_model_prefix + "."
    own = [methods.base_name(n) for n, _ in model.base_model.named_parameters() if not methods.is_adapter_tensor(n)]
    targets, feedforward = [], []
    for family in wanted:
        found = _layer_family_names(arch, own, family, layer_ids)
        names = [prefix + n.removesuffix(".weight") for n in found if n.endswith(".weight")]
        targets += names
        feedforward += names if family in method.feedforward else []
    if not targets:
        raise ModuleSpecError(f"{'+'.join(families)} in layers {layers} wraps no module of this {arch.name} model")
    return method, targets, feedforward


def _adapter_selection(model, families, layers, train_head, adapter) -> Selection:
    """The method's adapter on its families' modules, injected, and its tensors as the selection; counts are over
    the model's own parameters (not the adapter's), so a method's share is comparable with a family's."""
    method, targets, feedforward = adapter_targets(model, families, layers)
    module = methods.inject(model, method, targets, feedforward, adapter or AdapterSettings())
    prefix = model.base_model_prefix + "."
    params = dict(model.named_parameters())
    own = {n: p for n, p in params.items() if not methods.is_adapter_tensor(n)}
    head = [n for n in own if not n.startswith(prefix)] if train_head else []
    return Selection(
        module=module,
        head=head,
        module_params=sum(params[n].numel() for n in module),
        head_params=sum(own[n].numel() for n in head),
        encoder_params=sum(p.numel() for n, p in own.items() if n.startswith(prefix)),
        total_params=sum(p.numel() for p in own.values()),
    )


def apply_selection(model, selection: Selection) -> None:
    """Freeze everything, then unfreeze the selection; random masks zero the other entries' grads."""
    trainable = set(selection.names)
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    params = dict(model.named_parameters())
    for name, mask in selection.masks.items():
        m = mask.to(params[name].device)
        # The model may move to a GPU after this (the Trainer moves it itself): follow the gradient.
        params[name].register_hook(lambda grad, m=m: grad * m.to(grad.device))


def lowest_trainable_layer(model, selection: Selection) -> int | None:
    """The first layer any encoder parameter trains in: None when embeddings train, the layer count
    when only the head does (everything below the head is then frozen)."""
    arch = architecture_for(model.config.model_type)
    prefix = model.base_model_prefix + "."
    lowest = num_hidden_layers(model.config) if not selection.module else None
    for name in selection.module:
        inner = name[len(prefix) :]
        m = re.match(arch.layer_pattern, inner)
        if not m:
            return None
        lowest = int(m.group(1)) if lowest is None else min(lowest, int(m.group(1)))
    return lowest
