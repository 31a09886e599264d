"""The study: `python -m experiments.main` (stages facts → trace → edit → analyze → report)."""
