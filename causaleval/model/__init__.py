"""Model plumbing: loading a model (embedded GGUF or a local HF folder), the site map of each family,
forward hooks, the key/value-cache suffix runner, wrapping a caller's model, tiny test models
(docs/design.md#models)."""
