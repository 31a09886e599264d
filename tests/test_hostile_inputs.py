"""Bad inputs found by a hostile probe (issue 34): facts that make no sense, model folders with missing or
misshapen tensors, paths the file system refuses, oversized or over-deep settings.  Each is one line naming
the input (exit 2 from the command), never a traceback, a hang or a silent run."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from safetensors.torch import load_file, save_file

from causaleval.data.counterfact import load_counterfact
from causaleval.data.geofacts import build_facts
from causaleval.errors import DataError, ModelFileError
from causaleval.model.loading import load_model
from causaleval.model.testing import save_tiny_model
from experiments.main import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAUSALEVAL_CACHE", str(tmp_path / "cache"))


def _records(n=3):
    return [f.to_record() for f in build_facts(seed=0, relations=["P36"])[:n]]


def _run(argv, capsys):
    code = main(argv + ["--quiet"])
    err = capsys.readouterr().err
    return code, err[err.find("error: "):] if "error: " in err else err


# ------------------------------------------------------------------------------------------------
# facts that make no sense: (how the first record is broken, text the error must contain)

def _rw(**kw):
    def f(rec):
        rec["requested_rewrite"].update(kw)
    return f


def _set(key, value):
    def f(rec):
        rec[key] = value
    return f


FACT_CASES = {
    "target-new-equals-true": (lambda r: r["requested_rewrite"]["target_new"].update(
        str=r["requested_rewrite"]["target_true"]["str"]), "equals target_true"),
    "nan-subject": (_rw(subject=float("nan")), "requested_rewrite.subject' must be a non-empty string"),
    "null-relation": (_rw(relation_id=None), "relation_id' must be a non-empty string"),
    "list-relation": (_rw(relation_id=["P36"]), "relation_id' must be a non-empty string"),
    "int-relation": (_rw(relation_id=36), "relation_id' must be a non-empty string"),
    "two-placeholders": (_rw(prompt="The capital of {} is the capital of {}"), "2 '{}' placeholders"),
    "nul-subject": (_rw(subject="Fra\x00nce"), "control character '\\x00'"),
    "space-only-subject": (_rw(subject="\u3000 \u200b"), "requested_rewrite.subject' must be a non-empty string"),
    "surrogate-subject": (_rw(subject="Fr\ud800ance"), "lone surrogate"),
    "superscript-case-id": (_set("case_id", "1\u00b9"), "case_id '1¹' is not a non-negative integer"),
    "huge-case-id": (_set("case_id", 2**70), "out of range"),
    "nul-paraphrase": (_set("paraphrase_prompts", ["a\x00b"]), "paraphrase_prompts' holds a prompt that holds"),
}


@pytest.mark.parametrize("name", FACT_CASES)
def test_fact_that_makes_no_sense_is_refused_by_file_case_and_field(name, tmp_path):
    breaker, expected = FACT_CASES[name]
    recs = _records()
    breaker(recs[0])
    path = tmp_path / "cf.json"
    path.write_text(json.dumps(recs))
    with pytest.raises(DataError) as info:
        load_counterfact(path)
    msg = str(info.value)
    assert expected in msg and str(path) in msg and "\n" not in msg, msg


@pytest.mark.parametrize("text, expected", [
    ("null", "record 1 is null"),                      # before: segmentation fault (exit −11) in arrow
    ("[null]", "record 1 is null"),
    ("[1, 2]", "record 1 is int"),
    ('"records"', "record 1 is str"),
    ('{"a": 1}', "missing field 'case_id'"),
    ("null\nnull\n", "record 1 is null"),
    ('{"case_id": 1}\n[1]\n', "record 2 is list"),
    ("[" + "9" * 5000 + "]", "cannot be read"),
])
def test_facts_file_of_another_shape_is_one_line(text, expected, tmp_path):
    path = tmp_path / "cf.json"
    path.write_text(text)
    with pytest.raises(DataError, match=expected):
        load_counterfact(path)


def test_facts_file_holding_null_exits_2_through_the_command(tmp_path, model_dir, capsys):
    """Before: the process died with a segmentation fault (exit −11)."""
    (tmp_path / "cf.json").write_text("null")
    code, err = _run(["--model", str(model_dir), "--preset", "smoke", "--stage", "facts", "--set", "trace_window=2",
                      "--set", "analysis_window=3", "--set", "trace_layers=0,1", "--facts", str(tmp_path / "cf.json"),
                      "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and err.startswith("error: ") and "cf.json" in err and len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------------------------------------
# model folders whose tensors do not match their config

def _variant(model_dir, tmp_path, kind):
    folder = tmp_path / f"model-{kind}"
    shutil.copytree(model_dir, folder)
    weights = load_file(folder / "model.safetensors")
    cfg = json.loads((folder / "config.json").read_text())
    if kind == "missing-tensor":
        weights.pop("transformer.h.1.mlp.c_proj.weight")
    elif kind == "more-layers-than-weights":
        cfg["n_layer"] = 6
    elif kind == "other-width":
        cfg["n_embd"] *= 2
    elif kind == "other-vocabulary":
        cfg["vocab_size"] += 10
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("kind, expected", [
    ("missing-tensor", "transformer.h.1.mlp.c_proj.weight"),          # before: initialised at random, exit 0
    ("more-layers-than-weights", "24 weight tensor(s) the config asks for"),
    ("other-width", "other shapes than config.json says"),            # before: RuntimeError traceback
    ("other-vocabulary", "transformer.wte.weight (file (400, 32), config (410, 32))"),
])
def test_model_folder_whose_tensors_do_not_match_its_config_is_refused(kind, expected, model_dir, tmp_path):
    folder = _variant(model_dir, tmp_path, kind)
    with pytest.raises(ModelFileError) as info:
        load_model(str(folder))
    assert expected in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_tokenizer_larger_than_the_embeddings_is_refused(model_dir, tmp_path):
    from causaleval.model.testing import tiny_tokenizer

    folder = tmp_path / "model-big-tokenizer"
    shutil.copytree(model_dir, folder)
    tiny_tokenizer(vocab_size=600).save_pretrained(folder)
    with pytest.raises(ModelFileError, match="the tokenizer has 6[0-9][0-9] tokens but the embedding matrix only 400"):
        load_model(str(folder))


def test_missing_tensor_exits_2_through_the_command(model_dir, tmp_path, capsys):
    folder = _variant(model_dir, tmp_path, "missing-tensor")
    code, err = _run(["--model", str(folder), "--preset", "smoke", "--stage", "facts", "--set", "trace_window=2",
                      "--set", "analysis_window=3", "--set", "trace_layers=0,1", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "c_proj.weight" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------------
# the command line: paths, sizes, depths

LONG = "a" * 300      # one path component longer than any file system allows (errno 36)


def _files(tmp_path):
    (tmp_path / "longmodel.json").write_text(json.dumps({"model": "x" * 5000}))
    (tmp_path / "bigint.yaml").write_text("seed: " + "9" * 5000 + "\n")
    (tmp_path / "deep.json").write_text('{"v_lr": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (tmp_path / "biglist.json").write_text(json.dumps([list(range(1_000_000))]))
    (tmp_path / "layers.json").write_text(json.dumps({"edit_layers": list(range(100_000))}))


CLI_CASES = {     # argv, texts the error must contain, whether it must take < 1 s
    "set-preset-unknown": (["--preset", "smoke", "--set", "preset=nope"], ["--set preset", "'nope'"], False),
    "config-model-5000-chars": (["--config", "{d}/longmodel.json"], ["--model", "5,000 characters"], False),
    "set-int-5000-digits": (["--set", "seed=" + "9" * 5000], ["'seed'", "4300 digits"], True),
    "config-int-5000-digits": (["--config", "{d}/bigint.yaml"], ["bigint.yaml", "4300 digits"], True),
    "rome-hparams-deep": (["--rome-hparams", "{d}/deep.json"], ["deep.json", "nested too deeply"], True),
    "config-million-items": (["--config", "{d}/biglist.json"], ["biglist.json", "at most 1,000,000 bytes"], True),
    "config-100000-layers": (["--config", "{d}/layers.json"], ["edit_layers", "100,000 values"], True),
    "model-path-too-long": (["--model", f"{{d}}/{LONG}/m"], ["--model", "the file system allows"], False),
    "facts-path-too-long": (["--facts", f"{{d}}/{LONG}/f.json"], ["--facts", "the file system allows"], False),
    "config-path-too-long": (["--config", f"{{d}}/{LONG}/c.json"], ["--config", "the file system allows"], False),
    "rome-hparams-path-too-long": (["--rome-hparams", f"{{d}}/{LONG}/h.json"],
                                   ["--rome-hparams", "the file system allows"], False),
    "out-path-too-long": (["--out", f"{{d}}/{LONG}/o"], ["--out", "the file system allows"], False),
    "out-under-proc": (["--out", "/proc/causaleval-results"], ["--out", "/proc, a virtual file system"], False),
    "out-under-sys": (["--out", "/sys/kernel/causaleval-results"], ["--out", "/sys, a virtual file system"], False),
}


@pytest.mark.parametrize("name", CLI_CASES)
def test_command_line_input_is_one_line(name, tmp_path, capsys):
    _files(tmp_path)
    argv, expected, quick = CLI_CASES[name]
    argv = [a.replace("{d}", str(tmp_path)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "r")]
    main(["--preset", "smoke", "--print-config", "--quiet"])     # imports warmed up: the timing is the check's own
    capsys.readouterr()
    t0 = time.perf_counter()
    code, err = _run(argv + ["--print-config"], capsys)
    seconds = time.perf_counter() - t0
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err, (text, err)
    if quick:
        assert seconds < 1.0, f"took {seconds:.2f} s"


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: chmod 000 does not stop root from reading a file")
@pytest.mark.parametrize("flag", ["--facts", "--config"])
def test_unreadable_file_is_one_line(flag, tmp_path, model_dir, capsys):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(_records() if flag == "--facts" else {"seed": 1}))
    path.chmod(0)
    code, err = _run(["--model", str(model_dir), "--preset", "smoke", "--stage", "facts", flag, str(path),
                      "--set", "trace_window=2", "--set", "analysis_window=3", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "x.json" in err and "cannot be read" in err and len(err.strip().splitlines()) == 1, err


def test_a_path_the_file_system_refuses_anywhere_is_one_line(monkeypatch, capsys):
    """The last line of defence: any OSError about a path (PermissionError as root-less users get it,
    a read-only file system) ends in one line and exit 2, not a traceback."""
    from experiments import main as cli

    def refuse(argv):
        raise PermissionError(13, "Permission denied", "/data/counterfact.json")

    monkeypatch.setattr(cli, "run", refuse)
    code = cli.main(["--stage", "facts"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: /data/counterfact.json: Permission denied")
    assert len(err.strip().splitlines()) == 1


def test_unreadable_facts_file_is_a_data_error(tmp_path, monkeypatch):
    """As above without root's exemption: open() refusing the facts file becomes a DataError naming it."""
    path = tmp_path / "cf.json"
    path.write_text(json.dumps(_records()))
    real_open = open

    def fake_open(file, *a, **k):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(DataError, match="cf.json: cannot be read \\(Permission denied\\)"):
        load_counterfact(path)
