"""Confirmatory mode: is an analysis of a results folder the one its committed plan fixed in advance?

:func:`plan_provenance` records the plan file's sha256 and, from ``git log`` of that file, the commit that
put its present content in (and the one that first added it), whether the working tree holds it unchanged
(no uncommitted edit; its sha256 equals that of the committed blob).  :func:`confirmatory_status` labels
the analysis of a results folder *confirmatory* only when

* the plan file is unchanged since its commit (above),
* the folder's studied facts are disjoint from the exploratory run's the plan names, and
* the run's settings are the plan's: draws, partners, seeds, edit layers, facts and stages;

and *exploratory* otherwise, with every reason.  A run called confirmatory (``--plan``) whose studied facts
overlap the exploratory run's is refused outright (:func:`refuse_overlap`).  docs/confirmatory.md.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from causaleval.analysis.plan import AnalysisPlan, ModelDesign, PlanError
from causaleval.runs.store import file_sha256

CONFIRMATORY, EXPLORATORY = "confirmatory", "exploratory"


def _git(folder: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.decode("utf-8", "replace").strip() if proc.returncode == 0 else None


def _git_bytes(folder: Path, *args: str) -> bytes | None:
    try:
        proc = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def plan_provenance(path: Path) -> dict:
    """sha256 of the plan file; its commit (the last one that changed it), that commit's date, the
    commit that first added it; ``committed``: the file is tracked and identical to its committed blob
    with no uncommitted change; ``problems``: why not, in words."""
    path = Path(path).resolve()
    folder, name = path.parent, path.name
    out = {"path": str(path), "sha256": file_sha256(path), "commit": None, "commit_date": None,
           "added_in": None, "committed_sha256": None, "committed": False, "problems": []}
    if _git(folder, "rev-parse", "--show-toplevel") is None:
        out["problems"].append(f"{path} is not in a git checkout, so its commit cannot be shown")
        return out
    log = _git(folder, "log", "--format=%H %cI", "--", name) or ""     # a repository without commits: ""
    if not log:
        out["problems"].append(f"{path} has never been committed; commit the plan before analysing")
        return out
    lines = log.splitlines()
    out["commit"], out["commit_date"] = lines[0].split(" ", 1)
    out["added_in"] = lines[-1].split(" ", 1)[0]
    prefix = _git(folder, "rev-parse", "--show-prefix") or ""
    blob = _git_bytes(folder, "show", f"{out['commit']}:{prefix}{name}")
    out["committed_sha256"] = hashlib.sha256(blob).hexdigest() if blob is not None else None
    status = _git(folder, "status", "--porcelain", "--", name)
    if status:
        out["problems"].append(f"{path} has uncommitted changes (git status: {status.splitlines()[0].strip()})")
    if out["committed_sha256"] != out["sha256"]:
        out["problems"].append(f"{path} differs from the version committed in {out['commit'][:12]} "
                               f"(sha256 {out['sha256'][:12]} ≠ {str(out['committed_sha256'])[:12]})")
    out["committed"] = not out["problems"]
    return out


def studied_cases(folder: Path) -> set[str]:
    """The case ids a results folder studied (its trace's cases, or else its edits' cases)."""
    from experiments.config import excluded_case_ids

    return excluded_case_ids(str(folder))


def refuse_overlap(out_dir: Path, design: ModelDesign) -> None:
    """A confirmatory run may study no fact of the exploratory run: one-line error otherwise."""
    overlap = studied_cases(out_dir) & studied_cases(Path(design.exploratory))
    if overlap:
        raise PlanError(f"{out_dir}: {len(overlap)} of its studied facts were studied by the exploratory run "
                        f"{design.exploratory} (e.g. case {min(overlap, key=str)}), so it cannot be "
                        f"confirmatory; rerun into a new --out with exclude_facts_from: [{design.exploratory}]")


def _same_folder(a: str, b: str) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def setting_mismatches(out_dir: Path, run_info: dict, design: ModelDesign) -> list[str]:
    """How the run's settings differ from the plan's design for its model (empty: they match)."""
    cfg = run_info.get("config", {})
    found = []
    for key in ("noise_draws", "partner_draws", "seed", "trace_seed"):
        if key in cfg and cfg[key] != getattr(design, key):
            found.append(f"{key} is {cfg[key]!r}, the plan says {getattr(design, key)!r}")
        elif key not in cfg:
            found.append(f"run.json does not record {key}")
    if not any(_same_folder(d, design.exploratory) for d in cfg.get("exclude_facts_from") or []):
        found.append(f"exclude_facts_from {cfg.get('exclude_facts_from')!r} does not name the plan's exploratory "
                     f"run {design.exploratory}")
    edits = Path(out_dir) / "edits.parquet"
    layers = sorted(int(x) for x in pd.read_parquet(edits, columns=["layer"]).layer.unique()) if edits.is_file() else []
    if layers != sorted(design.edit_layers):
        found.append(f"edit layers are {layers}, the plan says {sorted(design.edit_layers)}")
    n = len(studied_cases(out_dir))
    if design.n_facts is not None and n != design.n_facts:
        found.append(f"{n} facts were studied, the plan says {design.n_facts}")
    if design.n_facts is None and cfg.get("max_facts") is not None:
        found.append(f"max_facts is {cfg.get('max_facts')}, the plan studies every held-out fact (null)")
    done = set(run_info.get("completed_stages", {}))
    missing = [s for s in design.stages if s not in done]
    if missing:
        found.append(f"planned stages not finished: {', '.join(missing)}")
    return found


@dataclass
class PlanStatus:
    """The label of an analysis and why; the plan's provenance; when the label was given."""

    label: str
    reasons: list[str]
    model: str
    plan: dict
    checked_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.label == CONFIRMATORY:
            return (f"CONFIRMATORY: plan {self.plan['path']} (sha256 {self.plan['sha256'][:12]}, committed in "
                    f"{self.plan['commit'][:12]} on {self.plan['commit_date']}); held-out facts; settings as planned")
        return "EXPLORATORY (not confirmatory): " + "; ".join(self.reasons)


def confirmatory_status(out_dir: Path, plan: AnalysisPlan, model: str, run_info: dict) -> PlanStatus:
    """The label of analysing ``out_dir`` under ``plan`` (see the module docstring); overlap is refused."""
    design = plan.model(model)
    refuse_overlap(out_dir, design)
    prov = plan_provenance(plan.path)
    reasons = list(prov["problems"]) + setting_mismatches(out_dir, run_info, design)
    return PlanStatus(EXPLORATORY if reasons else CONFIRMATORY, reasons, model, prov)


def plan_exclusions(plan_path: str, model: str) -> list[str] | None:
    """The exclude_facts_from of a confirmatory run: the plan's exploratory run of ``model`` (None when the
    plan cannot be read or does not cover the model: the config check then names the problem)."""
    from causaleval.analysis.plan import load_plan

    try:
        return [load_plan(plan_path).model(Path(model).name).exploratory]
    except PlanError:
        return None


def refuse_planned_overlap(out_dir: Path, cfg) -> None:
    """Before a confirmatory run (``cfg.plan``) writes into ``out_dir``: facts it already studied must not
    overlap the exploratory run's (one-line ConfigError)."""
    from causaleval.analysis.plan import load_plan
    from causaleval.errors import ConfigError
    from experiments.config import CASE_TABLES

    if not any((Path(out_dir) / t).is_file() for t in CASE_TABLES):
        return
    try:
        refuse_overlap(Path(out_dir), load_plan(cfg.plan).model(Path(cfg.model).name))
    except PlanError as err:
        raise ConfigError(str(err)) from err
