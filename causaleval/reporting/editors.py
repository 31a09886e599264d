"""The editors' comparison table (``tables/editors.tex``) from ``analysis/editors.parquet``
(causaleval.analysis.editors): per edit layer each editor's mean rewrite score, then per editor the
paraphrase and neighbourhood scores averaged over layers and its H1 (flip − noise on the directional
r_w of the rewrite score) with its 95% CI and one-sided p.  Exploratory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from causaleval.reporting.tables import EDITOR_LABELS, booktabs, ci, num, pval
from causaleval.runs.store import atomic_write_text



def editors_table(table: pd.DataFrame) -> str:
    editors = list(dict.fromkeys(table.editor))
    header = ["Layer"] + [EDITOR_LABELS.get(e, e) for e in editors]
    body: list = ["Mean rewrite score"]
    for layer in sorted(table.layer.unique()):
        row = [str(int(layer))]
        for e in editors:
            x = table[(table.editor == e) & (table.layer == layer)]
            row.append(num(x.rewrite_score.iloc[0]) if len(x) else "--")
        body.append(row)
    body.append("Mean over layers")
    for col, label in (("rewrite_score", "Rewrite"), ("paraphrase_score", "Paraphrase"),
                       ("neighborhood_score", "Neighbourhood"), ("es", "ES")):
        body.append([label] + [num(table[table.editor == e][col].mean()) for e in editors])
    body.append(r"H1: flip $-$ noise ($r_w$, rewrite score)")
    first = {e: table[table.editor == e].iloc[0] for e in editors}
    body.append(["Difference"] + [num(first[e].h1_diff) for e in editors])
    body.append([r"95\% CI"] + [ci(first[e].h1_ci_low, first[e].h1_ci_high) or "--" for e in editors])
    body.append([r"$p$ (one-sided)"] + [pval(first[e].h1_p) for e in editors])
    caption = (r"Editors compared on the same facts (exploratory): ROME (Meng et al., 2022), constrained "
               r"fine-tuning of one MLP down-projection (FT-1) or of five centred on the edit layer (FT-5; Zhu "
               r"et al., 2020, as used by Hase et al., 2023) and MEMIT over five layers (Meng et al., 2023). "
               r"Top: mean rewrite score per edit layer; middle: scores averaged over layers; bottom: each "
               r"editor's H1, the difference between flip scrubbing's and noise tracing's directional $r_w$ "
               r"with the rewrite score, with its paired case-bootstrap 95\% CI and one-sided swap-test $p$.")
    return booktabs(header, body, caption, "tab:editors")


def write_editors_report(results_dir: Path, dest_dir: Path) -> list[Path]:
    path = Path(results_dir) / "analysis" / "editors.parquet"
    if not path.is_file():
        return []
    out = Path(dest_dir) / "tables" / "editors.tex"
    atomic_write_text(out, editors_table(pd.read_parquet(path)))
    return [out]
