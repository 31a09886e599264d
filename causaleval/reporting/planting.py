"""The validate stage's tables per planting editor (docs/groundtruth.md#planting, #onset).

From a ``validate/`` folder: ``tables/validate_<editor>.tex`` (the accuracy table of each planting editor
other than the first, whose table is ``tables/validate.tex``), ``tables/validate_plant_success.tex`` (per
planting editor and planted layer: edits tried, taken, p(o_new) after planting) and
``tables/validate_onset.tex`` (the onset layer of last-token residual restoration per planting editor and
estimator, with chance and the most-common-onset rule), the last two when their tables exist.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from causaleval.analysis import ESTIMATORS
from causaleval.reporting.tables import EDITOR_LABELS, LABELS, booktabs, est_ci, num
from causaleval.runs.store import atomic_write_text

ONSET_LABELS = {"onset_error": r"$|\text{onset} - l|$", "onset_after": r"onset $> l$", "onset_lag": r"onset $- l$"}


def editor_folders(folder: Path) -> list[tuple[str, Path]]:
    """(planting editor, its folder) of a ``validate/`` folder, the first planting editor's first."""
    folder = Path(folder)
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    first = summary.get("plant_editor", "rome")
    dirs = summary.get("plant_editor_dirs", {first: "."})
    return [(first, folder)] + [(e, folder / d) for e, d in dirs.items() if e != first]


def plant_success_table(success: pd.DataFrame) -> str:
    header = ["Planting editor", r"planted $l$", "edits", "took", "share", r"$p(o_\text{new})$ after"]
    body = [[EDITOR_LABELS.get(r.plant_editor, r.plant_editor), str(r.planted_layer), str(int(r.n_edits)),
             str(int(r.n_took)), num(r.took, 2), num(r.p_new_after, 3)] for r in success.itertuples()]
    caption = ("Planting o$_\\text{new}$ per editor: edits tried (o$_\\text{new}$'s first token distinct from "
               "o's), edits that took (the planted model's top-1 next token is o$_\\text{new}$'s first token), "
               "their share and the mean $p(o_\\text{new})$ after planting. Only edits that took are traced.")
    return booktabs(header, body, caption, "tab:validate-plant-success")


def onset_table(onset: pd.DataFrame, label: str = "tab:validate-onset") -> str:
    """``onset``: the onset_accuracy tables of every planting editor (column ``plant_editor``)."""
    header = ["Planting editor", "Estimator", "metric", "mean [95\\% CI]", "chance", "rule", "est. $-$ rule", "$p$"]
    body: list = []
    for editor, g in onset.groupby("plant_editor", sort=False):
        for est in [e for e in ESTIMATORS if e in set(g.estimator)]:
            for k, r in enumerate(g[g.estimator == est].itertuples()):
                body.append([EDITOR_LABELS.get(editor, editor) if k == 0 else "", LABELS[est] if k == 0 else "",
                             ONSET_LABELS.get(r.metric, r.metric), est_ci(r.mean, r.ci_low, r.ci_high, 2),
                             num(r.chance, 2), num(r.rule, 2), est_ci(r.minus_rule, r.minus_rule_low,
                                                                        r.minus_rule_high, 2), num(r.p_rule, 3)])
    caption = (r"Onset layer of last-token residual restoration on planted facts: the first layer whose "
               r"restored residual stream at the last token recovers half of the profile's maximum "
               r"(denoising, $p(o_\text{new})$). $|\text{onset} - l|$ (primary; smaller is better), the share "
               r"with onset $> l$, and the signed lag; means over facts with 95\% bootstrap CIs, uniform chance, "
               r"the most-common-onset rule (other facts) and estimator $-$ rule with its sign-flip $p$.")
    return booktabs(header, body, caption, label, fit=True)


def write_planting_report(folder: Path, dest_dir: Path) -> list[Path]:
    """The per-editor tables of a ``validate/`` folder into ``dest_dir/tables``; [] when there is nothing
    beyond the first planting editor's tables."""
    from causaleval.reporting.validate import validate_table

    folder, dest_dir = Path(folder), Path(dest_dir)
    out: dict[str, str] = {}
    onsets = []
    for k, (editor, where) in enumerate(editor_folders(folder)):
        summary = json.loads((where / "summary.json").read_text(encoding="utf-8")) if k else \
            json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        if k:
            acc = pd.read_parquet(where / "accuracy.parquet")
            out[f"validate_{editor}.tex"] = validate_table(acc, summary, editor, f"tab:validate-{editor}")
        if (where / "onset_accuracy.parquet").is_file():
            onsets.append(pd.read_parquet(where / "onset_accuracy.parquet").assign(plant_editor=editor))
    if (folder / "plant_success.parquet").is_file():
        out["validate_plant_success.tex"] = plant_success_table(pd.read_parquet(folder / "plant_success.parquet"))
    if onsets and any(len(o) for o in onsets):
        out["validate_onset.tex"] = onset_table(pd.concat([o for o in onsets if len(o)], ignore_index=True))
    paths = []
    for name, text in out.items():
        atomic_write_text(dest_dir / "tables" / name, text)
        paths.append(dest_dir / "tables" / name)
    return paths
