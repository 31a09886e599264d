"""Second moments C = E[k kᵀ] of the down-projection keys per layer (docs/design.md#rome), cached on disk.

The corpus (token ids) is made once per model and source — ``stat_tokens`` tokens sampled from the
model itself (seeded) or read from a local text dataset — and saved as ``.npy`` with JSON
provenance; sampling runs ``stat_batch`` sequences at once with a key/value cache.  C is then
accumulated layer by layer (:func:`layer_moments`): the corpus's hidden states go through each block
once, and only one layer's accumulator exists at a time, on the model's device (for GPT-J one
4096·4 × 4096·4 float64 C is 2.1 GB, all 28 layers at once would be 60 GB).  Per-chunk products are
float32, the running sum float64.  Each layer's C is saved as
``mom2/layer<l>-<corpus key>.npy`` + ``.json`` (seed, tokens, source, regularisation); never pickle.

A singular or ill-conditioned C (fewer keys than dimensions, dead units) is regularised by adding
λI, λ = ``ridge`` · tr(C)/d; this is logged as a warning and recorded in the provenance.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from causaleval.editing.rome.corpus import dataset_ids, rome_cache, sample_ids
from causaleval.editing.rome.hparams import RomeHyperParams
from causaleval.model.kvcache import record_block_calls
from causaleval.model.loading import ModelBundle
from causaleval.model.sites import check_layer, get_module
from causaleval.runs.faults import point
from causaleval.runs.locks import FileLock
from causaleval.runs.store import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)
MAX_COND = 1e10


class SingularStatisticsWarning(UserWarning):
    """C was singular or ill-conditioned and has been regularised."""


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


class _Accumulator:
    """Σ k kᵀ over keys on the keys' device: float32 products of ``flush_rows``-row chunks summed in float64."""

    live = 0        # accumulators alive at once (a test checks that the statistics hold one)
    peak = 0

    def __init__(self, dim: int, device, flush_rows: int = 4096):
        self.sum = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.count = 0
        self.buf: list[torch.Tensor] = []
        self.rows = 0
        self.flush_rows = flush_rows
        _Accumulator.live += 1
        _Accumulator.peak = max(_Accumulator.peak, _Accumulator.live)

    def add(self, keys: torch.Tensor) -> None:
        k = keys.detach().reshape(-1, keys.shape[-1]).float()
        self.buf.append(k)
        self.rows += k.shape[0]
        if self.rows >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            k = torch.cat(self.buf).to(self.sum.device)
            self.sum += (k.T @ k).double()
            self.count += k.shape[0]
            self.buf, self.rows = [], 0

    def close(self) -> torch.Tensor:
        """C = Σ k kᵀ / n (float64, on the CPU); the accumulator is freed."""
        self.flush()
        c = (self.sum / max(self.count, 1)).cpu()
        self.sum = None
        _Accumulator.live -= 1
        return c


class _Stop(Exception):
    pass


@torch.no_grad()
def _embedded(bundle: ModelBundle, ids: torch.Tensor) -> torch.Tensor:
    """The input of block 0 for ``ids`` (embeddings, positional terms included), without running any block."""
    block0 = get_module(bundle.model, bundle.family.layer_path(0))
    got: list = []

    def pre(_m, args, kwargs):
        got.append(args[0] if args else kwargs["hidden_states"])
        raise _Stop

    h = block0.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        bundle.model.base_model(input_ids=ids, use_cache=False)
    except _Stop:
        pass
    finally:
        h.remove()
    return got[0]


