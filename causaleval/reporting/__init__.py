"""Reporting: LaTeX tables (and the numbers.tex macros), figures, trace heatmaps, the validate-stage tables and
the replication table across models (docs/design.md#stages); experiments/paper.py builds the paper from them."""
