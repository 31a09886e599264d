"""Tables, figures and the paper build (SPEC §8)."""
