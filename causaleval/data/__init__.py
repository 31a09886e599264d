"""Facts: the CounterFact record schema and loader, the built-in geography facts, the known-facts filter,
and token positions by role (docs/design.md#facts)."""
