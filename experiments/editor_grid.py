"""One editor setting measured on the committed study's facts (FT-1's ε, MEMIT's λ): the summary per value and
layer, and the score grid and overall line of its generated docs page.

The summary gives, per value and layer (and per value over all layers, ``layer = all``), n, the mean rewrite /
paraphrase / neighbourhood score, ES / PS / NS and S, their harmonic mean (Meng et al. 2022's score of an
editor; :func:`causaleval.editing.scores.summarise`), and mean steps and seconds per edit.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd

SCORES = ["rewrite_score", "paraphrase_score", "neighborhood_score", "es"]


def summarise_by(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The summary of edit rows per ``keys`` and layer, and per ``keys`` over all layers (``layer = all``)."""
    from causaleval.editing.scores import summarise as score_summary

    by_layer = score_summary(rows, by=[*keys, "layer"])
    by_layer["layer"] = by_layer["layer"].astype(str)
    overall = score_summary(rows, by=keys).assign(layer="all")
    return pd.concat([by_layer, overall], ignore_index=True)[[*keys, "layer", "n", *SCORES, "ps", "ns", "S",
                                                              "steps", "seconds"]]


def score_grid(table: pd.DataFrame, key: str, values: list, heads: list[str]) -> list[str]:
    """Markdown lines of the page's grid: a row per layer (then ``all``), a column per value of ``key``
    (headed ``heads``), each cell the mean rewrite / paraphrase / neighbourhood score."""
    layers = sorted((l for l in table.layer.unique() if l != "all"), key=int) + ["all"]
    out = ["| layer | " + " | ".join(heads) + " |", "|---|" + "---|" * len(values)]
    for layer in layers:
        cells = []
        for v in values:
            r = table[(table[key] == v) & (table.layer == layer)]
            cells.append("" if r.empty else "{:.3f} / {:.3f} / {:.3f}".format(
                *(float(r[c].iloc[0]) for c in ("rewrite_score", "paraphrase_score", "neighborhood_score"))))
        out.append(f"| {layer} | " + " | ".join(cells) + " |")
    return out


def overall_scores(overall: pd.DataFrame, values: list, label: Callable[[object], str]) -> str:
    """"Over all layers: …": per value (``overall`` indexed by it) ES, PS, NS, S and seconds per edit."""
    return "Over all layers: " + "; ".join(
        f"{label(v)}: ES {overall.loc[v, 'es']:.3f}, PS {overall.loc[v, 'ps']:.3f}, "
        f"NS {overall.loc[v, 'ns']:.3f}, S {overall.loc[v, 'S']:.3f}, "
        f"{overall.loc[v, 'seconds']:.1f} s per edit" for v in values)
