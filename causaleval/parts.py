"""A resumable store of finished work: one parquet file per part, written atomically (SPEC §8).

A long stage splits its work into parts (one per case, say).  A part is finished exactly when its
file exists, so a run killed at any moment loses at most the parts in flight, and a rerun computes
only the missing ones.  Files are named by key, so a part cannot be stored twice.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from causaleval.store import atomic_write_parquet

_SAFE = re.compile(r"^[A-Za-z0-9_.=-]+$")


class PartStore:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        if not _SAFE.match(key):
            raise ValueError(f"part key {key!r} must match {_SAFE.pattern}")
        return self.folder / f"{key}.parquet"

    def is_done(self, key: str) -> bool:
        return self.path(key).is_file()

    def missing(self, keys: list[str]) -> list[str]:
        return [k for k in keys if not self.is_done(k)]

    def write(self, key: str, frame: pd.DataFrame) -> None:
        atomic_write_parquet(self.path(key), frame)

    def read(self, key: str) -> pd.DataFrame:
        return pd.read_parquet(self.path(key))

    def concat(self, keys: list[str]) -> pd.DataFrame:
        frames = [self.read(k) for k in keys if self.is_done(k)]
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
