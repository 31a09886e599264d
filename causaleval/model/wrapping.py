"""Using a caller's model and tokenizer without changing them.

:func:`wrapped` yields a :class:`~causaleval.model.loading.ModelBundle` for the duration of a ``with`` block:
inside it every module is in eval mode (no dropout) and no parameter requires a gradient (so ROME's
v* optimisation, which differentiates only its own δ, never accumulates ``.grad`` on the model); on
exit each module's training flag and each parameter's ``requires_grad`` flag are put back as they were.
The model is never moved, and the bundle holds a copy of the tokenizer (:func:`causaleval.model.loading.bundle_from`).
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Iterator

import torch

from causaleval.errors import CausalEvalError
from causaleval.model.loading import ModelBundle, bundle_from


class ModelArgumentError(CausalEvalError):
    """What was passed as the model or tokenizer cannot be used."""


@contextmanager
def frozen(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode and ``requires_grad=False`` inside the block; every flag restored on exit."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in grads:
            p.requires_grad_(flag)


@contextmanager
def wrapped(model, tokenizer=None, name: str | None = None) -> Iterator[ModelBundle]:
    """A bundle around the caller's ``model`` (an HF causal LM, or a ModelBundle) inside :func:`frozen`.

    ``tokenizer`` may be omitted when ``model`` is a ModelBundle."""
    if isinstance(model, ModelBundle):
        bundle = model if tokenizer is None else bundle_from(model.model, tokenizer, name=model.name,
                                                             identity=model.identity)
    else:
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise ModelArgumentError(f"model must be a HuggingFace causal LM (a torch module with a .config) or a "
                                     f"ModelBundle, got {type(model).__name__}")
        if tokenizer is None:
            raise ModelArgumentError("tokenizer is missing: pass the model's HuggingFace tokenizer")
        if not callable(tokenizer) or not all(hasattr(tokenizer, a) for a in ("decode", "get_vocab", "eos_token")):
            raise ModelArgumentError(f"tokenizer must be a HuggingFace tokenizer object (e.g. AutoTokenizer."
                                     f"from_pretrained(folder)), got {type(tokenizer).__name__}")
        label = name or getattr(model.config, "_name_or_path", "") or "custom"
        bundle = bundle_from(model, tokenizer, name=str(label))
    with model_lock(bundle.model), frozen(bundle.model):
        yield bundle


_LOCKS: weakref.WeakKeyDictionary[torch.nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: torch.nn.Module) -> threading.RLock:
    """The lock that serialises the package's uses of one model across threads.

    A model is not shared between threads: its training flags, ``requires_grad`` flags and (while an edit is
    scored) its weights are changed for the duration of a call.  ``trace`` and ``edit`` take this lock, so two
    threads calling them on one model wait for each other instead of interfering; the caller's own forward
    passes and an ``EditOutcome.applied()`` block are not covered: run those in one thread."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock
