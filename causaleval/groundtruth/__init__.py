"""Ground truth for localisers: facts planted at a known layer, and whether each localiser finds it
(docs/estimands.md#planted-facts)."""
