"""ROME hyperparameters per model family (docs/design.md#rome; Meng et al. 2022, appendix and released configs).

Published values (ROME repository, ``hparams/ROME/gpt2-xl.json`` and ``EleutherAI_gpt-j-6B.json``):
GPT-2 XL edits layer 17, GPT-J layer 5; both use Adam lr 0.5 for at most 20 steps (stop when the
loss < 0.05), kl_factor 0.0625, weight decay 0.5, clamp_norm_factor 4, 20 context texts
(10 of 5 tokens and 10 of 10 tokens) and second moments over 100,000 Wikipedia samples.

For families without a published ROME configuration (GPT-NeoX/Pythia, Llama/SmolLM) we keep the
published optimiser values and default to a layer at ~40 % of the depth (SmolLM2-135M: layer 12),
which lies inside the early-middle MLP band where causal tracing peaks for these models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

from causaleval.errors import CausalEvalError
from causaleval.runs.checks import Rule

KeyMode = Literal["mixed", "averaged", "bare"]
KEY_MODES: tuple[str, ...] = ("mixed", "averaged", "bare")


@dataclass(frozen=True)
class RomeHyperParams:
    """Everything one ROME edit depends on.

    ``key_mode`` chooses the keys of the rank-one update W ← W + (v* − W k) uᵀ / (uᵀ k), u = C⁻¹k̄/‖C⁻¹k̄‖:
    ``"mixed"`` (the original code): u from the key k̄ averaged over the context-prefixed prompts,
    residual and denominator from the bare prompt's key k₀ (so the edited layer maps k₀ to v*);
    ``"averaged"``: k̄ everywhere (maps k̄ to v*); ``"bare"``: k₀ everywhere (maps k₀ to v*).
    """

    layer: int | None = None           # None: ``default_layer_fraction`` of the depth
    default_layer_fraction: float = 0.4
    v_lr: float = 0.5
    v_num_grad_steps: int = 20
    v_loss_stop: float = 0.05
    v_weight_decay: float = 0.5
    kl_factor: float = 0.0625
    clamp_norm_factor: float = 4.0
    kl_prompt: str = "{} is a"
    key_mode: KeyMode = "mixed"
    # context texts prefixed to the prompt (original: 10 × 5 tokens + 10 × 10 tokens)
    context_lengths: tuple[tuple[int, int], ...] = ((5, 10), (10, 10))   # (tokens, how many)
    context_top_k: int = 5
    # second moments C = E[k kᵀ] (original: 100,000 Wikipedia samples)
    stat_tokens: int = 100_000
    stat_seq_len: int = 128
    stat_batch: int = 256
    stat_source: str = "model"         # "model" (sampled from the model) or the path of a local text dataset

    def __post_init__(self) -> None:
        if self.key_mode not in KEY_MODES:
            raise CausalEvalError(f"ROME key_mode {self.key_mode!r} is not one of {KEY_MODES}")
        for name, rule in RULES.items():
            found = rule.problem(getattr(self, name))
            if found:
                raise CausalEvalError(f"ROME hyperparameter {name} {getattr(self, name)!r}: {found}")
        for tokens, count in self.context_lengths:
            if tokens < 1 or count < 0 or count > 1_000:
                raise CausalEvalError(f"ROME hyperparameter context_lengths {list(self.context_lengths)}: each "
                                      "[tokens, count] needs tokens ≥ 1 and 0 ≤ count ≤ 1000")

    @property
    def n_context(self) -> int:
        return sum(n for _, n in self.context_lengths)

    def layer_for(self, n_layers: int) -> int:
        if self.layer is not None:
            return self.layer
        return min(n_layers - 1, int(round(self.default_layer_fraction * n_layers)))

    def updated(self, **changes) -> "RomeHyperParams":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)


# Range of each numeric hyperparameter (every float must also be finite); a field without a rule is unchecked.
RULES: dict[str, Rule] = {
    "layer": Rule(low=0),
    "default_layer_fraction": Rule(low=0, high=1),
    "v_lr": Rule(low=0, low_open=True, high=1e3),
    "v_num_grad_steps": Rule(low=1, high=100_000),
    "v_loss_stop": Rule(low=0),
    "v_weight_decay": Rule(low=0),
    "kl_factor": Rule(low=0),
    "clamp_norm_factor": Rule(low=0, low_open=True),
    "context_top_k": Rule(low=1),
    "stat_tokens": Rule(low=1, high=100_000_000, why="the corpus is held in memory"),
    "stat_seq_len": Rule(low=2, high=100_000),
    "stat_batch": Rule(low=1, high=100_000),
}

HPARAMS: dict[str, RomeHyperParams] = {
    "gpt2": RomeHyperParams(layer=None, default_layer_fraction=17 / 48),   # GPT-2 XL: layer 17 of 48
    "gptj": RomeHyperParams(layer=None, default_layer_fraction=5 / 28),    # GPT-J: layer 5 of 28
    "gpt_neox": RomeHyperParams(),
    "llama": RomeHyperParams(),
    "gemma3": RomeHyperParams(),
}
# The published layer for the exact published models (matched on the number of layers).
PUBLISHED_LAYERS: dict[tuple[str, int], int] = {("gpt2", 48): 17, ("gptj", 28): 5}


def hparams_for(family: str, n_layers: int | None = None, **overrides) -> RomeHyperParams:
    """The family's configuration (the published layer for GPT-2 XL / GPT-J), with ``overrides``."""
    if family not in HPARAMS:
        raise CausalEvalError(f"no ROME hyperparameters for family {family!r}; known: {sorted(HPARAMS)}")
    hp = HPARAMS[family]
    if n_layers is not None and (family, n_layers) in PUBLISHED_LAYERS:
        hp = replace(hp, layer=PUBLISHED_LAYERS[(family, n_layers)])
    return hp.updated(**overrides)


