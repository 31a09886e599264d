"""TraceResult.plot (the one-fact trace heatmap of Meng et al. 2022's notebooks) and edit_sweep (one fact's
ROME edit at each layer) with its plot."""

from __future__ import annotations

import copy

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import causaleval  # noqa: E402
from causaleval.api import ArgumentError  # noqa: E402
from causaleval.editing.rome.hparams import hparams_for  # noqa: E402
from causaleval.errors import SiteError  # noqa: E402
from causaleval.model.testing import tiny_model  # noqa: E402

PARTNERS = [("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Chile", "Santiago"), ("Peru", "Lima")]
REQUEST = {"prompt": "The capital of France", "subject": "France", "target_true": "Paris", "target_new": "Africa",
           "paraphrase_prompts": ["The capital city of France"], "neighborhood_prompts": ["The capital of Germany"]}
TINY_HP = hparams_for("gpt2", stat_tokens=400, stat_seq_len=20, stat_batch=32, context_lengths=((4, 2),),
                      v_weight_decay=0.0, clamp_norm_factor=1000.0)


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("CAUSALEVAL_CACHE", str(tmp_path_factory.getbasetemp() / "rome-cache"))
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def tiny():
    b = tiny_model("gpt2")
    return b.model, b.tokenizer


@pytest.fixture(scope="module")
def flip(tiny):
    return causaleval.trace(*tiny, "The capital of France is", "France", "Paris", partners=PARTNERS)


@pytest.mark.parametrize("metric, direction", [("ld", "denoise"), ("p", "noise")])
def test_heatmap_shows_the_array_with_subject_tokens_marked(flip, metric, direction):
    ax = flip.plot(metric=metric, direction=direction)
    image = ax.get_images()[0]
    np.testing.assert_array_equal(np.asarray(image.get_array()), flip.array(metric, direction).T)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == len(flip.tokens)
    for label, token, role in zip(labels, flip.tokens, flip.roles):
        assert label == token + ("*" if role.startswith("subject") else "")
    assert sum(label.endswith("*") for label in labels) == sum(r.startswith("subject") for r in flip.roles) > 0
    title = ax.get_title()
    assert "flip scrubbing" in title and "MLP" in title
    assert ("logit difference" if metric == "ld" else "p(o)") in title
    assert f"TE = {flip.te(metric, direction):.3g}" in title
    norm = image.norm
    assert norm.vcenter == 0 and norm.vmin == -norm.vmax
    assert norm.vmax == pytest.approx(np.nanmax(np.abs(flip.array(metric, direction))))


def test_heatmap_draws_on_a_given_axes_and_names_the_window(tiny):
    noise = causaleval.trace(*tiny, "The capital of France is", "France", "Paris", estimator="noise",
                             component="residual", n_draws=2)
    fig, (left, right) = plt.subplots(1, 2)
    assert noise.plot(ax=right) is right and not left.get_images()
    assert "noise tracing" in right.get_title() and right.get_xlabel() == "layer"
    assert right.get_images()[0].get_array().shape == (len(noise.tokens), len(noise.layers))
    with pytest.raises(ArgumentError, match="metric='ld'"):
        noise.plot(metric="ld")


def test_edit_sweep_scores_each_layer_as_edit_does_and_leaves_the_model(tiny):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    sweep = causaleval.edit_sweep(model, tok, REQUEST, layers=[0, 2, 3], hparams=TINY_HP)
    assert sweep.layers == [0, 2, 3] and list(sweep.frame.layer) == [0, 2, 3]
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    single = causaleval.edit(model, tok, REQUEST, layer=2, hparams=TINY_HP).to_dict()
    row = sweep.frame.set_index("layer").loc[2]
    for key in ("rewrite_score", "paraphrase_score", "neighborhood_score", "p_after_new", "es"):
        assert row[key] == pytest.approx(single[key], rel=1e-4, abs=1e-7), key
    assert sweep.best_layer() == int(sweep.frame.layer[sweep.frame.rewrite_score.idxmax()])
    ax = sweep.plot()
    lines = ax.get_lines()[:3]
    assert [ln.get_label() for ln in lines] == ["rewrite score", "paraphrase score", "neighbourhood score"]
    for line, col in zip(lines, ("rewrite_score", "paraphrase_score", "neighborhood_score")):
        np.testing.assert_array_equal(line.get_ydata(), sweep.frame[col].to_numpy())
        np.testing.assert_array_equal(line.get_xdata(), [0, 2, 3])


def test_edit_sweep_bad_input_is_a_clear_error(tiny):
    with pytest.raises(SiteError, match="layer 9"):
        causaleval.edit_sweep(*tiny, REQUEST, layers=[1, 9], hparams=TINY_HP)
    with pytest.raises(ArgumentError, match="layers=\\[\\] is empty"):
        causaleval.edit_sweep(*tiny, REQUEST, layers=[], hparams=TINY_HP)
