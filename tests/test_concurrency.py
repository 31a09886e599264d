"""Concurrent processes: one run per results folder (a lock a dead run does not leave stuck), and the model
and ROME statistics caches built once, never seen half-written.  Real subprocesses, synchronised at named
fault points (causaleval.runs.faults), so nothing depends on timing."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from causaleval.data.geofacts import build_facts
from causaleval.model.testing import save_tiny_model

pytestmark = pytest.mark.slow      # ~30 s each: every subprocess imports torch and transformers

TINY = ["--set", "trace_window=2", "--set", "analysis_window=3", "--set", "trace_layers=0,1"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))


def _start(args: list[str], tmp_path: Path, fault: str = "", name: str = "a") -> subprocess.Popen:
    """A Python subprocess running ``args``, with its own fault folder ``tmp_path/<name>``."""
    faults = tmp_path / f"faults-{name}"
    faults.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), CAUSALEVAL_CACHE=str(tmp_path / "cache"),
               CAUSALEVAL_FAULT=fault, CAUSALEVAL_FAULT_DIR=str(faults), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _reached(proc: subprocess.Popen, tmp_path: Path, point: str, name: str = "a", timeout: float = 300) -> None:
    """Wait until process ``name`` reports reaching ``point``; fail if it exits first."""
    flag = tmp_path / f"faults-{name}" / f"{point}.reached"
    deadline = time.time() + timeout
    while not flag.exists():
        if proc.poll() is not None:
            pytest.fail(f"process {name} exited ({proc.returncode}) before {point}: {proc.stderr.read()[-2000:]}")
        assert time.time() < deadline, f"process {name} never reached {point}"
        time.sleep(0.05)


def _go(tmp_path: Path, point: str, name: str = "a") -> None:
    (tmp_path / f"faults-{name}" / f"{point}.go").write_text("")


def _main(model_dir, out, facts) -> list[str]:
    return ["-m", "experiments.main", "--model", str(model_dir), "--preset", "smoke", *TINY, "--facts", str(facts),
            "--stage", "facts", "--out", str(out), "--quiet"]


@pytest.fixture
def facts_file(tmp_path):
    path = tmp_path / "cf.json"
    path.write_text(json.dumps([f.to_record() for f in build_facts(seed=0, relations=["P36"])[:4]]))
    return path


def test_a_second_run_into_a_live_runs_folder_is_refused(tmp_path, model_dir, facts_file):
    out = tmp_path / "r"
    first = _start(_main(model_dir, out, facts_file), tmp_path, "wait@write.facts_filter.parquet")
    _reached(first, tmp_path, "write.facts_filter.parquet")      # the first run is writing into out
    second = _start(_main(model_dir, out, facts_file), tmp_path, name="b")
    _, err = second.communicate(timeout=300)
    assert second.returncode == 2 and "Traceback" not in err, err
    assert f"--out {out}: another run is writing this folder (PID {first.pid}" in err, err
    assert "started" in err and "experiments.main" in err and "choose another --out" in err
    _go(tmp_path, "write.facts_filter.parquet")
    _, err = first.communicate(timeout=300)
    # the tiny random model knows none of the facts: the first run ends with that error, its table written
    assert first.returncode == 2 and "none of the 4 facts is known" in err, err
    assert (out / "facts_filter.parquet").is_file() and not (out / ".causaleval.lock").exists()


def test_a_killed_run_leaves_no_stuck_lock_and_no_half_written_file(tmp_path, model_dir, facts_file):
    out = tmp_path / "r"
    killed = _start(_main(model_dir, out, facts_file), tmp_path, "kill@write.facts_filter.parquet")
    killed.communicate(timeout=300)
    assert killed.returncode == -9
    lock = json.loads((out / ".causaleval.lock").read_text())       # left behind, with the dead run's details
    assert lock["pid"] == killed.pid and "experiments.main" in " ".join(lock["argv"])
    assert [p.name for p in out.iterdir() if ".tmp-" in p.name]      # killed inside the atomic writer
    again = _start(_main(model_dir, out, facts_file), tmp_path, name="b")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 2 and "another run" not in err and "none of the 4 facts is known" in err, err
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name or p.name == ".causaleval.lock"]


BUILD = """
import os, sys
from pathlib import Path
from causaleval.model.loading import build_once, check_weight_files
from causaleval.model.testing import save_tiny_model

