"""No network at run time: reading --facts (through ``datasets``) must not try to reach any host, even with
none of the Hugging Face offline switches set by the caller and an empty ``datasets`` cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from causaleval.data.geofacts import build_facts

ROOT = Path(__file__).resolve().parents[1]

# every attempt to resolve a host name or open a connection is recorded and refused
PROBE = """
import socket, sys
tried = []
def refuse(*args, **kwargs):
    tried.append(repr(args[:2]))
    raise OSError("network is not allowed in this test")
socket.getaddrinfo = refuse
socket.socket.connect = refuse
socket.create_connection = refuse
{imports}
facts = load_counterfact(sys.argv[1])
assert len(facts) == 3, facts
print("NETWORK-ATTEMPTS", len(tried), tried)
"""


@pytest.mark.parametrize("imports", [
    "from causaleval.data.counterfact import load_counterfact",                   # the API
    "import datasets, transformers\nfrom causaleval.data.counterfact import load_counterfact",  # imported first
    "import experiments.main\nfrom experiments.context import load_counterfact",  # the CLI's path
], ids=["api", "libraries-imported-first", "cli"])
def test_reading_facts_tries_no_network(tmp_path, imports):
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps([f.to_record() for f in build_facts(seed=0, relations=["P36"])[:3]]))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "TRANSFORMERS_")) and k != "PYTHONPATH"}
    env.update(CAUSALEVAL_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports), str(facts)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "NETWORK-ATTEMPTS 0 []" in out.stdout, out.stdout


def test_import_sets_the_offline_switches():
    code = ("import os, causaleval; from causaleval.offline import SWITCHES; "
            "print(all(os.environ[k] == v for k, v in SWITCHES.items()))")
    out = subprocess.run([sys.executable, "-c", code],
                         cwd=ROOT, env={k: v for k, v in os.environ.items() if not k.startswith("HF_")},
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr[-2000:]
