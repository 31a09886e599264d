"""Synthetic results folders and arrays with a known truth, for tests, calibration and the paper build.

Writes ``trace.parquet``, ``trace_summary.parquet``, ``edits.parquet`` and ``run.json`` in the schema
the trace and edit stages produce (the input contract of :mod:`causaleval.analysis`).  The truth:

* every case has a latent per-layer "locus" z[c, l] (standard normal, smoothed across layers);
* the edit scores are a layer profile plus ``signal`` · z plus noise, so layer explains most variance;
* each estimator's effect (a fraction restored in (0, 1)) is sigmoid(layer profile + loading · z +
  noise): by default flip scrubbing carries z, resample scrubbing half of it, noise tracing none.

Modes: :meth:`SyntheticSpec.null` (``signal`` = 0: no estimator's effect says anything about the
score beyond layer) and :meth:`SyntheticSpec.planted` (flip carries the locus, noise does not: a
planted ΔR²_flip − ΔR²_noise > 0).  :func:`synthetic_arrays` draws only the (cases × edit layers)
arrays the tests regress, fast enough for thousands of calibration replicates.

In the trace table, IE = effect · TE at the ``subject_last`` token and a smaller share at the other
positions (so every token rule reads the designed effect), for denoising and for noising alike: a
noising IE is clean − patched, positive where the site is necessary (the same sign as denoising).

    python -m causaleval.inference.synthetic OUT_DIR      # a synthetic results folder, e.g. to try `make paper`
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from causaleval.runs.store import atomic_write_json, atomic_write_parquet

ROLES_BY_POSITION = ("before_subject", "subject_first", "subject_middle", "subject_last", "after_subject",
                     "further_tokens", "last")
RELATIONS = ("P36", "P30", "P38", "P37", "P17")
OFFSETS = {"noise": 0.3, "resample": -0.2, "flip": 0.0}


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
    case_sd: float = 0.0               # a per-fact random intercept of the score (all layers of a fact share it)
    effect_case_sd: float = 0.0        # a per-fact random intercept of every estimator's effect (shared by them)
    seed: int = 0

    def edit_layers(self) -> list[int]:
        return sorted(set(range(0, self.n_layers, self.edit_layer_step)) | {self.n_layers - 1})

    @classmethod
    def null(cls, n_cases: int = 12, n_layers: int = 12, **kw) -> "SyntheticSpec":
        """No signal: the score does not follow the locus, so every effect is independent of it."""
        return cls(n_cases=n_cases, n_layers=n_layers, signal=0.0, **kw)

    @classmethod
    def planted(cls, n_cases: int = 12, n_layers: int = 12, signal: float = 0.15, **kw) -> "SyntheticSpec":
        """A planted difference: flip's effect carries the locus the score follows, noise's and
        resample's do not (ΔR²_flip > ΔR²_noise in expectation)."""
        return cls(n_cases=n_cases, n_layers=n_layers, signal=signal, flip_loading=1.0, resample_loading=0.0,
                   noise_loading=0.0, **kw)

    @classmethod
    def dependent(cls, spec: "SyntheticSpec", score_corr: float = 0.55, effect_case_sd: float = 0.5) -> "SyntheticSpec":
        """``spec`` with a fact's rows correlated across layers: a per-fact score intercept sized so that
        two layers' scores of one fact correlate ``score_corr`` under the null (above the committed study's
        rewrite scores, whose mean correlation is the paper's \ScoreLayerCorr), and a per-fact effect
        intercept shared by the estimators."""
        from dataclasses import replace

        case_sd = spec.score_noise * np.sqrt(score_corr / (1 - score_corr))
        return replace(spec, case_sd=float(case_sd), effect_case_sd=effect_case_sd)

    def loadings(self) -> dict[str, float]:
        return {"noise": self.noise_loading, "resample": self.resample_loading, "flip": self.flip_loading}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _latent(s: SyntheticSpec, rng: np.random.Generator, reps: tuple[int, ...] = ()) -> np.ndarray:
    """The locus z (reps × cases × layers): white noise smoothed with [¼, ½, ¼] across layers, standardised."""
    raw = rng.standard_normal(reps + (s.n_cases, s.n_layers + 2))
    z = 0.25 * raw[..., :-2] + 0.5 * raw[..., 1:-1] + 0.25 * raw[..., 2:]
    return z / np.sqrt(0.25 ** 2 * 2 + 0.5 ** 2)


