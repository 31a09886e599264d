"""The study settings' value rules: one :class:`~causaleval.runs.checks.Rule` per setting (range,
finiteness, distinctness, the ceilings that keep memory and time bounded).

Shared by the command line's checks (``experiments.config.check_rules``) and the Python API's argument
checks (:mod:`causaleval.runs.arguments`), so the two cannot drift.  A setting without a rule is only
type-checked, and every float setting (or list of floats) must also be finite; a rule for a setting that
does not exist is ignored.  Add a line here for a new setting.
"""

from __future__ import annotations

from causaleval.errors import ConfigError
from causaleval.runs.checks import Rule

MAX_CASES = 1_000_000        # far above CounterFact's 21,919 records
MAX_DRAWS = 10_000           # draws per case: a case's corrupted runs are held in memory at once
MAX_LAYERS = 512             # deeper than any model (Llama 3.1 405B: 126); validate_layers checks the model's depth
RULES: dict[str, Rule] = {
    "seed": Rule(low=0, high=2**32 - 1, why="seeds are 32-bit"),
    "trace_seed": Rule(low=0, high=2**32 - 1, why="seeds are 32-bit"),
    "max_facts": Rule(low=1, high=MAX_CASES),
    "batch_size": Rule(low=1, high=65_536),
    "workers": Rule(low=1, high=4_096),
    "shard_size": Rule(low=1, high=MAX_CASES),
    "relations": Rule(nonempty=True, distinct=True),
    "exclude_facts_from": Rule(nonempty=True, distinct=True),
    "noise_draws": Rule(low=1, high=MAX_DRAWS),
    "partner_draws": Rule(low=1, high=MAX_DRAWS),
    "trace_window": Rule(low=1, high=MAX_LAYERS),         # and at most the model's depth (validate_layers)
    "trace_layers": Rule(low=0, high=MAX_LAYERS - 1, nonempty=True, distinct=True),
    "heatmap_cases": Rule(low=0, high=MAX_CASES),
    "noise_scale_factor": Rule(low=0, low_open=True, high=1_000),
    "edit_layers": Rule(low=0, high=MAX_LAYERS - 1, nonempty=True, distinct=True),
    "edit_layer_step": Rule(low=1, high=10_000),
    "rome_context_texts": Rule(low=0, high=1_000),
    "rome_stat_tokens": Rule(low=1, high=100_000_000, why="the corpus is held in memory"),
    "rome_max_neighbours": Rule(low=0, high=100_000),
    "analysis_window": Rule(low=1, high=MAX_LAYERS),      # and at most the model's depth (validate_layers)
    "n_bootstrap": Rule(low=1, high=1_000_000, why="resamples are held in memory at once"),
    "withinfact_permutations": Rule(low=0, high=100_000, why="each draw recomputes every measure"),
    "withinfact_bootstrap": Rule(low=1, high=100_000, why="resamples are held in memory at once"),
    "rome_batch_cases": Rule(low=1, high=4_096),
    "trace_batch_cases": Rule(low=1, high=4_096),
    "support_noise_scales": Rule(low=0, low_open=True, high=1_000, nonempty=True, distinct=True),
    "support_draws": Rule(low=1, high=MAX_DRAWS),
    "support_retrace_draws": Rule(low=1, high=MAX_DRAWS),
    "support_reference_facts": Rule(low=6, high=MAX_CASES, why="the reference needs 3 fit and 3 calibration "
                                                              "subjects"),
    "support_min_reference": Rule(low=6, high=MAX_CASES, why="the reference needs 3 fit and 3 calibration "
                                                            "subjects"),
    "support_quantile": Rule(low=0, high=1, low_open=True, high_open=True),
    "validate_facts": Rule(low=1, high=MAX_CASES),
    "validate_layers": Rule(low=0, high=MAX_LAYERS - 1, nonempty=True, distinct=True),
    "validate_layer_count": Rule(low=1, high=MAX_LAYERS),
    "validate_windows": Rule(low=1, high=MAX_LAYERS, nonempty=True, distinct=True),
    "validate_permutations": Rule(low=1, high=1_000_000),
    "control_facts": Rule(low=3, high=MAX_CASES, why="the within-fact analysis needs 3 facts"),
    "control_layers": Rule(low=0, high=MAX_LAYERS - 1, nonempty=True, distinct=True),
}


def parse_names(setting: str, value, known, example: str, item: str = "a name") -> list[str]:
    """``"a,b"`` or a list → the names, lower-cased, each one of ``known`` and none twice; otherwise a
    one-line :class:`ConfigError` naming ``setting`` and ``example`` (checked before any model loads);
    ``item`` names one entry in the message about a repeat ("an editor")."""
    names = [s.strip().lower() for s in (value.split(",") if isinstance(value, str) else list(value))]
    names = [s for s in names if s]
    bad = [s for s in names if s not in known]
    if bad or not names:
        raise ConfigError(f"{setting} {value!r}: {'unknown ' + ', '.join(map(repr, bad)) if bad else 'none given'}; "
                          f"choose from {', '.join(known)} (e.g. {example})")
    if len(set(names)) != len(names):
        raise ConfigError(f"{setting} {value!r}: {item} is listed twice")
    return names
