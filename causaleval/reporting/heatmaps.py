"""Trace heatmaps: token role × layer of the mean indirect effect over cases, the layout of
Meng et al. (2022, Fig. 1), drawn from the tidy trace table (one row per estimator, direction,
metric, case, component, window, layer and position).

Every component gets one colour scale shared by all estimators, diverging at 0 (a symmetric
``TwoSlopeNorm`` with a diverging colormap), so that panels of noise tracing, resample scrubbing and
flip scrubbing can be compared by colour and a negative effect never looks like a small positive one.
A panel averages only the cases traced at every layer of its grid, and says how many.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator, ScalarFormatter  # noqa: E402

ROLE_ORDER = ("before_subject", "subject_first", "subject_middle", "subject_last", "after_subject",
              "further_tokens", "last")
COMPONENT_ORDER = ("residual", "mlp", "attn")
ESTIMATOR_ORDER = ("noise", "resample", "flip")
LABELS = {"noise": "noise tracing", "resample": "resample scrubbing", "flip": "flip scrubbing"}
COMPONENT_LABELS = {"residual": "residual stream", "mlp": "MLP", "attn": "attention"}
CMAP = "RdBu_r"
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
         "legend.fontsize": 7, "figure.dpi": 100, "pdf.fonttype": 42}


@dataclass(frozen=True)
class Panel:
    """One heatmap: the roles × layers grid of one estimator and component, over ``n_cases`` cases."""

    estimator: str
    component: str
    window: int
    grid: pd.DataFrame
    n_cases: int


def quantity_label(metric: str = "p", direction: str = "denoise") -> str:
    """What a heatmap cell holds, for the colourbar: the mean indirect effect on the metric."""
    target = r"$p(o)$" if metric == "p" else "logit difference" if metric == "ld" else metric
    how = "restoring clean states" if direction == "denoise" else "writing corrupted states"
    return f"mean IE on {target} ({how})"


def role_layer_means(sites: pd.DataFrame, value: str = "ie") -> pd.DataFrame:
    """Mean of ``value`` per (role, layer): first over a case's positions of that role, then over cases.
    Returns a roles × layers frame (roles in reading order)."""
    per_case = sites.groupby(["case_id", "role", "layer"], as_index=False)[value].mean()
    grid = per_case.groupby(["role", "layer"])[value].mean().unstack("layer")
    return grid.reindex([r for r in ROLE_ORDER if r in grid.index])


def heatmap_window(rows: pd.DataFrame, prefer: int | None = None) -> int:
    """The window traced at the most layers (the heatmap set); ties go to ``prefer``, then the widest."""
    cover = rows.groupby("window").layer.nunique()
    return int(max(cover.index, key=lambda w: (cover[w], w == prefer, w)))


def complete_cases(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of the cases traced at every layer present (others cover only the edit layers)."""
    layers = rows.layer.nunique()
    per_case = rows.groupby("case_id").layer.nunique()
    return rows[rows.case_id.isin(per_case.index[per_case == layers])]


def heatmap_panels(sites: pd.DataFrame, direction: str = "denoise", metric: str = "p", value: str = "ie",
                   window: int | None = None) -> list[Panel]:
    """A panel per (estimator, component) with rows of ``direction`` and ``metric``; residual at window 1,
    other components at the window with the widest layer coverage (``window`` on ties)."""
    d = sites[(sites.direction == direction) & (sites.metric == metric)]
    panels = []
    for est in [e for e in ESTIMATOR_ORDER if e in set(d.estimator)] + sorted(set(d.estimator) - set(ESTIMATOR_ORDER)):
        for comp in [c for c in COMPONENT_ORDER if c in set(d.component)]:
            g = d[(d.estimator == est) & (d.component == comp)]
            if g.empty:
                continue
            w = heatmap_window(g, 1 if comp == "residual" else window)
            g = complete_cases(g[g.window == w])
            panels.append(Panel(est, comp, w, role_layer_means(g, value), int(g.case_id.nunique())))
    return panels


