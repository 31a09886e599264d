"""FT-1's or FT-5's clamp ε on the committed study's facts: rewrite / paraphrase / neighbourhood scores per ε
and layer.

``python -m experiments.ft_epsilon [--editor ft1|ft5] [--facts 8] [--eps 1e-4,5e-4,1e-3] [--out paper/editors]``
edits a seeded, relation-stratified subset of ``paper/study``'s facts with the editor (Zhu et al. 2020 as used
by Hase et al. 2023; docs/editors.md) at the study's edit layers, once per ε, and writes

- ``<out>/<editor>_epsilon_rows.parquet``: one row per (ε, case, layer) with the edit scores;
- ``<out>/<editor>_epsilon.csv``: per ε and layer, n and the mean rewrite / paraphrase / neighbourhood score
  and ES (and a row per ε with layer ``all``), from which ``docs/ft-epsilon.md`` is generated (one section
  per editor with a table; ``python -m experiments.ft_epsilon --page``).

Each ε's rows are kept in ``<out>/<editor>_epsilon_parts/`` as soon as they are finished, so a rerun computes
only the missing ε values.  Study settings: SmolLM2, ROME's scoring (10 neighbours, seed 0).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from causaleval.editing.ft import FT_PRESETS, HASE_FT_PRESETS
from causaleval.reporting.tables import EDITOR_LABELS
from experiments.editor_grid import overall_scores, score_grid, summarise_by
from experiments.editors_study import study_layers, study_subset

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "paper" / "study"


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per ε and layer (and per ε over all layers, ``layer = all``): :func:`experiments.editor_grid.summarise_by`."""
    return summarise_by(rows, ["epsilon"])


def chosen_epsilon(table: pd.DataFrame) -> float:
    """The package's ε of an FT editor: of the measured values, the one with the largest S over all layers
    (efficacy, generalisation and specificity balanced, as Meng et al. 2022 score editors); ties → the smaller ε."""
    overall = table[table.layer == "all"].sort_values("epsilon")
    return float(overall.loc[overall.S.idxmax(), "epsilon"])


def section(editor: str, table: pd.DataFrame, source: str) -> list[str]:
    """One editor's part of docs/ft-epsilon.md from its summary table (no number typed by hand)."""
    eps = sorted(table.epsilon.unique())
    overall = table[table.layer == "all"].set_index("epsilon")
    best, name = chosen_epsilon(table), EDITOR_LABELS[editor]
    hase = f"ε = {HASE_FT_PRESETS[editor].norm_constraint:g} (their code, for GPT-J)"
    return [f"## {name}",
            "",
            f"<!-- from {source} -->",
            "",
            f"{name} ([editors.md](editors.md#constrained-fine-tuning-ft1-ft5)) at each study edit layer on a "
            "seeded, relation-stratified subset of the committed study's facts (exploratory), once per clamp ε; every "
            "other setting is Hase et al. (2023)'s. Cells: mean rewrite score / paraphrase score / neighbourhood "
            "score; n = " + ", ".join(f"{int(overall.loc[e, 'n'])} edits at ε = {e:g}" for e in eps) + ".",
            "",
            *score_grid(table, "epsilon", eps, [f"ε = {e:g}" for e in eps]),
            "",
            overall_scores(overall, eps, lambda e: f"ε = {e:g}") + " (wall seconds on a shared "
            "two-core machine with other jobs running: not comparable across ε).",
            "",
            f"**Package default: ε = {best:g}**, the measured value with the largest S (the harmonic mean of "
            "ES, PS and NS, Meng et al. 2022's score of an editor), so that "
            f"{name} edits SmolLM2 while the cost to its neighbours is counted. Hase et al.'s {hase} stays "
            "available as `causaleval.editing.ft.HASE_FT_PRESETS` and with "
            f"`--set editor_hparams.{editor}.norm_constraint=…`."]


