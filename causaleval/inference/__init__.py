"""Array-level inference for the localisation-vs-editing regressions (Hase et al. 2023).

Every function takes a (cases × layers) score array ``y`` and effect arrays of the same shape (NaN
where a row is missing) and is vectorised over many refits at once: ``regression`` (ΔR², F-test,
case-permutation test), ``h1`` (paired swap test of ΔR²_a − ΔR²_b and its power), ``correlation``
(per-layer Fisher-z CIs and Williams' t on |r|), ``argmax`` (tie-split hits against a permutation
chance level), ``paired`` (a within-unit sign-flip test of a mean difference).  Beside them:
``bootstrap`` (case-bootstrap CIs), ``synthetic`` (results with a known truth) and ``calibration``
(size and power of every test on such results).
"""
