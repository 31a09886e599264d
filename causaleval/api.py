"""The public Python API: trace one prompt, edit one fact, run the study (docs/api.md).

* :func:`trace` localises a fact in a model already in memory with one of the three estimators
  (noise tracing, Meng et al. 2022; resample scrubbing, Chan et al. 2022; flip scrubbing) and returns a
  :class:`TraceResult`: [layer × position] arrays per metric and direction, the tidy long table, the
  total effects and the per-draw values (definitions: docs/estimands.md).
* :func:`edit` computes a ROME edit (Meng et al. 2022) of one request at one layer, scores it (Hase et
  al. 2023; Meng et al. 2022; docs/outputs.md#edits) and returns an :class:`EditOutcome` whose
  :meth:`~EditOutcome.applied` context manager writes the edit into the model and restores the original
  weights bitwise on exit.
* :func:`edit_sweep` edits one fact at each of several layers and returns an :class:`EditSweep` (a frame of
  the scores per layer and its ``plot()``); :meth:`TraceResult.plot` draws one fact's trace heatmap.
* :func:`run_study` runs the study (``python -m experiments.main``) from Python.

The caller's model and tokenizer are never changed: see :mod:`causaleval.model.wrapping`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from causaleval.data.counterfact import Fact, text_problem
from causaleval.data.tokens import answer_ids, check_prompt_lengths, context_length, encode_prompt
from causaleval.editing.rome import (AppliedEdit, EditResult, RomeHyperParams, SecondMoments, apply_edit, compute_edit,
                                     default_contexts, hparams_for, prepare_edit, sweep_case)
from causaleval.editing.scores import EditScores, edit_scores, prepare_probes, probs_after
from causaleval.errors import DataError
from causaleval.estimators import flip_scrubbing, noise_tracing, resample_scrubbing
from causaleval.model.loading import ModelBundle
from causaleval.model.sites import check_layer
from causaleval.model.wrapping import wrapped
from causaleval.patching.core import TraceTables, case_sites, case_tables, trace_case
from causaleval.patching.estimands import SiteGrid
from causaleval.runs.arguments import ArgumentError, as_float, as_instance, as_int, as_int_list, as_setting

ESTIMATORS = ("flip", "noise", "resample")
DIRECTIONS = ("denoise", "noise")
DEFAULT_WINDOW = {"residual": 1, "mlp": 10, "attn": 10}   # Meng et al. (2022)'s trace windows


def _choice(name: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise ArgumentError(f"{name}={value!r} is not allowed; choose one of {tuple(allowed)}")


# ----------------------------------------------------------------------------------------------
# trace
# ----------------------------------------------------------------------------------------------

@dataclass
class TraceResult:
    """The localisation of one prompt by one estimator at one component and window.

    ``sites`` is the tidy long table (one row per direction, metric, layer and position; columns as in
    ``trace.parquet``, docs/outputs.md#trace, plus ``token``), ``draws`` the per-draw values, ``cases``
    the total effect per direction and metric.  Read arrays through :meth:`array`, which always names
    the metric and direction, so values of different metrics are never mixed in one array."""

    estimator: str
    component: str
    window: int
    layers: list[int]
    tokens: list[str]
    roles: list[str]
    sites: pd.DataFrame
    draws: pd.DataFrame
    cases: pd.DataFrame
    estimands: dict[str, str] = field(default_factory=dict)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(sorted(self.sites.metric.unique()))

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(d for d in DIRECTIONS if d in set(self.sites.direction))

    def _rows(self, frame: pd.DataFrame, metric: str, direction: str) -> pd.DataFrame:
        _choice("metric", metric, self.metrics)
        _choice("direction", direction, self.directions)
        return frame[(frame.metric == metric) & (frame.direction == direction)]

    def array(self, metric: str = "p", direction: str = "denoise", value: str = "ie") -> np.ndarray:
        """[layer × position] array of ``value`` (``"ie"``, or ``"ie_norm"`` = IE/TE) for one metric and
        direction; rows follow :attr:`layers`, columns the prompt's token positions; NaN where a site
        was not traced."""
        _choice("value", value, ("ie", "ie_norm"))
        rows = self._rows(self.sites, metric, direction)
        grid = rows.pivot(index="layer", columns="position", values=value)
        return grid.reindex(index=self.layers, columns=range(len(self.tokens))).to_numpy(dtype=float)

    def frame(self, metric: str = "p", direction: str = "denoise", value: str = "ie") -> pd.DataFrame:
        """:meth:`array` as a DataFrame: index ``layer``, columns ``"<position>:<token>"``."""
        labels = [f"{i}:{t}" for i, t in enumerate(self.tokens)]
        out = pd.DataFrame(self.array(metric, direction, value), index=pd.Index(self.layers, name="layer"),
                           columns=labels)
        return out

    def per_draw(self, metric: str = "p", direction: str = "denoise") -> np.ndarray:
        """[draw × layer × position] indirect effects of every draw (noise draw or partner)."""
        rows = self._rows(self.draws, metric, direction)
        draws = sorted(rows["draw"].unique())
        out = np.full((len(draws), len(self.layers), len(self.tokens)), np.nan)
        d_i = {d: i for i, d in enumerate(draws)}
        l_i = {layer: i for i, layer in enumerate(self.layers)}
        out[rows["draw"].map(d_i).to_numpy(), rows.layer.map(l_i).to_numpy(), rows.position.to_numpy()] = rows.value
        return out

    def te(self, metric: str = "p", direction: str = "denoise") -> float:
        """Total effect TE = m(clean) − E m(corrupted) (docs/estimands.md#effects)."""
        return float(self._rows(self.cases, metric, direction).te.iloc[0])

    def plot(self, metric: str = "p", direction: str = "denoise", value: str = "ie", ax=None):
        """The position × layer heatmap of :meth:`array` as in the causal-tracing notebooks of Meng et al.
        (2022): subject tokens marked ``*``, estimator, metric and TE in the title, a colour scale diverging
        at 0.  Draws on ``ax`` (default: a new figure) and returns the matplotlib Axes."""
        from causaleval.reporting.one_fact import trace_heatmap

        return trace_heatmap(self, metric, direction, value, ax)


def _as_case(prompt: str, subject: str, answer: str) -> Fact:
    for name, v in (("prompt", prompt), ("subject", subject), ("answer", answer)):
        if not isinstance(v, str) or not v.strip():
            raise DataError(f"{name} must be a non-empty string, got {v!r}")
        found = text_problem(v)
        if found:
            raise DataError(f"{name} {v[:60]!r} {found}")
    if prompt.count("{}") > 1:
        raise DataError(f"prompt {prompt!r} has {prompt.count('{}')} '{{}}' placeholders; give one, where the subject goes")
    if "{}" not in prompt:
        if subject not in prompt:
            raise DataError(f"subject {subject!r} does not occur in prompt {prompt!r}; give the prompt with the "
                            "subject in it or with '{}' where the subject goes")
        prompt = prompt.replace(subject, "{}", 1)
    return Fact(case_id=0, prompt=prompt, relation_id="user", subject=subject, target_true=answer, target_new="")


def _as_partners(case: Fact, partners: Iterable | None) -> list[Fact]:
    """(subject, answer) pairs or Facts → Facts of the case's relation (their own prompts are not used)."""
    out = []
    for i, p in enumerate(partners or (), start=1):
        if isinstance(p, Fact):
            subject, answer = p.subject, p.target_true
        elif isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(x, str) and x.strip()
                                                                  and not text_problem(x) for x in p):
            subject, answer = p
        else:
            raise DataError(f"partner {i} ({p!r}) must be a (subject, answer) pair of non-empty strings or a Fact")
        if subject == case.subject:
            raise DataError(f"partner {i} has the case's own subject {subject!r}; partners need other subjects")
        out.append(Fact(case_id=i, prompt=case.prompt, relation_id=case.relation_id, subject=subject,
                        target_true=answer, target_new=""))
    return out


def trace(model, tokenizer, prompt: str, subject: str, answer: str, estimator: str = "flip",
          partners: Iterable | None = None, direction: str = "both", component: str = "mlp",
          window: int | None = None, layers: Sequence[int] | None = None, n_draws: int | None = None,
          nu: float | None = None, seed: int = 0) -> TraceResult:
    """Localise the fact (``subject`` in ``prompt`` → ``answer``) with one estimator.

    ``prompt`` holds the subject (or ``{}`` where it goes); o is the first token of ``" " + answer``.
    ``estimator``: ``"flip"`` (partners with a different answer token; metrics p and ld),
    ``"resample"`` (any partners; metric p) or ``"noise"`` (Gaussian noise of scale ``nu`` on the subject
    embeddings, default ν = 3 × the std of the given subjects' token embeddings; metric p).
    ``partners``: (subject, answer) pairs or :class:`~causaleval.data.counterfact.Fact` objects, each put into
    ``prompt``.  ``direction``: ``"denoise"`` (clean → corrupted), ``"noise"`` (corrupted → clean) or
    ``"both"``.  ``component``: ``"mlp"``, ``"attn"`` or ``"residual"``; ``window`` layers centred at each
    of ``layers`` (default 10 for mlp/attn, capped at the model's depth, and 1 for residual;
    every layer).  ``n_draws``: noise draws
    (default 10) or partners used (default all).  Definitions: docs/estimands.md."""
    _choice("estimator", estimator, ESTIMATORS)
    _choice("direction", direction, DIRECTIONS + ("both",))
    _choice("component", component, tuple(DEFAULT_WINDOW))
    directions = DIRECTIONS if direction == "both" else (direction,)
    n_draws = None if n_draws is None else as_int("n_draws", n_draws)
    window = None if window is None else as_int("window", window)
    layers = None if layers is None else as_int_list("layers", layers)
    nu = None if nu is None else as_float("nu", nu)
    seed = as_int("seed", seed)
    case = _as_case(prompt, subject, answer)
    pool = _as_partners(case, partners)
    if estimator != "noise" and not pool:
        raise DataError(f"{estimator} scrubbing needs partners: pass partners=[(subject, answer), ...] of other "
                        "subjects for the same prompt")
    with wrapped(model, tokenizer) as bundle:
        check_prompt_lengths(bundle.tokenizer, [case], context_length(bundle.model.config))
        window = min(DEFAULT_WINDOW[component], bundle.n_layers) if window is None else int(window)
        grid = SiteGrid(component, window, None if layers is None else tuple(int(x) for x in layers))
        layer_list = grid.layer_list(bundle.n_layers)
        enc = encode_prompt(bundle.tokenizer, case.prompt, case.subject, "the prompt")
        if estimator == "noise":
            tables, texts = _trace_noise(bundle, case, pool, grid, directions, n_draws or 10, nu, seed)
        else:
            tables, texts = _trace_partners(bundle, case, pool, estimator, grid, directions,
                                            n_draws or len(pool), seed)
        tokens = [bundle.tokenizer.decode([t]) for t in enc.input_ids]
    if tables.sites.empty:
        reason = tables.cases.reason.iloc[0] if len(tables.cases) else "no site was traced"
        raise DataError(f"{estimator} scrubbing of {case.text!r}: {reason} (flip partners need an answer whose "
                        f"first token differs from that of {answer!r})")
    sites = tables.sites.assign(token=lambda d: [tokens[p] for p in d.position])
    return TraceResult(estimator, component, window, layer_list, tokens,
                       [enc.role_of(i) for i in range(enc.length)], sites, tables.draws, tables.cases, texts)


def _trace_partners(bundle: ModelBundle, case: Fact, pool: list[Fact], estimator: str, grid: SiteGrid,
                    directions, n_draws: int, seed: int) -> tuple[TraceTables, dict]:
    config = resample_scrubbing.ScrubbingConfig(n_draws=n_draws, seed=seed, grids=(grid,), directions=directions)
    if estimator == "flip":
        tables = flip_scrubbing.trace_fact(bundle, case, pool, config)
        texts = {d: str(flip_scrubbing.estimand(config, d)) for d in directions}
    else:
        tables = resample_scrubbing.trace_fact(bundle, case, pool, config)
        texts = {d: str(resample_scrubbing.estimand(config, d)) for d in directions}
    return tables, texts


def _trace_noise(bundle: ModelBundle, case: Fact, pool: list[Fact], grid: SiteGrid, directions, n_draws: int,
                 nu: float | None, seed: int) -> tuple[TraceTables, dict]:
    nu = noise_tracing.noise_scale(bundle, [case] + pool) if nu is None else float(nu)
    if nu < 0:
        raise ArgumentError(f"nu={nu} must be non-negative")
    config = noise_tracing.NoiseTracingConfig(nu=nu, n_draws=n_draws, seed=seed, grids=(grid,))
    texts = {"denoise": str(noise_tracing.estimand(config, bundle))}
    parts = []
    if "denoise" in directions:
        parts.append(noise_tracing.trace_fact(bundle, case, config))
    if "noise" in directions:   # the same draws, patched the other way (Heimersheim & Nanda 2024)
        enc = encode_prompt(bundle.tokenizer, case.prompt, case.subject, case.case_id)
        draws = noise_tracing.make_draws(bundle, enc, case.case_id, config)
        tr = trace_case(bundle, case.case_id, case.relation_id, enc, answer_ids(bundle.tokenizer, case.target_true)[0],
                        draws, case_sites(config.grids, enc, bundle.n_layers), "noise", config.max_rows)
        parts.append(case_tables(tr, noise_tracing.NAME, noise_tracing.METRICS, None))
        texts["noise"] = texts["denoise"] + " Direction: noising (corrupted states written into the clean run)."
    return TraceTables.concat(parts), texts


# ----------------------------------------------------------------------------------------------
# edit
# ----------------------------------------------------------------------------------------------

def _text(value, name: str) -> str:
    if isinstance(value, Mapping):
        value = value.get("str")
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"edit request field {name!r} must be a non-empty string (or {{'str': ...}}), got {value!r}")
    found = text_problem(value)
    if found:
        raise DataError(f"edit request field {name!r} {found}")
    return value


