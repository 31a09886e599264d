"""The hypothesis tests per editor (ROME, FT-1, FT-5, MEMIT) and one table comparing the editors.

``edits.parquet`` holds an ``editor`` column when the edit stage ran more than ROME (a table without it
is all ROME).  The study's analysis (``analysis/``) is that of the primary editor (ROME when present),
unchanged; each other editor's rows get the default analysis in ``editors/<editor>/analysis/`` and
``analysis/editors.parquet`` compares them: per editor and layer the mean rewrite / paraphrase /
neighbourhood score and ES, with the editor's H1 (flip − noise on the directional r_w of the rewrite
score, Hase et al. 2023's design) and its interval and one-sided p repeated on each row.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from causaleval.analysis.spec import AnalysisSpec
from causaleval.analysis.study import analyze, write_results

SCORES = ("rewrite_score", "paraphrase_score", "neighborhood_score", "es")
ORDER = ("rome", "ft1", "ft5", "memit")


def with_editor(edits: pd.DataFrame) -> pd.DataFrame:
    """``edits`` with an ``editor`` column (a table from before editors existed is all ROME)."""
    return edits if "editor" in edits else edits.assign(editor="rome")


def editor_names(edits: pd.DataFrame) -> list[str]:
    """The editors of ``edits``, ROME first, then the known order, then any other."""
    found = list(dict.fromkeys(with_editor(edits).editor.astype(str)))
    return sorted(found, key=lambda e: (ORDER.index(e) if e in ORDER else len(ORDER), e))


def primary_edits(edits: pd.DataFrame) -> pd.DataFrame:
    """The rows of the primary editor (ROME when present), without the ``editor`` column: what the
    study's analysis and the support stage read (error injection only, when the table holds problems)."""
    if "problem" in edits:
        from causaleval.analysis.problems import error_injection_rows

        edits = error_injection_rows(edits)
    if "editor" not in edits:
        return edits
    first = editor_names(edits)[0]
    return edits[edits.editor == first].drop(columns="editor").reset_index(drop=True)


def h1_row(summary: dict, score: str = "rewrite_score", pair: str = "flip-noise") -> dict:
    """H1 of a summary's default analysis: the difference, its CI, one-sided p and n (NaN when absent)."""
    h = summary.get("variants", {}).get("default", {}).get("h1", {}).get(score, {}).get(pair, {})
    get = lambda k: float("nan") if h.get(k) is None else h[k]  # noqa: E731
    return {"h1_diff": get("diff"), "h1_ci_low": get("ci_low"), "h1_ci_high": get("ci_high"),
            "h1_p": get("p_one_sided"), "h1_n": get("n_cases")}


def comparison(edits: pd.DataFrame, summaries: dict[str, dict]) -> pd.DataFrame:
    """Per editor and layer: n cases and mean scores; the editor's H1 on every row (see module docstring)."""
    e = with_editor(edits)
    cols = [c for c in SCORES if c in e]
    g = e.groupby(["editor", "layer"])[cols].mean()
    g.insert(0, "n", e.groupby(["editor", "layer"]).size())
    g = g.reset_index()
    h1 = pd.DataFrame([{"editor": name, **h1_row(s)} for name, s in summaries.items()])
    out = g.merge(h1, on="editor", how="left") if not h1.empty else g
    rank = {name: i for i, name in enumerate(editor_names(e))}
    return out.sort_values(["editor", "layer"], key=lambda s: s.map(rank) if s.name == "editor" else s,
                           ignore_index=True)


def analyze_editors(trace: pd.DataFrame, edits: pd.DataFrame, spec: AnalysisSpec, out_dir: Path,
                    primary_summary: dict, draws: pd.DataFrame | None = None,
                    run_info: dict | None = None) -> pd.DataFrame:
    """The default analysis of each non-primary editor into ``<out>/editors/<editor>/analysis``; returns
    :func:`comparison` (the primary editor's H1 from ``primary_summary``)."""
    import json

    names = editor_names(edits)
    summaries = {names[0]: primary_summary}
    e = with_editor(edits)
    for name in names[1:]:
        rows = e[e.editor == name].drop(columns="editor").reset_index(drop=True)
        path = write_results([analyze(trace, rows, spec, draws)], Path(out_dir) / "editors" / name, run_info)
        summaries[name] = json.loads(path.read_text())
    return comparison(edits, summaries)
