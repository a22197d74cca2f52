"""One small mapping per encoder architecture (as peft maps target modules): where each family's parameters live."""

from __future__ import annotations

from dataclasses import dataclass, field


class ModuleSpecError(ValueError):
    """A module family, layer spec or architecture a person asked for that we cannot honour."""


LINEAR_FAMILIES = ("query", "key", "value", "attention_output", "ffn_intermediate", "ffn_output")


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
    # The families held in nn.Linear modules: what LoRA and (IA)³ (tuning/methods.py) can wrap here.
    adapters: tuple[str, ...] = LINEAR_FAMILIES
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
