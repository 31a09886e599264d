"""Reporting: LaTeX tables (and the numbers.tex macros), figures, trace heatmaps, the validate-stage tables, the
replication table across models (docs/design.md#stages), and one fact's plots for a notebook (:mod:`.one_fact`);
experiments/paper.py builds the paper from them."""
