"""The CounterFact record schema (Meng et al. 2022) and a loader for local CounterFact files.

A record::

    {"case_id": 0, "requested_rewrite": {"prompt": "The capital of {} is", "relation_id": "P36",
      "subject": "France", "target_true": {"str": "Paris"}, "target_new": {"str": "Rome"}},
     "paraphrase_prompts": [...], "neighborhood_prompts": [...]}

``neighborhood_prompts`` are prompts about other subjects of the same relation sharing the true
answer.  Known-facts fields (``p_true``, ``clean_top1``) are added by :mod:`causaleval.data.known`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

from causaleval.errors import DataError

# Far above any fact prompt (CounterFact's longest is under 200 characters): longer text is a data error,
# caught before tokenising.  The model's own context length is checked on tokens (causaleval.data.tokens).
MAX_SUBJECT_CHARS = 1_000
MAX_PROMPT_CHARS = 10_000
# A CounterFact file nests 4 levels (list → record → requested_rewrite → target_true); deeper than
# MAX_DEPTH is refused before parsing (a deeply nested "JSON bomb" would exhaust the parser's recursion).
RECORD_DEPTH = 4
MAX_DEPTH = 8
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


_DIGITS = re.compile(r"[0-9]+")


def _visible(text: str) -> bool:
    """Whether ``text`` holds a character other than whitespace, controls and invisible format characters."""
    return any(not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf", "Zs", "Zl", "Zp") for ch in text)


def text_problem(text: str) -> str | None:
    """What makes ``text`` unusable as prompt text (a control character such as NUL, a lone surrogate), or None."""
    bad = next((ch for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\t\n"), None)
    if bad is not None:
        return f"holds the control character {bad!r} at position {text.index(bad)}; remove it"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"holds a lone surrogate {text[err.start]!r} at position {err.start}, which is not text; fix the file's encoding"
    return None


@dataclass
class Fact:
    case_id: int
    prompt: str
    relation_id: str
    subject: str
    target_true: str
    target_new: str
    paraphrase_prompts: list[str] = field(default_factory=list)
    neighborhood_prompts: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.prompt.replace("{}", self.subject, 1)

    def to_record(self) -> dict:
        rec = {
            "case_id": self.case_id,
            "requested_rewrite": {
                "prompt": self.prompt,
                "relation_id": self.relation_id,
                "subject": self.subject,
                "target_true": {"str": self.target_true},
                "target_new": {"str": self.target_new},
            },
            "paraphrase_prompts": list(self.paraphrase_prompts),
            "neighborhood_prompts": list(self.neighborhood_prompts),
        }
        rec.update(self.extra)
        return rec

    @classmethod
    def from_record(cls, rec: dict, source: str = "<records>") -> "Fact":
        """Validate one CounterFact record; errors name the source, the case_id and the field."""
        if not isinstance(rec, dict):
            raise DataError(f"{source}: a record is {type(rec).__name__}, expected a JSON object")
        cid = rec.get("case_id", "?")
        where = f"{source}, case_id {cid}"

        def need(obj, key, path):
            if not isinstance(obj, dict) or key not in obj or obj[key] is None:
                raise DataError(f"{where}: missing field '{path}'. Each record needs case_id, requested_rewrite."
                                "{prompt, relation_id, subject, target_true.str, target_new.str}")
            return obj[key]

        need(rec, "case_id", "case_id")
        if isinstance(cid, bool) or not (isinstance(cid, int) or (isinstance(cid, str) and _DIGITS.fullmatch(cid))):
            raise DataError(f"{source}: case_id {cid!r} is not a non-negative integer (case ids name result "
                            "files, so they must be integers as in CounterFact)")
        if int(cid) < 0 or int(cid) >= 2**63:
            raise DataError(f"{source}: case_id {cid!r} is out of range; CounterFact case ids are integers from 0 "
                            "to 2^63 − 1")
        rw = need(rec, "requested_rewrite", "requested_rewrite")
        prompt = need(rw, "prompt", "requested_rewrite.prompt")
        subject = need(rw, "subject", "requested_rewrite.subject")
        true = need(need(rw, "target_true", "requested_rewrite.target_true"), "str", "requested_rewrite.target_true.str")
        new = need(need(rw, "target_new", "requested_rewrite.target_new"), "str", "requested_rewrite.target_new.str")
        relation = rw.get("relation_id", "unknown")
        if not isinstance(relation, str) or not _visible(relation):
            raise DataError(f"{where}: field 'requested_rewrite.relation_id' must be a non-empty string such as "
                            f"'P36', got {relation!r}")
        for name, value in (("prompt", prompt), ("subject", subject), ("target_true.str", true), ("target_new.str", new)):
            if not isinstance(value, str) or not _visible(value):
                raise DataError(f"{where}: field 'requested_rewrite.{name}' must be a non-empty string, got {value!r}")
        for name, value in (("prompt", prompt), ("subject", subject), ("target_true.str", true),
                            ("target_new.str", new), ("relation_id", relation)):
            found = text_problem(value)
            if found:
                raise DataError(f"{where}: field 'requested_rewrite.{name}' {found}")
        if prompt.count("{}") > 1:
            raise DataError(f"{where}: field 'requested_rewrite.prompt' {prompt!r} has {prompt.count('{}')} '{{}}' "
                            "placeholders; it needs exactly one, where the subject goes")
        if true.strip() == new.strip():
            raise DataError(f"{where}: target_new {new!r} equals target_true; an edit needs a new answer that "
                            "differs from the true one")
        for name, value, limit in (("prompt", prompt, MAX_PROMPT_CHARS), ("subject", subject, MAX_SUBJECT_CHARS),
                                   ("target_true.str", true, MAX_SUBJECT_CHARS),
                                   ("target_new.str", new, MAX_SUBJECT_CHARS)):
            if len(value) > limit:
                raise DataError(f"{where}: field 'requested_rewrite.{name}' has {len(value):,} characters "
                                f"(limit {limit:,}); fix or drop this record")
        if "{}" not in prompt:
            raise DataError(f"{where}: field 'requested_rewrite.prompt' {prompt!r} has no '{{}}' where the subject "
                            f"{subject!r} goes")
        paraphrases = rec.get("paraphrase_prompts") or []
        neighbours = rec.get("neighborhood_prompts") or []
        for name, value in (("paraphrase_prompts", paraphrases), ("neighborhood_prompts", neighbours)):
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise DataError(f"{where}: field '{name}' must be a list of strings")
            found = next((f for f in map(text_problem, value) if f), None)
            if found:
                raise DataError(f"{where}: field '{name}' holds a prompt that {found}")
            if any(len(p) > MAX_PROMPT_CHARS for p in value):
                raise DataError(f"{where}: field '{name}' holds a prompt of more than {MAX_PROMPT_CHARS:,} "
                                "characters; fix or drop this record")
        known = {"case_id", "requested_rewrite", "paraphrase_prompts", "neighborhood_prompts"}
        extra = {k: v for k, v in rec.items() if k not in known}
        return cls(case_id=int(cid), prompt=prompt, relation_id=str(relation), subject=subject,
                   target_true=true.strip(), target_new=new.strip(), paraphrase_prompts=list(paraphrases),
                   neighborhood_prompts=list(neighbours), extra=extra)


def load_counterfact(path: str | Path) -> list[Fact]:
    """Read a local CounterFact JSON (a list of records) or JSON-lines file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CounterFact file {path} does not exist. Pass the path of a local copy with --facts "
                        "(e.g. counterfact.json from the ROME release), or omit --facts to use the built-in geography facts.")
    records = _records(path)
    facts = [Fact.from_record(rec, source=str(path)) for rec in records]
    seen: set[int] = set()
    for f in facts:
        if f.case_id in seen:
            raise DataError(f"{path}: case_id {f.case_id} occurs more than once")
        seen.add(f.case_id)
    return facts