@torch.no_grad()
def layer_moments(bundle: ModelBundle, ids: torch.Tensor, layers, key_path, dim: int, batch: int = 64,
                  progress=None):
    """Yield (layer, C, number of keys) for ``layers`` in increasing order, C = E[k kᵀ] over every token of ``ids`` (N, T),
    k the input of ``key_path(layer)`` (the down-projection).

    Layer-major: the hidden states of the whole corpus are carried from block to block (blocks
    replayed with the arguments the model passes them, :class:`causaleval.model.kvcache.BlockCalls`-style),
    so only one layer's accumulator is alive at a time and the corpus goes through each block once."""
    layers = sorted({int(x) for x in layers})
    dev = bundle.device
    chunks = [ids[lo:lo + batch].to(dev) for lo in range(0, ids.shape[0], max(1, batch))]
    calls, _, _ = record_block_calls(bundle, input_ids=chunks[0][:1], use_cache=False)
    hidden = [_embedded(bundle, c) for c in chunks]
    for layer in range(layers[-1] + 1):
        block = get_module(bundle.model, bundle.family.layer_path(layer))
        acc = _Accumulator(dim, dev) if layer in layers else None
        hook = None
        if acc is not None:
            hook = get_module(bundle.model, key_path(layer)).register_forward_pre_hook(
                lambda _m, inp: acc.add(inp[0]))
        try:
            args, kwargs = calls[layer]
            for i, h in enumerate(hidden):
                out = block(h, *args[1:], **kwargs) if args else block(**dict(kwargs, hidden_states=h))
                hidden[i] = out[0] if isinstance(out, tuple) else out
        finally:
            if hook is not None:
                hook.remove()
        if progress is not None:
            progress.update(1)
        if acc is not None:
            yield layer, acc.close(), acc.count


def _load_npy(path: Path) -> np.ndarray | None:
    """A cached array, or None (logged by name, then recomputed and rewritten) when it is missing, differs from
    the checksum recorded when it was written, or does not load (truncated)."""
    from causaleval.runs.store import unreadable

    why = unreadable(path) if path.is_file() else "missing"
    if why is None:
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            why = f"{type(err).__name__}: {err}"
    log.warning("ROME statistics cache file %s cannot be used (%s); it is recomputed", path, why)
    return None


