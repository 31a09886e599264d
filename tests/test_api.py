"""The public API (causaleval.trace / edit / run_study) and the promise that the caller's model and
tokenizer are left exactly as they were."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import causaleval
from causaleval.api import ArgumentError, study_argv
from causaleval.data.counterfact import Fact
from causaleval.editing.rome.hparams import hparams_for
from causaleval.errors import CausalEvalError, DataError, SiteError
from causaleval.estimators import ESTIMATORS, flip_scrubbing, resample_scrubbing
from causaleval.model.testing import tiny_model

PROMPT, SUBJECT, ANSWER = "The capital of France is", "France", "Paris"
PARTNERS = [("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Chile", "Santiago"), ("Peru", "Lima")]
REQUEST = {"prompt": "The capital of France", "subject": "France", "target_true": "Paris", "target_new": "Africa",
           "paraphrase_prompts": ["The capital city of France"], "neighborhood_prompts": ["The capital of Germany"]}
# a tiny random model barely moves under the published weight decay and clamp (see tests/test_rome.py)
TINY_HP = hparams_for("gpt2", stat_tokens=400, stat_seq_len=20, stat_batch=32, context_lengths=((4, 2),),
                      v_weight_decay=0.0, clamp_norm_factor=1000.0)


@pytest.fixture(scope="module")
def _tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _cache(request, monkeypatch, _tiny_cache):
    """Tiny-model tests share one ROME statistics cache outside ~/.cache; the SmolLM2 tests (slow) use
    the usual cache, where the dequantised model already is."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("CAUSALEVAL_CACHE", str(_tiny_cache))


@pytest.fixture(scope="module")
def tiny():
    b = tiny_model("gpt2")
    return b.model, b.tokenizer


def _user_state(model, tokenizer) -> dict:
    return {"training": [m.training for m in model.modules()],
            "requires_grad": [p.requires_grad for p in model.parameters()],
            "grad": [p.grad is None for p in model.parameters()],
            "device": [p.device for p in model.parameters()],
            "dtype": [p.dtype for p in model.parameters()],
            "weights": {k: v.clone() for k, v in model.state_dict().items()},
            "padding_side": tokenizer.padding_side, "pad_token": tokenizer.pad_token,
            "special": dict(tokenizer.special_tokens_map)}


def _assert_same(before: dict, after: dict) -> None:
    for key in ("training", "requires_grad", "grad", "device", "dtype", "padding_side", "pad_token", "special"):
        assert before[key] == after[key], f"{key} changed"
    for k, v in before["weights"].items():
        assert torch.equal(v, after["weights"][k]), f"weight {k} changed"


def _user_copy(tiny):
    """A model in a state the package would have changed before: training mode on most modules but one
    submodule in eval mode, mixed requires_grad, a tokenizer padding on the left without a pad token."""
    model, tok = copy.deepcopy(tiny[0]), copy.deepcopy(tiny[1])
    model.train()
    model.transformer.h[0].eval()
    for i, p in enumerate(model.parameters()):
        p.requires_grad_(i % 2 == 0)
    tok.padding_side = "left"
    tok.pad_token = None
    return model, tok


class _NoMove:
    """Fails the test if the package calls ``.to``/``.cpu``/``.cuda`` on the caller's model."""

    def __init__(self, model, monkeypatch):
        for name in ("to", "cpu", "cuda"):
            monkeypatch.setattr(model, name, self._fail(name), raising=False)

    @staticmethod
    def _fail(name):
        def f(*a, **k):
            raise AssertionError(f"the caller's model was moved with .{name}()")
        return f


def test_trace_leaves_model_and_tokenizer_as_they_were(tiny, monkeypatch):
    model, tok = _user_copy(tiny)
    before = _user_state(model, tok)
    _NoMove(model, monkeypatch)
    res = causaleval.trace(model, tok, PROMPT, SUBJECT, ANSWER, partners=PARTNERS, component="mlp", window=3,
                           layers=[0, 2])
    assert res.array("ld").shape == (2, 9)
    causaleval.trace(model, tok, PROMPT, SUBJECT, ANSWER, estimator="noise", component="residual", n_draws=2)
    _assert_same(before, _user_state(model, tok))
    assert tok.pad_token is None and tok.padding_side == "left"