def shared_norms(panels: list[Panel]) -> dict[str, TwoSlopeNorm]:
    """Per component, one norm for every estimator: centred at 0, symmetric about it (±max |cell|)."""
    norms = {}
    for comp in {p.component for p in panels}:
        cells = np.concatenate([p.grid.to_numpy(float).ravel() for p in panels if p.component == comp])
        top = float(np.nanmax(np.abs(cells))) if np.isfinite(cells).any() else 0.0
        top = top if top > 0 else 1.0
        norms[comp] = TwoSlopeNorm(vcenter=0.0, vmin=-top, vmax=top)
    return norms


def _draw(ax, panel: Panel, norm: TwoSlopeNorm, role_labels: bool = True):
    grid = panel.grid
    im = ax.imshow(grid.to_numpy(float), aspect="auto", cmap=CMAP, norm=norm, interpolation="nearest")
    ax.set_yticks(range(len(grid.index)), [r.replace("_", " ") for r in grid.index] if role_labels else [])
    cols = list(grid.columns)
    step = max(1, int(np.ceil(len(cols) / 8)))
    ax.set_xticks(range(0, len(cols), step), [str(cols[i]) for i in range(0, len(cols), step)])
    ax.set_xlabel("layer" if panel.window == 1 else f"centre layer of a {panel.window}-layer window")
    return im


def heatmap_figure(panels: list[Panel], quantity: str) -> Figure:
    """Rows: estimators; columns: components; one colourbar per component (shared down the column)."""
    ests = list(dict.fromkeys(p.estimator for p in panels))
    comps = [c for c in COMPONENT_ORDER if any(p.component == c for p in panels)]
    norms = shared_norms(panels)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(ests), len(comps), figsize=(3.25 * len(comps), 1.25 * len(ests) + 0.9),
                                 squeeze=False, layout="constrained")
        by_key = {(p.estimator, p.component): p for p in panels}
        for j, comp in enumerate(comps):
            im = None
            for i, est in enumerate(ests):
                ax = axes[i, j]
                panel = by_key.get((est, comp))
                if panel is None:
                    ax.axis("off")
                    continue
                im = _draw(ax, panel, norms[comp], role_labels=j == 0)
                ax.set_title(f"{LABELS.get(est, est)}: {COMPONENT_LABELS.get(comp, comp)} (n = {panel.n_cases})")
                if i < len(ests) - 1:
                    ax.set_xlabel("")
            if im is not None:
                cb = fig.colorbar(im, ax=axes[:, j], orientation="horizontal", location="bottom", shrink=0.8,
                                  aspect=40)
                cb.set_label(f"{COMPONENT_LABELS.get(comp, comp)}:\n{quantity}")
                cb.ax.xaxis.set_major_locator(MaxNLocator(5, symmetric=True))
                fmt = ScalarFormatter()
                fmt.set_powerlimits((-2, 3))
                cb.ax.xaxis.set_major_formatter(fmt)
    return fig


def plot_heatmap(panel: Panel, path: str | Path, norm: TwoSlopeNorm, quantity: str) -> Path:
    """One panel as its own PNG (the trace stage's quick look)."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(4.0, 0.18 * panel.grid.shape[1] + 2.2), 0.32 * len(panel.grid) + 1.3),
                               layout="constrained")
        im = _draw(ax, panel, norm)
        win = f", window {panel.window}" if panel.window > 1 else ""
        ax.set_title(f"{LABELS.get(panel.estimator, panel.estimator)}: "
                     f"{COMPONENT_LABELS.get(panel.component, panel.component)}{win} (n = {panel.n_cases} cases)")
        fig.colorbar(im, ax=ax, label=quantity)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def trace_heatmaps(sites: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``trace_<estimator>_<component>.png`` per estimator and component (denoising, metric p), each
    component on the colour scale shared by all estimators."""
    if sites.empty:
        return []
    panels = heatmap_panels(sites)
    norms = shared_norms(panels)
    quantity = quantity_label()
    return [plot_heatmap(p, Path(out_dir) / f"trace_{p.estimator}_{p.component}.png", norms[p.component], quantity)
            for p in panels]
