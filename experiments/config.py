"""Study configuration: presets, ``--config`` files and ``--set key=value`` overrides, typed and checked.

Precedence (later wins): the preset, then a ``--config`` file (YAML or JSON; a ``run.json`` of an
earlier run also works: its ``config`` is used), then the dedicated flags (``--max-facts`` …), then
``--set key=value`` in the order given.  Every value is parsed against the field's type; an unknown
key or a value of the wrong type is a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import functools
import json
import sys
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from causaleval.errors import CausalEvalError, ConfigError
from causaleval.runs.checks import Rule, link_problem
from causaleval.runs.rules import MAX_CASES, MAX_DRAWS, MAX_LAYERS, RULES  # noqa: F401 (re-exported)


@dataclass
class StudyConfig:
    """Everything a run depends on.  ``None`` for a limit means "all"."""

    model: str = "smollm2"
    facts: str | None = None          # local CounterFact JSON; None = built-in geography facts
    out: str | None = None            # results folder; None = results/<model>
    preset: str = "default"
    seed: int = 0                     # the fact sample, ROME context texts and bootstrap/permutation streams
    trace_seed: int | None = None     # noise draws and partners of trace/support/validate; None = seed
    device: str = "cpu"
    dtype: str = "float32"
    trust_remote_code: bool = False
    relations: list[str] | None = None
    max_facts: int | None = None      # known facts used by trace/edit (first n after a seeded shuffle)
    exclude_facts_from: list[str] | None = None  # results folders whose studied facts this run leaves out (held out)
    plan: str | None = None           # analysis plan (paper/plan.yaml): a confirmatory run (docs/confirmatory.md)
    batch_size: int = 64
    # where per-case work runs: "local" (in-process) or "ray"
    backend: str = "local"
    ray_address: str | None = None    # an existing Ray cluster ("auto", "ray://host:10001"); None = start one here
    workers: int | None = None        # Ray workers; None = one per GPU (cuda) or 2 (cpu)
    shard_size: int = 4               # cases per Ray task
    # localisation (docs/estimands.md)
    noise_draws: int = 10
    partner_draws: int = 10
    trace_components: list[str] = field(default_factory=lambda: ["residual", "mlp", "attn"])
    trace_window: int = 10
    trace_estimators: list[str] = field(default_factory=lambda: ["noise", "resample", "flip"])
    trace_layers: list[int] | None = None   # layers of the heatmap site set (None = every layer)
    heatmap_cases: int | None = None        # cases (first n of the study facts) that get the heatmap set
    noise_scale_factor: float = 3.0         # ν = factor × std of subject-token embeddings (docs/estimands.md#noise-tracing)
    # editing (docs/design.md#rome)
    edit_layers: list[int] | None = None   # None = every `edit_layer_step`-th layer and the last
    edit_layer_step: int = 3
    rome_context_texts: int = 4            # N model-generated context texts (original ROME: 20)
    rome_stat_tokens: int = 100_000         # tokens for C = E[k kᵀ] (sampled from the model unless rome_stat_source)
    rome_stat_source: str = "model"         # "model" or the path of a local text dataset
    rome_max_neighbours: int | None = 10    # neighbourhood prompts scored per case (CounterFact: 10; None = all; seeded sample)
    rome_key_mode: str = "mixed"            # "mixed" (original), "averaged" or "bare" (docs/design.md#rome)
    rome_hparams: dict = field(default_factory=dict)  # further RomeHyperParams overrides (v_lr, kl_factor, ...)
    editors: list[str] = field(default_factory=lambda: ["rome"])   # rome, ft1, ft5, memit (docs/editors.md)
    editor_hparams: dict = field(default_factory=dict)  # per editor: {ft1: {lr: 1e-3}, memit: {mom2_update_weight: 2e4}}
    edit_problems: list[str] = field(default_factory=lambda: ["error_injection"])   # docs/problems.md
    # analysis (docs/design.md#the-hypothesis-test)
    analysis_window: int = 5
    n_bootstrap: int = 1000
    # within-fact measures, golden layer, spec curve (docs/outputs.md#withinfact); 0 permutations = skip
    withinfact_permutations: int = 100
    withinfact_bootstrap: int = 100
    # batched ROME sweeps: cases optimised and scored together at each edit layer (1 = one at a time)
    rome_batch_cases: int = 16
    # batched tracing: cases traced together in shared block calls (1 = one at a time)
    trace_batch_cases: int = 16
    # support diagnostics: where corrupted runs land
    support_noise_scales: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 3.0, 5.0, 8.0])  # ν / σ_emb
    support_draws: int = 10                 # draws per case and base distribution (partners: at most this many)
    support_retrace_draws: int | None = None   # noise draws of the ΔR²_noise(ν) retraces; None = noise_draws
    support_reference_facts: int | None = 400   # held-out real subjects for the real-state reference (fit + calibration)
    support_min_reference: int = 40         # fewer held-out facts: two-fold cross-fitting over all known facts
    support_quantile: float = 0.99          # τ_l: this quantile of held-out real states' distances
    # validate: localise facts planted by ROME (docs/estimands.md#planted-facts)
    validate_facts: int | None = 50         # study facts (stratified over relations) edited; None = all
    validate_layers: list[int] | None = None  # planted layers; None = validate_layer_count layers from 0.1·L to 0.8·L
    validate_layer_count: int = 4
    validate_windows: list[int] = field(default_factory=lambda: [1, 5])   # MLP windows traced at every layer
    validate_positions: str = "from_subject"  # positions traced: from_subject, or subject_last (what accuracy reads)
    validate_components: list[str] = field(default_factory=lambda: ["mlp"])   # mlp; residual adds the onset trace
    validate_permutations: int = 9999       # sign flips of the paired tests
    # control: a positive control for the H1 pipeline on planted facts (docs/groundtruth.md#positive-control)
    control_facts: int | None = 20          # study facts (stratified over relations) planted and re-edited
    control_layers: list[int] | None = None   # planted layers; None = the edit layers nearest 0.3·L and 0.6·L
    plant_editors: list[str] = field(default_factory=lambda: ["rome"])   # editors that plant o_new

    def to_dict(self) -> dict:
        return asdict(self)

    def updated(self, **changes) -> "StudyConfig":
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in changes.items() if k in known and v is not None})


# One line per setting for --help; a field without a line is listed as "(undocumented)".
HELP: dict[str, str] = {
    "model": "'smollm2' or 'gemma3-270m' (embedded) or a local HF model folder / cache name",
    "facts": "local CounterFact JSON file; null = built-in geography facts",
    "out": "results folder; null = results/<model>-<preset>",
    "preset": "the preset the other values start from",
    "seed": "seed of the fact sample, ROME context texts, bootstraps and permutations (and of the draws when "
            "trace_seed is null)",
    "trace_seed": "seed of the noise draws and partner subjects (trace, support and validate); null = seed. Another "
                  "trace_seed on the same facts is a test-retest of the localisers",
    "device": "torch device: cpu, cuda, cuda:N or mps",
    "dtype": "weights dtype: float32, bfloat16 or float16",
    "trust_remote_code": "let a model folder's own code run",
    "relations": "relation ids to keep (built-in facts, or the relation_id of --facts records); for the built-in "
                 "facts also the sets geo (default), more, all (docs/facts.md)",
    "max_facts": "known facts studied (a seeded sample); null = all",
    "exclude_facts_from": "results folders (e.g. paper/study) whose studied cases are left out of this run's "
                          "studied facts (a held-out sample); the partner pool, noise scale and support "
                          "reference still use every known fact",
    "plan": "analysis plan file (e.g. paper/plan.yaml): the run is confirmatory; its facts must be held out from "
            "the plan's exploratory run, and analyze labels the result confirmatory or exploratory "
            "(docs/confirmatory.md)",
    "batch_size": "prompts per forward pass (speed only)",
    "backend": "local or ray",
    "ray_address": "address of an existing Ray cluster; null = start one here",
    "workers": "Ray workers; null = one per GPU, or 2 on CPU",
    "shard_size": "cases per Ray task",
    "noise_draws": "Gaussian noise draws per case (noise tracing)",
    "partner_draws": "partner subjects per case (resample and flip scrubbing)",
    "trace_components": "heatmap components: residual, mlp, attn",
    "trace_window": "layers restored together for mlp/attn heatmaps (Meng et al. 2022: 10)",
    "trace_estimators": "estimators run: noise, resample, flip",
    "trace_layers": "layers of the heatmap site set; null = every layer",
    "heatmap_cases": "cases (first n) that get full heatmaps; null = all",
    "noise_scale_factor": "noise scale ν = factor × std of subject-token embeddings (Meng et al. 2022: 3)",
    "edit_layers": "layers edited with ROME; null = every edit_layer_step-th layer and the last",
    "edit_layer_step": "step between edit layers when edit_layers is null",
    "rome_context_texts": "model-generated context texts prefixed to the prompt (original ROME: 20)",
    "rome_stat_tokens": "tokens for the key second moments C = E[k kᵀ]",
    "rome_stat_source": "'model' (text sampled from the model) or the path of a local text dataset",
    "rome_max_neighbours": "neighbourhood prompts scored per case; null = all",
    "rome_key_mode": "ROME keys: mixed (original), averaged or bare",
    "rome_hparams": "further ROME hyperparameters, e.g. {v_lr: 0.5, kl_factor: 0.0625} (see --rome-hparams)",
    "analysis_window": "MLP window (layers) of the localisation effect used in the regressions",
    "n_bootstrap": "bootstrap resamples per confidence interval",
    "withinfact_permutations": "analyze stage: swap/permutation draws per within-fact test and per specification "
                               "of the specification curve; 0 = no within-fact analyses",
    "withinfact_bootstrap": "analyze stage: bootstrap resamples per within-fact interval",
    "editors": "editors run by the edit stage: rome, ft1, ft5, memit (docs/editors.md)",
    "editor_hparams": "per-editor hyperparameter overrides, e.g. {ft5: {norm_constraint: 2e-5}} "
                      "(--set editor_hparams.ft5.norm_constraint=2e-5)",
    "edit_problems": "editing problems of the edit stage: error_injection, fact_forcing, flip_forcing, "
                     "fact_erasure, fact_amplification (docs/problems.md)",
    "rome_batch_cases": "cases whose ROME v* is optimised and scored together at each layer (speed only; 1 = one at a time)",
    "trace_batch_cases": "cases traced together in shared block calls (speed only; 1 = one at a time)",
    "support_noise_scales": "noise scales ν/σ_emb of the support stage's noise arms",
    "support_draws": "draws per case and base distribution in the support stage",
    "support_retrace_draws": "noise draws per case of the support stage's ΔR²_noise(ν) retraces; null = noise_draws",
    "support_reference_facts": "held-out real subjects for the real-state reference (fit + calibration)",
    "support_min_reference": "fewer held-out facts than this: two-fold cross-fitting over all known facts",
    "support_quantile": "the real-state distance quantile τ_l beyond which a state counts as off-distribution",
    "validate_facts": "validate stage: study facts (stratified over relations) edited and localised; null = all",
    "validate_layers": "validate stage: layers ROME edits are planted at; null = validate_layer_count from 0.1·L to 0.8·L",
    "validate_layer_count": "validate stage: planted layers when validate_layers is null (SmolLM2, 4: 3, 10, 17, 24)",
    "validate_windows": "validate stage: MLP windows traced at every layer",
    "validate_positions": "validate stage: positions traced: from_subject (every position from the first subject "
                          "token) or subject_last (the only one the accuracy reads; cheaper)",
    "validate_components": "validate stage: components traced: mlp (the windows of validate_windows); residual also "
                           "traces the residual stream at the last token, window 1, every layer (the onset layer, "
                           "docs/groundtruth.md#onset)",
    "validate_permutations": "validate stage: random sign flips of the paired tests (flip/resample − noise)",
    "control_facts": "control stage: study facts (stratified over relations) planted at control_layers and "
                     "re-edited at every edit layer; null = all",
    "control_layers": "control stage: planted layers; null = the edit layers nearest 0.3·L and 0.6·L",
    "plant_editors": "validate and control stages: editors that plant o_new (rome, ft1, memit; "
                     "docs/groundtruth.md#planting)",
}

PRESETS: dict[str, dict] = {
    # `make run` on a 2-core laptop CPU with SmolLM2: 48 known facts
    # stratified over relations × 9 edit layers (0, 4, …, 28, 29), all three estimators, ROME statistics
    # from 20k sampled tokens, the support stage at ν ∈ {1, 3, 8} σ_emb.  ROME takes 2 context texts
    # (the study 4, the original 20): v* is most of the run's time, and 2 rather than 4 keeps it ≤ 20 min.
    "default": dict(max_facts=48, noise_draws=3, partner_draws=3, edit_layer_step=4, heatmap_cases=1,
                    trace_components=["residual", "mlp"], rome_stat_tokens=20_000, rome_context_texts=2,
                    support_draws=3, support_noise_scales=[1.0, 3.0, 8.0], validate_facts=10),
    # The committed study: 200 known facts stratified over relations × 9 edit layers (0, 4, …, 28, 29),
    # all three estimators; ≈ 2 h on 2 CPU cores (docs/timings.md has the measured time per stage).
    # 10 noise draws and 10 partners per case: at 3 each, the within-layer split-half reliability of the
    # effect was 0.82 (noise), 0.72 (flip), 0.25 (resample); Spearman–Brown puts 10 at ≥ 0.9 for noise and
    # flip.  The ΔR²_noise(ν) retraces of the support stage keep 3 draws (six scales at 10 would double the run).
    "study": dict(max_facts=200, noise_draws=10, partner_draws=10, edit_layer_step=4, heatmap_cases=2,
                  trace_components=["residual", "mlp"], rome_stat_tokens=20_000, support_draws=5,
                  support_retrace_draws=3, validate_facts=50),
    # Every known fact and every layer (for a GPU).
    "paper": dict(max_facts=None, noise_draws=10, partner_draws=10, edit_layer_step=1, validate_facts=200,
                  validate_layer_count=8),
    # Seconds-scale run for tests.
    "smoke": dict(max_facts=6, noise_draws=3, partner_draws=3, edit_layer_step=2, n_bootstrap=200,
                  withinfact_permutations=10, withinfact_bootstrap=10,
                  trace_components=["residual", "mlp"], heatmap_cases=1, trace_layers=[0, 10, 20, 29],
                  support_draws=3, support_noise_scales=[1.0, 3.0], validate_facts=2, validate_layer_count=2,
                  validate_windows=[1, 3],
                  validate_permutations=999, control_facts=3),
}


def draw_seed(cfg: StudyConfig) -> int:
    """The seed of the noise draws and partner subjects: ``trace_seed``, or ``seed`` when it is null."""
    return cfg.seed if cfg.trace_seed is None else cfg.trace_seed


def resolve(preset: str, **overrides) -> StudyConfig:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    cfg = StudyConfig(preset=preset).updated(**PRESETS[preset])
    return cfg.updated(**overrides)


# ---------------------------------------------------------------------------------------------
# typed values


@functools.cache
def field_types() -> dict[str, object]:
    return typing.get_type_hints(StudyConfig)


MAX_LIST_ITEMS = 10_000      # items of one list setting (layers, relations, scales): far above any real use


def _split(tp) -> tuple[object, bool]:
    """(the type without None, whether None is allowed)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def coerce(key: str, value, tp=None):
    """``value`` as the type of setting ``key`` (strings from the command line are parsed as YAML)."""
    types_ = field_types()
    if key not in types_:
        import difflib

        close = difflib.get_close_matches(key, list(types_), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown setting {key!r}; {hint}settings are: {', '.join(types_)}")
    tp = types_[key] if tp is None else tp
    base, nullable = _split(tp)
    bad = ConfigError(f"setting {key!r}: {value!r} is not a valid {_type_name(tp)}")
    if isinstance(value, str) and base is not str:
        try:
            value = _parse_text(value, base)
        except ConfigError as err:
            raise ConfigError(f"setting {key!r}: {err}") from err
    if value is None:
        if nullable:
            return None
        raise bad
    origin = typing.get_origin(base)
    if base is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if base is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)           # 1e9 or 1.0e9
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if base is str:
        if not isinstance(value, str):
            raise bad
        return value
    if origin is list:
        (item,) = typing.get_args(base)
        if not isinstance(value, list):
            value = [value]
        if len(value) > MAX_LIST_ITEMS:
            raise ConfigError(f"setting {key!r} lists {len(value):,} values; at most {MAX_LIST_ITEMS:,} are allowed")
        return [coerce(key, v, item) for v in value]
    if base is dict or origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    raise bad


