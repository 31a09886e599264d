"""causaleval: does localisation inform editing?

Noise tracing (Meng et al. 2022), resample scrubbing (Chan et al. 2022) and flip scrubbing as explicit
causal estimands, ROME edits at every layer, and the test of whether localisation predicts edit success
(Hase et al. 2023).  The public API (docs/api.md)::

    import causaleval
    result = causaleval.trace(model, tokenizer, "The capital of France is", "France", "Paris",
                              partners=[("Germany", "Berlin"), ("Italy", "Rome")])
    result.array(metric="ld", direction="denoise")        # [layer × position]
    outcome = causaleval.edit(model, tokenizer, {"prompt": "The capital of France is", "subject": "France",
                                                 "target_true": "Paris", "target_new": "Rome"}, layer=5)
    outcome.scores.rewrite_score
    with outcome.applied():                               # edited inside, restored bitwise after
        ...
    causaleval.run_study("smoke", out="results/smoke")

Names are imported on first use, so ``import causaleval`` stays cheap.
"""

from __future__ import annotations

import importlib

from causaleval.offline import go_offline

go_offline()      # before transformers / datasets are imported: no network at run time

__version__ = "0.1.0"

_EXPORTS = {
    "trace": "causaleval.api", "edit": "causaleval.api", "edit_sweep": "causaleval.api", "run_study": "causaleval.api",
    "TraceResult": "causaleval.api", "EditOutcome": "causaleval.api", "StudyResult": "causaleval.api",
    "EditSweep": "causaleval.api",
    "ArgumentError": "causaleval.api",
    "load_model": "causaleval.model.loading", "bundle_from": "causaleval.model.loading", "ModelBundle": "causaleval.model.loading",
    "wrapped": "causaleval.model.wrapping", "frozen": "causaleval.model.wrapping",
    "Fact": "causaleval.data.counterfact", "load_counterfact": "causaleval.data.counterfact",
    "EditScores": "causaleval.editing.scores",
    "RomeHyperParams": "causaleval.editing.rome.hparams", "hparams_for": "causaleval.editing.rome.hparams",
    "SecondMoments": "causaleval.editing.rome.stats",
    "SiteGrid": "causaleval.patching.estimands", "Estimand": "causaleval.patching.estimands",
    "CausalEvalError": "causaleval.errors", "DataError": "causaleval.errors", "SiteError": "causaleval.errors",
    "ModelNotFoundError": "causaleval.errors", "UnsupportedArchitectureError": "causaleval.errors",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'causaleval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