def build(tmp):
    save_tiny_model(tmp)
    (Path(sys.argv[2]) / f"built-{os.getpid()}").write_text("")
    return "built", {"by": os.getpid()}

result = build_once(Path(sys.argv[1]), "key-1", build)
check_weight_files(Path(sys.argv[1]))
print(result or "reused")
"""


def test_the_model_cache_is_built_once_and_never_seen_partial(tmp_path):
    target = tmp_path / "cache" / "models" / "tiny"
    args = ["-c", BUILD, str(target), str(tmp_path)]
    first = _start(args, tmp_path, "wait@cache.build")
    _reached(first, tmp_path, "cache.build")          # built in a temporary folder, not yet renamed
    assert not target.exists()
    second = _start(args, tmp_path, "mark@cache.lock", name="b")
    _reached(second, tmp_path, "cache.lock", name="b")
    _go(tmp_path, "cache.build")
    out_a, err_a = first.communicate(timeout=300)
    out_b, err_b = second.communicate(timeout=300)
    assert (first.returncode, second.returncode) == (0, 0), err_a + err_b
    assert (out_a.split()[-1], out_b.split()[-1]) == ("built", "reused")
    assert [p.name for p in tmp_path.glob("built-*")] == [f"built-{first.pid}"]
    assert json.loads((target / "causaleval-source.json").read_text()) == {"key": "key-1", "by": first.pid}
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"]


def test_a_builder_killed_mid_build_leaves_no_partial_cache(tmp_path):
    target = tmp_path / "cache" / "models" / "tiny"
    args = ["-c", BUILD, str(target), str(tmp_path)]
    killed = _start(args, tmp_path, "kill@cache.build")
    killed.communicate(timeout=300)
    assert killed.returncode == -9 and not target.exists()
    assert [p for p in target.parent.iterdir() if p.name.startswith(".tmp-tiny-")]   # its temporary folder
    again = _start(args, tmp_path, name="b")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0 and out.split()[-1] == "built", err
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny"]


STATS = """
import json
from causaleval.editing.rome.hparams import RomeHyperParams
from causaleval.editing.rome.stats import SecondMoments
from causaleval.model.testing import tiny_model

stats = SecondMoments(tiny_model("gpt2"), RomeHyperParams(stat_tokens=256, stat_seq_len=32, stat_batch=8))
stats.ensure([0, 2])
print(json.dumps({"computed": stats.one_off_seconds > 0, "c0": stats.get(0).sum().item(),
                  "c2": stats.get(2).sum().item()}))
"""


def test_rome_statistics_are_computed_once_by_concurrent_runs(tmp_path):
    first = _start(["-c", STATS], tmp_path, "wait@stats.compute")
    _reached(first, tmp_path, "stats.compute")           # holds the statistics lock, nothing written yet
    second = _start(["-c", STATS], tmp_path, "mark@stats.lock", name="b")
    _reached(second, tmp_path, "stats.lock", name="b")   # found the cache empty, waits for the lock
    _go(tmp_path, "stats.compute")
    out_a, err_a = first.communicate(timeout=300)
    out_b, err_b = second.communicate(timeout=300)
    assert (first.returncode, second.returncode) == (0, 0), err_a + err_b
    a, b = json.loads(out_a.splitlines()[-1]), json.loads(out_b.splitlines()[-1])
    assert a["computed"] and not b["computed"]
    assert (a["c0"], a["c2"]) == (b["c0"], b["c2"])
    files = sorted(p.name for p in (tmp_path / "cache" / "rome").rglob("*") if p.is_file())
    assert not [f for f in files if ".tmp-" in f or f.endswith(".lock")], files
    assert sum(f.startswith("layer") and f.endswith(".npy") for f in files) == 2
    assert sum(f.startswith("corpus") and f.endswith(".json") for f in files) == 1
