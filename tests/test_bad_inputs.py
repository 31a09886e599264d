"""Bad inputs to the study command: each is a short error naming the input, exit code 2, and no results folder
left behind.  Most fail before the model loads (a saved tiny GPT-2 stands in for a real model folder)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from causaleval.data.geofacts import build_facts
from causaleval.model.testing import save_tiny_model
from experiments.main import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))


# the tiny model has 4 layers: windows that fit it (the presets' 10 and 5 are checked against its depth)
TINY = ["--set", "trace_window=2", "--set", "analysis_window=3"]


def _records(n=3):
    return [f.to_record() for f in build_facts(seed=0, relations=["P36"])[:n]]


def _write(path, records):
    path.write_text(json.dumps(records))
    return str(path)


def _broken_model(kind, model_dir, tmp_path):
    """A copy of the tiny model folder, broken as ``kind`` says."""
    folder = tmp_path / f"model-{kind}"
    shutil.copytree(model_dir, folder)
    weights = folder / "model.safetensors"
    if kind == "config-only":
        for p in folder.iterdir():
            if p.name != "config.json":
                p.unlink()
    elif kind == "garbage-safetensors":
        weights.write_bytes(b"not a safetensors file" * 50)
    elif kind == "truncated-safetensors":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif kind == "pickled-bin":
        state = {k: torch.zeros(1) for k in ("w",)}
        torch.save(state, folder / "pytorch_model.bin")
        weights.unlink()
    return str(folder)


def _case(name, tmp_path, model_dir):
    """(argv without --out, text the error must contain) for each bad input."""
    m = ["--model", str(model_dir), "--preset", "smoke", "--set", "trace_layers=0,1", "--stage", "facts", *TINY]
    if name == "facts-not-utf8":
        bad = tmp_path / "latin1.json"
        recs = _records()
        recs[0]["requested_rewrite"]["subject"] = "Bogot\u00e1"
        bad.write_bytes(json.dumps(recs, ensure_ascii=False).encode("latin-1"))
        return m + ["--facts", str(bad)], [str(bad), "UTF-8"]
    if name == "case-id-path":
        recs = _records()
        recs[1]["case_id"] = "../../x"
        return m + ["--facts", _write(tmp_path / "cf.json", recs)], ["case_id '../../x'", "cf.json"]
    if name == "case-id-negative":
        recs = _records()
        recs[1]["case_id"] = -4
        return m + ["--facts", _write(tmp_path / "cf.json", recs)], ["case_id -4", "cf.json"]
    if name == "million-char-subject":
        recs = _records()
        recs[0]["requested_rewrite"]["subject"] = "A" * 1_000_000
        return m + ["--facts", _write(tmp_path / "cf.json", recs)], ["requested_rewrite.subject", "1,000,000 characters"]
    if name == "facts-missing":
        return m + ["--facts", str(tmp_path / "nope.json")], ["--facts", "nope.json", "no such file"]
    if name == "facts-not-json":
        (tmp_path / "cf.json").write_text("{{{ not json")
        return m + ["--facts", str(tmp_path / "cf.json")], ["cf.json", "not JSON"]
    if name == "facts-empty-list":
        return m + ["--facts", _write(tmp_path / "cf.json", [])], ["cf.json", "no records"]
    if name == "relations-not-in-facts":
        return (m + ["--facts", _write(tmp_path / "cf.json", _records()), "--relations", "P999"],
                ["--relations P999", "P36"])
    if name == "relations-unknown-builtin":
        return m + ["--relations", "P999"], ["--relations", "P999", "P36 (capital)"]
    if name == "out-under-a-file":
        return m + ["--out", str(tmp_path / "a-file" / "sub")], ["--out", "a-file is a file"]
    if name == "out-is-file":
        return m + ["--out", str(tmp_path / "a-file")], ["--out", "a-file", "existing file"]
    if name in ("config-only", "garbage-safetensors", "truncated-safetensors", "pickled-bin"):
        folder = _broken_model(name, model_dir, tmp_path)
        expect = {"config-only": ["has no weights"], "garbage-safetensors": ["model.safetensors", "corrupt"],
                  "truncated-safetensors": ["model.safetensors", "truncated"],
                  "pickled-bin": ["pytorch_model.bin", "safetensors"]}[name]
        return ["--model", folder] + m[2:], expect
    if name == "model-is-a-file":
        (tmp_path / "weights.bin").write_bytes(b"x")
        return ["--model", str(tmp_path / "weights.bin")] + m[2:], ["weights.bin", "is a file"]
    if name == "model-not-found":
        return ["--model", "no-such-org/no-such-model"] + m[2:], ["no-such-org/no-such-model", "hf download"]
    if name == "device-unknown":
        return m + ["--device", "gpu0"], ["--device", "'gpu0'", "cpu, cuda"]
    if name == "device-cuda-index":
        return m + ["--device", "cuda:7"], ["--device", "cuda:7"]
    if name == "batch-size-0":
        return m + ["--batch-size", "0"], ["--batch-size", "0", "at least 1"]
    if name == "max-facts-0":
        return m + ["--max-facts", "0"], ["--max-facts", "0", "at least 1"]
    if name == "max-facts-negative":
        return m + ["--max-facts", "-3"], ["--max-facts", "-3", "at least 1"]
    if name == "edit-layer-out-of-range":
        return m + ["--edit-layers", "0", "99"], ["--edit-layers", "0 99", "layers 0–3"]
    if name == "edit-layer-negative":
        return m + ["--edit-layers", "-1"], ["--edit-layers", "-1"]
    if name == "trace-layer-out-of-range":
        return m + ["--set", "trace_layers=0,29"], ["trace_layers", "layers 0–3"]
    if name == "seed-negative":
        return m + ["--seed", "-1"], ["--seed", "-1"]
    if name == "unknown-setting":
        return m + ["--set", "noise_drawz=3"], ["noise_drawz", "unknown setting"]
    if name == "bad-setting-type":
        return m + ["--set", "noise_draws=many"], ["noise_draws", "'many'"]
    if name == "set-without-equals":
        return m + ["--set", "noise_draws"], ["--set 'noise_draws'", "key=value"]
    if name == "unknown-estimator":
        return m + ["--set", "trace_estimators=noise,magic"], ["trace_estimators", "noise, resample, flip"]
    if name == "bad-key-mode":
        return m + ["--set", "rome_key_mode=sideways"], ["rome_key_mode", "sideways"]
    if name == "unknown-rome-hparam":
        return m + ["--set", "rome_hparams.v_lrr=0.1"], ["v_lrr", "unknown ROME hyperparameter"]
    if name == "rome-hparam-out-of-range":
        return m + ["--set", "rome_hparams.v_num_grad_steps=0"], ["v_num_grad_steps", "at least 1"]
    if name == "config-file-unknown-key":
        (tmp_path / "c.yaml").write_text("noise_draws: 3\nnoize: 1\n")
        return m + ["--config", str(tmp_path / "c.yaml")], ["c.yaml", "'noize'"]
    if name == "config-file-not-yaml":
        (tmp_path / "c.yaml").write_text("a: [1, 2\n")
        return m + ["--config", str(tmp_path / "c.yaml")], ["c.yaml", "not valid YAML"]
    if name == "config-file-missing":
        return m + ["--config", str(tmp_path / "none.yaml")], ["none.yaml", "not found"]
    if name == "rome-hparams-memit":
        (tmp_path / "h.json").write_text(json.dumps({"layers": [3, 4, 5], "v_lr": 0.5}))
        return m + ["--rome-hparams", str(tmp_path / "h.json")], ["h.json", "MEMIT"]
    if name == "stage-unknown":
        return m + ["--stage", "nope"], ["--stage", "unknown stage 'nope'"]
    raise AssertionError(name)


CASES = ["facts-not-utf8", "case-id-path", "case-id-negative", "million-char-subject", "facts-missing",
         "facts-not-json", "facts-empty-list", "relations-not-in-facts", "relations-unknown-builtin", "out-is-file", "out-under-a-file",
         "config-only", "garbage-safetensors", "truncated-safetensors", "pickled-bin", "model-is-a-file",
         "model-not-found", "device-unknown", "device-cuda-index", "batch-size-0", "max-facts-0",
         "max-facts-negative", "edit-layer-out-of-range", "edit-layer-negative", "trace-layer-out-of-range",
         "seed-negative", "unknown-setting", "bad-setting-type", "set-without-equals", "unknown-estimator",
         "bad-key-mode", "unknown-rome-hparam", "rome-hparam-out-of-range", "config-file-unknown-key",
         "config-file-not-yaml", "config-file-missing", "rome-hparams-memit", "stage-unknown"]


def _run(argv, capsys):
    code = main(argv + ["--quiet"])
    err = capsys.readouterr().err
    return code, err[err.find("error: "):] if "error: " in err else err   # drop library progress bars


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_a_named_error_and_leaves_no_folder(name, tmp_path, model_dir, capsys, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("CAUSALEVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv, expected = _case(name, tmp_path, model_dir)
    out = tmp_path / "results"
    if "--out" not in argv:
        argv = argv + ["--out", str(out)]
    code, err = _run(argv, capsys)
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) <= 2, err
    for text in expected:
        assert text in err, (text, err)
    assert not out.exists()


def test_cuda_without_cuda_is_a_named_error(tmp_path, model_dir, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so --device cuda is valid here")
    code, err = _run(["--model", str(model_dir), "--device", "cuda", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "--device" in err and "CUDA is not available" in err
    assert not (tmp_path / "r").exists()


def test_prompt_longer_than_the_context_is_rejected_before_any_forward_pass(tmp_path, model_dir, capsys, monkeypatch):
    recs = _records()
    recs[2]["paraphrase_prompts"] = ["word " * 300 + "is in"]
    facts = _write(tmp_path / "cf.json", recs)
    from experiments.stages import facts as facts_stage

    monkeypatch.setattr(facts_stage, "known_filter", lambda *a, **k: pytest.fail("a forward pass ran"))
    code, err = _run(["--model", str(model_dir), "--facts", facts, "--stage", "facts", "--out",
                      str(tmp_path / "r"), *TINY], capsys)
    assert code == 2
    assert f"case_id {recs[2]['case_id']}" in err and "paraphrase_prompts" in err and "context of 128 tokens" in err
    assert not (tmp_path / "r").exists()


def test_zero_known_facts_stops_at_the_facts_stage(tmp_path, model_dir, capsys):
    # the tiny random model knows none of these facts
    out = tmp_path / "r"
    code, err = _run(["--model", str(model_dir), "--facts", _write(tmp_path / "cf.json", _records(4)),
                      "--out", str(out), "--set", "trace_layers=0", *TINY], capsys)
    assert code == 2
    assert "none of the 4 facts is known" in err and "facts_filter.parquet" in err
    assert not (out / "trace.parquet").exists() and not (out / "facts.jsonl").exists()


def test_corrupt_run_json_is_named(tmp_path, model_dir, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "run.json").write_text('{"config": {"seed": 0')
    code, err = _run(["--model", str(model_dir), "--out", str(out), "--set", "trace_layers=0", *TINY], capsys)
    assert code == 2 and str(out / "run.json") in err and "corrupt" in err


@pytest.mark.parametrize("force", [False, True])
def test_corrupt_stage_output_not_rerun_is_named(tmp_path, model_dir, capsys, force):
    out = tmp_path / "r"
    out.mkdir()
    from causaleval.runs.store import atomic_write_bytes

    atomic_write_bytes(out / "trace_summary.parquet", b"PAR1 garbage")     # written (recorded) by the package
    argv = ["--model", str(model_dir), "--out", str(out), "--stage", "analyze", "--set", "trace_layers=0", *TINY]
    code, err = _run(argv + (["--force"] if force else []), capsys)
    assert code == 2 and "trace_summary.parquet is corrupt" in err and "--stage trace" in err


def test_no_traceback_from_a_subprocess(tmp_path, model_dir):
    """The command line itself (not only main()) prints one line and exits 2."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-m", "experiments.main", "--model", str(model_dir), "--max-facts", "-3",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "--max-facts" in proc.stderr
    assert not (tmp_path / "r").exists()