# ---------------------------------------------------------------------------------------------
# importing the original ROME repository's hparams JSON and EasyEdit's ROME YAML

# keys both formats share with RomeHyperParams, under the same meaning
_SAME = ("v_num_grad_steps", "v_lr", "v_weight_decay", "clamp_norm_factor", "kl_factor")


@dataclass(frozen=True)
class ImportedHparams:
    """The RomeHyperParams overrides read from a ROME/EasyEdit file, the keys not used (module names, devices,
    paths) and the settings causaleval cannot follow (``differs``: key → why)."""

    source: str
    overrides: dict
    not_used: dict
    differs: dict

    def hparams(self, base: RomeHyperParams | None = None) -> RomeHyperParams:
        return replace(base or RomeHyperParams(), **self.overrides)


def coerce_override(name: str, value):
    """``value`` as the type of RomeHyperParams field ``name``; unknown names are an error."""
    import dataclasses

    types_ = {f.name: f.type for f in dataclasses.fields(RomeHyperParams)}
    if name not in types_:
        raise CausalEvalError(f"unknown ROME hyperparameter {name!r}; known: {', '.join(types_)}")
    try:
        if name == "context_lengths":
            return tuple((int(length), int(n)) for length, n in value)
        if name == "layer":
            return None if value is None else int(value)
        default = getattr(RomeHyperParams(), name)
        if isinstance(default, bool) or isinstance(default, str):
            if not isinstance(value, type(default)):
                raise TypeError
            return value
        if isinstance(default, int):
            if isinstance(value, bool) or int(value) != value:
                raise TypeError
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
    except (TypeError, ValueError) as err:
        raise CausalEvalError(f"ROME hyperparameter {name}: {value!r} is not a valid "
                              f"{'list of [tokens, count] pairs' if name == 'context_lengths' else types_[name]}") from err
    return value


def import_rome_hparams(path) -> ImportedHparams:
    """Read ROME's ``hparams/ROME/<model>.json`` (Meng et al. 2022) or EasyEdit's ``hparams/ROME/<model>.yaml``.

    Mapping: ``layers: [l]`` → ``layer``; ``v_num_grad_steps``, ``v_lr``, ``v_weight_decay``,
    ``clamp_norm_factor``, ``kl_factor`` → the same names; ``context_template_length_params`` →
    ``context_lengths``; ``mom2_n_samples`` → ``stat_tokens`` (the original counts Wikipedia text
    samples, causaleval counts tokens); ``mom2_dataset`` → ``stat_source`` only when it is a local
    path.  ``fact_token`` must be ``subject_last`` (what causaleval implements); ``mom2_adjustment: false``
    (EasyEdit's Llama files) is reported in ``differs``, since causaleval always uses C⁻¹; module
    names, dtypes, devices and ``v_loss_layer`` (causaleval reads the loss at the output, as the
    published files do) are returned in ``not_used``.
    """
    from pathlib import Path

    import yaml

    path = Path(path)
    if not path.is_file():
        raise CausalEvalError(f"ROME hparams file {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
        from causaleval.data.counterfact import nesting_depth

        if nesting_depth(text) > 16:       # refused before the parser recurses (a JSON bomb)
            raise RecursionError
        data = yaml.safe_load(text)    # JSON is YAML
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise CausalEvalError(f"ROME hparams file {path}: not valid JSON/YAML ({str(err).splitlines()[0]})") from err
    except RecursionError as err:
        raise CausalEvalError(f"ROME hparams file {path}: nested too deeply to be a hyperparameters file") from err
    except (ValueError, OSError) as err:      # an integer of more than 4,300 digits; an unreadable file
        raise CausalEvalError(f"ROME hparams file {path}: cannot be read ({str(err).splitlines()[0][:200]})") from err
    if not isinstance(data, dict):
        raise CausalEvalError(f"ROME hparams file {path}: expected a mapping of hyperparameters")
    where = f"ROME hparams file {path}"
    alg = data.get("alg_name", "ROME")
    if str(alg).upper() != "ROME":
        raise CausalEvalError(f"{where}: alg_name is {alg!r}; only ROME hyperparameters can be imported")
    out: dict = {}
    not_used: dict = {}
    differs: dict = {}
    for key, value in data.items():
        if key in _SAME:
            out[key] = coerce_override(key, value)
        elif key == "layers":
            layers = value if isinstance(value, list) else [value]
            if len(layers) != 1:
                raise CausalEvalError(f"{where}: layers {value!r} lists {len(layers)} layers; ROME edits one "
                                      "(several layers is MEMIT)")
            out["layer"] = coerce_override("layer", layers[0])
        elif key == "fact_token":
            if value != "subject_last":
                raise CausalEvalError(f"{where}: fact_token {value!r} is not supported; causaleval edits at the "
                                      "subject's last token (fact_token: subject_last)")
        elif key == "mom2_adjustment":
            if value is not True:      # EasyEdit's Llama files say false; causaleval's ROME always uses C⁻¹
                differs[key] = f"{value!r}: causaleval always uses the key second moments C (mom2_adjustment: true)"
        elif key == "context_template_length_params":
            out["context_lengths"] = coerce_override("context_lengths", value)
        elif key == "mom2_n_samples":
            out["stat_tokens"] = coerce_override("stat_tokens", value)
        elif key == "mom2_dataset" and Path(str(value)).exists():
            out["stat_source"] = str(value)
        else:
            not_used[key] = value
    replace(RomeHyperParams(), **out)      # runs the range checks of __post_init__
    return ImportedHparams(source=str(path), overrides=out, not_used=not_used, differs=differs)
