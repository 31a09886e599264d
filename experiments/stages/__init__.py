"""One module per stage of the study; each exposes ``NAME``, ``OUTPUTS``, and ``run(ctx)``."""
