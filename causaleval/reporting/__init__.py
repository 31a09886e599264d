"""Tables, figures and the paper build (docs/design.md#stages)."""
