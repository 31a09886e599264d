"""Trace heatmaps: layers × token roles of the mean indirect effect over cases (SPEC §8; the layout of
Meng et al. 2022, Fig. 1), drawn from the tidy trace table."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

ROLE_ORDER = ("before_subject", "subject_first", "subject_middle", "subject_last", "after_subject",
              "further_tokens", "last")


def role_layer_means(sites: pd.DataFrame, value: str = "ie") -> pd.DataFrame:
    """Mean of ``value`` per (role, layer): first over a case's positions of that role, then over cases.
    Returns a roles × layers frame (roles in reading order)."""
    per_case = sites.groupby(["case_id", "role", "layer"], as_index=False)[value].mean()
    grid = per_case.groupby(["role", "layer"])[value].mean().unstack("layer")
    return grid.reindex([r for r in ROLE_ORDER if r in grid.index])


def plot_heatmap(sites: pd.DataFrame, path: str | Path, title: str, value: str = "ie") -> Path:
    """One heatmap (rows: token roles, columns: layers) of the rows in ``sites`` (one estimator,
    direction, metric, component and window), saved as PNG."""
    grid = role_layer_means(sites, value)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.22 * grid.shape[1] + 2), 0.45 * len(grid) + 1.4))
    im = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="Purples" if value != "ld" else "RdBu_r",
                   interpolation="nearest")
    ax.set_yticks(range(len(grid)), [r.replace("_", " ") for r in grid.index])
    step = max(1, grid.shape[1] // 10)
    ax.set_xticks(range(0, grid.shape[1], step), [str(c) for c in grid.columns[::step]])
    ax.set_xlabel("layer (window centre)")
    n_cases = sites.case_id.nunique()
    ax.set_title(f"{title} (n = {n_cases} cases)", fontsize=9)
    fig.colorbar(im, ax=ax, label=f"mean {value}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def trace_heatmaps(sites: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``trace_<estimator>_<component>.png`` per estimator and component (denoising; metric p; the
    widest window traced for the component at every layer)."""
    out = []
    if sites.empty:
        return out
    d = sites[(sites.direction == "denoise") & (sites.metric == "p")]
    for (est, comp), g in d.groupby(["estimator", "component"]):
        # the window with the most layers traced (the heatmap set), ties: the widest
        cover = g.groupby("window").layer.nunique()
        window = max(cover.index, key=lambda w: (cover[w], w))
        g = g[g.window == window]
        label = f"{est}: {comp}" + (f" (window {window})" if window > 1 else "")
        out.append(plot_heatmap(g, Path(out_dir) / f"trace_{est}_{comp}.png", label))
    return out