def _score_profile(n_layers: int) -> np.ndarray:
    layers = np.arange(n_layers)
    return 0.95 - 0.6 * (layers / (n_layers - 1)) ** 2   # early/middle layers edit best (as ROME)


def _effect_profile(n_layers: int) -> np.ndarray:
    layers = np.arange(n_layers)
    return 1.5 - 3.0 * np.abs(layers / (n_layers - 1) - 0.35)  # tracing peaks early-middle


def synthetic_arrays(spec: SyntheticSpec, reps: int = 1, seed: int | None = None
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``reps`` independent studies at the edit layers: the rewrite score (reps × cases × edit layers)
    and each estimator's effect (same shape), drawn from the model of the module docstring."""
    s = spec
    rng = np.random.default_rng(s.seed if seed is None else seed)
    el = s.edit_layers()
    z = _latent(s, rng, (reps,))
    shape = z.shape
    y = _score_profile(s.n_layers) + s.signal * z + s.score_noise * rng.standard_normal(shape)
    if s.case_sd:                      # drawn only when set, so the other designs keep their random stream
        y = y + s.case_sd * rng.standard_normal(shape[:-1] + (1,))
    fact = s.effect_case_sd * rng.standard_normal(shape[:-1] + (1,)) if s.effect_case_sd else 0.0
    effects = {e: _sigmoid(_effect_profile(s.n_layers) + OFFSETS[e] + load * z + fact
                           + s.effect_noise * rng.standard_normal(shape))[..., el]
               for e, load in s.loadings().items()}
    return np.clip(y[..., el], -1, 1), effects


def synthetic_tables(spec: SyntheticSpec | None = None) -> dict[str, pd.DataFrame]:
    """The three tables of a results folder: trace, trace_summary and edits (see module docstring)."""
    s = spec or SyntheticSpec()
    rng = np.random.default_rng(s.seed)
    C, L = s.n_cases, s.n_layers
    layers = np.arange(L)
    z = _latent(s, rng)
    rel = np.array([RELATIONS[c % len(RELATIONS)] for c in range(C)])
    case_ids = np.arange(1000, 1000 + C)

    score = _score_profile(L)[None, :] + s.signal * z + s.score_noise * rng.standard_normal((C, L))
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

    eff_profile = _effect_profile(L)
    trace_rows = []
    pos_scale = np.array([0.0, 0.6, 0.5, 1.0, 0.4, 0.3, 0.5])   # before the subject: exactly 0
    for est, load in s.loadings().items():
        variants = [("denoise", "p")] + ([("noise", "p"), ("denoise", "ld")] if est == "flip" else [])
        for direction, metric in variants:
            unit = 4.0 if metric == "ld" else 1.0
            for component, window in (("mlp", 5), ("mlp", 10), ("residual", 1)):
                latent = eff_profile[None, :] + OFFSETS[est] + load * z + s.effect_noise * rng.standard_normal((C, L))
                eff = _sigmoid(latent)  # in (0, 1): the fraction of the total effect a site restores
                te = rng.uniform(0.3, 0.9, size=C)
                for ci, cid in enumerate(case_ids):
                    for l in layers:
                        ie_last = eff[ci, l] * te[ci] * unit
                        for pos, role in enumerate(ROLES_BY_POSITION):
                            ie = ie_last * pos_scale[pos]
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
        print("usage: python -m causaleval.inference.synthetic OUT_DIR", file=sys.stderr)
        sys.exit(2)
    print(write_synthetic_results(Path(sys.argv[1])))


def draws_around(trace: pd.DataFrame, n_draws: int, sd: float, seed: int = 0) -> pd.DataFrame:
    """Per-draw rows (the trace stage's ``trace_draws`` schema) for the MLP window-5 rows of ``trace``:
    each row's IE plus Gaussian deviations of standard deviation ``sd`` centred over draws, so the mean
    over draws is the trace table's IE exactly (a known split-half reliability, for tests)."""
    rng = np.random.default_rng(seed)
    sel = trace[(trace.component == "mlp") & (trace.window == 5)].reset_index(drop=True)
    eps = rng.standard_normal((len(sel), n_draws)) * sd
    eps -= eps.mean(1, keepdims=True)
    keys = ["estimator", "direction", "metric", "case_id", "component", "window", "layer", "position"]
    return pd.DataFrame({**{k: np.repeat(sel[k].to_numpy(), n_draws) for k in keys},
                         "draw": np.tile(np.arange(n_draws), len(sel)),
                         "value": (sel.ie.to_numpy()[:, None] + eps).ravel(),
                         "te": np.repeat(sel.te.to_numpy(), n_draws)})
