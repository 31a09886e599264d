"""docs/editor-settings.md: the editors' default settings and the editing problems' changes to them, written from
the package's constants by ``make paper`` (:data:`experiments.docs_pages.PAGES`), so the docs type none of them.

Sources: :data:`causaleval.editing.ft.FT_PRESETS` and ``HASE_FT_PRESETS`` (FT-1, FT-5),
:func:`causaleval.editing.memit.memit_hparams_for` and ``PUBLISHED_MEMIT`` (MEMIT),
:data:`causaleval.editing.problems.PROBLEM_HPARAMS` and :func:`~causaleval.editing.problems.make_problem`'s
draw counts (editing problems).
"""

from __future__ import annotations

import inspect

FT_SOURCES = {
    "window": "FT-1: one layer; FT-5: five, centred on the edit layer (Hase et al. 2023)",
    "lr": "Hase et al. (2023)'s released code",
    "num_steps": "Hase et al. (2023)'s released code",
    "norm_constraint": "measured on SmolLM2 for each editor ([ft-epsilon.md](ft-epsilon.md))",
    "loss_stop": "the ROME repository's FT code, which Hase et al. build on",
    "weight_decay": "the ROME repository's FT code",
}
MEMIT_SOURCES = {
    "window": "MEMIT's GPT-2 XL file (layers 13–17)",
    "v_lr": "MEMIT's files",
    "v_num_grad_steps": "MEMIT's files (GPT-J's file: its own value)",
    "v_loss_stop": "MEMIT's files",
    "v_weight_decay": "MEMIT's files",
    "kl_factor": "MEMIT's files",
    "clamp_norm_factor": "MEMIT's files (a multiple of ‖h_L‖)",
    "mom2_update_weight": "package: scaled to the MLP width, multiple measured on SmolLM2 "
                          "([memit-lambda.md](memit-lambda.md)); published: MEMIT's GPT-2 XL / GPT-J files",
}
PROBLEM_NAMES = {"fact_forcing": "Fact Forcing", "fact_erasure": "Fact Erasure",
                 "fact_amplification": "Fact Amplification", "flip_forcing": "Flip Forcing"}


def _v(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _ft_table() -> str:
    from causaleval.editing.ft import FT_PRESETS, HASE_FT_PRESETS
    from experiments.docs_pages import md_table

    names = list(FT_PRESETS)
    rows = [[f"`{k}`", *(_v(getattr(FT_PRESETS[n], k)) for n in names),
             *(_v(getattr(HASE_FT_PRESETS[n], k)) for n in names), FT_SOURCES.get(k, "")]
            for k in FT_PRESETS[names[0]].to_dict()]
    return md_table(["setting", *(f"{n.upper().replace('FT', 'FT-')} (package)" for n in names),
                     *(f"{n.upper().replace('FT', 'FT-')} (Hase et al.'s code)" for n in names), "source"],
                    rows, "l" + "r" * (2 * len(names)) + "l")


def _memit_table() -> str:
    from causaleval.editing.memit import (GPTJ_D_FF, MEMIT_LAMBDA_MULTIPLE, PUBLISHED_LAMBDA, PUBLISHED_MEMIT,
                                          memit_hparams_for)
    from experiments.docs_pages import md_table

    package = memit_hparams_for("llama", d_ff=GPTJ_D_FF)
    rows = []
    for k in package.to_dict():
        if k == "mom2_update_weight":
            cell = f"{MEMIT_LAMBDA_MULTIPLE:g} · {PUBLISHED_LAMBDA:g} · d_ff / {GPTJ_D_FF}"
        else:
            cell = _v(getattr(package, k))
        rows.append([f"`{k}`", cell, *(_v(getattr(PUBLISHED_MEMIT[f], k)) for f in PUBLISHED_MEMIT),
                     MEMIT_SOURCES.get(k, "")])
    return md_table(["setting", "package", *(f"published, {f}" for f in PUBLISHED_MEMIT), "source"], rows,
                    "lr" + "r" * len(PUBLISHED_MEMIT) + "l")


def _problem_table() -> str:
    from causaleval.editing.ft import FT_PRESETS
    from causaleval.editing.problems import PROBLEM_HPARAMS
    from experiments.docs_pages import md_table

    from causaleval.editing.rome import RomeHyperParams

    defaults = {**FT_PRESETS, "rome": RomeHyperParams()}
    rows = []
    for (problem, editor), changes in PROBLEM_HPARAMS.items():
        for k, v in changes.items():
            rows.append([PROBLEM_NAMES.get(problem, problem), editor, f"`{k}`", _v(v), _v(getattr(defaults[editor], k))])
    return md_table(["problem", "editor", "setting", "value for the problem", "default"], rows, "lllrr")


def _draws() -> str:
    from causaleval.editing.problems import make_problem

    sig = inspect.signature(make_problem).parameters
    return (f"Fact Forcing's subject noise: each edit is optimised over {sig['edit_draws'].default} noise draws "
            f"(`edit_draws`) and scored on {sig['score_draws'].default} fresh draws (`score_draws`) "
            "([problems.md](problems.md#the-problems)).\n")


def settings_page(src=None) -> str:
    """The page's text (``src``, the committed runs, is not used: every value is a package constant)."""
    return "".join([
        "# Editors' settings\n\n",
        "<!-- Written by `make paper` (experiments/settings_page.py) from the package's constants; do not edit. -->\n\n",
        "The default settings of each editor ([editors.md](editors.md)) and the changes an editing problem "
        "([problems.md](problems.md)) makes to them, read from the code. ROME's settings: "
        "[design.md](design.md#rome).\n\n",
        "## Constrained fine-tuning (FT-1, FT-5)\n\n", _ft_table(),
        "\n## MEMIT\n\n",
        "The package's λ is a multiple of MEMIT's published GPT-J λ scaled to the model's MLP width d_ff "
        "([editors.md](editors.md#λ-on-a-small-model)); `causaleval.editing.memit.PUBLISHED_MEMIT` keeps the "
        "published files' values.\n\n", _memit_table(),
        "\n## Editing problems\n\n",
        "Changes to the settings above for one problem and editor (`PROBLEM_HPARAMS`, after Hase et al. "
        "(2023)'s code), applied on top of the study's settings:\n\n", _problem_table(),
        "\n", _draws()])
