"""Localisation estimands as explicit objects (docs/estimands.md; Reber & Veitch 2023; Chan et al. 2022).

An :class:`Estimand` names the units (the law over cases), the base distribution of the intervened
run with its **support** (a checkable predicate and its mass on real token sequences), the source and
direction of the patch, the sites, the metric, the contrast and the aggregation.  ``str(estimand)``
states in one paragraph what is estimated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from causaleval.data.tokens import Encoded
from causaleval.errors import CausalEvalError, SiteError
from causaleval.model.sites import COMPONENTS, check_layer, window_layers

DIRECTIONS = {
    "denoise": "the clean run's states are written into the corrupted run (sufficiency: how much of the "
               "clean answer a site restores)",
    "noise": "the corrupted run's states are written into the clean run (necessity: how much of the clean "
             "answer a site removes; reported as clean − patched, so positive means necessary)",
}
METRICS = {
    "p": "the probability p(o) of the clean top-1 answer token o at the last position",
    "logp": "the log-probability log p(o) of the clean top-1 answer token o at the last position",
    "ld": "the logit difference LD(o, o′) = z_o − z_o′ between the clean answer token o and the partner's "
          "answer token o′ at the last position",
}
CONTRASTS = {
    "difference": "the indirect effect IE(a) = E[m(patched at a)] − E[m(base)] (denoising) or "
                  "E[m(clean)] − E[m(patched at a)] (noising), with the total effect TE = m(clean) − E[m(corrupted)]",
    "ratio": "the normalised indirect effect IE(a) / TE, a ratio of means over draws (Hase et al. 2023)",
}
POSITION_SETS = ("all", "from_subject", "subject_last", "last")


class SupportError(CausalEvalError):
    """A draw of the base distribution lies outside its declared support."""


@dataclass(frozen=True)
class Support:
    """The set the base input lives in: a description, its mass on real token sequences (0 for
    Gaussian-perturbed embeddings, 1 for real prompts) and a predicate every draw is checked against."""

    description: str
    mass_on_real: float
    predicate: Callable[[object], bool] = field(compare=False, repr=False)

    def check(self, draw: object, where: str) -> None:
        if not self.predicate(draw):
            raise SupportError(f"{where}: the draw lies outside the declared support ({self.description})")


@dataclass(frozen=True)
class SiteGrid:
    """Sites (component, window centred at each of ``layers``, positions) of one trace.

    ``layers=None`` means every layer; ``positions`` is ``"all"``, ``"from_subject"`` (from the first
    subject token to the last token), ``"subject_last"`` (the subject's last token only) or ``"last"``
    (the prompt's last token only)."""

    component: str
    window: int = 1
    layers: tuple[int, ...] | None = None
    positions: str = "all"

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise SiteError(f"unknown component {self.component!r}; choose one of {COMPONENTS}")
        if self.positions not in POSITION_SETS:
            raise SiteError(f"unknown position set {self.positions!r}; choose one of {POSITION_SETS}")
        if self.window < 1:
            raise SiteError(f"window {self.window} of component {self.component!r} must be at least 1")

    def layer_list(self, n_layers: int) -> list[int]:
        if self.window > n_layers:
            raise SiteError(f"window {self.window} of component {self.component!r} is larger than the model "
                            f"({n_layers} layers)")
        layers = list(range(n_layers)) if self.layers is None else list(self.layers)
        for layer in layers:
            try:
                check_layer(layer, n_layers)
            except SiteError as err:
                raise SiteError(f"site {self.component} window {self.window} layer {layer}: {err}") from err
        return layers

    def position_list(self, enc: Encoded) -> list[int]:
        if self.positions == "subject_last":
            return [enc.subject_end - 1]
        if self.positions == "last":
            return [enc.length - 1]
        start = enc.subject_start if self.positions == "from_subject" else 0
        return list(range(start, enc.length))

    def window_of(self, layer: int, n_layers: int) -> tuple[int, ...]:
        return tuple(window_layers(layer, self.window, n_layers))

    def describe(self) -> str:
        layers = "every layer" if self.layers is None else f"layers {list(self.layers)}"
        pos = {"all": "every token position", "subject_last": "the subject's last token", "last": "the prompt's last token",
               "from_subject": "every position from the first subject token to the last token"}[self.positions]
        what = "the residual stream (block output)" if self.component == "residual" else f"the {self.component} output"
        win = f"over a window of {self.window} layers centred at" if self.window > 1 else "at"
        return f"{what} {win} {layers}, {pos}"


@dataclass(frozen=True)
class Estimand:
    """An explicit localisation estimand (docs/estimands.md)."""

    name: str
    units: str
    base: str
    support: Support
    source: str
    direction: str
    sites: tuple[SiteGrid, ...]
    metric: str
    contrast: str = "difference"
    aggregation: str = "the mean over draws within a case, then the mean over cases"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise CausalEvalError(f"unknown direction {self.direction!r}; choose one of {sorted(DIRECTIONS)}")
        if self.metric not in METRICS:
            raise CausalEvalError(f"unknown metric {self.metric!r}; choose one of {sorted(METRICS)}")
        if self.contrast not in CONTRASTS:
            raise CausalEvalError(f"unknown contrast {self.contrast!r}; choose one of {sorted(CONTRASTS)}")

    def __str__(self) -> str:
        sites = "; ".join(g.describe() for g in self.sites) or "no sites"
        mass = f"{self.support.mass_on_real:g}"
        return (f"{self.name}: for units drawn from {self.units}, the base input of the intervened run is "
                f"{self.base}; its support is {self.support.description} (mass {mass} on real token "
                f"sequences). The source is {self.source}, and {DIRECTIONS[self.direction]}. Sites: {sites}. "
                f"The metric is {METRICS[self.metric]}; the contrast is {CONTRASTS[self.contrast]}; "
                f"aggregation is {self.aggregation}.")
