"""Study configuration and presets (resolved config is written to run.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace


@dataclass
class StudyConfig:
    """Everything a run depends on.  ``None`` for a limit means "all"."""

    model: str = "smollm2"
    facts: str | None = None          # local CounterFact JSON; None = built-in geography facts
    out: str | None = None            # results folder; None = results/<model>
    preset: str = "default"
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    trust_remote_code: bool = False
    relations: list[str] | None = None
    max_facts: int | None = None      # known facts used by trace/edit (first n after a seeded shuffle)
    batch_size: int = 64
    # where per-case work runs (issue 6): "local" (in-process) or "ray"
    backend: str = "local"
    ray_address: str | None = None    # an existing Ray cluster ("auto", "ray://host:10001"); None = start one here
    workers: int | None = None        # Ray workers; None = one per GPU (cuda) or 2 (cpu)
    shard_size: int = 4               # cases per Ray task
    # localisation (SPEC §4)
    noise_draws: int = 10
    partner_draws: int = 10
    trace_components: list[str] = field(default_factory=lambda: ["residual", "mlp", "attn"])
    trace_window: int = 10
    trace_estimators: list[str] = field(default_factory=lambda: ["noise", "resample", "flip"])
    trace_layers: list[int] | None = None   # layers of the heatmap site set (None = every layer)
    heatmap_cases: int | None = None        # cases (first n of the study facts) that get the heatmap set
    noise_scale_factor: float = 3.0         # ν = factor × std of subject-token embeddings (SPEC §4.1)
    # editing (SPEC §5)
    edit_layers: list[int] | None = None   # None = every `edit_layer_step`-th layer and the last
    edit_layer_step: int = 3
    rome_context_texts: int = 4            # N model-generated context texts (original ROME: 20)
    rome_stat_tokens: int = 100_000         # tokens for C = E[k kᵀ] (sampled from the model unless rome_stat_source)
    rome_stat_source: str = "model"         # "model" or the path of a local text dataset
    rome_max_neighbours: int | None = 10    # neighbourhood prompts scored per case (CounterFact: 10; None = all; seeded sample)
    rome_key_mode: str = "mixed"            # "mixed" (original), "averaged" or "bare" (SPEC §5)
    # analysis (SPEC §7)
    analysis_window: int = 5
    n_bootstrap: int = 1000
    # batched ROME sweeps: cases optimised and scored together at each edit layer (1 = one at a time)
    rome_batch_cases: int = 8
    # batched tracing (issue 11): cases traced together in shared block calls (1 = one at a time)
    trace_batch_cases: int = 16
    # support diagnostics (issue 12): where corrupted runs land
    support_noise_scales: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 3.0, 5.0, 8.0])  # ν / σ_emb
    support_draws: int = 10                 # draws per case and base distribution (partners: at most this many)
    support_reference_facts: int | None = 400   # held-out real subjects for the real-state reference (fit + calibration)
    support_min_reference: int = 40         # fewer held-out facts: two-fold cross-fitting over all known facts
    support_quantile: float = 0.99          # τ_l: this quantile of held-out real states' distances

    def to_dict(self) -> dict:
        return asdict(self)

    def updated(self, **changes) -> "StudyConfig":
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in changes.items() if k in known and v is not None})


PRESETS: dict[str, dict] = {
    # Finishes on a 2-core laptop CPU with SmolLM2 (see README for the measured time).
    # 12 facts × 6 edit layers (0, 6, 12, 18, 24, 29); ROME statistics from 20k sampled tokens.
    "default": dict(max_facts=12, noise_draws=3, partner_draws=3, edit_layer_step=6, heatmap_cases=2,
                    trace_components=["residual", "mlp"], rome_stat_tokens=20_000),
    # Every known fact and every layer.
    "paper": dict(max_facts=None, noise_draws=10, partner_draws=10, edit_layer_step=1),
    # Seconds-scale run for tests.
    "smoke": dict(max_facts=6, noise_draws=3, partner_draws=3, edit_layer_step=2, n_bootstrap=200,
                  trace_components=["residual", "mlp"], heatmap_cases=1, trace_layers=[0, 10, 20, 29],
                  support_draws=3, support_noise_scales=[1.0, 3.0]),
}


def resolve(preset: str, **overrides) -> StudyConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    cfg = StudyConfig(preset=preset).updated(**PRESETS[preset])
    return cfg.updated(**overrides)