def as_request(request) -> Fact:
    """A Fact from an edit request: a Fact, a CounterFact record, or a mapping with ``prompt``
    (the subject in it or ``{}``), ``subject``, ``target_new``, ``target_true`` and optional
    ``paraphrase_prompts`` / ``neighborhood_prompts`` (targets as strings or ``{"str": ...}``)."""
    if isinstance(request, Fact):
        return request
    if not isinstance(request, Mapping):
        raise DataError(f"edit request must be a Fact or a mapping, got {type(request).__name__}")
    if "requested_rewrite" in request:
        return Fact.from_record(dict(request), "edit request")
    missing = [k for k in ("prompt", "subject", "target_new", "target_true") if k not in request]
    if missing:
        raise DataError(f"edit request lacks {missing}; it needs prompt, subject, target_new and target_true")
    case = _as_case(_text(request["prompt"], "prompt"), _text(request["subject"], "subject"),
                    _text(request["target_true"], "target_true"))
    lists = {}
    for key in ("paraphrase_prompts", "neighborhood_prompts"):
        items = request.get(key, [])
        if isinstance(items, str) or not all(isinstance(x, str) for x in items):
            raise DataError(f"edit request field {key!r} must be a list of strings")
        lists[key] = list(items)
    case.target_new = _text(request["target_new"], "target_new")
    if case.target_new.strip() == case.target_true.strip():
        raise DataError(f"edit request: target_new {case.target_new!r} equals target_true; an edit needs a new answer")
    case.paraphrase_prompts, case.neighborhood_prompts = lists["paraphrase_prompts"], lists["neighborhood_prompts"]
    return case


