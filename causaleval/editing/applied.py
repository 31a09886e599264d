"""Weight edits written into a model for the length of a ``with`` block, restored bitwise after.

:class:`AppliedWeights` adds ΔW (out × in) to the down-projection of each of its layers on
``__enter__`` (not before) and copies the saved originals back on ``__exit__`` (nothing is
subtracted, so the restore is exact), also when the block raises.  Contexts on one model nest: they
must be left in the reverse order of entry, and leaving one out of order is refused with an error
(restoring it then would put back weights that still carry the inner edit).  A model is not shared
across threads while edited.
"""

from __future__ import annotations

import weakref
from typing import Mapping

import torch

from causaleval.errors import CausalEvalError
from causaleval.model.loading import ModelBundle
from causaleval.model.sites import get_module

# per model: the contexts entered and not yet left, innermost last
_OPEN: "weakref.WeakKeyDictionary[torch.nn.Module, list]" = weakref.WeakKeyDictionary()


class EditOrderError(CausalEvalError):
    """Edit contexts on one model were left in an order other than the reverse of entry."""


class AppliedWeights:
    """``with AppliedWeights(bundle, {layer: ΔW}):`` runs code on the edited model (see module docstring).

    ``apply()`` / ``restore()`` do the same without ``with``; ``restore`` is idempotent."""

    def __init__(self, bundle: ModelBundle, deltas: Mapping[int, torch.Tensor]):
        self.bundle = bundle
        self.deltas = {int(l): d for l, d in deltas.items()}
        self.modules = {l: get_module(bundle.model, bundle.family.module_path("down_proj", l)) for l in self.deltas}
        self.originals: dict[int, torch.Tensor] = {}
        self.applied = False
        self.restored = False

    def apply(self) -> "AppliedWeights":
        if self.applied:
            raise EditOrderError("this edit is already applied; leave its context before entering it again")
        stack = _OPEN.setdefault(self.bundle.model, [])
        linear = self.bundle.family.down_proj_orientation == "linear"
        with torch.no_grad():
            for l, mod in self.modules.items():
                self.originals[l] = mod.weight.detach().clone()
            for l, mod in self.modules.items():
                delta = self.deltas[l] if linear else self.deltas[l].T
                mod.weight.add_(delta.to(device=mod.weight.device, dtype=mod.weight.dtype))
        stack.append(self)
        self.applied, self.restored = True, False
        return self

    def restore(self) -> None:
        if not self.applied or self.restored:
            return
        stack = _OPEN.get(self.bundle.model, [])
        if stack and stack[-1] is not self:
            raise EditOrderError("edit contexts on one model left out of order: leave the innermost (last "
                                 "entered) edit first, or use nested `with` blocks")
        with torch.no_grad():
            for l, mod in self.modules.items():
                mod.weight.copy_(self.originals[l])
        if stack:
            stack.pop()
        self.originals.clear()
        self.restored = True

    def __enter__(self) -> "AppliedWeights":
        return self.apply()

    def __exit__(self, *exc) -> None:
        self.restore()
