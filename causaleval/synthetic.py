"""Synthetic results folders with a known truth, for tests and for checking the paper build.

Writes ``trace.parquet``, ``trace_summary.parquet``, ``edits.parquet`` and ``run.json`` in the schema
the trace and edit stages produce (the input contract of :mod:`causaleval.analysis`).  The truth:

* every case has a latent per-layer "locus" z[c, l] (standard normal, smoothed across layers);
* the edit scores are a layer profile plus ``signal`` · z plus noise, so layer explains most variance;
* flip scrubbing's effect is a layer profile plus z (so it adds signal to layer), resample scrubbing's
  effect carries half of z, noise tracing's effect carries none of it (ΔR²_noise ≈ 0 in expectation).

The effect at the ``subject_last`` token is the designed value; the other positions carry smaller
values, so the "max over tokens" rule and the subject_last rule agree on the designed effect.

    python -m causaleval.synthetic OUT_DIR      # a synthetic results folder, e.g. to try `make paper`
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from causaleval.store import atomic_write_json, atomic_write_parquet

ROLES_BY_POSITION = ("before_subject", "subject_first", "subject_middle", "subject_last", "after_subject",
                     "further_tokens", "last")
RELATIONS = ("P36", "P30", "P38", "P37", "P17")


@dataclass
class SyntheticSpec:
    n_cases: int = 40
    n_layers: int = 12                 # layers of the pretend model
    edit_layer_step: int = 2           # edit layers: every step-th layer and the last
    signal: float = 0.15               # how strongly the edit score follows the latent locus
    flip_loading: float = 1.0          # how much of the locus each estimator's effect carries
    resample_loading: float = 0.5
    noise_loading: float = 0.0
    score_noise: float = 0.05
    effect_noise: float = 0.3
    seed: int = 0

    def edit_layers(self) -> list[int]:
        return sorted(set(range(0, self.n_layers, self.edit_layer_step)) | {self.n_layers - 1})


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def synthetic_tables(spec: SyntheticSpec | None = None) -> dict[str, pd.DataFrame]:
    """The three tables of a results folder: trace, trace_summary and edits (see module docstring)."""
    s = spec or SyntheticSpec()
    rng = np.random.default_rng(s.seed)
    C, L = s.n_cases, s.n_layers
    layers = np.arange(L)
    raw = rng.standard_normal((C, L))
    kernel = np.array([0.25, 0.5, 0.25])
    z = np.stack([np.convolve(r, kernel, mode="same") for r in raw])
    z = (z - z.mean()) / z.std()
    rel = np.array([RELATIONS[c % len(RELATIONS)] for c in range(C)])
    case_ids = np.arange(1000, 1000 + C)

    # Edit scores: early/middle layers edit best (as ROME on GPT models), plus the latent locus.
    profile = 0.95 - 0.6 * (layers / (L - 1)) ** 2
    score = profile[None, :] + s.signal * z + s.score_noise * rng.standard_normal((C, L))
    edit_layers = s.edit_layers()
    rows = []
    for ci, cid in enumerate(case_ids):
        for l in edit_layers:
            rw = float(np.clip(score[ci, l], -1, 1))
            ps = float(np.clip(score[ci, l] - 0.2 + 0.05 * rng.standard_normal(), -1, 1))
            ns = float("nan") if ci % 7 == 3 else float(np.clip(0.9 - 0.1 * z[ci, l] + 0.03 * rng.standard_normal(), 0, 1))
            pb_new = float(rng.uniform(0.0, 0.01))
            pa_new = pb_new + rw * (1 - pb_new)
            rows.append(dict(case_id=int(cid), relation_id=rel[ci], layer=int(l), rewrite_score=rw,
                             paraphrase_score=ps, neighborhood_score=ns, es=float(pa_new > 0.1),
                             ps=float(ps > 0.3), ns=float(ns > 0.5) if ns == ns else float("nan"),
                             es_magnitude=pa_new - 0.1, p_before_new=pb_new, p_after_new=pa_new,
                             p_before_true=0.4, p_after_true=max(0.0, 0.4 - rw * 0.4), steps=20,
                             final_loss=float(rng.uniform(0.01, 0.5)), seconds=0.5))
    edits = pd.DataFrame(rows)

    loadings = {"noise": s.noise_loading, "resample": s.resample_loading, "flip": s.flip_loading}
    offsets = {"noise": 0.3, "resample": -0.2, "flip": 0.0}
    # Tracing effects peak in early-middle layers for every estimator (the shared layer profile).
    eff_profile = 1.5 - 3.0 * np.abs(layers / (L - 1) - 0.35)
    trace_rows = []
    pos_scale = np.array([0.2, 0.6, 0.5, 1.0, 0.4, 0.3, 0.5])
    for est, load in loadings.items():
        variants = [("denoise", "p")] + ([("noise", "p"), ("denoise", "ld")] if est == "flip" else [])
        for direction, metric in variants:
            unit = 4.0 if metric == "ld" else 1.0
            sign = -1.0 if direction == "noise" else 1.0
            for component, window in (("mlp", 5), ("mlp", 10), ("residual", 1)):
                latent = eff_profile[None, :] + offsets[est] + load * z + s.effect_noise * rng.standard_normal((C, L))
                eff = _sigmoid(latent)  # in (0, 1): a share of the total effect
                te = rng.uniform(0.3, 0.9, size=C)
                for ci, cid in enumerate(case_ids):
                    for l in layers:
                        ie_last = eff[ci, l] * te[ci] * unit
                        for pos, role in enumerate(ROLES_BY_POSITION):
                            ie = sign * ie_last * pos_scale[pos] if role != "subject_last" else sign * ie_last
                            trace_rows.append((est, direction, metric, int(cid), rel[ci], component, window, int(l),
                                               pos, role, ie, te[ci] * unit, ie / (te[ci] * unit),
                                               10 if est == "noise" else 5, 0 if est == "noise" else 12))
    trace = pd.DataFrame(trace_rows, columns=["estimator", "direction", "metric", "case_id", "relation_id",
                                              "component", "window", "layer", "position", "role", "ie", "te",
                                              "ie_norm", "n_draws", "support_size"])
    keys = ["estimator", "direction", "metric", "component", "window", "layer", "role"]
    g = trace.groupby(keys).ie.agg(["mean", "std", "count"]).reset_index()
    half = 1.96 * g["std"].fillna(0) / np.sqrt(g["count"])
    summary = g.assign(ci_low=g["mean"] - half, ci_high=g["mean"] + half, n_cases=g["count"])
    summary = summary.drop(columns=["std", "count"])
    return {"trace": trace, "trace_summary": summary, "edits": edits}


def write_synthetic_results(out_dir: Path, spec: SyntheticSpec | None = None, n_bootstrap: int = 200) -> Path:
    """A complete synthetic results folder (trace, trace_summary, edits, run.json) in ``out_dir``."""
    s = spec or SyntheticSpec()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in synthetic_tables(s).items():
        atomic_write_parquet(out_dir / f"{name}.parquet", frame)
    atomic_write_json(out_dir / "run.json", {
        "config": {"model": "synthetic", "preset": "synthetic", "seed": s.seed, "analysis_window": 5,
                   "n_bootstrap": n_bootstrap, "trace_window": 10, "noise_draws": 10, "partner_draws": 5,
                   "edit_layers": s.edit_layers()},
        "seed": s.seed,
        "model": {"name": "synthetic", "n_layers": s.n_layers, "family": "none",
                  "hf_name": "synthetic data (no model)"},
        "synthetic": True,
    })
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m causaleval.synthetic OUT_DIR", file=sys.stderr)
        sys.exit(2)
    print(write_synthetic_results(Path(sys.argv[1])))