# Settings that used to pass --print-config and fail only after the model had loaded: each is now refused by
# --print-config and, in a real run, before the model loads.  (--set value, text the error must contain)
SETTING_CASES = {
    "support-quantile-1.5": (["support_quantile=1.5"], ["support_quantile", "1.5", "must be less than 1"]),
    "support-draws-0": (["support_draws=0"], ["support_draws", "must be at least 1"]),
    "support-noise-scales-negative": (["support_noise_scales=-1,2"],
                                      ["support_noise_scales", "-1.0 must be greater than 0"]),
    "support-noise-scales-empty": (["support_noise_scales=[]"], ["support_noise_scales", "give at least one value"]),
    "noise-scale-factor-inf": (["noise_scale_factor=inf"], ["noise_scale_factor", "finite"]),
    "trace-window-1000": (["trace_window=1000"], ["trace_window", "at most 512"]),
    "n-bootstrap-1e9": (["n_bootstrap=1e9"], ["n_bootstrap", "at most 1,000,000", "memory"]),
    "noise-draws-1e9": (["noise_draws=1e9"], ["noise_draws", "at most 10,000"]),
    "support-reference-facts-0": (["support_reference_facts=0"], ["support_reference_facts", "at least 6"]),
    "support-min-reference-negative": (["support_min_reference=-1"], ["support_min_reference", "at least 6"]),
    "v-lr-negative": (["rome_hparams.v_lr=-0.5"], ["v_lr", "-0.5", "greater than 0"]),
    "v-lr-nan": (["rome_hparams.v_lr=nan"], ["v_lr", "finite"]),
    "relations-duplicated": (["relations=P36,P36"], ["--relations", "'P36' more than once"]),
    "trace-layers-duplicated": (["trace_layers=0,0"], ["trace_layers", "0 more than once"]),
    "edit-layers-duplicated": (["edit_layers=1,1"], ["--edit-layers", "1 more than once"]),
    "dtype-float16-on-cpu": (["dtype=float16"], ["--dtype", "float16", "not supported on the CPU"]),
    "heatmap-cases-huge": (["heatmap_cases=1e12"], ["heatmap_cases", "at most 1,000,000"]),
    "rome-batch-cases-0": (["rome_batch_cases=0"], ["rome_batch_cases", "at least 1"]),
    "trace-batch-cases-0": (["trace_batch_cases=0"], ["trace_batch_cases", "at least 1"]),
    "seed-huge": (["seed=100000000000000000000"], ["--seed", "at most 4,294,967,295"]),
}


