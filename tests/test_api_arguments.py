"""API arguments get the study settings' rules (issue 34): no silent coercion, one clear error each."""

from __future__ import annotations

import math

import pytest

import causaleval
from causaleval.api import ArgumentError, study_argv
from causaleval.editing.rome import SecondMoments
from causaleval.editing.rome.hparams import hparams_for
from causaleval.errors import CausalEvalError, DataError
from causaleval.model.testing import tiny_model

PROMPT, SUBJECT, ANSWER = "The capital of France is", "France", "Paris"
PARTNERS = [("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid")]
REQUEST = {"prompt": "The capital of France", "subject": "France", "target_true": "Paris", "target_new": "Africa"}
TINY_HP = hparams_for("gpt2", stat_tokens=200, stat_seq_len=20, stat_batch=16, context_lengths=((4, 2),))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAUSALEVAL_CACHE", str(tmp_path))


@pytest.fixture(scope="module")
def tiny():
    b = tiny_model("gpt2")
    return b.model, b.tokenizer


# bad trace arguments: each one ArgumentError/DataError naming the argument (before: coerced or a traceback)
TRACE_BAD = [
    (dict(window=2.7), "window=2.7 must be an integer"),
    (dict(window=math.nan), "window=nan must be an integer"),
    (dict(window=True), "window=True must be an integer"),
    (dict(layers="01"), "layers='01' must be a list of integers"),
    (dict(layers=[1, 1]), "lists 1 more than once"),
    (dict(layers=[1.9]), "must hold integers only"),
    (dict(layers=[]), "give at least one value"),
    (dict(n_draws=1.5), "n_draws=1.5 must be an integer"),
    (dict(n_draws="3"), "n_draws='3' must be an integer"),
    (dict(n_draws=0), "n_draws=0 must be at least 1"),
    (dict(estimator="noise", nu=math.nan), "nu=nan must be a finite number"),
    (dict(estimator="noise", nu="3"), "nu='3' must be a number"),
    (dict(estimator="noise", nu=-1.0), "nu=-1.0 must be at least 0"),
    (dict(seed=-1), "seed=-1 must be at least 0"),
    (dict(seed="x"), "seed='x' must be an integer"),
    (dict(seed=1.5), "seed=1.5 must be an integer"),
    (dict(seed=2**70), "must be at most 4,294,967,295"),
    (dict(subject="Fr\ud800ance", prompt="The capital of {} is"), "lone surrogate"),
    (dict(subject="Fr\x00ance", prompt="The capital of {} is"), "control character"),
    (dict(prompt="The capital of {} is {}"), "2 '{}' placeholders"),
    (dict(prompt="The capital of France is" + " and so on" * 200), "exceeds the model's context"),
]


@pytest.mark.parametrize("kwargs, match", TRACE_BAD, ids=[m for _, m in TRACE_BAD])
def test_trace_bad_argument_is_one_clear_error(tiny, kwargs, match):
    args = dict(prompt=PROMPT, subject=SUBJECT, answer=ANSWER, partners=PARTNERS, layers=[0, 1], window=1)
    args.update(kwargs)
    with pytest.raises((ArgumentError, DataError), match=match) as info:
        causaleval.trace(*tiny, **args)
    assert "\n" not in str(info.value)


def test_tokenizer_given_as_a_string_is_refused(tiny):
    with pytest.raises(CausalEvalError, match="tokenizer must be a HuggingFace tokenizer object"):
        causaleval.trace(tiny[0], "gpt2", PROMPT, SUBJECT, ANSWER, partners=PARTNERS)


def test_numpy_integers_are_integers(tiny):
    import numpy as np

    r = causaleval.trace(*tiny, PROMPT, SUBJECT, ANSWER, partners=PARTNERS, layers=[np.int64(0)], window=np.int32(1),
                         n_draws=np.int64(2), seed=np.uint8(1))
    assert r.layers == [0] and r.window == 1


EDIT_BAD = [
    (dict(hparams={"v_lr": 0.5}), "hparams must be a RomeHyperParams"),
    (dict(stats="cached"), "stats must be a SecondMoments"),
    (dict(layer=1.0), "layer=1.0 must be an integer"),
    (dict(seed="0"), "seed='0' must be an integer"),
    (dict(contexts="some text"), "contexts must be a list of strings"),
    (dict(request=dict(REQUEST, target_new="Paris")), "equals target_true"),
]


@pytest.mark.parametrize("kwargs, match", EDIT_BAD, ids=[m for _, m in EDIT_BAD])
def test_edit_bad_argument_is_one_clear_error(tiny, kwargs, match):
    args = dict(request=REQUEST, layer=1, hparams=TINY_HP)
    args.update(kwargs)
    with pytest.raises((ArgumentError, DataError), match=match):
        causaleval.edit(*tiny, **args)


def test_edit_refuses_statistics_of_another_model(tiny):
    other = tiny_model("gpt2", seed=1)
    with pytest.raises(ArgumentError, match="second moments of another model"):
        causaleval.edit(*tiny, REQUEST, layer=1, hparams=TINY_HP, stats=SecondMoments(other, TINY_HP))


@pytest.mark.parametrize("settings, match", [
    (dict(seed=1.5), "seed=1.5 must be an integer"),
    (dict(seed="3"), "seed='3' must be an integer"),
    (dict(seed=2**70), "must be at most"),
    (dict(max_facts=0), "max_facts=0 must be at least 1"),
    (dict(edit_layers=[1, 1]), "more than once"),
    (dict(edit_layers="01"), "must hold integers only"),
    (dict(model="x" * 5000), "at most 4,096 characters"),
    (dict(relations=[3]), "must be a non-empty string"),
])
def test_run_study_settings_get_the_config_rules(settings, match):
    with pytest.raises(ArgumentError, match=match):
        study_argv("smoke", **settings)


def test_run_study_settings_of_the_right_type_pass_unchanged(tmp_path):
    import numpy as np

    argv = study_argv("smoke", facts=tmp_path / "cf.json", seed=np.int64(3), edit_layers=(0, 2), relations="P36")
    assert argv[argv.index("--facts") + 1] == str(tmp_path / "cf.json")
    assert argv[argv.index("--seed") + 1] == "3" and argv[argv.index("--relations") + 1] == "P36"


def test_two_threads_tracing_one_model_get_the_sequential_results(tiny):
    """trace/edit take a per-model lock (causaleval.model.wrapping.model_lock): a thread that finishes
    does not put the model back into training mode (dropout on) while another is still tracing."""
    import copy
    from concurrent.futures import ThreadPoolExecutor

    import torch

    model = copy.deepcopy(tiny[0]).train()          # the caller's model, in training mode with dropout
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.5
    args = dict(prompt=PROMPT, subject=SUBJECT, answer=ANSWER, partners=PARTNERS, window=1, n_draws=3)
    alone = causaleval.trace(model, tiny[1], estimator="flip", **args).sites
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(causaleval.trace, model, tiny[1], estimator="flip", **args) for _ in range(8)]
        results = [f.result().sites for f in futures]
    assert all(r.equals(alone) for r in results)
    assert model.training
