import pytest

from causaleval.testing import tiny_model

FAMILIES = ("gpt2", "gptj", "gpt_neox", "llama")


@pytest.fixture(scope="session", params=FAMILIES)
def tiny(request):
    """A tiny random model of each supported family."""
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def tiny_gpt2():
    return tiny_model("gpt2")


@pytest.fixture(scope="session")
def tiny_llama():
    return tiny_model("llama")