def _records(path: Path) -> list[dict]:
    """The records of a JSON list or JSON-lines file, each a JSON object; anything else is a DataError naming
    the file (read with the standard library: no other shape ever reaches a parser that could crash)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: is not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8 JSON") from err
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror}); check its permissions") from err
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise DataError(f"{path}: JSON nested {depth:,} levels deep; a CounterFact record needs "
                        f"{RECORD_DEPTH} (limit {MAX_DEPTH}), so this is not a CounterFact file")
    stripped = text.lstrip()
    if not stripped:
        raise DataError(f"{path}: is empty; it should hold a JSON list of CounterFact records")
    try:
        if stripped[0] == "[":
            data = json.loads(text)
        else:
            data = []
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        data.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        if number == 1 and stripped[0] != "{":
                            raise DataError(f"{path}: is not JSON or JSON lines ({err}); expected CounterFact "
                                            "records") from err
                        raise DataError(f"{path}: line {number} is not JSON ({err})") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: is not valid JSON ({err})") from err
    except (ValueError, RecursionError) as err:        # e.g. an integer of more than 4,300 digits
        raise DataError(f"{path}: holds a value that cannot be read ({str(err).splitlines()[0]})") from err
    if not isinstance(data, list):
        raise DataError(f"{path}: holds a JSON {type(data).__name__}, expected a list of CounterFact records "
                        "(or one record per line)")
    if not data:
        raise DataError(f"{path}: contains no records")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {i + 1} is {'null' if rec is None else type(rec).__name__}, expected "
                            "a JSON object (a CounterFact record)")
    return data


def nesting_depth(text: str) -> int:
    """How deeply JSON ``text`` nests lists and objects (brackets inside strings do not count)."""
    import numpy as np

    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def write_jsonl(facts: list[dict], path: Path) -> None:
    from causaleval.runs.store import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in facts))


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; a corrupt file is a DataError naming the file (and line)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: is not UTF-8 text ({err.reason}); delete it and rerun the stage that wrote it") from err
    out = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: corrupt JSON at line {number} ({err.msg}); delete it and rerun the stage "
                                "that wrote it") from err
    return out


def facts_from_jsonl(path: Path) -> list[Fact]:
    return [Fact.from_record(r, source=str(path)) for r in read_jsonl(path)]


__all__ = ["Fact", "load_counterfact", "write_jsonl", "read_jsonl", "facts_from_jsonl", "asdict"]
