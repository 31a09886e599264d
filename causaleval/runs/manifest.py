"""The record of the files the package wrote: ``.causaleval-manifest.jsonl`` in each folder it writes into.

Every atomic write (:mod:`causaleval.runs.store`) appends to the manifest of the file's folder: ``{"temp":
name}`` when its temporary file is created, then ``{"file": name, "sha256": …, "size": …}`` just before
the temporary file is renamed into place (the last record of a name wins).  Hence:

* a file is the package's own exactly when it has a record: only such files are ever deleted or replaced
  as corrupt, and only recorded temporary files are removed as a killed writer's leftovers;
* a file whose bytes differ from its record (truncated, a flipped byte) is named and recomputed; the
  record before the last one is accepted too, since a writer killed between its record and its rename
  leaves the previous, complete file in place;
* a file of a folder written before manifests existed (or a file the package did not write) has no record:
  it is accepted unverified, with a note.

Appends are single ``write`` calls with ``O_APPEND``, so writers that share a folder (cache builders under
their lock) cannot interleave a line; a torn last line (a killed writer) is ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST = ".causaleval-manifest.jsonl"

_cache: dict[Path, tuple[int, dict[str, dict], set[str]]] = {}
_noted: set[Path] = set()


def _append(folder: Path, entry: dict) -> None:
    line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
    current = os.umask(0)
    os.umask(current)
    fd = os.open(Path(folder) / MANIFEST, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666 & ~current)
    try:
        os.write(fd, line)      # no fsync: a killed process loses nothing written; as the atomic writers
    finally:
        os.close(fd)


def note_temp(tmp: Path) -> None:
    """Record a temporary file as the package's before anything is written into it."""
    tmp = Path(tmp)
    _append(tmp.parent, {"temp": tmp.name})


def record(path: Path, sha256: str, size: int) -> None:
    """Record ``path``'s checksum (call before the file is renamed into place)."""
    path = Path(path)
    _append(path.parent, {"file": path.name, "sha256": sha256, "size": int(size)})


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def entries(folder: Path) -> tuple[dict[str, dict], set[str]]:
    """The records of ``folder``: file name → its last record, and the temporary file names.

    The manifest only grows, so a folder's parsed records are kept and only lines appended since are read."""
    folder = Path(folder).absolute()
    path = folder / MANIFEST
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        _cache.pop(folder, None)
        return {}, set()
    offset, files, temps = _cache.get(folder, (0, {}, set()))
    if size < offset:                                   # replaced by a shorter file: read it again
        offset, files, temps = 0, {}, set()
    if size > offset:
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read(size - offset)
        complete = chunk[:chunk.rfind(b"\n") + 1]       # a line still being written is read next time
        offset += len(complete)
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue                               # a torn line of a killed writer
            if isinstance(entry, dict) and isinstance(entry.get("file"), str):
                entry["previous"] = files.get(entry["file"], {}).get("sha256")
                files[entry["file"]] = entry
            elif isinstance(entry, dict) and isinstance(entry.get("temp"), str):
                temps.add(entry["temp"])
        _cache[folder] = (offset, files, temps)
    return files, temps


def is_recorded(path: Path) -> bool:
    """Whether the package wrote ``path`` (it has a record in its folder's manifest)."""
    path = Path(path)
    return path.name in entries(path.parent)[0]


def mismatch(path: Path) -> str | None:
    """Why ``path`` differs from its record (size, then sha256), or None when it matches or has no record
    (then a note is logged once per folder: accepted unverified)."""
    path = Path(path)
    rec = entries(path.parent)[0].get(path.name)
    if rec is None:
        folder = path.parent.absolute()
        if folder not in _noted:
            _noted.add(folder)
            log.warning("%s: no checksum record for %s (written before checksums were recorded, or not by "
                     "causaleval); accepted unverified", folder, path.name)
        return None
    size = path.stat().st_size
    if rec.get("previous") is None and size != rec.get("size"):
        return f"{size} bytes where {rec.get('size')} were written (truncated or changed)"
    digest = file_sha256(path)
    if digest not in (rec.get("sha256"), rec.get("previous")):
        if size != rec.get("size"):
            return f"{size} bytes where {rec.get('size')} were written (truncated or changed)"
        return f"sha256 differs from the one recorded when it was written ({str(rec.get('sha256'))[:12]}…)"
    return None


def recorded_temps(folder: Path) -> list[Path]:
    """Temporary files recorded in the manifests under ``folder`` that still exist (a killed writer's)."""
    found = []
    for manifest in Path(folder).rglob(MANIFEST):
        for name in sorted(entries(manifest.parent)[1]):
            p = manifest.parent / name
            if p.is_file() and not p.is_symlink():
                found.append(p)
    return found
