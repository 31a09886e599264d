"""Matplotlib figures of the study, each saved as PDF and PNG (SPEC §8).

* trace heatmaps per estimator (mean indirect effect by token role × layer, one panel per component);
* localisation effect vs rewrite score, one panel per edit layer;
* ΔR² with bootstrap CIs per estimator and score;
* mean layer profiles of editing success and of each localisation effect.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from causaleval.analysis import AnalysisTables  # noqa: E402

COLORS = {"noise": "#7f7f7f", "resample": "#1f77b4", "flip": "#d62728"}
LABELS = {"noise": "noise tracing", "resample": "resample scrubbing", "flip": "flip scrubbing"}
SCORE_LABELS = {"rewrite_score": "rewrite", "paraphrase_score": "paraphrase", "neighborhood_score": "neighborhood"}
ROLE_ORDER = ("before_subject", "subject_first", "subject_middle", "subject_last", "after_subject",
              "further_tokens", "last")


def save(fig, out_dir: Path, name: str) -> list[Path]:
    """Write ``name.pdf`` and ``name.png`` into ``out_dir`` and close the figure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.pdf", out_dir / f"{name}.png"]
    fig.savefig(paths[0], bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight", dpi=150)
    plt.close(fig)
    return paths


def _ests(frame: pd.DataFrame) -> list[str]:
    return [e for e in ("noise", "resample", "flip") if f"effect_{e}" in frame and frame[f"effect_{e}"].notna().any()]


def trace_heatmaps(trace: pd.DataFrame, out_dir: Path, direction: str = "denoise", metric: str = "p",
                   mlp_window: int | None = None) -> list[Path]:
    """One figure per estimator: mean IE over cases by token role (rows) and layer (columns).

    Residual stream at its smallest window (single layers), MLP and attention at ``mlp_window``
    (default: the largest window traced, as ROME's window-10 plots).
    """
    paths: list[Path] = []
    sel = trace[(trace.direction == direction) & (trace.metric == metric)]
    for est, d in sel.groupby("estimator"):
        panels = []
        for comp in ("residual", "mlp", "attn"):
            c = d[d.component == comp]
            if c.empty:
                continue
            win = c.window.min() if comp == "residual" else (mlp_window if mlp_window in set(c.window) else c.window.max())
            c = c[c.window == win]
            per_case = c.groupby(["case_id", "role", "layer"]).ie.mean().reset_index()
            grid = per_case.groupby(["role", "layer"]).ie.mean().unstack("layer")
            grid = grid.reindex([r for r in ROLE_ORDER if r in grid.index])
            panels.append((comp, int(win), grid, per_case.case_id.nunique()))
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 2.8), squeeze=False)
        for k, (ax, (comp, win, grid, n)) in enumerate(zip(axes[0], panels)):
            im = ax.imshow(grid.to_numpy(), aspect="auto", cmap={"residual": "Purples", "mlp": "Greens",
                                                                  "attn": "Reds"}[comp], interpolation="nearest")
            ax.set_yticks(range(len(grid.index)), [r.replace("_", " ") if k == 0 else "" for r in grid.index],
                          fontsize=7)
            cols = list(grid.columns)
            step = max(1, len(cols) // 8)
            ax.set_xticks(range(0, len(cols), step), [str(cols[i]) for i in range(0, len(cols), step)], fontsize=7)
            ax.set_xlabel("layer (window centre)" if win > 1 else "layer", fontsize=8)
            ax.set_title(f"{comp}, window {win} (n={n})", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)
        fig.suptitle(f"{LABELS.get(est, est)}: mean indirect effect on {metric} ({direction})", fontsize=10)
        fig.tight_layout()
        paths += save(fig, out_dir, f"trace_{est}")
    return paths


def effect_vs_score(joined: pd.DataFrame, out_dir: Path, score: str = "rewrite_score") -> list[Path]:
    """Scatter of each estimator's effect against the edit score, one panel per edit layer, with OLS lines."""
    ests = _ests(joined)
    layers = sorted(joined.layer.unique())
    ncol = min(4, len(layers))
    nrow = int(np.ceil(len(layers) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 2.5 * nrow), squeeze=False, sharey=True)
    for ax, layer in zip(axes.flat, layers):
        d = joined[joined.layer == layer]
        for e in ests:
            x, y = d[f"effect_{e}"].to_numpy(float), d[score].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            ax.scatter(x[ok], y[ok], s=8, alpha=0.55, color=COLORS[e], label=LABELS[e])
            if ok.sum() > 2 and np.ptp(x[ok]) > 0:
                b, a = np.polyfit(x[ok], y[ok], 1)
                xs = np.linspace(x[ok].min(), x[ok].max(), 10)
                ax.plot(xs, a + b * xs, color=COLORS[e], lw=1)
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(layers):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(SCORE_LABELS.get(score, score) + " score", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("localisation effect", fontsize=8)
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save(fig, out_dir, f"effect_vs_{SCORE_LABELS.get(score, score)}")


def delta_r2_plot(r2: pd.DataFrame, out_dir: Path) -> list[Path]:
    """ΔR² (Both − Layer) with 95% bootstrap CIs, per estimator, one group per score."""
    scores = list(dict.fromkeys(r2.score))
    ests = [e for e in ("noise", "resample", "flip") if e in set(r2.estimator)]
    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * len(scores), 2.8))
    width = 0.8 / max(1, len(ests))
    for i, e in enumerate(ests):
        d = r2[r2.estimator == e].set_index("score").reindex(scores)
        x = np.arange(len(scores)) + (i - (len(ests) - 1) / 2) * width
        err = np.vstack([d.delta_r2 - d.delta_ci_low, d.delta_ci_high - d.delta_r2]).clip(min=0)
        ax.errorbar(x, d.delta_r2, yerr=err, fmt="o", color=COLORS[e], label=LABELS[e], capsize=3, ms=4)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(range(len(scores)), [SCORE_LABELS.get(s, s) for s in scores])
    ax.set_ylabel(r"$\Delta R^2$ = $R^2$(both) $-$ $R^2$(layer)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out_dir, "delta_r2")


def _mean_ci(frame: pd.DataFrame, col: str) -> pd.DataFrame:
    g = frame.groupby("layer")[col].agg(["mean", "std", "count"])
    half = 1.96 * g["std"] / np.sqrt(g["count"])
    return g.assign(lo=g["mean"] - half, hi=g["mean"] + half)


def layer_profiles(joined: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Mean edit scores (top) and mean localisation effects (bottom) per edit layer with 95% normal CIs."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 5.0), sharex=True)
    for score, style in (("rewrite_score", "-"), ("paraphrase_score", "--"), ("neighborhood_score", ":")):
        if score in joined and joined[score].notna().any():
            g = _mean_ci(joined, score)
            top.plot(g.index, g["mean"], style, color="black", label=SCORE_LABELS[score])
            top.fill_between(g.index, g.lo, g.hi, color="black", alpha=0.12)
    top.set_ylabel("mean edit score")
    top.legend(fontsize=7)
    for e in _ests(joined):
        g = _mean_ci(joined, f"effect_{e}")
        bottom.plot(g.index, g["mean"], color=COLORS[e], label=LABELS[e])
        bottom.fill_between(g.index, g.lo, g.hi, color=COLORS[e], alpha=0.15)
    bottom.set_ylabel("mean localisation effect")
    bottom.set_xlabel("edit layer")
    bottom.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out_dir, "layer_profiles")


def write_figures(t: AnalysisTables, out_dir: Path, trace: pd.DataFrame | None = None,
                  mlp_window: int | None = None) -> list[Path]:
    """Every figure of the paper from the analysis tables (default variant) and, if given, the trace table."""
    joined = t.joined[t.joined.variant == "default"] if "variant" in t.joined else t.joined
    r2 = t.r2[t.r2.variant == "default"] if "variant" in t.r2 else t.r2
    paths = effect_vs_score(joined, out_dir) + delta_r2_plot(r2, out_dir) + layer_profiles(joined, out_dir)
    if trace is not None:
        paths += heatmaps(trace, out_dir, mlp_window)
    return paths


def heatmaps(trace: pd.DataFrame, out_dir: Path, mlp_window: int | None = None) -> list[Path]:
    """Trace heatmaps: the dedicated module :mod:`causaleval.reporting.heatmaps` when present, else ours."""
    try:
        from causaleval.reporting import heatmaps as dedicated  # written by the trace stage's developers
    except ImportError:
        dedicated = None
    if dedicated is not None and hasattr(dedicated, "write_heatmaps"):
        return list(dedicated.write_heatmaps(trace, out_dir))
    return trace_heatmaps(trace, out_dir, mlp_window=mlp_window)
