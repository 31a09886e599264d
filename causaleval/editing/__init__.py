"""Editing a fact at a layer and scoring the edit: ROME (Meng et al. 2022) in :mod:`causaleval.editing.rome`,
the edit scores of Hase et al. (2023, §3.4) in :mod:`causaleval.editing.scores`, and the prompt-suffix
runner both share (docs/design.md#rome)."""
