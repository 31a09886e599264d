"""The analysis specification: which localisation effect is compared with which edit scores, and
the variants (raw IE, last subject token, flip-only noising and logit difference).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from causaleval.errors import CausalEvalError

ESTIMATORS: tuple[str, ...] = ("noise", "resample", "flip")
SCORES: tuple[str, ...] = ("rewrite_score", "paraphrase_score", "neighborhood_score")
PAIRS: tuple[tuple[str, str], ...] = (("flip", "noise"), ("resample", "noise"), ("flip", "resample"))
ANALYSIS_TABLES = ("joined", "r2", "h1", "per_layer", "within_case", "argmax", "excluded", "reliability")
EFFECTS = ("fraction", "raw")


class AnalysisError(CausalEvalError):
    """The trace or edit tables cannot be analysed (missing columns, rows or estimators)."""


@dataclass(frozen=True)
class AnalysisSpec:
    """Which localisation effect is compared with which edit scores, and how (Hase et al. 2023)."""

    name: str = "default"
    estimators: tuple[str, ...] = ESTIMATORS
    component: str = "mlp"
    window: int = 5
    token_rule: str = "max"            # "max" over positions from the first subject token, or a token role
    effect: str = "fraction"           # "fraction": max(IE/TE, 0) (Hase et al.); "raw": the IE itself
    direction: str = "denoise"
    metric: str = "p"
    te_floor: float = 0.05             # exclude cases with TE below this (metric p: a probability)
    te_floor_ld: float = 0.5           # the same for the logit-difference metric (logits)
    scores: tuple[str, ...] = SCORES
    pairs: tuple[tuple[str, str], ...] = PAIRS
    n_bootstrap: int = 1000
    n_permutations: int = 1999
    power_reps: int = 400
    min_clusters: int = 6              # fewer cases: no cluster/permutation p (too few permutations)
    degenerate_sd: float = 1e-3        # a layer whose score sd is below this is degenerate
    seed: int = 0
    correction: str = "holm"           # multipletests method across layers ("holm" or "fdr_bh")
    ci_level: float = 0.95
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if self.effect not in EFFECTS:
            raise AnalysisError(f"AnalysisSpec.effect={self.effect!r}: choose one of {EFFECTS}")
        if self.te_floor < 0 or self.te_floor_ld < 0:
            raise AnalysisError(f"AnalysisSpec te_floor={self.te_floor}, te_floor_ld={self.te_floor_ld}: "
                                "a TE floor must be ≥ 0 (cases with TE ≤ 0 are always excluded)")

    @property
    def floor(self) -> float:
        """The TE floor in the units of this spec's metric."""
        return self.te_floor_ld if self.metric == "ld" else self.te_floor

    def describe(self) -> str:
        tok = ("max over positions from the first subject token" if self.token_rule == "max"
               else f"token role {self.token_rule}")
        eff = "fraction restored max(IE/TE, 0)" if self.effect == "fraction" else "raw IE"
        return (f"{eff}, {self.component.upper()} window {self.window}, {self.direction}, metric {self.metric}, "
                f"{tok}; cases with TE < {self.floor:g} excluded")


def variant_specs(base: AnalysisSpec) -> list[AnalysisSpec]:
    """The default analysis and its variants: raw IE, subject_last token, and the flip-only
    (descriptive) noising and logit-difference rows."""
    return [base,
            replace(base, name="raw_ie", effect="raw"),
            replace(base, name="subject_last", token_rule="subject_last"),
            replace(base, name="noising", direction="noise"),
            replace(base, name="logit_diff", metric="ld")]
