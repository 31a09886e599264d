"""Named fault points for tests: a process kills itself, or waits, at a point it reaches.

``$CAUSALEVAL_FAULT`` lists actions, comma-separated; unset (always, outside tests) :func:`point` does nothing:

* ``kill@NAME:K`` — SIGKILL this process the K-th time it reaches point NAME (K defaults to 1);
* ``wait@NAME`` — at NAME, create ``$CAUSALEVAL_FAULT_DIR/NAME.reached`` and wait (at most 10 min) until
  ``NAME.go`` exists there;
* ``mark@NAME`` — at NAME, create ``NAME.reached`` and go on.

Points: ``part.<parts folder>`` after a part file is written, ``write.<file name>`` inside the atomic
writer just before the rename, ``cache.lock`` before a cache folder's lock is taken, ``cache.build``
before a built cache folder is moved into place, ``stats.lock`` before the ROME statistics lock is
taken and ``stats.compute`` once it is held.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

_reached: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("CAUSALEVAL_FAULT")
    if not spec:
        return
    n = _reached[name] = _reached.get(name, 0) + 1
    for item in spec.split(","):
        action, _, where = item.strip().partition("@")
        where, _, k = where.partition(":")
        if where != name or (action == "kill" and n != int(k or 1)):
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        folder = Path(os.environ.get("CAUSALEVAL_FAULT_DIR", "."))
        (folder / f"{name}.reached").write_text(str(os.getpid()))
        if action == "wait":
            deadline = time.time() + 600
            while not (folder / f"{name}.go").exists() and time.time() < deadline:
                time.sleep(0.05)
