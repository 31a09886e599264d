"""The three localisation estimators, one module each (docs/estimands.md).

* :mod:`causaleval.estimators.noise_tracing`: causal tracing with Gaussian noise on the subject (Meng et al. 2022);
* :mod:`causaleval.estimators.resample_scrubbing`: the subject replaced by another subject of the relation
  (resampling ablation; Chan et al. 2022);
* :mod:`causaleval.estimators.flip_scrubbing`: the subject replaced by one whose true answer differs.

``ESTIMATORS`` maps each estimator's name (as in the ``estimator`` column of the trace tables) to its
module; :func:`causaleval.trace` is the one-prompt entry point.
"""

from causaleval.estimators import flip_scrubbing, noise_tracing, resample_scrubbing

ESTIMATORS = {m.NAME: m for m in (noise_tracing, resample_scrubbing, flip_scrubbing)}

__all__ = ["ESTIMATORS", "flip_scrubbing", "noise_tracing", "resample_scrubbing"]
