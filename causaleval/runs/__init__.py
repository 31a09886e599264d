"""Run infrastructure: atomic result files and provenance, resumable per-case parts, locks between
processes, declarative setting checks, and named fault points for tests (docs/design.md#stages)."""
