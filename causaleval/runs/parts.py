"""A resumable store of finished work: one parquet file per part, written atomically (docs/design.md#stages).

A long stage splits its work into parts (one per case, say).  A part is finished exactly when its
file exists and reads, so a run killed at any moment loses at most the parts in flight, and a rerun
computes only the missing ones; a truncated or overwritten part file, or one whose bytes differ from the
checksum recorded when it was written (:mod:`causaleval.runs.manifest`), counts as missing (it is logged
by name and recomputed), so it never enters a table.  Files are named by key, so a part cannot be
stored twice.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from causaleval.errors import ResultsError
from causaleval.runs.faults import point
from causaleval.runs.store import atomic_write_parquet, unreadable

log = logging.getLogger(__name__)

_SAFE = re.compile(r"^[A-Za-z0-9_.=-]+$")


class PartStore:
    """``recompute``: every part counts as missing until this store writes it (``--force``: a stage's
    parts are recomputed, not reused)."""

    def __init__(self, folder: str | Path, recompute: bool = False):
        self.folder = Path(folder)
        self.recompute = recompute
        self._written: set[str] = set()

    def path(self, key: str) -> Path:
        if not _SAFE.match(key):
            raise ValueError(f"part key {key!r} must match {_SAFE.pattern}")
        return self.folder / f"{key}.parquet"

    def is_done(self, key: str) -> bool:
        path = self.path(key)
        if not path.is_file() or (self.recompute and key not in self._written):
            return False
        why = unreadable(path)
        if why is not None:
            log.warning("%s is corrupt (%s); it will be recomputed", path, why)
            return False
        return True

    def missing(self, keys: list[str]) -> list[str]:
        return [k for k in keys if not self.is_done(k)]

    def write(self, key: str, frame: pd.DataFrame) -> None:
        atomic_write_parquet(self.path(key), frame)
        self._written.add(key)
        point(f"part.{self.folder.name}")

    def read(self, key: str) -> pd.DataFrame:
        path = self.path(key)
        why = unreadable(path)
        if why is not None:
            raise ResultsError(f"{path}: corrupt part file ({why}); rerun the stage to recompute it")
        try:
            return pd.read_parquet(path)
        except Exception as err:  # noqa: BLE001 - pyarrow raises many types for a damaged file
            raise ResultsError(f"{path}: corrupt part file ({type(err).__name__}); delete it and rerun") from err

    def concat(self, keys: list[str]) -> pd.DataFrame:
        frames = [self.read(k) for k in keys if self.is_done(k)]
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