def _parse_text(text: str, base):
    import yaml

    s = text.strip()
    if s.lower() in ("none", "null", "~", ""):
        return None
    if typing.get_origin(base) is list and not s.startswith("["):
        s = "[" + s + "]"    # a,b,c as a list
    try:
        value = yaml.safe_load(s)
    except yaml.YAMLError:
        return text
    except RecursionError as err:
        raise ConfigError(f"value {text[:40]!r}… is nested too deeply") from err
    except ValueError as err:        # an integer of more than 4,300 digits (Python's limit)
        raise ConfigError(f"value {text[:40]!r}…: {str(err).split(';')[0]}") from err
    if isinstance(value, str) and base in (int, float):
        value = _number(value)
    return value


def _number(text: str):
    """``1e9``, ``inf``, ``nan`` (which YAML reads as text) as a float; other text unchanged."""
    try:
        return float(text)
    except ValueError:
        return text


def _type_name(tp) -> str:
    base, nullable = _split(tp)
    name = getattr(base, "__name__", str(base)) if typing.get_origin(base) is None else str(base)
    return f"{name} or null" if nullable else name


def parse_set(items: list[str]) -> dict:
    """``["key=value", ...]`` → typed values; ``rome_hparams.v_lr=0.1`` sets one ROME hyperparameter."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set noise_draws=5")
        if len(value) > MAX_SET_CHARS:
            raise ConfigError(f"--set {key}: the value has {len(value):,} characters (at most {MAX_SET_CHARS:,})")
        if key.startswith("rome_hparams."):
            out.setdefault("rome_hparams", {})[key.split(".", 1)[1]] = _parse_text(value, object)
            continue
        if key.startswith("editor_hparams.") and key.count(".") == 2:
            _, editor, name = key.split(".")
            out.setdefault("editor_hparams", {}).setdefault(editor, {})[name] = _parse_text(value, object)
            continue
        if key.startswith("editor_hparams.") and key.count(".") == 1:     # editor_hparams.ft1=FILE
            editor = key.split(".")[1]
            out.setdefault("editor_hparams", {}).setdefault(editor, {}).update(editor_hparams_file(editor, value))
            continue
        out[key] = coerce(key, value)
    if "rome_hparams" in out:
        out["rome_hparams"] = _rome_overrides(out["rome_hparams"])
    if "editor_hparams" in out:
        out["editor_hparams"] = editor_overrides(out["editor_hparams"])
    _check_preset(out, "--set preset")
    return out


def editor_overrides(values) -> dict:
    """``{editor: {name: value}}`` with each value as its hyperparameter's type ("2e-5" → 2e-05); unknown
    editors or names are a ConfigError."""
    import dataclasses

    from causaleval.editing.ft import FT_PRESETS, FTHyperParams
    from causaleval.editing.memit import MemitHyperParams

    if not isinstance(values, dict):
        raise ConfigError(f"editor_hparams {values!r}: expected {{editor: {{hyperparameter: value}}}}")
    out: dict = {}
    for editor, items in values.items():
        cls = FTHyperParams if editor in FT_PRESETS else MemitHyperParams if editor == "memit" else None
        if cls is None:
            raise ConfigError(f"editor_hparams.{editor}: only ft1, ft5 and memit take overrides here "
                              "(ROME's: rome_hparams)")
        if isinstance(items, (str, Path)):             # a hyperparameter file (in a settings file)
            items = editor_hparams_file(editor, items)
        if not isinstance(items, dict):
            raise ConfigError(f"editor_hparams.{editor} {items!r}: expected a mapping of hyperparameter: value "
                              "or the path of a hyperparameter file")
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        out[editor] = {}
        for name, value in items.items():
            if name not in defaults:
                raise ConfigError(f"editor_hparams.{editor}.{name}: unknown hyperparameter; known: "
                                  f"{', '.join(defaults)}")
            value = _number(value) if isinstance(value, str) else value
            kind = type(defaults[name])
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and \
                (kind is float or float(value).is_integer())
            if not ok:
                raise ConfigError(f"editor_hparams.{editor}.{name}: {value!r} is not a valid {kind.__name__}")
            out[editor][name] = kind(value)
    return out


def editor_hparams_file(editor: str, path) -> dict:
    """The hyperparameters of ``editor`` (ft1, ft5, memit) from the ROME/MEMIT repositories' ``hparams/FT`` or
    ``hparams/MEMIT`` JSON or EasyEdit's YAML (``--set editor_hparams.ft1=FILE``), checked now, before any
    model loads.  FT: the window is the editor's (FT-1 one layer, FT-5 five), so a file's ``layers`` is
    not used; MEMIT: ``layers`` gives the window's size.  Prints what is used and what is not."""
    from causaleval.editing.ft import FT_PRESETS, _read_mapping, import_ft_hparams
    from causaleval.editing.memit import import_memit_hparams

    flag = f"editor_hparams.{editor}"
    if editor not in FT_PRESETS and editor != "memit":
        raise ConfigError(f"{flag}: only ft1, ft5 and memit take a hyperparameter file here (ROME's: --rome-hparams)")
    check_path(flag, path)
    try:
        if editor in FT_PRESETS:
            hp, not_used = import_ft_hparams(path)
            given = set(_read_mapping(path, "FT")[0])
            values = {k: v for k, v in hp.to_dict().items() if k in given}
            if "layers" in given:
                not_used["layers"] = f"{hp.window} layer(s); {editor} tunes {FT_PRESETS[editor].window}"
        else:
            hp, not_used = import_memit_hparams(path)
            given = set(_read_mapping(path, "MEMIT")[0]) | ({"window"} if "layers" in not_used else set())
            values = {k: v for k, v in hp.to_dict().items() if k in given}
            not_used.pop("layers", None)
    except CausalEvalError as err:
        raise ConfigError(f"{flag}: {err}") from err
    print(f"{flag}={path}: using {', '.join(sorted(values))}; not used: {', '.join(sorted(not_used)) or 'nothing'}",
          file=sys.stderr)
    return values


MAX_SET_CHARS = 100_000
MAX_CONFIG_BYTES = 1_000_000     # a settings file (or a run.json) is a few kB


def _check_preset(values: dict, where: str) -> None:
    """A preset named in --set or --config is one of PRESETS (also when --preset overrides it)."""
    if "preset" in values and values["preset"] not in PRESETS:
        raise ConfigError(f"{where} {values['preset']!r}: unknown preset; choose one of {sorted(PRESETS)}")


def path_problem(value: str) -> str | None:
    """Why ``value`` cannot be a file system path here (too long as a whole or in one name), or None."""
    import os

    limit = os.pathconf("/", "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    if len(value.encode("utf-8", "surrogatepass")) > 4096:
        return f"is {len(value):,} characters long; a path or model name is at most 4,096"
    if "\x00" in value:
        return "holds a NUL character"
    longest = max(value.split("/"), key=lambda part: len(part.encode("utf-8", "surrogatepass")))
    if len(longest.encode("utf-8", "surrogatepass")) > limit:
        return (f"has a name of {len(longest.encode('utf-8', 'surrogatepass')):,} bytes ({longest[:20]}…); the file "
                f"system allows {limit}")
    return None


def check_path(flag: str, value) -> None:
    found = path_problem(str(value))
    if found:
        raise ConfigError(f"{flag} {str(value)[:60]!r}…: {found}")


def _rome_overrides(values: dict) -> dict:
    from causaleval.editing.rome.hparams import coerce_override

    return {k: coerce_override(k, v) for k, v in values.items()}


def load_config_file(path: str | Path) -> dict:
    """Settings from a YAML or JSON file (a mapping of setting → value, or a run.json)."""
    import yaml

    check_path("--config", path)
    path = Path(path)
    found = link_problem(path)
    if found:
        raise ConfigError(f"--config {path}: {found}; fix or remove the link, or pass the file itself")
    if not path.is_file():
        raise ConfigError(f"--config {path}: file not found")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"--config {path}: {path.stat().st_size:,} bytes; a settings file is at most "
                          f"{MAX_CONFIG_BYTES:,} bytes")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except RecursionError as err:
        raise ConfigError(f"--config {path}: nested too deeply to be a settings file") from err
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"--config {path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} "
                          f"({str(err).splitlines()[0]})") from err
    except ValueError as err:        # an integer of more than 4,300 digits (Python's limit)
        raise ConfigError(f"--config {path}: {str(err).split(';')[0]}") from err
    except OSError as err:
        raise ConfigError(f"--config {path}: cannot be read ({err.strerror}); check its permissions") from err
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and "completed_stages" in data:
        data = data["config"]          # the run.json of an earlier run
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of setting: value, got {type(data).__name__}")
    try:
        out = {k: coerce(k, v) for k, v in data.items()}
    except ConfigError as err:
        raise ConfigError(f"--config {path}: {err}") from err
    if "rome_hparams" in out:
        out["rome_hparams"] = _rome_overrides(out["rome_hparams"])
    if "editor_hparams" in out:
        out["editor_hparams"] = editor_overrides(out["editor_hparams"])
    _check_preset(out, f"--config {path}: preset")
    return out