@pytest.mark.parametrize("name", SETTING_CASES)
def test_bad_setting_is_refused_by_print_config(name, capsys):
    sets, expected = SETTING_CASES[name]
    code, err = _run(["--preset", "smoke", "--print-config", *[a for s in sets for a in ("--set", s)]], capsys)
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err, (text, err)


@pytest.mark.parametrize("name", SETTING_CASES)
def test_bad_setting_fails_before_the_model_loads(name, tmp_path, model_dir, capsys, monkeypatch):
    from experiments import context

    monkeypatch.setattr(context, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    sets, expected = SETTING_CASES[name]
    out = tmp_path / "results"
    argv = ["--model", str(model_dir), "--preset", "smoke", "--set", "trace_layers=0,1", *TINY, "--out", str(out)]
    code, err = _run(argv + [a for s in sets for a in ("--set", s)], capsys)
    assert code == 2 and all(text in err for text in expected), err
    assert not out.exists()


def _bomb(path, depth):
    text = "[" * depth + "]" * depth
    path.write_text(text if path.suffix == ".json" else text + "\n")
    return str(path)


LINK_CASES = ["bomb-json", "bomb-jsonl", "out-dangling-link", "out-link-loop", "out-under-dangling-link",
              "facts-dangling-link", "model-dangling-link", "config-link-loop", "max-facts-above-source-facts"]


def _link_case(name, tmp_path, model_dir):
    m = ["--model", str(model_dir), "--preset", "smoke", "--set", "trace_layers=0,1", *TINY]
    if name.startswith("bomb-"):
        path = tmp_path / f"bomb.{name.split('-')[1]}"
        return m + ["--facts", _bomb(path, 100_000)], [str(path), "nested 100,000 levels deep", "limit 8"]
    if name == "out-dangling-link":
        (tmp_path / "link").symlink_to(tmp_path / "gone")
        return m + ["--out", str(tmp_path / "link")], ["--out", "symbolic link to", "gone, which does not exist"]
    if name == "out-link-loop":
        (tmp_path / "a").symlink_to(tmp_path / "b")
        (tmp_path / "b").symlink_to(tmp_path / "a")
        return m + ["--out", str(tmp_path / "a")], ["--out", "symbolic link in a loop"]
    if name == "out-under-dangling-link":
        (tmp_path / "link").symlink_to(tmp_path / "gone")
        return m + ["--out", str(tmp_path / "link" / "sub")], ["--out", "link is a symbolic link", "does not exist"]
    if name == "facts-dangling-link":
        (tmp_path / "cf.json").symlink_to(tmp_path / "moved.json")
        return m + ["--facts", str(tmp_path / "cf.json")], ["--facts", "moved.json, which does not exist"]
    if name == "model-dangling-link":
        (tmp_path / "model").symlink_to(tmp_path / "old-model")
        return ["--model", str(tmp_path / "model")] + m[2:], ["--model", "old-model, which does not exist"]
    if name == "config-link-loop":
        (tmp_path / "c.yaml").symlink_to(tmp_path / "c.yaml")
        return m + ["--config", str(tmp_path / "c.yaml")], ["--config", "c.yaml is a symbolic link in a loop"]
    if name == "max-facts-above-source-facts":
        return m + ["--facts", _write(tmp_path / "cf.json", _records(3)), "--max-facts", "5"], \
            ["--max-facts", "5", "more than the 3 facts of", "cf.json"]
    raise AssertionError(name)


@pytest.mark.parametrize("name", LINK_CASES)
def test_bad_file_or_link_is_a_named_error_before_the_model_loads(name, tmp_path, model_dir, capsys, monkeypatch):
    from experiments import context

    monkeypatch.setenv("CAUSALEVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(context, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    argv, expected = _link_case(name, tmp_path, model_dir)
    out = tmp_path / "results"
    code, err = _run(argv + ([] if "--out" in argv else ["--out", str(out)]), capsys)
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err, (text, err)
    assert not out.exists()
    if name.startswith("out-"):
        assert not (tmp_path / "gone").exists()


def test_json_bomb_from_the_command_line_has_no_traceback(tmp_path, model_dir):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    for suffix in (".json", ".jsonl"):
        bomb = _bomb(tmp_path / f"bomb{suffix}", 1_000_000)
        proc = subprocess.run([sys.executable, "-m", "experiments.main", "--model", str(model_dir), "--facts", bomb,
                               "--stage", "facts", *TINY, "--out", str(tmp_path / "r")], capture_output=True, text=True,
                              env=env)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and "nested" in proc.stderr, proc.stderr


def test_report_of_an_analysis_that_kept_no_case_is_a_named_error(tmp_path):
    """Every case below the TE floor: the report stage says so instead of failing on an empty table."""
    from causaleval.errors import CausalEvalError
    from experiments.stages.report import build_report

    (tmp_path / "analysis").mkdir()
    note = "6 cases excluded: TE below the floor 0.05 for at least one estimator"
    (tmp_path / "analysis" / "summary.json").write_text(json.dumps(
        {"variants": {"default": {"n_cases": 0, "notes": [note], "layers": []}}}))
    with pytest.raises(CausalEvalError, match="kept no case .*TE below the floor"):
        build_report(tmp_path)
