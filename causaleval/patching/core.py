"""The shared patching core of the three localisation estimators (docs/estimands.md).

An *activation patch* writes a source run's hidden states into a base run at one token position of
one component over a window of layers, then reads the base run's logits at its last position.
Interchange interventions of this kind underlie causal tracing (Meng et al. 2022) and causal
scrubbing (Chan et al. 2022).

Efficiency (all exact, no approximation):

* every run that is patched or read from is computed once and cached (:func:`run_model`): the input
  of every block, the output of every component, the key/value cache and the last-position logits;
* a patch at position p starting at layer l0 leaves every state at positions < p and every layer
  < l0 unchanged (causal attention), so only blocks l0…L−1 are re-run, and only on positions p…T−1,
  attending to the cached keys/values of positions < p;
* patches share batched block calls per layer: rows join at their first layer, and patches at nearby
  positions of the same base run are grouped (:func:`position_groups`), rows patched later than the
  group's first position recomputing their few unpatched positions rather than paying another call;
* the unembedding is computed only at the read-out (last) position.

Blocks are called directly with the keyword arguments the model itself passes them, captured once
per (base run, p) from a forward pass over the suffix (:mod:`causaleval.model.kvcache`), so the code works
for every family of :mod:`causaleval.model.sites` without re-implementing attention masks or rotary embeddings.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from causaleval.data.tokens import Encoded
from causaleval.errors import SiteError
from causaleval.model.hooks import trace
from causaleval.model.kvcache import BlockCalls, output_cache, prefix_cache
from causaleval.model.loading import ModelBundle, head_logits
from causaleval.model.sites import COMPONENTS, check_layer, get_module


@dataclass
class Run:
    """A cached forward pass over R rows of equal length T.

    ``block_inputs[l]``: (R, T, d) input of block l; ``states[(component, l)]``: (R, T, d) outputs;
    ``cache``: the model's key/value cache; ``logits``: (R, V) logits at the last position.
    """

    input_ids: torch.Tensor
    block_inputs: list[torch.Tensor]
    states: dict[tuple[str, int], torch.Tensor]
    cache: object
    logits: torch.Tensor
    _calls: dict = field(default_factory=dict, repr=False)

    @property
    def n_rows(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])


@dataclass(frozen=True)
class Patch:
    """One intervention: write ``source`` (one vector per layer of ``layers``) into row ``base_row``
    of the base run at token ``position`` of ``component``, then read logits ``read_ids`` at the end."""

    base_row: int
    position: int
    component: str
    layers: tuple[int, ...]
    source: torch.Tensor          # (len(layers), d)
    read_ids: tuple[int, ...]


def _module_path(bundle: ModelBundle, component: str, layer: int) -> str:
    if component not in COMPONENTS:
        raise SiteError(f"unknown component {component!r}; choose one of {COMPONENTS}")
    return bundle.family.module_path(component, layer)


def _unembed(bundle: ModelBundle, hidden_last: torch.Tensor) -> torch.Tensor:
    norm = get_module(bundle.model, bundle.family.final_norm)
    return head_logits(bundle.model, norm(hidden_last))


@torch.no_grad()
def run_model(bundle: ModelBundle, input_ids: torch.Tensor, embed_delta: torch.Tensor | None = None) -> Run:
    """Run the model on (R, T) token ids, optionally adding ``embed_delta`` (R, T, d) to the token
    embeddings as the first block receives them (the embedding module's output; noise corruption,
    docs/estimands.md#noise-tracing), and cache everything a patch needs."""
    fam, model = bundle.family, bundle.model
    n = bundle.n_layers
    ids = input_ids.to(bundle.device)
    paths = {(c, l): fam.module_path(c, l) for c in COMPONENTS for l in range(n)}
    blocks = [fam.layer_path(l) for l in range(n)]
    edit = {}
    if embed_delta is not None:
        delta = embed_delta.to(bundle.device)
        edit[fam.embed] = lambda h: h + delta.to(h.dtype)
    with trace(model, capture=list(paths.values()), capture_inputs=blocks, edit=edit) as store:
        out = model.base_model(input_ids=ids, use_cache=True)
    hidden = out.last_hidden_state
    logits = head_logits(model, hidden[:, -1])
    return Run(input_ids=ids, block_inputs=[store[f"{b}:in"] for b in blocks],
               states={k: store[p] for k, p in paths.items()}, cache=output_cache(out), logits=logits)


@torch.no_grad()
def _block_calls(bundle: ModelBundle, run: Run, position: int) -> BlockCalls:
    """The block calls of a forward pass over positions ``position``…T−1 after the cached prefix,
    captured once per (run, position)."""
    if position not in run._calls:
        cache = prefix_cache(run.cache, position, torch.tensor([0], device=run.input_ids.device))
        run._calls[position] = BlockCalls(bundle, cache, input_ids=run.input_ids[:1, position:])
    return run._calls[position]


@torch.no_grad()
def _run_from(bundle: ModelBundle, run: Run, start: int, patches: Sequence[Patch], readout: int) -> torch.Tensor:
    """Logits (B, V) at ``readout`` for patches at positions ≥ ``start``, sorted by first layer: blocks
    re-run on positions ``start``…T−1 after the cached prefix < ``start``.

    Rows join the batch at their first layer (staggered start): at layer l the batch holds the rows
    whose patch starts at or before l, so each row runs exactly its own blocks, in large batches.  A
    row patched after ``start`` recomputes its unpatched positions start…position−1, which equal the
    cached run's (causal attention), so grouping several positions costs only those extra tokens."""
    device = run.input_ids.device
    starts = [min(p.layers) for p in patches]
    if starts != sorted(starts):
        raise ValueError("patches must be sorted by their first layer")
    if min(p.position for p in patches) < start:
        raise ValueError("every patch must lie at or after the group's start position")
    n_layers = bundle.n_layers
    counts = [bisect.bisect_right(starts, l) for l in range(n_layers)]
    rows = torch.tensor([p.base_row for p in patches], device=device)
    calls = _block_calls(bundle, run, start)
    cache = prefix_cache(run.cache, start, rows, counts)
    by_path: dict[str, tuple[list[int], list[int], list[torch.Tensor]]] = defaultdict(lambda: ([], [], []))
    for i, p in enumerate(patches):
        for j, layer in enumerate(p.layers):
            entry = by_path[_module_path(bundle, p.component, layer)]
            entry[0].append(i)
            entry[1].append(p.position - start)
            entry[2].append(p.source[j])
    edits = {}
    for path, (idx, cols, vals) in by_path.items():
        idx_t, cols_t = torch.tensor(idx, device=device), torch.tensor(cols, device=device)
        vals_t = torch.stack(vals).to(device)

        def fn(h, idx_t=idx_t, cols_t=cols_t, vals_t=vals_t):
            h = h.clone()
            h[idx_t, cols_t] = vals_t.to(h.dtype)
            return h
        edits[path] = fn
    hidden = None
    with trace(bundle.model, edit=edits):
        for l in range(starts[0], n_layers):
            have = 0 if hidden is None else hidden.shape[0]
            if counts[l] > have:
                new = run.block_inputs[l][rows[have:counts[l]], start:]
                hidden = new if hidden is None else torch.cat([hidden, new])
            hidden = calls.call(l, hidden, cache)
    return _unembed(bundle, hidden[:, readout - start])


#: The fixed cost of one block call, in tokens' worth of block work (on 2 CPU cores a block call on a
#: handful of tokens costs about as much as one on ~30: its weights are read either way).
CALL_OVERHEAD_TOKENS = 32


def position_groups(positions: Sequence[int], first_layers: Sequence[int], readout: int, n_layers: int,
                    overhead: int) -> list[list[int]]:
    """Patches (indices) grouped into runs of consecutive positions that share their block calls.

    A group starting at position p runs every member's blocks on positions p…readout; its cost is
    Σ_members (L − first layer)·(readout + 1 − p) tokens plus ``overhead`` per block call,
    (L − earliest first layer) calls.  The partition of the sorted distinct positions into contiguous
    groups that minimises the total cost is found by dynamic programming; ``overhead=0`` gives one
    group per position (no recomputation), a large one a single group."""
    by_pos: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(positions):
        by_pos[p].append(i)
    pos = sorted(by_pos)
    work = [sum(n_layers - first_layers[i] for i in by_pos[p]) for p in pos]
    earliest = [min(first_layers[i] for i in by_pos[p]) for p in pos]
    best, cut = [0.0] + [float("inf")] * len(pos), [0] * (len(pos) + 1)
    for b in range(1, len(pos) + 1):
        tokens, low = 0, n_layers
        for a in range(b - 1, -1, -1):           # group = pos[a..b-1], starting at pos[a]
            tokens += work[a]
            low = min(low, earliest[a])
            cost = best[a] + tokens * (readout + 1 - pos[a]) + overhead * (n_layers - low)
            if cost < best[b]:
                best[b], cut[b] = cost, a
    groups, b = [], len(pos)
    while b > 0:
        groups.append([i for p in pos[cut[b]:b] for i in by_pos[p]])
        b = cut[b]
    return groups[::-1]


@torch.no_grad()
def patch_readout(bundle: ModelBundle, run: Run, patches: Sequence[Patch], max_rows: int = 512,
                  readout: int | None = None, overhead: int | None = None) -> torch.Tensor:
    """For each patch, [logsumexp(z), z[read_ids]…] at the base run's ``readout`` position (default:
    the last), shape (n, 1 + k).

    Patches are grouped by position (:func:`position_groups`, ``overhead`` its per-call cost, default
    :data:`CALL_OVERHEAD_TOKENS` read at call time), sorted by first layer and batched ``max_rows`` at a
    time.  A patch after the read-out cannot change it (causal attention): it is answered from the
    cached run."""
    readout = run.length - 1 if readout is None else readout
    overhead = CALL_OVERHEAD_TOKENS if overhead is None else overhead
    if not 0 <= readout < run.length:
        raise SiteError(f"read-out position {readout} is outside the base prompt (length {run.length})")
    if not patches:
        return torch.empty(0, 1)
    k = len(patches[0].read_ids)
    out = torch.empty(len(patches), 1 + k)
    after, inside = [], []
    for i, p in enumerate(patches):
        if len(p.read_ids) != k:
            raise ValueError("all patches of one call must read the same number of logits")
        if not 0 <= p.position < run.length:
            raise SiteError(f"patch position {p.position} is outside the base prompt (length {run.length})")
        for layer in p.layers:
            check_layer(layer, bundle.n_layers)
        (after if p.position > readout else inside).append(i)
    for c in range(0, len(after), max_rows):
        chunk = after[c:c + max_rows]
        rows = torch.tensor([patches[i].base_row for i in chunk], device=run.input_ids.device)
        final = run.states[("residual", bundle.n_layers - 1)][rows, readout]
        out[chunk] = read_logits(_unembed(bundle, final), [patches[i].read_ids for i in chunk])
    firsts = [min(patches[i].layers) for i in inside]
    for group in position_groups([patches[i].position for i in inside], firsts, readout, bundle.n_layers, overhead):
        idx = sorted((inside[g] for g in group), key=lambda i: min(patches[i].layers))
        start = min(patches[i].position for i in idx)
        for c in range(0, len(idx), max_rows):
            chunk = idx[c:c + max_rows]
            logits = _run_from(bundle, run, start, [patches[i] for i in chunk], readout)
            out[chunk] = read_logits(logits, [patches[i].read_ids for i in chunk])
    return out


def read_logits(logits: torch.Tensor, read_ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """[logsumexp(z), z[ids]…] per row of (n, V) logits."""
    logits = logits.float().cpu()
    ids = torch.tensor([list(r) for r in read_ids], dtype=torch.long)
    return torch.cat([logits.logsumexp(-1, keepdim=True), logits.gather(1, ids)], dim=1)


# ----------------------------------------------------------------------------------------------
# One case: clean run, corrupted draws, and every (draw, site) patch (docs/estimands.md)
# ----------------------------------------------------------------------------------------------

@dataclass
class Draw:
    """One draw of the base distribution for a case: the corrupted prompt, and for noise tracing the
    perturbation added to its token embeddings; for partner draws the partner's answer token o′."""

    index: int
    encoded: Encoded
    embed_delta: torch.Tensor | None = None     # (T, d)
    alt_token: int | None = None
    partner_case: int | None = None
    partner_subject: str | None = None


@dataclass(frozen=True)
class Site:
    """A site: component over the window ``layers`` centred at ``layer``, at clean position ``position``."""

    component: str
    window: int
    layer: int
    position: int
    layers: tuple[int, ...]


def align_position(src: Encoded, dst: Encoded, pos: int) -> int | None:
    """The position of ``dst`` that plays the role of ``pos`` in ``src`` (docs/estimands.md#flip-scrubbing): tokens before the
    subject keep their offset from the prompt's start (the template prefix is shared; where the partner's
    prefix tokenises shorter, the last prefix token stands in), subject_first/last map to subject_first/last,
    middle subject tokens map proportionally, tokens after the subject keep their offset from the end.
    None when ``dst`` has no such position."""
    s, e, n = src.subject_start, src.subject_end, src.length
    if not 0 <= pos < n:
        raise SiteError(f"position {pos} is outside the prompt {src.text!r} (length {n})")
    if pos < s:
        q = min(pos, dst.subject_start - 1)
    elif pos < e:
        k_src, k_dst = e - s, dst.subject_end - dst.subject_start
        if pos == e - 1:
            q = dst.subject_end - 1
        elif pos == s:
            q = dst.subject_start
        else:
            q = dst.subject_start + round((pos - s) * (k_dst - 1) / max(k_src - 1, 1))
    else:
        q = pos - n + dst.length
    return q if 0 <= q < dst.length else None


def case_sites(grids, enc: Encoded, n_layers: int) -> list[Site]:
    """Every site of the grids (estimands.SiteGrid) for one prompt."""
    out = []
    for g in grids:
        for layer in g.layer_list(n_layers):
            win = g.window_of(layer, n_layers)
            for pos in g.position_list(enc):
                out.append(Site(g.component, g.window, layer, pos, win))
    return out


@dataclass
class CaseTrace:
    """Readouts of one case: ``clean`` (n_draws, 3), ``base`` (n_draws, 3) of the corrupted runs and
    ``patched`` (n_draws, n_sites, 3), each [logsumexp z, z_o, z_o′] at the last position (NaN where a
    site has no aligned position in a draw's prompt)."""

    case_id: int
    relation_id: str
    encoded: Encoded
    answer: int
    direction: str
    draws: list[Draw]
    sites: list[Site]
    clean: np.ndarray
    base: np.ndarray
    patched: np.ndarray

    @staticmethod
    def metric(name: str, r: np.ndarray) -> np.ndarray:
        lse, zo, zalt = r[..., 0], r[..., 1], r[..., 2]
        if name == "p":
            return np.exp(zo - lse)
        if name == "logp":
            return zo - lse
        if name == "ld":
            return zo - zalt
        raise ValueError(f"unknown metric {name!r}")

    def effects(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-draw indirect effects (n_draws, n_sites) and total effects (n_draws,) (docs/estimands.md#noise-tracing):
        denoise: m(patched) − m(corrupted); noise: m(clean) − m(patched); TE = m(clean) − m(corrupted)."""
        clean, base, patched = (self.metric(metric, x) for x in (self.clean, self.base, self.patched))
        te = clean - base
        ie = patched - base[:, None] if self.direction == "denoise" else clean[:, None] - patched
        return ie, te


def _unchanged(enc: Encoded, draw: Draw, pos: int, q: int) -> bool:
    """True when the clean and corrupted runs provably agree at ``pos`` (same tokens up to it and no
    perturbation): by causal attention the patch is then the identity and its effect exactly 0."""
    if q != pos or tuple(enc.input_ids[:pos + 1]) != tuple(draw.encoded.input_ids[:pos + 1]):
        return False
    return draw.embed_delta is None or not bool(draw.embed_delta[:pos + 1].any())


@dataclass
class CaseSpec:
    """What tracing one case needs: its clean prompt, answer token, base draws, sites and direction."""

    case_id: int
    relation_id: str
    encoded: Encoded
    answer: int
    draws: Sequence[Draw]
    sites: Sequence[Site]
    direction: str


def _check_spec(s: CaseSpec) -> None:
    if s.direction not in ("denoise", "noise"):
        raise ValueError(f"unknown direction {s.direction!r}")
    if not s.draws:
        raise ValueError(f"case {s.case_id}: no draws to trace")
    for site in s.sites:
        if not 0 <= site.position < s.encoded.length:
            raise SiteError(f"case {s.case_id}: site position {site.position} is outside the prompt "
                            f"{s.encoded.text!r} (length {s.encoded.length})")


@torch.no_grad()
def trace_case(bundle: ModelBundle, case_id: int, relation_id: str, enc: Encoded, answer: int,
               draws: Sequence[Draw], sites: Sequence[Site], direction: str, max_rows: int = 512) -> CaseTrace:
    """One case (see :func:`trace_cases`).  ``direction`` is ``"denoise"`` (clean → corrupted) or
    ``"noise"`` (corrupted → clean)."""
    spec = CaseSpec(case_id, relation_id, enc, answer, draws, sites, direction)
    return trace_cases(bundle, [spec], max_rows)[0]


@torch.no_grad()
def trace_cases(bundle: ModelBundle, specs: Sequence[CaseSpec], max_rows: int = 512) -> list[CaseTrace]:
    """Trace several cases at once; each case's result equals tracing it alone (up to float rounding).

    Every prompt (clean or drawn) of one token length T, over all cases, is one row of a single cached
    run (:func:`run_model`); every patch of every case whose base prompt has length T then goes to one
    :func:`patch_readout` on that run, so the patches of all cases at the same position share their
    block calls (docs/estimands.md).  Rows are shared where the same prompt serves several specs (a case's clean
    prompt; a draw traced in both directions)."""
    for s in specs:
        _check_spec(s)
    if not specs:
        return []
    device = bundle.device
    # rows of the shared runs, one per distinct prompt, grouped by length
    rows: dict[int, list[tuple[list[int], torch.Tensor | None]]] = defaultdict(list)
    row_of: dict[object, tuple[int, int]] = {}

    def add_row(key, ids, delta) -> tuple[int, int]:
        if key not in row_of:
            rows[len(ids)].append((list(ids), delta))
            row_of[key] = (len(ids), len(rows[len(ids)]) - 1)
        return row_of[key]

    clean_at = [add_row(("clean", tuple(s.encoded.input_ids)), s.encoded.input_ids, None) for s in specs]
    draw_at = [[add_row(("draw", id(d)), d.encoded.input_ids, d.embed_delta) for d in s.draws] for s in specs]
    d_model = bundle.model.get_input_embeddings().weight.shape[1]
    runs: dict[int, Run] = {}
    for length, group in rows.items():
        ids = torch.tensor([r[0] for r in group], device=device)
        delta = None
        if any(r[1] is not None for r in group):
            delta = torch.stack([r[1] if r[1] is not None else torch.zeros(length, d_model) for r in group])
        runs[length] = run_model(bundle, ids, delta)
    jobs: dict[int, tuple[list[Patch], list[tuple[int, int, int]]]] = defaultdict(lambda: ([], []))
    results = []
    for k, s in enumerate(specs):
        enc, draws = s.encoded, s.draws
        reads = [(s.answer, d.alt_token if d.alt_token is not None else s.answer) for d in draws]
        c_len, c_row = clean_at[k]
        clean = runs[c_len]
        clean_r = read_logits(clean.logits[c_row][None].expand(len(draws), -1), reads).numpy()
        base_r = np.stack([read_logits(runs[a].logits[b][None],
                                       [reads[i]])[0].numpy() for i, (a, b) in enumerate(draw_at[k])])
        patched = np.full((len(draws), len(s.sites), 3), np.nan)
        for i, d in enumerate(draws):
            length, r = draw_at[k][i]
            run = runs[length]
            for j, site in enumerate(s.sites):
                q = align_position(enc, d.encoded, site.position)
                if q is None:
                    continue
                if _unchanged(enc, d, site.position, q):
                    patched[i, j] = base_r[i] if s.direction == "denoise" else clean_r[i]
                    continue
                if s.direction == "denoise":
                    src = torch.stack([clean.states[(site.component, l)][c_row, site.position] for l in site.layers])
                    patch, key = Patch(r, q, site.component, site.layers, src, reads[i]), length
                else:
                    src = torch.stack([run.states[(site.component, l)][r, q] for l in site.layers])
                    patch, key = Patch(c_row, site.position, site.component, site.layers, src, reads[i]), c_len
                jobs[key][0].append(patch)
                jobs[key][1].append((k, i, j))
        results.append(CaseTrace(case_id=s.case_id, relation_id=s.relation_id, encoded=enc, answer=s.answer,
                                 direction=s.direction, draws=list(draws), sites=list(s.sites), clean=clean_r,
                                 base=base_r, patched=patched))
    for length, (patches, cells) in jobs.items():
        out = patch_readout(bundle, runs[length], patches, max_rows=max_rows).numpy()
        for (k, i, j), row in zip(cells, out):
            results[k].patched[i, j] = row
    return results


# ----------------------------------------------------------------------------------------------
# Tidy tables (the trace stage's output contract)
# ----------------------------------------------------------------------------------------------

def draw_seed(*key: object) -> int:
    """A deterministic 63-bit seed from a key such as (seed, case_id, draw) — no Python ``hash``."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass
class TraceTables:
    """``sites``: a row per (estimator, direction, metric, case, site); ``draws``: a row per draw and
    site; ``cases``: a row per (estimator, direction, metric, case) with TE and exclusions."""

    sites: pd.DataFrame
    draws: pd.DataFrame
    cases: pd.DataFrame

    @classmethod
    def concat(cls, parts: Sequence["TraceTables"]) -> "TraceTables":
        def cat(frames):
            frames = [f for f in frames if len(f)]
            return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return cls(cat([p.sites for p in parts]), cat([p.draws for p in parts]), cat([p.cases for p in parts]))


def case_tables(tr: CaseTrace, estimator: str, metrics: Sequence[str], support_size: int | None,
                keep_draws: bool = True) -> TraceTables:
    """The tidy rows of one traced case (columns as in the trace stage's contract)."""
    sites, draws, cases = [], [], []
    comp = np.array([s.component for s in tr.sites])
    win = np.array([s.window for s in tr.sites])
    lay = np.array([s.layer for s in tr.sites])
    pos = np.array([s.position for s in tr.sites])
    roles = np.array([tr.encoded.role_of(int(p)) for p in pos])
    for m in metrics:
        ie_d, te_d = tr.effects(m)
        n = np.sum(~np.isnan(ie_d), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ie = np.where(n > 0, np.nansum(ie_d, axis=0) / np.maximum(n, 1), np.nan)
        te = float(np.mean(te_d))
        head = dict(estimator=estimator, direction=tr.direction, metric=m)
        sites.append(pd.DataFrame(dict(
            **head, case_id=tr.case_id, relation_id=tr.relation_id, component=comp, window=win, layer=lay,
            position=pos, role=roles, ie=ie, te=te, ie_norm=ie / te if te != 0 else np.nan, n_draws=n,
            support_size=support_size if support_size is not None else 0)))
        if keep_draws:
            k = len(tr.sites)
            draws.append(pd.DataFrame(dict(
                **head, case_id=tr.case_id, draw=np.repeat([d.index for d in tr.draws], k),
                component=np.tile(comp, len(tr.draws)), window=np.tile(win, len(tr.draws)),
                layer=np.tile(lay, len(tr.draws)), position=np.tile(pos, len(tr.draws)),
                value=ie_d.reshape(-1), te=np.repeat(te_d, k))))
        clean, base = CaseTrace.metric(m, tr.clean), CaseTrace.metric(m, tr.base)
        cases.append(dict(**head, case_id=tr.case_id, relation_id=tr.relation_id, te=te,
                          clean=float(np.mean(clean)), corrupted=float(np.mean(base)),
                          support_size=support_size if support_size is not None else 0,
                          n_draws=len(tr.draws), excluded=False, reason=""))
    return TraceTables(pd.concat(sites, ignore_index=True),
                       pd.concat(draws, ignore_index=True) if draws else pd.DataFrame(), pd.DataFrame(cases))


def excluded_case(estimator: str, directions: Sequence[str], metrics: Sequence[str], case_id: int,
                  relation_id: str, reason: str, support_size: int = 0) -> TraceTables:
    """The case-table rows of a case that cannot be traced (e.g. an empty flip set): counted, not a crash."""
    rows = [dict(estimator=estimator, direction=d, metric=m, case_id=case_id, relation_id=relation_id, te=np.nan,
                 clean=np.nan, corrupted=np.nan, support_size=support_size, n_draws=0, excluded=True, reason=reason)
            for d in directions for m in metrics]
    return TraceTables(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(rows))
