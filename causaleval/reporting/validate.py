"""The validate stage's table, figure and macros: do the localisers find a ROME-planted fact at its layer?

From a ``validate/`` folder (``accuracy.parquet``, ``paired.parquet``, ``argmax.parquet``,
``summary.json``; docs/outputs.md#validate): ``tables/validate.tex`` (hit@1, hit@3, |argmax − l| with
bootstrap CIs over facts, mass at l and the IE the edit added at l, per estimator × MLP window × planted
layer), ``tables/validate_numbers.tex`` (macros the paper's prose quotes; paper/fallbacks.tex has their fall-backs) and
``figures/validate.{pdf,png}`` (hit@1 per planted layer; where the argmax lands).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from causaleval.analysis import ESTIMATORS  # noqa: E402
from causaleval.groundtruth import planted as validation  # noqa: E402
from causaleval.reporting.figures import COLORS, MARKERS, STYLE, WIDTH, save  # noqa: E402
from causaleval.reporting.figures import LABELS as FIG_LABELS
from causaleval.reporting.tables import EDITOR_LABELS, LABELS, booktabs, ci, est_ci, mnum, num, pexpr  # noqa: E402
from causaleval.runs.store import atomic_write_text  # noqa: E402

WORDS = {1: "One", 2: "Two", 3: "Three", 4: "Four", 5: "Five", 6: "Six", 7: "Seven", 8: "Eight", 9: "Nine",
         10: "Ten"}
ALL = -1     # planted_layer of the rows pooled over planted layers


def load(folder: Path) -> dict:
    """The validate outputs of ``folder`` (a ``validate/`` folder)."""
    folder = Path(folder)
    out = {n: pd.read_parquet(folder / f"{n}.parquet") for n in ("accuracy", "paired", "argmax")}
    out["summary"] = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    out["without_layer0"] = None
    if (folder / "profiles.parquet").is_file() and (folder / "localisation.parquet").is_file():
        rows = validation.rows_without_layers(pd.read_parquet(folder / "profiles.parquet"),
                                              pd.read_parquet(folder / "localisation.parquet"), exclude=(0,))
        if len(rows):
            n_boot = int(out["summary"].get("n_bootstrap", 1000))
            acc = validation.accuracy_table(rows, n_resamples=n_boot)
            paired = validation.paired_tests(rows, n_perm=int(out["summary"].get("n_permutations", 9999)),
                                             n_resamples=n_boot)
            out["without_layer0"] = (acc, paired, int(rows.n_layers.max()))
    return out


def _windows(acc: pd.DataFrame) -> list:
    """The traced windows of an accuracy table; none when no planted edit succeeded (an empty table)."""
    return sorted(acc.window.unique()) if not acc.empty and "window" in acc else []


def _ests(frame: pd.DataFrame) -> list[str]:
    return [e for e in ESTIMATORS if e in set(frame.estimator)]


def validate_table(acc: pd.DataFrame, summary: dict, editor: str | None = None, label: str = "tab:validate") -> str:
    """Accuracy per estimator × window × planted layer (and over all planted layers); ``editor`` the planting
    editor (default: the summary's, ROME in runs from before planting editors existed)."""
    editor = editor or summary.get("plant_editor", "rome")
    who = EDITOR_LABELS.get(editor, editor)
    header = ["Estimator", r"$l$", r"hit@1", r"hit@3", r"$|\hat l - l|$", r"mass at $l$", r"IE added at $l$"]
    body: list = []
    if not _windows(acc):
        body.append(f"No planted edit succeeded ({summary.get('n_success', 0)} of {summary.get('n_edits', 'n/a')}), "
                    "so localisation accuracy cannot be reported")
    for window in _windows(acc):
        body.append(f"MLP window {int(window)}")
        for est in _ests(acc):
            g = acc[(acc.estimator == est) & (acc.window == window)].sort_values("planted_layer")
            g = pd.concat([g[g.planted_layer != ALL], g[g.planted_layer == ALL]])
            for k, r in enumerate(g.itertuples()):
                body.append([LABELS[est] if k == 0 else "", "all" if r.planted_layer == ALL else str(r.planted_layer),
                             est_ci(r.hit1, r.hit1_low, r.hit1_high, 2), est_ci(r.hit3, r.hit3_low, r.hit3_high, 2),
                             est_ci(r.distance, r.distance_low, r.distance_high, 1), num(r.mass, 2),
                             est_ci(r.added, r.added_low, r.added_high, 3)])
    n_layers = summary.get("n_layers", "n/a")
    caption = (f"Do the localisers find a fact where {who} planted it? {summary.get('n_success', 'n/a')} successful "
               f"edits of {summary.get('n_facts_success', 'n/a')} facts at planted layers "
               f"{', '.join(map(str, summary.get('planted_layers', [])))} of {n_layers}; the planted fact's "
               r"effect profile (denoising, $p(o_\text{new})$, last subject token, MLP window $w$ centred at each "
               r"layer) on the edited model. hit@$k$: the planted layer is among the $k$ largest (ties split); "
               r"$|\hat l - l|$: distance of the argmax; mass: share of the profile's positive part at $l$; "
               r"IE added: IE at $l$ minus the unedited model's (same answer, draws and partners). Means over "
               f"facts with 95\\% bootstrap CIs ({summary.get('n_bootstrap', 'n/a')} resamples); chance hit@1 "
               f"$= 1/{n_layers}$.")
    tex = booktabs(header, body, caption, label, align="llrrrrr")
    return tex.replace(r"\begin{tabular}", r"\resizebox{\linewidth}{!}{\begin{tabular}").replace(
        r"\end{tabular}", r"\end{tabular}}")


def _macro(name: str, value: str) -> str:
    return rf"\newcommand{{\{name}}}{{{value}}}"


def without_layer0_numbers(without) -> dict[str, str]:
    """Macros of the secondary accuracy with the layer-0 MLP left out of every window-1 profile
    (:func:`causaleval.groundtruth.planted.rows_without_layers`): hit@1 per estimator and the paired differences."""
    m = {}
    acc, paired, n_layers = without if without is not None else (None, None, None)
    m["ValExclChance"] = mnum(1 / n_layers, 3) if n_layers else r"\text{n/a}"
    for est in ESTIMATORS:
        cap = est.capitalize()
        r = acc[(acc.estimator == est) & (acc.planted_layer == ALL)] if acc is not None else ()
        if len(r):
            r = r.iloc[0]
            m[f"ValExclHitOne{cap}"], m[f"ValExclHitOne{cap}CI"] = mnum(r.hit1, 2), ci(r.hit1_low, r.hit1_high, 2)
        else:
            m[f"ValExclHitOne{cap}"], m[f"ValExclHitOne{cap}CI"] = r"\text{n/a}", "n/a"
    for a in ("flip", "resample"):
        tag = f"ValExcl{a.capitalize()}Noise"
        p = paired[(paired.a == a) & (paired.b == "noise") & (paired.metric == "hit1")] if paired is not None else ()
        if len(p):
            p = p.iloc[0]
            m[tag], m[f"{tag}CI"], m[f"{tag}P"] = mnum(p["diff"], 2), ci(p.ci_low, p.ci_high, 2) or "n/a", pexpr(p.p)
        else:
            m[tag], m[f"{tag}CI"], m[f"{tag}P"] = r"\text{n/a}", "n/a", r"$p$ n/a"
    return m


def validate_numbers(acc: pd.DataFrame, paired: pd.DataFrame, hist: pd.DataFrame, summary: dict,
                     without_layer0=None) -> str:
    """Macros: design and counts, pooled accuracy per estimator and window, paired tests, top miss layer,
    and the accuracy with the layer-0 MLP left out (:func:`without_layer0_numbers`)."""
    rates = summary.get("success_rate", {})
    m = {"ValNFacts": str(summary.get("n_facts", "n/a")), "ValNEdits": str(summary.get("n_edits", "n/a")),
         "ValNSuccess": str(summary.get("n_success", "n/a")),
         "ValNFactsSuccess": str(summary.get("n_facts_success", "n/a")),
         "ValLayers": ", ".join(map(str, summary.get("planted_layers", []))) or "n/a",
         "ValSuccessMin": mnum(min(rates.values()) if rates else None, 2),
         "ValSuccessMax": mnum(max(rates.values()) if rates else None, 2),
         "ValChance": mnum(summary.get("chance_hit1"), 3), "ValNPerm": str(summary.get("n_permutations", "n/a")),
         "ValMinutes": mnum((summary.get("seconds") or float("nan")) / 60, 0)}
    for window in _windows(acc):
        word = WORDS.get(int(window))
        if word is None:
            continue
        for est in _ests(acc):
            r = acc[(acc.estimator == est) & (acc.window == window) & (acc.planted_layer == ALL)]
            if not len(r):
                continue
            r = r.iloc[0]
            cap = est.capitalize()
            for metric, tag, digits in (("hit1", "HitOne", 2), ("hit3", "HitThree", 2), ("distance", "Dist", 1),
                                        ("added", "Added", 3), ("mass", "Mass", 2)):
                m[f"Val{tag}{cap}{word}"] = mnum(r[metric], digits)
                m[f"Val{tag}{cap}{word}CI"] = ci(r[f"{metric}_low"], r[f"{metric}_high"], digits) or "n/a"
            miss = hist[(hist.estimator == est) & (hist.window == window) & hist.miss.astype(bool)]
            if len(miss):
                top = miss.groupby("argmax_layer").edits.sum()
                total = hist[(hist.estimator == est) & (hist.window == window)].edits.sum()
                m[f"ValMissLayer{cap}{word}"] = str(int(top.idxmax()))
                m[f"ValMissShare{cap}{word}"] = mnum(top.max() / total, 2)
            else:
                m[f"ValMissLayer{cap}{word}"], m[f"ValMissShare{cap}{word}"] = "n/a", r"\text{n/a}"
        for a in ("flip", "resample"):
            p = paired[(paired.a == a) & (paired.b == "noise") & (paired.window == window) & (paired.metric == "hit1")]
            tag = f"Val{a.capitalize()}Noise{word}"
            if len(p):
                p = p.iloc[0]
                m[tag], m[f"{tag}CI"], m[f"{tag}P"] = mnum(p["diff"], 2), ci(p.ci_low, p.ci_high, 2) or "n/a", pexpr(p.p)
            else:
                m[tag], m[f"{tag}CI"], m[f"{tag}P"] = r"\text{n/a}", "n/a", r"$p$ n/a"
    m.update(without_layer0_numbers(without_layer0))
    lines = ["% Generated by causaleval.reporting.validate from the validate stage's outputs",
             *(_macro(k, v) for k, v in m.items())]
    return "\n".join(lines) + "\n"


def validate_figure(acc: pd.DataFrame, hist: pd.DataFrame, summary: dict):
    """Top: hit@1 per planted layer per estimator (CIs; dotted: chance 1/L); bottom: the share of edits
    whose argmax lands at each layer, pooled over planted layers (dotted: the planted layers)."""
    windows = _windows(acc)
    planted = summary.get("planted_layers", [])
    n_layers = int(summary.get("n_layers", 1))
    step = float(np.min(np.diff(planted))) if len(planted) > 1 else 1.0
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(2, len(windows), figsize=(WIDTH, 4.2), squeeze=False, sharey="row")
        for c, window in enumerate(windows):
            top, bottom = axes[0, c], axes[1, c]
            for k, est in enumerate(_ests(acc)):
                g = acc[(acc.estimator == est) & (acc.window == window) & (acc.planted_layer != ALL)]
                g = g.sort_values("planted_layer")
                x = g.planted_layer.to_numpy(float) + (k - 1) * 0.08 * step     # dodged
                err = np.vstack([g.hit1 - g.hit1_low, g.hit1_high - g.hit1]).clip(0)
                top.errorbar(x, g.hit1, yerr=np.nan_to_num(err), color=COLORS[est], marker=MARKERS[est],
                             label=FIG_LABELS[est], linestyle="-")
                h = hist[(hist.estimator == est) & (hist.window == window)]
                share = h.groupby("argmax_layer").edits.sum() / max(h.edits.sum(), 1e-12)
                share = share.reindex(range(n_layers), fill_value=0.0)
                bottom.step(share.index, share.to_numpy(), where="mid", color=COLORS[est], label=FIG_LABELS[est])
            top.axhline(1.0 / n_layers, color="k", linestyle=":", linewidth=0.8)
            top.set_title(f"MLP window {int(window)}")
            top.set_xlabel("planted layer $l$")
            top.set_xticks(planted)
            top.set_ylim(-0.03, 1.03)
            for layer in planted:
                bottom.axvline(layer, color="k", linestyle=":", linewidth=0.6)
            bottom.set_xlabel(r"argmax layer $\hat l$")
        axes[0, 0].set_ylabel("hit@1")
        axes[1, 0].set_ylabel("share of edits")
        axes[0, 0].legend(frameon=False, fontsize="small")
        fig.tight_layout()
    return fig


def write_validate_report(folder: Path, dest_dir: Path) -> list[Path]:
    """Table, macros and figure of a ``validate/`` folder into ``dest_dir/tables`` and ``dest_dir/figures``."""
    v = load(folder)
    dest_dir = Path(dest_dir)
    paths = []
    for name, text in (("validate.tex", validate_table(v["accuracy"], v["summary"])),
                       ("validate_numbers.tex", validate_numbers(v["accuracy"], v["paired"], v["argmax"],
                                                                 v["summary"], v["without_layer0"]))):
        atomic_write_text(dest_dir / "tables" / name, text)
        paths.append(dest_dir / "tables" / name)
    if len(v["accuracy"]):
        paths += save(validate_figure(v["accuracy"], v["argmax"], v["summary"]), dest_dir / "figures", "validate")
    from causaleval.reporting.planting import write_planting_report

    return paths + write_planting_report(Path(folder), dest_dir)
