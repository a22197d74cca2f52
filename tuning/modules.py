"""Module families -> parameter names, per architecture; layer specs; the Selection (tuning/selection.py) a run trains.

One small mapping per architecture (as peft maps target modules), so adding an encoder is
adding one entry, not an if-chain through the code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from moduletune.tuning.selection import Selection, random_masks


class ModuleSpecError(ValueError):
    """A module family, layer spec or architecture a person asked for that we cannot honour."""


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
    """The paper's short names joined by '+': ('layernorm',) -> 'LN', ('random:query',) -> 'random:Q'."""
    parts = families.split("+") if isinstance(families, str) else list(families)
    out = []
    for fam in parts:
        prefix, _, base = fam.rpartition(":")
        out.append((prefix + ":" if prefix else "") + SHORT_NAMES.get(base, base))
    return "+".join(out)


@dataclass(frozen=True)
class Architecture:
    """Where each family's parameters live in one encoder family (names relative to a layer)."""

    name: str
    model_types: tuple[str, ...]
    layer_pattern: str  # regex with one group: the layer index
    families: dict[str, str] = field(default_factory=dict)  # family -> regex on the in-layer name
    embeddings: str = r"^embeddings\."
    layers_path: str = "encoder.layer"  # the ModuleList of transformer layers, under the base model
    embedding_modules: tuple[str, ...] = ("embeddings",)  # what runs before layer 0
    # Whether a training step captures into CUDA graphs (tuning/graphs.py): only where a capture has
    # been seen to work on a GPU (tests/tuning/test_graphs.py), since a failed capture spoils the process.
    cuda_graphs: bool = True


_BERT_LIKE = {
    "query": r"^attention\.self\.query\.",
    "key": r"^attention\.self\.key\.",
    "value": r"^attention\.self\.value\.",
    "attention_output": r"^attention\.output\.dense\.",
    "ffn_intermediate": r"^intermediate\.dense\.",
    "ffn_output": r"^output\.dense\.",
    "layernorm": r"^(attention\.output\.|output\.)LayerNorm\.",
}

ARCHITECTURES = {
    arch.name: arch
    for arch in (
        Architecture("bert", ("bert",), r"^encoder\.layer\.(\d+)\.", _BERT_LIKE),
        Architecture("roberta", ("roberta", "xlm-roberta", "camembert"), r"^encoder\.layer\.(\d+)\.", _BERT_LIKE),
        Architecture(
            "electra",
            ("electra",),
            r"^encoder\.layer\.(\d+)\.",
            _BERT_LIKE,
            embeddings=r"^(embeddings\.|embeddings_project\.)",
            embedding_modules=("embeddings", "embeddings_project"),
        ),
        Architecture(
            "distilbert",
            ("distilbert",),
            r"^transformer\.layer\.(\d+)\.",
            {
                "query": r"^attention\.q_lin\.",
                "key": r"^attention\.k_lin\.",
                "value": r"^attention\.v_lin\.",
                "attention_output": r"^attention\.out_lin\.",
                "ffn_intermediate": r"^ffn\.lin1\.",
                "ffn_output": r"^ffn\.lin2\.",
                "layernorm": r"^(sa_layer_norm|output_layer_norm)\.",
            },
            layers_path="transformer.layer",
        ),
        # DeBERTa's position projections (used when share_att_key is off) belong to query/key.
        Architecture(
            "deberta-v2",
            ("deberta-v2",),
            r"^encoder\.layer\.(\d+)\.",
            {
                "query": r"^attention\.self\.(query_proj|pos_query_proj)\.",
                "key": r"^attention\.self\.(key_proj|pos_key_proj)\.",
                "value": r"^attention\.self\.value_proj\.",
                "attention_output": r"^attention\.output\.dense\.",
                "ffn_intermediate": r"^intermediate\.dense\.",
                "ffn_output": r"^output\.dense\.",
                "layernorm": r"^(attention\.output\.|output\.)LayerNorm\.",
            },
            embeddings=r"^(embeddings\.|encoder\.rel_embeddings\.|encoder\.LayerNorm\.)",
        ),
    )
}


def architecture_for(model_type: str) -> Architecture:
    """The mapping for a transformers model_type, or an error listing what is supported."""
    for arch in ARCHITECTURES.values():
        if model_type in arch.model_types:
            return arch
    supported = ", ".join(t for a in ARCHITECTURES.values() for t in a.model_types)
    raise ModuleSpecError(f"unsupported architecture '{model_type}'; supported model types: {supported}")


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
    families = tuple(dict.fromkeys(canonical_family(p) for p in parts if p.strip()))
    if not families:
        raise ModuleSpecError("no module family given; allowed: " + ", ".join(FAMILIES))
    if sum(f.startswith("random:") for f in families) and len(families) > 1:
        raise ModuleSpecError("random:<family> is a control and is trained alone, not with other families")
    return families


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
            raise ModuleSpecError(f"malformed layer spec '{_clip(spec)}'; {allowed}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if lo > hi:
            raise ModuleSpecError(f"layer spec '{_clip(spec)}' is out of range ({lo}-{hi} runs backwards); {allowed}")
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
            raise ModuleSpecError(f"layer spec '{_clip(spec)}': K must be 1-{num_layers}; {allowed}")
        return tuple(range(value)) if kind == "first" else tuple(range(num_layers - value, num_layers))
    if any(hi >= num_layers for _, hi in value):
        raise ModuleSpecError(f"layer spec '{_clip(spec)}' is out of range; {allowed}")
    return tuple(sorted({i for lo, hi in value for i in range(lo, hi + 1)}))


def _clip(text, limit: int = 60) -> str:
    """A value quoted in a message, cut short: an error never echoes a megabyte back."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"


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


def select_parameters(model, families, layers="all", train_head: bool = True, seed: int = 0) -> Selection:
    """Resolve families x layers on a sequence-classification model into exact parameter names."""
    families = parse_families(families)
    arch = architecture_for(model.config.model_type)
    n_layers = num_hidden_layers(model.config)
    layer_ids = parse_layers(layers, n_layers) if not isinstance(layers, tuple) else layers
    base = model.base_model
    prefix = model.base_model_prefix + "."
    encoder = dict(base.named_parameters())
    everything = dict(model.named_parameters())
    head = [n for n in everything if not n.startswith(prefix)]

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
