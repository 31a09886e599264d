import pytest

from causaleval.model.testing import FAMILY_CONFIGS, tiny_model

FAMILIES = tuple(FAMILY_CONFIGS)


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