@dataclass
class EditOutcome:
    """One ROME edit, computed and scored with the model left unchanged.

    ``scores``: rewrite / paraphrase / neighbourhood scores, ES / PS / NS, magnitudes and the
    probabilities before and after (docs/outputs.md#edits); ``result``: ΔW, v*, the keys and the
    optimisation's steps and loss.  ``with outcome.applied():`` runs code on the edited model."""

    request: Fact
    layer: int
    scores: EditScores
    result: EditResult
    bundle: ModelBundle = field(repr=False)

    def applied(self) -> AppliedEdit:
        """A context manager: the edit is written into the model on entry and the original weight is
        copied back bitwise on exit."""
        return apply_edit(self.bundle, self.result)

    def to_dict(self) -> dict:
        return {"layer": self.layer, **self.scores.to_dict(), "steps": self.result.steps,
                "final_loss": self.result.final_loss}


def edit(model, tokenizer, request, layer: int | None = None, hparams: RomeHyperParams | None = None,
         stats: SecondMoments | None = None, contexts: list[str] | None = None, seed: int = 0) -> EditOutcome:
    """Compute the ROME edit of ``request`` at ``layer`` (default: the family's layer) and score it.

    ``hparams`` defaults to :func:`causaleval.editing.rome.hparams_for` of the model's family; the second moments
    C = E[k kᵀ] (``stats``) and the context texts are computed from the model and cached under
    ``$CAUSALEVAL_CACHE`` unless given.  The model is edited only while scoring and inside
    :meth:`EditOutcome.applied`."""
    fact = as_request(request)
    layer = None if layer is None else as_int("layer", layer)
    seed = as_int("seed", seed)
    if hparams is not None:
        as_instance("hparams", hparams, RomeHyperParams, "a RomeHyperParams (causaleval.editing.rome.hparams_for(...))")
    if stats is not None:
        as_instance("stats", stats, SecondMoments, "a SecondMoments of this model, or None to compute it")
        if stats.bundle.model is not model and stats.bundle.model is not getattr(model, "model", None):
            raise ArgumentError("stats holds the second moments of another model; pass None (they are computed "
                                "and cached for this model) or a SecondMoments made for this one")
    if contexts is not None and (isinstance(contexts, str) or not all(isinstance(c, str) for c in contexts)):
        raise ArgumentError(f"contexts must be a list of strings, got {type(contexts).__name__}")
    with wrapped(model, tokenizer) as bundle:
        check_prompt_lengths(bundle.tokenizer, [fact], context_length(bundle.model.config))
        hp = hparams or hparams_for(bundle.family.name, bundle.n_layers)
        layer = hp.layer_for(bundle.n_layers) if layer is None else int(layer)
        check_layer(layer, bundle.n_layers)
        stats = stats or SecondMoments(bundle, hp, seed=seed)
        contexts = default_contexts(bundle, hp, seed) if contexts is None else list(contexts)
        probes = prepare_probes(bundle, fact, seed=seed)
        result = compute_edit(bundle, prepare_edit(bundle, fact, contexts, hp), layer, hp, stats)
        with apply_edit(bundle, result):
            after = probs_after(bundle, probes, layer)
    scores = edit_scores(probes.probes.kind, probes.before, after)
    return EditOutcome(fact, layer, scores, result, bundle)