def describe(cfg: StudyConfig) -> str:
    """Every setting with its value in ``cfg`` and its help line (for --help)."""
    lines = []
    for f in fields(cfg):
        value = json.dumps(getattr(cfg, f.name))
        lines.append(f"  {f.name} = {value}\n      {HELP.get(f.name, '(undocumented)')}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# checks that need no model

# settings with a dedicated flag: errors name the flag the user typed
FLAGS = {"max_facts": "--max-facts", "batch_size": "--batch-size", "edit_layers": "--edit-layers",
         "device": "--device", "dtype": "--dtype", "seed": "--seed", "workers": "--workers", "out": "--out",
         "relations": "--relations", "facts": "--facts", "backend": "--backend", "model": "--model"}
ESTIMATORS = ("noise", "resample", "flip")
COMPONENTS = ("residual", "mlp", "attn")
# ROME hyperparameters that have their own study setting
ROME_STUDY_SETTINGS = {"stat_tokens": "rome_stat_tokens", "stat_source": "rome_stat_source",
                       "key_mode": "rome_key_mode", "layer": "edit_layers"}


def name_of(key: str) -> str:
    return f"{FLAGS[key]} ({key})" if key in FLAGS else key


def _bad(key: str, value, what: str) -> ConfigError:
    shown = (" ".join(map(str, value)) or "[]") if isinstance(value, list) else value
    return ConfigError(f"{name_of(key)} {shown!r}: {what}")


# Per-setting checks: causaleval.runs.rules (the API's argument checks share them).
FINITE = Rule()        # the default rule of a float setting without its own


def check_rules(cfg: StudyConfig) -> None:
    """Every setting against its rule in :data:`RULES` (floats without one: finite)."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        rule = RULES.get(f.name)
        if rule is None and _is_floaty(value):
            rule = FINITE
        found = rule.problem(value) if rule is not None and value is not None else None
        if found:
            raise _bad(f.name, value, found)


def _is_floaty(value) -> bool:
    items = value if isinstance(value, list) else [value]
    return any(isinstance(v, float) for v in items)


def validate(cfg: StudyConfig) -> None:
    """Range and choice checks of every setting; a ConfigError names the first bad one."""
    from causaleval.editing.rome.hparams import KEY_MODES, RomeHyperParams
    from causaleval.model.loading import DTYPES

    for key in PATH_KEYS:
        values = getattr(cfg, key)
        for value in (values if isinstance(values, list) else [values]):
            if isinstance(value, str):
                check_path(FLAGS.get(key, key), value)
    check_rules(cfg)
    choices = {"dtype": sorted(DTYPES), "backend": ["local", "ray"], "rome_key_mode": list(KEY_MODES),
               "preset": sorted(PRESETS), "validate_positions": ["from_subject", "subject_last"]}
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise _bad(key, getattr(cfg, key), f"choose one of {', '.join(allowed)}")
    for key, allowed in (("trace_estimators", ESTIMATORS), ("trace_components", COMPONENTS)):
        value = getattr(cfg, key)
        wrong = [v for v in value if v not in allowed]
        if wrong or not value or len(set(value)) != len(value):
            raise _bad(key, value, f"give distinct values from {', '.join(allowed)}")
    if cfg.relations and cfg.facts is None:
        from causaleval.data.catalogue import available, unknown_relations

        wrong = unknown_relations(cfg.relations)
        if wrong:
            raise _bad("relations", cfg.relations, f"{', '.join(wrong)} is not a built-in relation or set; "
                       f"available: {available()}")
    if "mlp" not in cfg.validate_components or len(set(cfg.validate_components)) != len(cfg.validate_components) \
            or any(c not in ("mlp", "residual") for c in cfg.validate_components):
        raise _bad("validate_components", cfg.validate_components, "give mlp, or mlp,residual (the onset trace)")
    from causaleval.groundtruth.planting import PLANT_EDITORS

    if not cfg.plant_editors or len(set(cfg.plant_editors)) != len(cfg.plant_editors) or any(
            e not in PLANT_EDITORS for e in cfg.plant_editors):
        raise _bad("plant_editors", cfg.plant_editors, f"give distinct editors from {', '.join(PLANT_EDITORS)}")
    check_links(cfg)
    if cfg.rome_stat_source != "model" and not Path(cfg.rome_stat_source).exists():
        raise _bad("rome_stat_source", cfg.rome_stat_source, "is neither 'model' nor an existing local dataset path")
    if cfg.facts is not None and not Path(cfg.facts).is_file():
        raise _bad("facts", cfg.facts, "no such file; pass a local CounterFact JSON, or omit --facts for the "
                                       "built-in geography facts")
    if cfg.out is not None:
        check_out(cfg.out)
    for folder in cfg.exclude_facts_from or ():
        excluded_case_ids(folder)
    if cfg.plan is not None:
        check_plan(cfg)
    for key in cfg.rome_hparams:
        if key in ROME_STUDY_SETTINGS:
            raise ConfigError(f"rome_hparams.{key}: set {ROME_STUDY_SETTINGS[key]} instead")
    try:
        RomeHyperParams(**cfg.rome_hparams)
    except CausalEvalError as err:
        raise ConfigError(str(err)) from err
    except Exception as err:  # noqa: BLE001 - TypeError or ValueError from a bad value
        raise ConfigError(f"rome_hparams {cfg.rome_hparams}: {err}") from err
    check_editors(cfg.editors, cfg.editor_hparams)
    from causaleval.editing.problems import parse_problems

    parse_problems(cfg.edit_problems)
    check_device(cfg.device)
    if cfg.dtype == "float16" and cfg.device.split(":")[0] == "cpu":
        raise _bad("dtype", cfg.dtype, "half precision is not supported on the CPU; use float32 or bfloat16, "
                                       "or a CUDA device")


def check_editors(editors: list[str], overrides: dict) -> None:
    """The editors' names and each one's hyperparameters (with ``editor_hparams``) are valid."""
    from causaleval.editing.editor import parse_editors
    from causaleval.editing.ft import FT_PRESETS
    from causaleval.editing.memit import MemitHyperParams

    parse_editors(editors)
    for name, values in editor_overrides(overrides or {}).items():
        try:
            (FT_PRESETS[name].updated(**values) if name in FT_PRESETS else MemitHyperParams(**values))
        except CausalEvalError as err:
            raise ConfigError(f"editor_hparams.{name}: {err}") from err
        except TypeError as err:
            raise ConfigError(f"editor_hparams.{name} {values!r}: unknown hyperparameter ({err})") from err


# settings that are paths (or names): checked for lengths the file system allows before any is opened
PATH_KEYS = ("model", "facts", "out", "rome_stat_source", "exclude_facts_from")


# settings that name files or folders, with what to do when a symbolic link on the way is broken
PATH_SETTINGS = {"facts": "pass the CounterFact file itself",
                 "model": "pass the model folder itself", "rome_stat_source": "pass the dataset itself"}


def check_links(cfg: StudyConfig) -> None:
    """No path setting goes through a dangling or looping symbolic link."""
    for key, fix in PATH_SETTINGS.items():
        value = getattr(cfg, key, None)
        found = link_problem(value) if isinstance(value, str) and value else None
        if found:
            raise _bad(key, value, f"{found}; fix or remove the link, or {fix}")


VIRTUAL_FS = ("/proc", "/sys", "/dev")


def check_out(out: str) -> None:
    """The results folder is a folder, or can be created in a writable folder."""
    import os

    check_path("--out", out)
    path = Path(out)
    virtual = next((v for v in VIRTUAL_FS if path.absolute() == Path(v) or Path(v) in path.absolute().parents), None)
    if virtual:
        raise _bad("out", out, f"is under {virtual}, a virtual file system that cannot hold files; choose a folder "
                               "on a disk")
    found = link_problem(path)
    if found:
        raise _bad("out", out, f"{found}; fix or remove the link, or pass another --out")
    if path.exists() and not path.is_dir():
        raise _bad("out", out, "is an existing file; --out names a results folder")
    base = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if base is not None and not base.is_dir():
        raise _bad("out", out, f"{base} is a file, so the folder cannot be created")
    if base is not None and not os.access(base, os.W_OK | os.X_OK):
        raise _bad("out", out, f"{base} is not writable")


# tables of a results folder that name its studied cases, in the order they are looked for
CASE_TABLES = ("trace_cases.parquet", "edits.parquet")


def excluded_case_ids(folder: str) -> set[str]:
    """The case ids a results folder studied (its trace's cases, or else its edits' cases)."""
    import pandas as pd

    path = Path(folder)
    if not path.is_dir():
        raise _bad("exclude_facts_from", folder, "is not a results folder; name the folder of an earlier run "
                                                 "(e.g. paper/study)")
    for name in CASE_TABLES:
        if (path / name).is_file():
            try:
                return set(pd.read_parquet(path / name, columns=["case_id"]).case_id.astype(str))
            except Exception as err:  # noqa: BLE001 - any unreadable table is the same user error
                raise _bad("exclude_facts_from", folder, f"{name} cannot be read ({type(err).__name__}); "
                                                         "rerun that folder's trace stage") from err
    raise _bad("exclude_facts_from", folder, f"holds neither {' nor '.join(CASE_TABLES)}; name the folder "
                                             "of a run that traced or edited its facts")


def check_plan(cfg: StudyConfig) -> None:
    """A confirmatory run (``plan`` set): the plan loads, covers the model, and the run leaves out the plan's
    exploratory facts (exclude_facts_from names that run)."""
    from causaleval.analysis.plan import PlanError, load_plan

    try:
        design = load_plan(cfg.plan).model(Path(cfg.model).name)
    except PlanError as err:
        raise ConfigError(str(err)) from err
    held_out = [Path(d).resolve() for d in cfg.exclude_facts_from or []]
    if Path(design.exploratory).resolve() not in held_out:
        raise ConfigError(f"--plan {cfg.plan}: a confirmatory run studies held-out facts only; set "
                          f"exclude_facts_from: [{design.exploratory}] (the plan's exploratory run of {design.name})")


def validate_layers(cfg: StudyConfig, n_layers: int) -> None:
    """Layer settings against the model's depth (read from its config, before the weights load)."""
    for key in ("edit_layers", "trace_layers", "validate_layers", "control_layers"):
        value = getattr(cfg, key)
        if value is not None and max(value) >= n_layers:
            raise _bad(key, value, f"the model has layers 0–{n_layers - 1}")
    for key in ("trace_window", "analysis_window"):
        if getattr(cfg, key) > n_layers:
            raise _bad(key, getattr(cfg, key), f"must be at most the model's {n_layers} layers")


def validate_facts(cfg: StudyConfig, n_source: int, source: str) -> None:
    """Settings against the number of facts the facts stage will filter (known before the model loads).

    A ``max_facts`` the user set above that number is an error; the preset's own ``max_facts`` is a cap."""
    preset = resolve(cfg.preset).max_facts if cfg.preset in PRESETS else None
    if cfg.max_facts is not None and cfg.max_facts > n_source and cfg.max_facts != preset:
        raise _bad("max_facts", cfg.max_facts, f"more than the {n_source} facts of {source}; pass at most "
                                               f"{n_source}, or null for all known facts")


def check_device(device: str) -> None:
    """A device string torch parses, of a kind that is present on this machine."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise _bad("device", device, "is not a device; use cpu, cuda, cuda:N or mps") from err
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _bad("device", device, f"CUDA is not available here (torch {torch.__version__}, "
                                         f"{'no GPU visible' if torch.version.cuda else 'a CPU-only build'}); "
                                         "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise _bad("device", device, f"only {torch.cuda.device_count()} CUDA device(s) are visible")
        return
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise _bad("device", device, "MPS is not available here; use --device cpu")
        return
    raise _bad("device", device, "is not supported; use cpu, cuda, cuda:N or mps")
