"""The hypothesis tests over the joined (case, edit layer) table (Hase et al. 2023 design).

Modules: :mod:`.spec` (what is compared), :mod:`.effects` (the joined table), :mod:`.regression_tables`
(R², ΔR², r_w and H1), :mod:`.reliability`, :mod:`.per_layer`, :mod:`.within_case`, :mod:`.study` (the
whole analysis, its summary and files).  The names below are re-exported here.

Data: one row per (case, edit layer) with the edit scores and, per estimator E, the localisation effect
at that layer, computed with one rule for every estimator.  Default (Hase et al. 2023, §4.1): the
*fraction restored* IE/TE (a ratio of means over draws: ``ie`` and ``te`` of trace.parquet are means
over draws), clipped below at 0, maximised over token positions from the first subject token, MLP
window 5, denoising, metric p.  The logit-difference metric uses the same ratio, i.e. LD normalised to
1 = clean, 0 = corrupted.  Cases whose TE (for any compared estimator) is below ``te_floor`` are
excluded and counted (``n_excluded``); every comparison uses one common set of rows for all estimators.
Variants: the raw IE (``raw_ie``), the last subject token, and the flip-only noising / logit-difference
rows (descriptive: only flip scrubbing has them, so they compare no estimators).

Tests (array-level code in :mod:`causaleval.inference`):

* per estimator and score: R²(score ~ C(layer)), R²(score ~ effect), R²(score ~ C(layer) × effect),
  ΔR² = R²(both) − R²(layer) with a bias-corrected cluster-bootstrap CI, the nested F-test and the
  cluster-aware case-permutation test (``p_cluster``; whole cases' effect profiles permuted);
* H1: ΔR²_a − ΔR²_b by a paired swap test within case, with a CI and the minimum detectable difference
  (``mdd``, 80 % power at α = 0.05) simulated on the run's own design;
* per layer: r(score, E) with Fisher-z CIs, Williams' t (Williams 1959; Steiger 1980) of |r_a| vs |r_b|
  (variance explained), Holm/BH across the non-degenerate layers (a layer whose score does not vary is
  reported as ``degenerate`` and left out of the tests);
* within case: Spearman correlation of layer profiles; argmax-layer hits (ties split) against a
  case-permutation chance level.
"""

from __future__ import annotations

from causaleval.analysis.effects import (DRAW_COLUMNS, EDIT_COLUMNS, HALVES, TRACE_COLUMNS, below_floor,
                                         case_layer_arrays, common_rows, exclusions, half_effects, join_effects,
                                         localisation_effects, present_estimators)
from causaleval.analysis.per_layer import adjust_pvalues, per_layer_tests
from causaleval.analysis.regression_tables import (bc_percentile_ci, bootstrap_weights, disattenuated_diff, fit_r2,
                                                   half_arrays, percentile_ci, regression_tables)
from causaleval.analysis.reliability import reliability_table
from causaleval.analysis.spec import (ANALYSIS_TABLES, EFFECTS, ESTIMATORS, PAIRS, SCORES, AnalysisError, AnalysisSpec,
                                      variant_specs)
from causaleval.analysis.study import (AnalysisFrames, AnalysisResult, AnalysisTables, analyze, analyze_all, headline,
                                       load_results, summary_dict, write_results)
from causaleval.analysis.within_case import within_case_tests

__all__ = ["ANALYSIS_TABLES", "DRAW_COLUMNS", "EDIT_COLUMNS", "EFFECTS", "ESTIMATORS", "HALVES", "PAIRS", "SCORES",
           "TRACE_COLUMNS", "AnalysisError", "AnalysisFrames", "AnalysisResult", "AnalysisSpec", "AnalysisTables",
           "adjust_pvalues", "analyze", "analyze_all", "bc_percentile_ci", "below_floor", "bootstrap_weights",
           "case_layer_arrays", "common_rows", "disattenuated_diff", "exclusions", "fit_r2", "half_arrays",
           "half_effects", "headline", "join_effects", "load_results", "localisation_effects", "per_layer_tests",
           "percentile_ci", "present_estimators", "regression_tables", "reliability_table", "summary_dict",
           "variant_specs", "within_case_tests", "write_results"]
