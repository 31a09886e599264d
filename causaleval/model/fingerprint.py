"""A fingerprint of every weight of a model held in memory, for cache keys.

:func:`weights_fingerprint` is a BLAKE2b digest over every parameter and buffer: its name, dtype, shape
and all of its bytes.  It is complete: two models whose weights differ in any single element (or in a
name, dtype or shape) get different fingerprints, up to a hash collision.  Sampling a few bytes per
tensor would be cheaper but would miss a fine-tune that changes elements outside the sample; reading
every byte costs about 1 s per GB on one CPU core, small next to the ROME statistics it keys.
Models loaded from files are keyed by their files' sha256 instead (:func:`causaleval.model.loading.weights_identity`).
"""

from __future__ import annotations

import hashlib

import torch


def weights_fingerprint(model: torch.nn.Module) -> str:
    """``blake2b-<hex>`` over (name, dtype, shape, bytes) of every parameter and buffer, in name order."""
    h = hashlib.blake2b(digest_size=16)
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    for name in sorted(tensors):
        t = tensors[name].detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.reshape(-1).contiguous().cpu().view(torch.uint8).numpy())
    return f"blake2b-{h.hexdigest()}"