def test_edit_leaves_model_and_tokenizer_as_they_were(tiny, monkeypatch):
    model, tok = _user_copy(tiny)
    before = _user_state(model, tok)
    _NoMove(model, monkeypatch)
    out = causaleval.edit(model, tok, REQUEST, layer=1, hparams=TINY_HP)
    _assert_same(before, _user_state(model, tok))       # ROME's backward pass left no .grad on the model
    with out.applied():
        assert not torch.equal(model.transformer.h[1].mlp.c_proj.weight,
                               before["weights"]["transformer.h.1.mlp.c_proj.weight"])
        assert model.training and model.transformer.h[1].mlp.c_proj.weight.requires_grad == \
            before["requires_grad"][list(dict(model.named_parameters())).index("transformer.h.1.mlp.c_proj.weight")]
    _assert_same(before, _user_state(model, tok))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to check that a GPU model stays there")
def test_gpu_model_stays_on_its_device(tiny):
    model, tok = copy.deepcopy(tiny[0]).cuda(), tiny[1]
    res = causaleval.trace(model, tok, PROMPT, SUBJECT, ANSWER, partners=PARTNERS, component="residual")
    assert all(p.device.type == "cuda" for p in model.parameters())
    assert np.isfinite(res.array("ld")).all()


def test_frozen_restores_per_module_modes_even_after_an_error(tiny):
    model = copy.deepcopy(tiny[0]).train()
    model.lm_head.eval()
    modes = [m.training for m in model.modules()]
    with pytest.raises(RuntimeError):
        with causaleval.frozen(model):
            assert not any(m.training for m in model.modules())
            assert not any(p.requires_grad for p in model.parameters())
            raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == modes


def test_trace_matches_the_estimator_modules(tiny):
    """The API reuses the estimators: same partners, config and case → the same tables."""
    model, tok = tiny
    res = causaleval.trace(model, tok, "The capital of {} is", SUBJECT, ANSWER, estimator="resample",
                           partners=PARTNERS, component="mlp", window=3, layers=[1, 3], n_draws=3, seed=5)
    with causaleval.wrapped(model, tok) as bundle:
        case = Fact(0, "The capital of {} is", "user", SUBJECT, ANSWER, "")
        pool = [Fact(i, case.prompt, "user", s, a, "") for i, (s, a) in enumerate(PARTNERS, start=1)]
        cfg = resample_scrubbing.ScrubbingConfig(n_draws=3, seed=5, grids=(causaleval.SiteGrid("mlp", 3, (1, 3)),),
                                                 directions=("denoise", "noise"))
        direct = resample_scrubbing.trace_fact(bundle, case, pool, cfg)
    cols = ["direction", "metric", "layer", "position", "ie", "te"]
    assert res.sites[cols].reset_index(drop=True).equals(direct.sites[cols].reset_index(drop=True))
    assert res.per_draw("p").shape == (3, 2, 9)


def test_arrays_are_keyed_by_metric_and_direction(tiny):
    model, tok = tiny
    res = causaleval.trace(model, tok, PROMPT, SUBJECT, ANSWER, partners=PARTNERS, component="residual")
    s = res.sites
    for metric in ("p", "ld"):
        for direction in ("denoise", "noise"):
            arr = res.array(metric, direction)
            rows = s[(s.metric == metric) & (s.direction == direction)]
            assert arr[rows.layer.to_numpy(), rows.position.to_numpy()] == pytest.approx(rows.ie.to_numpy())
            # the array is the mean of the per-draw values
            assert np.nanmean(res.per_draw(metric, direction), axis=0) == pytest.approx(arr)
            norm = res.array(metric, direction, value="ie_norm")
            assert norm == pytest.approx(arr / res.te(metric, direction))
    assert not np.allclose(res.array("p"), res.array("ld"))
    # restoring the full residual stream at the last layer's last position restores everything: IE = TE
    for direction in ("denoise", "noise"):
        assert res.array("ld", direction)[-1, -1] == pytest.approx(res.te("ld", direction), rel=1e-4)
    assert list(res.frame("ld").columns[:2]) == ["0:The", "1: capital"]
    with pytest.raises(ArgumentError, match="metric='logp'"):
        res.array("logp")
    with pytest.raises(ArgumentError, match="value="):
        res.array("p", "denoise", value="te")


def test_flip_drops_partners_that_share_the_answer_token(tiny):
    model, tok = tiny
    res = causaleval.trace(model, tok, PROMPT, SUBJECT, ANSWER, partners=PARTNERS + [("Texas", "Paris")],
                           component="residual", layers=[3])
    assert set(res.cases.support_size) == {len(PARTNERS)}
    with pytest.raises(DataError, match="first token differs"):
        causaleval.trace(model, tok, PROMPT, SUBJECT, ANSWER, partners=[("Texas", "Paris")])
    # resample scrubbing keeps it
    res = causaleval.trace(model, tok, PROMPT, SUBJECT, ANSWER, estimator="resample",
                           partners=[("Texas", "Paris")], component="residual", layers=[3])
    assert set(res.cases.support_size) == {1}


def test_noise_tracing_draws_are_seeded(tiny):
    model, tok = tiny
    kw = dict(estimator="noise", component="mlp", window=3, n_draws=4, direction="denoise")
    a = causaleval.trace(model, tok, PROMPT, SUBJECT, ANSWER, seed=1, **kw)
    b = causaleval.trace(model, tok, PROMPT, SUBJECT, ANSWER, seed=1, **kw)
    c = causaleval.trace(model, tok, PROMPT, SUBJECT, ANSWER, seed=2, **kw)
    assert a.directions == ("denoise",)
    assert np.array_equal(a.per_draw(), b.per_draw())
    assert not np.array_equal(a.per_draw(), c.per_draw())
    assert a.per_draw().shape == (4, 4, 9)
    assert "Gaussian noise" in a.estimands["denoise"]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(estimator="magic"), ArgumentError, "estimator='magic'"),
    (dict(direction="sideways"), ArgumentError, "direction='sideways'"),
    (dict(component="embed"), ArgumentError, "component='embed'"),
    (dict(partners=None), DataError, "needs partners"),
    (dict(partners=[("Germany",)]), DataError, "partner 1"),
    (dict(partners=[("France", "Paris")]), DataError, "own subject"),
    (dict(subject="Spain"), DataError, "does not occur in prompt"),
    (dict(answer=""), DataError, "answer must be a non-empty string"),
    (dict(window=9), SiteError, "window 9"),
    (dict(layers=[7]), SiteError, "layer 7"),
    (dict(n_draws=0), ArgumentError, "n_draws=0"),
    (dict(estimator="noise", nu=-1.0), ArgumentError, "nu=-1.0"),
])
def test_trace_bad_input_is_a_clear_error(tiny, kwargs, error, match):
    model, tok = tiny
    args = dict(prompt=PROMPT, subject=SUBJECT, answer=ANSWER, partners=PARTNERS)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        causaleval.trace(model, tok, **args)
    assert issubclass(error, CausalEvalError)


def test_wrapping_rejects_what_is_not_a_model(tiny):
    with pytest.raises(CausalEvalError, match="HuggingFace causal LM"):
        causaleval.trace(object(), tiny[1], PROMPT, SUBJECT, ANSWER, partners=PARTNERS)
    with pytest.raises(CausalEvalError, match="tokenizer is missing"):
        causaleval.trace(tiny[0], None, PROMPT, SUBJECT, ANSWER, partners=PARTNERS)


