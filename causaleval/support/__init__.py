"""Measured supports of the localisation estimators' base distributions (answer and state level)."""

from causaleval.support.measure import (OUTCOMES, RealStates, Runs, SupportDataError, answer_rows, answer_set,
                                        classify, clean_states, corrupted_runs, split_reference)

__all__ = ["OUTCOMES", "RealStates", "Runs", "SupportDataError", "answer_rows", "answer_set", "classify",
           "clean_states", "corrupted_runs", "split_reference"]
