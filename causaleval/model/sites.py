"""Site maps per model family (docs/design.md#models, docs/estimands.md#sites).

A *site* is (layer, token position, component).  Components:
``residual`` = block output (the residual stream after block l), ``attn`` = attention output,
``mlp`` = MLP output, plus ``embed`` (token embeddings) and ``down_proj`` (the MLP output
projection that ROME rewrites).  Module paths follow the HuggingFace implementations.

In a family with norms after the sublayers (Gemma 3: ``post_attention_layernorm``,
``post_feedforward_layernorm``), ``attn`` and ``mlp`` are the outputs of those norms, i.e. exactly what
each sublayer adds to the residual stream (as in every other family); the MLP module itself, which
holds ``down_proj``, is then named by :attr:`FamilySpec.ffn` (docs/estimands.md#sites).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from causaleval.errors import SiteError, UnsupportedArchitectureError

Component = Literal["residual", "attn", "mlp"]
COMPONENTS: tuple[str, ...] = ("residual", "mlp", "attn")


@dataclass(frozen=True)
class FamilySpec:
    """Where the sites of one architecture family live.

    ``down_proj_orientation`` is ``"linear"`` for ``nn.Linear`` (weight is out × in) and
    ``"conv1d"`` for GPT-2's ``Conv1D`` (weight stored transposed, in × out).

    ``ffn``: the MLP module holding ``down_proj`` when it is not the ``mlp`` site, i.e. when a norm
    follows the MLP inside the block (Gemma); then ROME's δ enters at ``down_proj``'s output and the
    edited block itself is re-run, since the norm stands between it and the residual stream.
    ``embed_scale``: the attribute of the embedding module holding the factor its output is multiplied
    by (Gemma: √d), so that noise acts on what the first block receives.
    """

    name: str
    model_types: tuple[str, ...]
    embed: str
    layers: str
    attn: str
    mlp: str
    down_proj: str
    down_proj_orientation: Literal["linear", "conv1d"]
    final_norm: str
    n_layer_attr: str = "num_hidden_layers"
    ffn: str | None = None
    embed_scale: str | None = None

    @property
    def post_mlp_norm(self) -> bool:
        """True when a norm sits between the MLP and the residual stream (the ``mlp`` site is that norm)."""
        return self.ffn is not None

    def layer_path(self, layer: int) -> str:
        return f"{self.layers}.{layer}"

    def module_path(self, component: str, layer: int) -> str:
        """Dotted path of ``component`` at ``layer`` (``embed`` ignores the layer)."""
        if component == "embed":
            return self.embed
        if component == "residual":
            return self.layer_path(layer)
        if component == "attn":
            return f"{self.layer_path(layer)}.{self.attn}"
        if component == "mlp":
            return f"{self.layer_path(layer)}.{self.mlp}"
        if component == "down_proj":
            return f"{self.layer_path(layer)}.{self.ffn or self.mlp}.{self.down_proj}"
        raise SiteError(f"unknown component {component!r}; choose one of {COMPONENTS + ('embed', 'down_proj')}")


FAMILIES: dict[str, FamilySpec] = {
    "gpt2": FamilySpec(
        name="gpt2", model_types=("gpt2",), embed="transformer.wte", layers="transformer.h",
        attn="attn", mlp="mlp", down_proj="c_proj", down_proj_orientation="conv1d",
        final_norm="transformer.ln_f",
    ),
    "gptj": FamilySpec(
        name="gptj", model_types=("gptj",), embed="transformer.wte", layers="transformer.h",
        attn="attn", mlp="mlp", down_proj="fc_out", down_proj_orientation="linear",
        final_norm="transformer.ln_f",
    ),
    "gpt_neox": FamilySpec(
        name="gpt_neox", model_types=("gpt_neox",), embed="gpt_neox.embed_in", layers="gpt_neox.layers",
        attn="attention", mlp="mlp", down_proj="dense_4h_to_h", down_proj_orientation="linear",
        final_norm="gpt_neox.final_layer_norm",
    ),
    "llama": FamilySpec(
        name="llama", model_types=("llama", "mistral", "qwen2", "qwen3", "smollm3"),
        embed="model.embed_tokens", layers="model.layers", attn="self_attn", mlp="mlp",
        down_proj="down_proj", down_proj_orientation="linear", final_norm="model.norm",
    ),
    # Gemma 3 text models (270M, 1B): sandwich norms, the sites are the post-norms' outputs (what is added
    # to the residual); embeddings scaled by √d (Gemma3TextScaledWordEmbedding).  The multimodal model
    # type "gemma3" (Gemma3ForConditionalGeneration, 4B and up) nests its text model under
    # model.language_model and is not mapped.
    "gemma3": FamilySpec(
        name="gemma3", model_types=("gemma3_text",), embed="model.embed_tokens", layers="model.layers",
        attn="post_attention_layernorm", mlp="post_feedforward_layernorm", down_proj="down_proj",
        down_proj_orientation="linear", final_norm="model.norm", ffn="mlp", embed_scale="embed_scale",
    ),
}


def supported_families() -> str:
    return ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES.values())


def family_for(model_type: str) -> FamilySpec:
    """The site map for a HF ``config.model_type``; a clear error for unknown families."""
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    raise UnsupportedArchitectureError(
        f"model type {model_type!r} has no site map. Supported families: {supported_families()}. "
        "Add a FamilySpec to causaleval/model/sites.py to support another architecture."
    )


def get_module(model: torch.nn.Module, path: str) -> torch.nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError as err:
        raise SiteError(f"module {path!r} not found in {type(model).__name__}") from err


def n_layers(model: torch.nn.Module) -> int:
    return int(model.config.num_hidden_layers)


def check_layer(layer: int, num_layers: int) -> None:
    if not 0 <= layer < num_layers:
        raise SiteError(f"layer {layer} is out of range: the model has layers 0..{num_layers - 1}")


def window_layers(center: int, window: int, num_layers: int) -> list[int]:
    """Layers covered by a window of ``window`` layers centred at ``center`` (docs/estimands.md):
    max(0, l − ⌊w/2⌋) … min(L, l + ⌈w/2⌉) − 1."""
    if window < 1 or window > num_layers:
        raise SiteError(f"window {window} must lie in 1..{num_layers} (the model's number of layers)")
    check_layer(center, num_layers)
    lo = max(0, center - window // 2)
    hi = min(num_layers, center - (-window // 2))
    return list(range(lo, hi))


def embedding_scale(model: torch.nn.Module, family: FamilySpec) -> float:
    """The factor the family's embedding module multiplies its table rows by (1 when it has none)."""
    if family.embed_scale is None:
        return 1.0
    return float(getattr(get_module(model, family.embed), family.embed_scale))


@torch.no_grad()
def input_embeddings(model: torch.nn.Module, family: FamilySpec, ids: torch.Tensor) -> torch.Tensor:
    """What the first block receives for token ids ``ids``: the embedding module's output (for most
    families the table rows, for Gemma the rows times √d)."""
    module = get_module(model, family.embed)
    return module(ids.to(module.weight.device))


def down_proj_weight_out_in(model: torch.nn.Module, family: FamilySpec, layer: int) -> torch.Tensor:
    """The down-projection weight as an (out × in) view, whatever its storage orientation."""
    w = get_module(model, family.module_path("down_proj", layer)).weight
    return w if family.down_proj_orientation == "linear" else w.T
