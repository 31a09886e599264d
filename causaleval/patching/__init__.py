"""Activation patching and the localisation estimands: the shared patching core (base vs source runs,
sites indexed by layer and position) and each estimand stated with its support (docs/estimands.md)."""
