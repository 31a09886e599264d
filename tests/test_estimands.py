"""Estimands as objects: their one-paragraph statement, declared supports and clear site errors."""

import pytest

from causaleval.data.tokens import Encoded, encode_prompt
from causaleval.errors import SiteError
from causaleval.estimators import flip_scrubbing, noise_tracing, resample_scrubbing
from causaleval.model.testing import tiny_model
from causaleval.patching.core import align_position, case_sites
from causaleval.patching.estimands import Estimand, SiteGrid, Support, SupportError


def test_str_states_every_part_of_the_estimand():
    cfg = noise_tracing.NoiseTracingConfig(nu=0.3, n_draws=10, grids=(SiteGrid("mlp", 10),))
    text = str(noise_tracing.estimand(cfg))
    for part in ("known facts", "Gaussian noise", "mass 0 on real token sequences", "clean run",
                 "window of 10 layers", "p(o)", "mean over draws"):
        assert part in text
    flip = str(flip_scrubbing.estimand(resample_scrubbing.ScrubbingConfig(), "noise", "ld"))
    assert "mass 1 on real token sequences" in flip and "LD(o, o′)" in flip and "necessity" in flip
    assert "\n" not in text and "\n" not in flip


def test_noise_support_depends_on_nu():
    assert noise_tracing.estimand(noise_tracing.NoiseTracingConfig(nu=0.0)).support.mass_on_real == 1.0
    assert noise_tracing.estimand(noise_tracing.NoiseTracingConfig(nu=0.1)).support.mass_on_real == 0.0


def test_support_check_names_the_draw():
    s = Support("even numbers", 1.0, lambda x: x % 2 == 0)
    s.check(4, "draw 1")
    with pytest.raises(SupportError, match="case 3, draw 2.*even numbers"):
        s.check(5, "case 3, draw 2")


def test_off_table_predicate_rejects_real_tokens(tiny_llama):
    pred = noise_tracing.off_table(tiny_llama)
    emb = tiny_llama.model.get_input_embeddings().weight.detach()
    assert not pred(emb[:3])
    assert pred(emb[:3] + 0.5)


def test_bad_estimand_fields_are_errors():
    with pytest.raises(Exception, match="direction"):
        Estimand("x", "u", "b", Support("s", 1, lambda d: True), "src", "sideways", (), "p")
    with pytest.raises(SiteError, match="component"):
        SiteGrid("embedding")


def test_site_errors_name_the_site(tiny_llama):
    enc = encode_prompt(tiny_llama.tokenizer, "The capital of {} is", "France", 7)
    with pytest.raises(SiteError, match="larger than the model"):
        case_sites([SiteGrid("mlp", window=9)], enc, tiny_llama.n_layers)
    with pytest.raises(SiteError, match="site mlp window 1 layer 12"):
        case_sites([SiteGrid("mlp", layers=(12,))], enc, tiny_llama.n_layers)


def test_subject_not_in_prompt_names_the_case():
    tok = tiny_model("gpt2").tokenizer
    with pytest.raises(SiteError, match="case 42"):
        encode_prompt(tok, "The capital of France is {}", "", 42)
    with pytest.raises(SiteError, match="case 43"):
        encode_prompt(tok, "The capital of France is", "Spain", 43)


def test_alignment_by_role():
    a = Encoded("x", tuple(range(8)), 3, 5)     # subject 3..4, 3 tokens after
    b = Encoded("y", tuple(range(10)), 3, 7)    # subject 3..6, 3 tokens after
    assert [align_position(a, b, p) for p in range(8)] == [0, 1, 2, 3, 6, 7, 8, 9]
    c = Encoded("z", tuple(range(9)), 3, 6)
    assert align_position(c, a, 4) in (3, 4)     # a middle token maps inside the subject
    with pytest.raises(SiteError):
        align_position(a, b, 8)
    # the partner's prefix tokenised one token shorter: prefix tokens align from the start
    d = Encoded("w", tuple(range(10)), 4, 9)
    e = Encoded("v", tuple(range(10)), 3, 9)
    assert [align_position(d, e, p) for p in range(4)] == [0, 1, 2, 2]
