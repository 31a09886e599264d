"""Plots of one fact for a notebook: the layer × position trace heatmap and the edit layer sweep.

The heatmap is the picture of the causal-tracing notebooks of Meng et al. (2022, Fig. 1): one row per
token of the prompt (subject tokens marked ``*``), one column per layer (the centre of the restored
window), the indirect effect in colour.  Indirect effects can be negative, so the colour scale is
diverging and symmetric about 0 (``TwoSlopeNorm``), as in the study's heatmaps.

This module imports :mod:`matplotlib.pyplot` only when a plot is drawn and never switches the backend,
so it draws inline in a notebook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:   # pragma: no cover
    from matplotlib.axes import Axes

    from causaleval.api import EditSweep, TraceResult

CMAP = "RdBu_r"
ESTIMATOR_LABELS = {"noise": "noise tracing", "resample": "resample scrubbing", "flip": "flip scrubbing"}
COMPONENT_LABELS = {"residual": "residual stream", "mlp": "MLP", "attn": "attention"}
METRIC_LABELS = {"p": "p(o)", "ld": "logit difference"}
SCORE_LABELS = {"rewrite_score": "rewrite score", "paraphrase_score": "paraphrase score",
                "neighborhood_score": "neighbourhood score"}
SUBJECT_MARK = "*"


def token_labels(tokens: Sequence[str], roles: Sequence[str]) -> list[str]:
    """Each token as the y-axis shows it (a newline as ``\\n``), with ``*`` after a subject token."""
    return [t.replace("\n", "\\n") + (SUBJECT_MARK if r.startswith("subject") else "")
            for t, r in zip(tokens, roles)]


def _axes(ax: "Axes | None", size: tuple[float, float]) -> "Axes":
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=size, layout="constrained")
    return ax


def trace_heatmap(result: "TraceResult", metric: str = "p", direction: str = "denoise", value: str = "ie",
                  ax: "Axes | None" = None) -> "Axes":
    """Draw ``result.array(metric, direction, value)`` as a position × layer heatmap with the subject tokens
    marked, the estimator, component, metric, direction and TE in the title; returns the Axes."""
    from matplotlib.colors import TwoSlopeNorm

    grid = result.array(metric, direction, value).T          # [position × layer], as in the notebooks
    top = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 0.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-(top or 1.0), vmax=top or 1.0)
    ax = _axes(ax, (max(4.0, 0.25 * len(result.layers) + 2.5), 0.3 * len(result.tokens) + 1.4))
    im = ax.imshow(grid, aspect="auto", cmap=CMAP, norm=norm, interpolation="nearest")
    ax.set_yticks(range(len(result.tokens)), token_labels(result.tokens, result.roles))
    step = max(1, int(np.ceil(len(result.layers) / 10)))
    ticks = range(0, len(result.layers), step)
    ax.set_xticks(ticks, [str(result.layers[i]) for i in ticks])
    ax.set_xlabel("layer" if result.window == 1 else f"centre layer of a {result.window}-layer window")
    how = "restoring clean" if direction == "denoise" else "writing corrupted"
    what = "IE / TE" if value == "ie_norm" else "IE"
    ax.set_title(f"{ESTIMATOR_LABELS.get(result.estimator, result.estimator)}: {how} "
                 f"{COMPONENT_LABELS.get(result.component, result.component)} states\n"
                 f"{what} on {METRIC_LABELS.get(metric, metric)}, TE = {result.te(metric, direction):.3g}")
    ax.figure.colorbar(im, ax=ax, label=f"{what} on {METRIC_LABELS.get(metric, metric)}")
    return ax


def sweep_plot(sweep: "EditSweep", scores: Sequence[str] = tuple(SCORE_LABELS), ax: "Axes | None" = None) -> "Axes":
    """One line per edit score over the edited layers (Hase et al. 2023, Fig. 1 of one fact); returns the Axes."""
    ax = _axes(ax, (4.5, 3.0))
    frame = sweep.frame.sort_values("layer")
    for name in scores:
        ax.plot(frame.layer, frame[name], marker="o", label=SCORE_LABELS.get(name, name))
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_xticks(list(frame.layer))
    ax.set_xlabel("edit layer")
    ax.set_ylabel("score")
    fact = sweep.request
    ax.set_title(f"ROME edit of {fact.text!r}\n{fact.target_true!r} → {fact.target_new!r}")
    ax.legend()
    return ax