def page(tables: dict[str, pd.DataFrame], sources: dict[str, str]) -> str:
    """docs/ft-epsilon.md: a section per measured editor (FT-1 first)."""
    out = ["# The FT editors' clamp ε on SmolLM2",
           "",
           "<!-- written by `python -m experiments.ft_epsilon --page`; do not edit -->"]
    for editor in sorted(tables):
        out += ["", *section(editor, tables[editor], sources[editor])]
    return "\n".join(out) + "\n"


def committed_tables(out: Path) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """Every ``<editor>_epsilon.csv`` in ``out`` and its path as the page names it."""
    tables, sources = {}, {}
    for editor in FT_PRESETS:
        path = out / f"{editor}_epsilon.csv"
        if path.is_file():
            tables[editor] = pd.read_csv(path, dtype={"layer": str})
            sources[editor] = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    return tables, sources


def run(out: Path, n_facts: int, eps: list[float], seed: int, threads: int | None,
        editor: str = "ft1") -> pd.DataFrame:
    import torch

    from causaleval.editing.editor import sweep
    from causaleval.editing.ft import FTEditor
    from causaleval.model.loading import load_model
    from causaleval.runs.store import atomic_write_parquet

    if threads:
        torch.set_num_threads(threads)
    facts = study_subset(STUDY, n_facts, seed)
    layers = study_layers(STUDY)
    run_cfg = json.loads((STUDY / "run.json").read_text())["config"]
    parts = out / f"{editor}_epsilon_parts"
    parts.mkdir(parents=True, exist_ok=True)
    bundle = None
    frames = []
    for e in eps:
        part = parts / f"eps{e:g}.parquet"
        if not part.is_file():
            bundle = bundle or load_model(run_cfg["model"])
            t0 = time.perf_counter()
            ft = FTEditor(editor, FT_PRESETS[editor].updated(norm_constraint=e))
            rows = sweep(bundle, ft, facts, layers, max_neighbours=run_cfg["rome_max_neighbours"], seed=seed)
            frame = pd.DataFrame([r for case in rows for r in case]).assign(epsilon=e)
            atomic_write_parquet(part, frame)
            print(f"ε = {e:g}: {len(frame)} edits in {time.perf_counter() - t0:.0f} s; mean rewrite "
                  f"{frame.rewrite_score.mean():.3f}", flush=True)
        frames.append(pd.read_parquet(part))
    rows = pd.concat(frames, ignore_index=True)
    atomic_write_parquet(out / f"{editor}_epsilon_rows.parquet", rows)
    table = summarise(rows)
    table.to_csv(out / f"{editor}_epsilon.csv", index=False, float_format="%.6g")
    return table


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments.ft_epsilon", description=__doc__.split("\n\n")[0])
    ap.add_argument("--editor", choices=sorted(FT_PRESETS), default="ft1", help="the FT editor (default ft1)")
    ap.add_argument("--facts", type=int, default=8, help="study facts (seeded, stratified over relations)")
    ap.add_argument("--eps", default="1e-4,5e-4,1e-3", help="clamp values ε, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "paper" / "editors"))
    ap.add_argument("--page", action="store_true",
                    help="only write docs/ft-epsilon.md from <out>/<editor>_epsilon.csv")
    a = ap.parse_args(argv)
    out = Path(a.out)
    if not a.page:
        try:
            eps = [float(x) for x in a.eps.split(",") if x.strip()]
        except ValueError:
            raise SystemExit(f"--eps {a.eps!r}: give numbers separated by commas, e.g. 1e-4,5e-4") from None
        if not eps or any(e <= 0 for e in eps):
            raise SystemExit(f"--eps {a.eps!r}: every ε must be > 0")
        run(out, a.facts, eps, a.seed, a.threads, a.editor)
    (ROOT / "docs" / "ft-epsilon.md").write_text(page(*committed_tables(out)), encoding="utf-8")


if __name__ == "__main__":
    main()
