"""The analysis plan of a confirmatory study: a YAML file, fixed (committed) before the held-out data are
analysed, that names the question, the primary test and everything the analysis may not choose later
(docs/confirmatory.md).

:func:`load_plan` reads and checks every field; a bad field is a :class:`PlanError` of one line that names
the file, the field and what to write instead.  The primary and secondary measures are keys of the
registry :data:`causaleval.inference.h1.MEASURES`, checked when the plan is loaded (at analyze time), so
a plan naming a measure this version does not have is refused before anything is computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from causaleval.analysis.spec import ESTIMATORS, SCORES, AnalysisSpec
from causaleval.errors import CausalEvalError

PLAN_VERSION = 1
DIRECTIONS = ("greater",)          # one-sided: a > b (the only alternative the study's question has)


class PlanError(CausalEvalError):
    """An analysis plan file is missing, unreadable or has a bad field."""


@dataclass(frozen=True)
class PrimaryTest:
    """The one test whose result the study reports as confirmatory: H1 on ``measure`` of ``score``,
    T_a − T_b one-sided (``direction`` greater), at level ``alpha``; the verdict's ``margin`` (a difference
    smaller than this does not matter for the question, with ``margin_reason``); ``wording``: the sentence
    the report prints, with ``{a}``, ``{b}``, ``{measure}`` and ``{score}`` filled in."""

    measure: str
    a: str
    b: str
    direction: str
    alpha: float
    margin: float
    margin_reason: str
    score: str
    wording: str
    n_permutations: int = 1999
    n_bootstrap: int = 1000
    power: float = 0.8
    power_reps: int = 400


@dataclass(frozen=True)
class Exclusions:
    """Which facts the analysis drops: TE at or below ``te_floor`` (metric p) for any estimator."""

    te_floor: float
    te_floor_ld: float = 0.5


@dataclass(frozen=True)
class ModelDesign:
    """The held-out run of one model: its facts (the known facts ``exploratory`` did not study; ``n_facts``
    of them, null = all), its draws, partners, edit layers and seeds, and where its raw results are."""

    name: str
    exploratory: str
    n_facts: int | None
    edit_layers: tuple[int, ...]
    noise_draws: int
    partner_draws: int
    seed: int
    trace_seed: int | None
    stages: tuple[str, ...]
    results: str
    publish: str


@dataclass(frozen=True)
class AnalysisPlan:
    """The whole plan (paper/plan.yaml)."""

    path: Path
    version: int
    question: str
    primary: PrimaryTest
    secondary_measures: tuple[str, ...]
    specification_curve: str
    covariates: tuple[str, ...]
    exclusions: Exclusions
    window: int
    effect: str
    component: str
    token_rule: str
    seed: int
    mdd_table: str
    models: dict[str, ModelDesign] = field(default_factory=dict)

    def model(self, name: str) -> ModelDesign:
        """The design of model ``name``; a model the plan does not cover is an error."""
        if name not in self.models:
            raise PlanError(f"{self.path}: models has no entry {name!r} (it covers {', '.join(self.models)}); "
                            "add one to the plan and commit it before analysing that model")
        return self.models[name]

    def spec(self) -> AnalysisSpec:
        """The analysis specification the plan fixes (window, effect, TE floors, bootstrap, seed, α)."""
        p = self.primary
        return AnalysisSpec(window=self.window, effect=self.effect, component=self.component,
                            token_rule=self.token_rule, te_floor=self.exclusions.te_floor,
                            te_floor_ld=self.exclusions.te_floor_ld, n_bootstrap=p.n_bootstrap,
                            n_permutations=p.n_permutations, power_reps=p.power_reps, seed=self.seed, alpha=p.alpha)

    def primary_sentence(self) -> str:
        p = self.primary
        return p.wording.format(a=p.a, b=p.b, measure=p.measure, score=p.score)


# ---------------------------------------------------------------------------------------------
# reading and checking


class _Fields:
    """Reads the fields of one mapping of the plan, each checked, errors naming file and dotted key."""

    def __init__(self, path: Path, data, where: str):
        self.path, self.where = path, where
        if not isinstance(data, dict):
            raise self.error("", f"expected a mapping, got {type(data).__name__}")
        self.data = data

    def error(self, key: str, what: str) -> PlanError:
        name = ".".join(k for k in (self.where, key) if k) or "the file"
        return PlanError(f"{self.path}: {name} {what}")

    def get(self, key: str, kind, *, default=..., low=None, high=None, choices=None, nullable=False):
        if key not in self.data:
            if default is ...:
                raise self.error(key, "is missing; every plan states it (see docs/confirmatory.md)")
            return default
        value = self.data[key]
        if value is None and nullable:
            return None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"{value!r} is not a {kind.__name__}{' or null' if nullable else ''}")
        if kind is str and not value.strip():
            raise self.error(key, "is empty; write it out")
        if choices is not None and value not in choices:
            raise self.error(key, f"{value!r} is not one of {', '.join(map(str, choices))}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.error(key, f"{value!r} is outside [{low}, {high}]")
        return value

    def strings(self, key: str, choices=None, nonempty: bool = True) -> tuple[str, ...]:
        value = self.get(key, list)
        if nonempty and not value:
            raise self.error(key, "is empty; list at least one")
        if not all(isinstance(v, str) and v.strip() for v in value) or len(set(value)) != len(value):
            raise self.error(key, f"{value!r}: give distinct non-empty strings")
        wrong = [v for v in value if choices is not None and v not in choices]
        if wrong:
            raise self.error(key, f"{wrong[0]!r} is not one of {', '.join(choices)}")
        return tuple(value)

    def ints(self, key: str, low: int = 0) -> tuple[int, ...]:
        value = self.get(key, list)
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in value) \
                or len(set(value)) != len(value):
            raise self.error(key, f"{value!r}: give distinct integers ≥ {low}")
        return tuple(value)

    def unknown(self, allowed) -> None:
        extra = sorted(set(self.data) - set(allowed))
        if extra:
            raise self.error(extra[0], f"is not a plan field here; fields: {', '.join(allowed)}")


STAGES = ("facts", "trace", "edit", "support", "validate")


def load_plan(path: str | Path, measures=None) -> AnalysisPlan:
    """Read and check the plan at ``path`` against ``measures`` (default: the registry
    :data:`causaleval.inference.h1.MEASURES`)."""
    import yaml

    if measures is None:
        from causaleval.inference.h1 import MEASURES as measures
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"--plan {path}: file not found; pass the committed plan, e.g. paper/plan.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise PlanError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
    top = _Fields(path, data, "")
    top.unknown(("version", "question", "primary", "secondary", "covariates", "exclusions", "analysis", "power",
                 "seed", "models"))
    version = top.get("version", int)
    if version != PLAN_VERSION:
        raise top.error("version", f"{version} is not supported; this version reads plan version {PLAN_VERSION}")
    known = tuple(measures)
    p = _Fields(path, top.get("primary", dict), "primary")
    p.unknown(tuple(f.name for f in fields(PrimaryTest)))
    measure = p.get("measure", str)
    if measure not in known:
        raise p.error("measure", f"{measure!r} is not a measure of this version (causaleval.inference.h1.MEASURES: "
                                 f"{', '.join(known)})")
    a, b = p.get("a", str, choices=ESTIMATORS), p.get("b", str, choices=ESTIMATORS)
    if a == b:
        raise p.error("b", f"{b!r} equals a; the primary test compares two estimators")
    primary = PrimaryTest(
        measure=measure, a=a, b=b, direction=p.get("direction", str, choices=DIRECTIONS),
        alpha=p.get("alpha", float, low=1e-6, high=0.5), margin=p.get("margin", float, low=0.0, high=1.0),
        margin_reason=p.get("margin_reason", str), score=p.get("score", str, choices=SCORES),
        wording=p.get("wording", str), n_permutations=p.get("n_permutations", int, default=1999, low=99),
        n_bootstrap=p.get("n_bootstrap", int, default=1000, low=99),
        power=p.get("power", float, default=0.8, low=0.5, high=0.99),
        power_reps=p.get("power_reps", int, default=400, low=50))
    try:
        primary.wording.format(a=a, b=b, measure=measure, score=primary.score)
    except (KeyError, IndexError, ValueError) as err:
        raise p.error("wording", f"has a placeholder other than {{a}}, {{b}}, {{measure}}, {{score}} ({err})") from err
    s = _Fields(path, top.get("secondary", dict), "secondary")
    s.unknown(("measures", "specification_curve"))
    secondary = s.strings("measures", nonempty=False)
    wrong = [m for m in secondary if m not in known]
    if wrong:
        raise s.error("measures", f"{wrong[0]!r} is not a measure of this version ({', '.join(known)})")
    x = _Fields(path, top.get("exclusions", dict), "exclusions")
    x.unknown(("te_floor", "te_floor_ld"))
    exclusions = Exclusions(te_floor=x.get("te_floor", float, low=0.0, high=1.0),
                            te_floor_ld=x.get("te_floor_ld", float, default=0.5, low=0.0))
    an = _Fields(path, top.get("analysis", dict), "analysis")
    an.unknown(("window", "effect", "component", "token_rule"))
    pw = _Fields(path, top.get("power", dict), "power")
    pw.unknown(("table",))
    models = top.get("models", dict)
    if not models:
        raise top.error("models", "is empty; give each model's held-out design")
    plan = AnalysisPlan(
        path=path, version=version, question=top.get("question", str), primary=primary,
        secondary_measures=secondary, specification_curve=s.get("specification_curve", str),
        covariates=top.strings("covariates", nonempty=False), exclusions=exclusions,
        window=an.get("window", int, low=1, high=512), effect=an.get("effect", str, choices=("fraction", "raw")),
        component=an.get("component", str, choices=("mlp", "attn", "residual")),
        token_rule=an.get("token_rule", str), seed=top.get("seed", int, low=0, high=2**32 - 1),
        mdd_table=pw.get("table", str), models={str(k): _model(path, str(k), v) for k, v in models.items()})
    return plan


def _model(path: Path, name: str, data) -> ModelDesign:
    m = _Fields(path, data, f"models.{name}")
    m.unknown(tuple(f.name for f in fields(ModelDesign) if f.name != "name"))
    stages = m.strings("stages", choices=STAGES)
    if "facts" not in stages:
        raise m.error("stages", "must include facts (the held-out facts are chosen there)")
    return ModelDesign(name=name, exploratory=m.get("exploratory", str), n_facts=m.get("n_facts", int, low=3,
                                                                                        nullable=True),
                       edit_layers=m.ints("edit_layers"), noise_draws=m.get("noise_draws", int, low=1),
                       partner_draws=m.get("partner_draws", int, low=1), seed=m.get("seed", int, low=0),
                       trace_seed=m.get("trace_seed", int, low=0, nullable=True), stages=stages,
                       results=m.get("results", str), publish=m.get("publish", str))