@dataclass
class EditSweep:
    """One fact edited with ROME at each of ``layers``, each edit scored on the unedited model.

    ``frame``: one row per layer with the edit scores of docs/outputs.md#edits (``rewrite_score``,
    ``paraphrase_score``, ``neighborhood_score``, ES/PS/NS, magnitudes, probabilities before and after),
    ``steps`` and ``final_loss`` of the v* optimisation and ``seconds``."""

    request: Fact
    layers: list[int]
    frame: pd.DataFrame

    def best_layer(self, score: str = "rewrite_score") -> int:
        """The layer whose edit scores highest on ``score``."""
        _choice("score", score, tuple(c for c in self.frame.columns if c.endswith("score") or c in ("es", "ps", "ns")))
        return int(self.frame.loc[self.frame[score].idxmax(), "layer"])

    def plot(self, scores: Sequence[str] = ("rewrite_score", "paraphrase_score", "neighborhood_score"), ax=None):
        """Each score against the edit layer (one line per score); returns the matplotlib Axes."""
        from causaleval.reporting.one_fact import sweep_plot

        for name in scores:
            _choice("score", name, tuple(self.frame.columns))
        return sweep_plot(self, scores, ax)


def edit_sweep(model, tokenizer, request, layers: Sequence[int] | None = None, hparams: RomeHyperParams | None = None,
               stats: SecondMoments | None = None, contexts: list[str] | None = None, seed: int = 0) -> EditSweep:
    """Edit ``request`` with ROME at each of ``layers`` (default: every layer) and score each edit: the edit
    stage's code path (:func:`causaleval.editing.rome.sweep_case`) for one fact, the model left unchanged.

    ``request``, ``hparams``, ``stats``, ``contexts`` and ``seed`` as in :func:`edit`."""
    fact = as_request(request)
    with wrapped(model, tokenizer) as bundle:
        layer_list = list(range(bundle.n_layers)) if layers is None else [int(x) for x in layers]
        if not layer_list:
            raise ArgumentError("layers=[] is empty; give at least one layer to edit (or None for every layer)")
        for layer in layer_list:
            check_layer(layer, bundle.n_layers)
        hp = hparams or hparams_for(bundle.family.name, bundle.n_layers)
        stats = stats or SecondMoments(bundle, hp, seed=seed)
        contexts = default_contexts(bundle, hp, seed) if contexts is None else list(contexts)
        rows = sweep_case(bundle, fact, layer_list, hp, stats, contexts, seed=seed)
    frame = pd.DataFrame(rows).drop(columns=["case_id", "relation_id"])
    return EditSweep(fact, layer_list, frame)