class SecondMoments:
    """C per layer for one model, from a cached corpus; ``inverse(l)`` computes C⁻¹ once per layer."""

    def __init__(self, bundle: ModelBundle, hparams: RomeHyperParams, seed: int = 0, use_cache: bool = True,
                 ridge: float = 1e-4, progress: bool = False):
        self.bundle, self.hp, self.seed = bundle, hparams, int(seed)
        self.use_cache, self.ridge, self.progress = use_cache, ridge, progress
        self.root = rome_cache(bundle)
        src = hparams.stat_source
        src_key = "model" if src == "model" else "data_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(src).name)
        if src != "model" and Path(src).is_file():       # a dataset changed in place gets a new key
            from causaleval.runs.store import file_sha256

            src_key += "-" + file_sha256(Path(src))[:12]
        self.corpus_key = f"{src_key}-seed{self.seed}-n{hparams.stat_tokens}-T{hparams.stat_seq_len}"
        self._c: dict[int, torch.Tensor] = {}
        self._inv: dict[int, torch.Tensor] = {}
        self.provenance: dict[int, dict] = {}
        self.one_off_seconds = 0.0

    # -- paths -------------------------------------------------------------------------------
    def _corpus_path(self) -> Path:
        return self.root / f"corpus-{self.corpus_key}.npy"

    def _layer_path(self, layer: int) -> Path:
        return self.root / "mom2" / f"layer{layer}-{self.corpus_key}.npy"

    # -- public ------------------------------------------------------------------------------
    def ensure(self, layers) -> None:
        """Load or compute C for ``layers`` (all missing layers in one pass over the corpus)."""
        n = self.bundle.n_layers
        for layer in layers:
            check_layer(int(layer), n)
        missing = self._load_cached(sorted({int(x) for x in layers} - set(self._c)))
        if missing and self.use_cache:
            # one process computes, the others wait and then read its files (each written atomically)
            point("stats.lock")
            with FileLock(self.root / ".stats.lock"):
                missing = self._load_cached(missing)
                if missing:
                    point("stats.compute")
                    self._timed_compute(missing)
        elif missing:
            self._timed_compute(missing)

    def _load_cached(self, layers: list[int]) -> list[int]:
        """Load the cached C of ``layers``; returns the layers not in the cache."""
        missing = []
        for layer in layers:
            path = self._layer_path(layer)
            # the .json is written after the .npy, so it marks a complete entry
            c = _load_npy(path) if self.use_cache and path.with_suffix(".json").is_file() else None
            if c is not None:
                self._c[layer] = torch.from_numpy(c)
                self.provenance[layer] = json.loads(path.with_suffix(".json").read_text())
            else:
                missing.append(layer)
        return missing

    def _timed_compute(self, layers: list[int]) -> None:
        t0 = time.time()
        self._compute(layers)
        self.one_off_seconds += time.time() - t0

    def get(self, layer: int) -> torch.Tensor:
        self.ensure([layer])
        return self._c[layer]

    def inverse(self, layer: int) -> torch.Tensor:
        """C⁻¹ (float64), regularised with λI when C is singular or ill-conditioned (and said so)."""
        if layer not in self._inv:
            c = self.get(layer)
            evals = torch.linalg.eigvalsh(c)
            lam = 0.0
            if evals[0] <= 0 or evals[-1] / evals[0] > MAX_COND:
                lam = self.ridge * float(torch.trace(c)) / c.shape[0]
                lam = lam if lam > 0 else self.ridge
                msg = (f"ROME statistics for layer {layer} are singular or ill-conditioned (eigenvalues "
                       f"{float(evals[0]):.3g} … {float(evals[-1]):.3g}, {self.provenance[layer].get('n_tokens')} "
                       f"tokens for dimension {c.shape[0]}); regularised with λI, λ = {lam:.3g}. "
                       "Use more statistics tokens (rome_stat_tokens) to avoid this.")
                warnings.warn(msg, SingularStatisticsWarning, stacklevel=2)
            self.provenance[layer]["ridge_lambda"] = lam
            eye = torch.eye(c.shape[0], dtype=torch.float64)
            self._inv[layer] = torch.linalg.inv(c + lam * eye)
        return self._inv[layer]

    # -- computation -------------------------------------------------------------------------
    def _compute(self, layers: list[int]) -> None:
        """Make (or load) the corpus, then C layer by layer (:func:`layer_moments`), each saved as it is done."""
        bundle, hp = self.bundle, self.hp
        fam = bundle.family
        key_path = lambda l: fam.module_path("down_proj", l)  # noqa: E731
        dim = self._key_dim(key_path(layers[0]))
        corpus_path = self._corpus_path()
        n_seq = max(1, math.ceil(hp.stat_tokens / hp.stat_seq_len))
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=max(layers) + 1, desc=f"ROME statistics, layers {layers}", unit="block")
        cached = _load_npy(corpus_path) if self.use_cache and corpus_path.with_suffix(".json").is_file() else None
        if cached is not None:                                                # the .json is written after the .npy
            ids = torch.from_numpy(cached).long()
            source = json.loads(corpus_path.with_suffix(".json").read_text())["source"]
        elif hp.stat_source == "model":
            ids = sample_ids(bundle, n_seq, hp.stat_seq_len - 1, seed=self.seed, top_k=None, batch=hp.stat_batch)
            source = (f"sampled from the model (ancestral sampling, temperature 1, {hp.stat_batch} sequences at "
                      "once with a key/value cache)")
        else:
            ids = dataset_ids(bundle.tokenizer, hp.stat_source, hp.stat_tokens, hp.stat_seq_len)
            source = f"local dataset {hp.stat_source}"
        if self.use_cache and cached is None:
            atomic_write_bytes(corpus_path, _npy_bytes(ids.numpy().astype(np.int32)))
            atomic_write_json(corpus_path.with_suffix(".json"), {
                "source": source, "seed": self.seed, "n_tokens": int(ids.numel()), "shape": list(ids.shape),
                "model": bundle.identity})
        for l, c, count in layer_moments(bundle, ids, layers, key_path, dim, batch=max(1, hp.stat_batch // 4),
                                         progress=bar):
            self._c[l] = c
            self.provenance[l] = {"layer": l, "module": key_path(l), "source": source, "seed": self.seed,
                                  "n_tokens": count, "corpus_key": self.corpus_key, "dtype": "float64",
                                  "accumulated": f"one layer at a time on {bundle.device}",
                                  "estimand": "uncentred second moment E[k k^T] of the down-projection input",
                                  "model": bundle.identity}
            if self.use_cache:
                path = self._layer_path(l)
                atomic_write_bytes(path, _npy_bytes(c.numpy()))
                atomic_write_json(path.with_suffix(".json"), self.provenance[l])
        if bar is not None:
            bar.close()

    def _key_dim(self, path: str) -> int:
        mod = self.bundle.model.get_submodule(path)
        w = mod.weight
        return int(w.shape[1] if self.bundle.family.down_proj_orientation == "linear" else w.shape[0])
