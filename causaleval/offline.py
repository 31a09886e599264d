"""No network at run time: the Hugging Face libraries are switched to offline mode by ``import causaleval``.

The switches are environment variables read when ``huggingface_hub``, ``transformers`` and ``datasets``
are imported, so :func:`go_offline` runs in ``causaleval/__init__.py``, before any of them is imported
by the package; a library the caller imported earlier gets its module-level switch set too.
``HF_UPDATE_DOWNLOAD_COUNTS=0`` stops the download counter ``datasets.load_dataset("json", …)`` would
otherwise send for a local file.  This holds for the whole process (docs/errors.md#network).
"""

from __future__ import annotations

import os
import sys

SWITCHES = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_UPDATE_DOWNLOAD_COUNTS": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}


def go_offline() -> None:
    """Set the offline switches (environment, and the libraries already imported)."""
    os.environ.update(SWITCHES)
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:
        hub.HF_HUB_OFFLINE = True
        hub.HF_HUB_DISABLE_TELEMETRY = True
    ds = sys.modules.get("datasets.config")
    if ds is not None:
        ds.HF_HUB_OFFLINE = ds.HF_DATASETS_OFFLINE = True
        ds.HF_UPDATE_DOWNLOAD_COUNTS = False