# ----------------------------------------------------------------------------------------------
# the study
# ----------------------------------------------------------------------------------------------

@dataclass
class StudyResult:
    """A finished study run: its results folder and, after ``analyze``, ``analysis/summary.json``."""

    out_dir: Path
    summary: dict | None

    def table(self, name: str) -> pd.DataFrame:
        """A result table by file name without extension, e.g. ``"trace"``, ``"edits"``, ``"analysis/r2"``."""
        path = self.out_dir / f"{name}.parquet"
        if not path.is_file():
            raise DataError(f"{path} does not exist; tables of this run: "
                            f"{sorted(str(p.relative_to(self.out_dir))[:-8] for p in self.out_dir.rglob('*.parquet') if 'parts' not in p.parent.name)}")
        return pd.read_parquet(path)


_FLAGS = {"model": "--model", "facts": "--facts", "device": "--device", "dtype": "--dtype", "seed": "--seed",
          "max_facts": "--max-facts", "relations": "--relations", "edit_layers": "--edit-layers",
          "batch_size": "--batch-size", "backend": "--backend", "workers": "--workers"}


def study_argv(preset: str = "default", out: str | Path | None = None, stage: str = "all", force: bool = False,
               progress: bool = False, extra_args: Sequence[str] = (), **settings) -> list[str]:
    """The ``python -m experiments.main`` arguments :func:`run_study` passes."""
    unknown = sorted(set(settings) - set(_FLAGS))
    if unknown:
        raise ArgumentError(f"run_study got unknown settings {unknown}; known: {sorted(_FLAGS)} (pass other "
                            "command-line flags with extra_args=[...])")
    settings = {key: as_setting(key, value) for key, value in settings.items()}
    if not isinstance(preset, str) or not isinstance(stage, str):
        raise ArgumentError(f"preset and stage must be strings, got {preset!r} and {stage!r}")
    argv = ["--preset", str(preset), "--stage", stage]
    if out is not None:
        argv += ["--out", str(out)]
    for key, value in settings.items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        argv += [_FLAGS[key], *(str(v) for v in values)]
    return argv + (["--force"] if force else []) + ([] if progress else ["--quiet"]) + list(extra_args)


def run_study(preset: str = "default", out: str | Path | None = None, stage: str = "all", force: bool = False,
              progress: bool = False, extra_args: Sequence[str] = (), **settings) -> StudyResult:
    """Run the study stages as ``python -m experiments.main`` would (docs/design.md#stages), raising a
    :class:`~causaleval.errors.CausalEvalError` on bad input instead of exiting.

    ``settings``: model, facts, device, dtype, seed, max_facts, relations, edit_layers, batch_size,
    backend, workers (the command's flags); ``extra_args`` are appended verbatim."""
    from experiments import main as cli

    argv = study_argv(preset, out, stage, force, progress, extra_args, **settings)
    cli.run(argv)
    out_dir = cli.out_dir_for(cli.build_config(cli.parse_args(argv)))
    summary_path = out_dir / "analysis" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return StudyResult(out_dir, summary)
