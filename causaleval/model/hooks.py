"""Forward hooks over plain HF modules (in the spirit of baukit's ``nethook``).

``trace(model, capture=..., capture_inputs=..., edit=...)`` is a context manager: within it every
forward pass records the outputs (or first positional inputs) of the named modules and applies
``edit[path](hidden) -> hidden`` to their outputs.  Modules returning tuples (attention, some
blocks) are handled by acting on the first element, the hidden state.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, Sequence

import torch

from causaleval.model.sites import get_module

EditFn = Callable[[torch.Tensor], torch.Tensor]


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output, hidden: torch.Tensor):
    if isinstance(output, tuple):
        return (hidden,) + tuple(output[1:])
    return hidden


@contextmanager
def trace(
    model: torch.nn.Module,
    capture: Sequence[str] = (),
    capture_inputs: Sequence[str] = (),
    edit: Mapping[str, EditFn] | None = None,
    detach: bool = True,
) -> Iterator[dict[str, torch.Tensor]]:
    """Record outputs of ``capture`` (after any edit) and inputs of ``capture_inputs``.

    The yielded dict maps a module path to its hidden state of the most recent forward pass;
    inputs are stored under ``"<path>:in"``.
    """
    edit = dict(edit or {})
    store: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for path in set(capture) | set(edit):
            module = get_module(model, path)

            def hook(_mod, _inp, output, path=path):
                if path in edit:
                    output = _replace_first(output, edit[path](_first(output)))
                if path in capture:
                    h = _first(output)
                    store[path] = h.detach() if detach else h
                return output

            handles.append(module.register_forward_hook(hook))
        for path in capture_inputs:
            module = get_module(model, path)

            def pre_hook(_mod, inputs, path=path):
                h = inputs[0]
                store[f"{path}:in"] = h.detach() if detach else h

            handles.append(module.register_forward_pre_hook(pre_hook))
        yield store
    finally:
        for h in handles:
            h.remove()
