"""Measured supports of the localisation estimators' base distributions (answer and state level)."""

from causaleval.support.measure import (MASSIVE_FACTOR, OUTCOMES, RealStates, Runs, SupportDataError, answer_rows,
                                        answer_set, auroc, classify, clean_states, corrupted_runs, peak,
                                        split_reference)

__all__ = ["MASSIVE_FACTOR", "OUTCOMES", "RealStates", "Runs", "SupportDataError", "answer_rows", "answer_set",
           "auroc", "classify", "clean_states", "corrupted_runs", "peak", "split_reference"]
