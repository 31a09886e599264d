import contextlib

import pytest
import torch

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


@contextlib.contextmanager
def _one_thread_tiny_gpt2(root):
    """A 4-layer tiny GPT-2 with its weights as they were, under an isolated ROME statistics cache in ``root``
    and one torch thread (restored on exit): (bundle, monkeypatch, weights before)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAUSALEVAL_CACHE", str(root / "cache"))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            bundle = tiny_model("gpt2", n_layers=4)
            yield bundle, mp, {k: v.clone() for k, v in bundle.model.state_dict().items()}
        finally:
            torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def one_thread_tiny_gpt2():
    """The context manager above, for module-scoped fixtures:
    ``with one_thread_tiny_gpt2(root) as (bundle, mp, weights)``."""
    return _one_thread_tiny_gpt2


@pytest.fixture
def twin_synthetic_runs(tmp_path):
    """Two identical synthetic results folders (24 facts × 8 layers), the second's edits, the same edits with
    the rewrite scores permuted (no signal), and the generator that permuted them:
    (plain, multi, edits, permuted, rng)."""
    import numpy as np
    import pandas as pd

    from causaleval.inference.synthetic import SyntheticSpec, write_synthetic_results

    spec = SyntheticSpec(n_cases=24, n_layers=8, seed=4)
    plain, multi = tmp_path / "plain", tmp_path / "multi"
    write_synthetic_results(plain, spec)
    write_synthetic_results(multi, spec)
    edits = pd.read_parquet(multi / "edits.parquet")
    rng = np.random.default_rng(0)
    return plain, multi, edits, edits.assign(rewrite_score=rng.permutation(edits.rewrite_score.to_numpy())), rng