def test_edit_scores_and_bitwise_restore(tiny):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    out = causaleval.edit(model, tok, REQUEST, layer=1, hparams=TINY_HP)
    s = out.scores
    assert s.es == 1.0 and s.p_after_new > s.p_before_new
    assert s.rewrite_score == pytest.approx((s.p_after_new - s.p_before_new) / (1 - s.p_before_new))
    assert out.layer == 1 and out.to_dict()["steps"] == out.result.steps >= 1
    with out.applied() as applied:
        ids = tok(REQUEST["prompt"], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            top = int(model(ids).logits[0, -1].argmax())
        assert top == tok(" Africa")["input_ids"][0]
    assert applied.restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    # the same edit, given as a CounterFact record or with {"str": ...} targets, scores the same
    rec = Fact(0, "The capital of {}", "user", "France", "Paris", "Africa", REQUEST["paraphrase_prompts"],
               REQUEST["neighborhood_prompts"]).to_record()
    again = causaleval.edit(model, tok, rec, layer=1, hparams=TINY_HP)
    assert again.scores.to_dict() == pytest.approx(s.to_dict(), nan_ok=True)
    boxed = dict(REQUEST, target_true={"str": "Paris"}, target_new={"str": "Africa"})
    assert causaleval.edit(model, tok, boxed, layer=1, hparams=TINY_HP).scores.es == 1.0


@pytest.mark.parametrize("request_, match", [
    ({k: v for k, v in REQUEST.items() if k != "target_true"}, "lacks \\['target_true'\\]"),
    (dict(REQUEST, target_new=""), "'target_new' must be a non-empty string"),
    (dict(REQUEST, paraphrase_prompts="The capital city of France"), "'paraphrase_prompts' must be a list"),
    ("The capital of France", "must be a Fact or a mapping"),
])
def test_edit_bad_request_is_a_clear_error(tiny, request_, match):
    with pytest.raises(DataError, match=match):
        causaleval.edit(tiny[0], tiny[1], request_, layer=1, hparams=TINY_HP)


def test_edit_bad_layer_is_a_clear_error(tiny):
    with pytest.raises(SiteError, match="layer 9"):
        causaleval.edit(tiny[0], tiny[1], REQUEST, layer=9, hparams=TINY_HP)


def test_study_argv_maps_settings_to_the_command_flags():
    argv = study_argv("smoke", out="x", stage="facts", max_facts=3, edit_layers=[0, 2], relations=["P36"],
                      device=None, force=True, extra_args=["--workers", "2"])
    assert argv == ["--preset", "smoke", "--stage", "facts", "--out", "x", "--max-facts", "3", "--edit-layers",
                    "0", "2", "--relations", "P36", "--force", "--quiet", "--workers", "2"]
    with pytest.raises(ArgumentError, match="unknown settings \\['noise_drawz'\\]"):
        study_argv("smoke", noise_drawz=3)


def test_run_study_bad_stage_raises_instead_of_exiting(tmp_path):
    with pytest.raises(CausalEvalError, match="unknown stage 'nope'"):
        causaleval.run_study("smoke", out=tmp_path / "r", stage="nope")


def test_public_names_resolve():
    for name in causaleval.__all__:
        assert getattr(causaleval, name) is not None
    assert set(ESTIMATORS) == {"noise", "resample", "flip"} and ESTIMATORS["flip"] is flip_scrubbing
    with pytest.raises(AttributeError):
        causaleval.not_a_name  # noqa: B018


@pytest.mark.slow
def test_run_study_facts_stage_on_smollm2(tmp_path):
    study = causaleval.run_study("smoke", out=tmp_path / "study", stage="facts")
    assert study.out_dir == tmp_path / "study"
    assert (study.out_dir / "facts.jsonl").is_file() and study.summary is None
    table = study.table("facts_filter")
    assert len(table) > 0
    with pytest.raises(DataError, match="does not exist"):
        study.table("edits")


@pytest.mark.slow
def test_trace_on_smollm2():
    """The notebook recipe on the embedded model: flip scrubbing of a fact SmolLM2 knows."""
    bundle = causaleval.load_model("smollm2")
    model, tok = bundle.model, bundle.tokenizer
    res = causaleval.trace(model, tok, "The capital of France is", "France", "Paris",
                           partners=[("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid")],
                           component="residual", layers=[0, 10, 29])
    assert res.tokens == ["The", " capital", " of", " France", " is"]
    assert res.te("ld") > 1.0                     # the flip moves the answer by logits, not noise
    for direction in ("denoise", "noise"):
        assert res.array("ld", direction)[-1, -1] == pytest.approx(res.te("ld", direction), rel=1e-3)
