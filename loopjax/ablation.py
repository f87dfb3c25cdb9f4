"""The input-injection ablation (the paper's open question): how does λ1 change when Huginn's input
injection is weakened?

"Weakening" is `loopjax.scale_injection(model, alpha, mode=...)`: the adapter's input concat(z, e) becomes
concat(z, alpha * e) (alpha = 1 is the model itself, bit for bit; alpha = 0 removes the injection); with
mode "mean" e is first replaced by its mean over the prompt's positions. For every alpha and prompt i
(key `loopjax.prompt_key(seed, i)`, the same for every alpha, so every alpha starts from the same z_0
with the same probes) `ablation_unit` computes

  * λ1 (`loopjax.lambda1`, one probe, T = steps_lambda1),
  * the k=1 attribution (`loopjax.attribution`, T = attr_steps): the adapter's and every core block's
    contribution to λ1 (they sum to the loop's λ1),
  * the orbit type (`loopjax.orbit`, orbit_steps loop steps),
  * with k given, the top-k spectrum (`loopjax.spectrum`, T = spectrum_steps).

`injection_ablation` runs them all (a Python loop over alphas: alpha is a pytree leaf, so one compilation
per prompt length serves every alpha; `vmap=True` batches the Lyapunov runs over alphas with jax.vmap
instead) and `summarize_ablation` reduces them, per alpha, with `loopjax.summarize`: λ1 mean ± standard
error over prompts, mean adapter and core_block.0 contributions, orbit counts, and `crossing_alpha`, the
alpha* where the mean λ1 crosses 0 (linear interpolation between the bracketing alphas).

No matplotlib here; the figures are drawn by `loopjax ablate` (`loopjax/cli/ablate.py`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from loopjax import stats
from loopjax.analysis import attribution, lambda1, orbit, spectrum
from loopjax.dynamics import OrbitType
from loopjax.lyapunov import LyapunovResult
from loopjax.model import LoopModel, scale_injection
from loopjax.summary import Summary, summarize

NO_CROSSING = "no crossing in range"
MODES = (None, "mean")


# ---- alpha* ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Crossing:
    """Where the mean λ1 crosses 0 as alpha grows. `crossings`: every crossing, in increasing alpha
    (linear interpolation between the two bracketing alphas; an alpha whose mean is exactly 0 is itself a
    crossing); `directions`: per crossing "expanding->contracting" (λ1 goes from > 0 to < 0 as alpha grows)
    or "contracting->expanding" ("touch" for an exact 0 with the same sign on both sides); `alpha_star`: the
    crossing when there is exactly one, the first (smallest alpha) when there are several, None when there is
    none; `note`: "no crossing in range", "one crossing", or "N crossings: a, b, ...". With standard errors
    given, `resolved` says per crossing whether both bracketing means are more than 2 standard errors from
    0 (otherwise the sign change is within the noise of the prompt sample); empty without them.
    """
    alpha_star: float | None
    crossings: tuple[float, ...]
    directions: tuple[str, ...]
    note: str
    resolved: tuple[bool, ...] = ()

    def to_json(self) -> dict:
        return {"alpha_star": self.alpha_star, "crossings": list(self.crossings),
                "directions": list(self.directions), "note": self.note, "resolved": list(self.resolved)}

    @classmethod
    def from_json(cls, d: dict) -> "Crossing":
        return cls(alpha_star=d.get("alpha_star"), crossings=tuple(d.get("crossings") or ()),
                   directions=tuple(d.get("directions") or ()), note=d.get("note", ""),
                   resolved=tuple(d.get("resolved") or ()))


def _direction(before: float, after: float) -> str:
    if before > 0 > after:
        return "expanding->contracting"
    if before < 0 < after:
        return "contracting->expanding"
    return "touch"


def crossing_alpha(alphas: Sequence[float], lambda1_means: Sequence[float], sems: Sequence[float] | None = None,
                   ) -> Crossing:
    """The alpha(s) where the mean λ1 crosses 0, by linear interpolation between the bracketing alphas.

    alphas need not be sorted (they are sorted together with the means) but must be distinct and finite;
    NaN means are skipped (no crossing is claimed across them). Returns a `Crossing`; `alpha_star` is None
    and `note` is "no crossing in range" when the mean keeps one sign over the whole range. `sems` (the
    standard errors of the means, optional) fill `Crossing.resolved`: a crossing is resolved when both
    bracketing means lie more than 2 standard errors from 0."""
    a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    y = np.asarray(lambda1_means, dtype=np.float64).reshape(-1)
    if a.shape != y.shape:
        raise ValueError(f"alphas ({a.size}) and lambda1_means ({y.size}) differ in length")
    se = None if sems is None else np.asarray([np.nan if v is None else v for v in sems], np.float64).reshape(-1)
    if se is not None and se.shape != a.shape:
        raise ValueError(f"sems ({se.size}) and alphas ({a.size}) differ in length")
    if not np.all(np.isfinite(a)):
        raise ValueError("alphas must be finite")
    if np.unique(a).size != a.size:
        raise ValueError(f"alphas must be distinct, got {a.tolist()}")
    order = np.argsort(a, kind="stable")
    a, y = a[order], y[order]
    clear = None if se is None else np.abs(y) > 2 * se[order]  # False where the s.e. is NaN
    found: list[tuple[float, str, bool]] = []
    for j in range(a.size):
        if y[j] == 0.0:  # exactly zero: the crossing is at this alpha
            before = y[j - 1] if j > 0 else 0.0
            after = y[j + 1] if j + 1 < a.size else 0.0
            found.append((float(a[j]), _direction(before, after), False))
        if j + 1 < a.size and y[j] * y[j + 1] < 0:  # False when either is NaN
            t = y[j] / (y[j] - y[j + 1])
            ok = clear is not None and bool(clear[j] and clear[j + 1])
            found.append((float(a[j] + t * (a[j + 1] - a[j])), _direction(y[j], y[j + 1]), ok))
    if not found:
        return Crossing(alpha_star=None, crossings=(), directions=(), note=NO_CROSSING)
    xs = tuple(x for x, _, _ in found)
    note = "one crossing" if len(xs) == 1 else f"{len(xs)} crossings: " + ", ".join(f"{x:.4g}" for x in xs)
    resolved = () if se is None else tuple(ok for _, _, ok in found)
    if resolved and not all(resolved):
        n = len(resolved) - sum(resolved)
        note += (f"; {'it is' if len(xs) == 1 else f'{n} of them are'} not resolved (a bracketing mean is "
                 f"within 2 standard errors of 0)")
    return Crossing(alpha_star=xs[0], crossings=xs, directions=tuple(d for _, d, _ in found), note=note,
                    resolved=resolved)


# ---- one (alpha, prompt) ----------------------------------------------------------------------------------

@dataclasses.dataclass
class AblationUnit:
    """The numbers of one (alpha, prompt): λ1, the k=1 attribution, the orbit type, optionally a spectrum."""
    alpha: float
    lambda1: float
    attribution: LyapunovResult
    orbit: OrbitType | dict
    spectrum: LyapunovResult | None = None

    def to_json(self) -> dict:
        out = {"alpha": float(self.alpha), "lambda1": float(self.lambda1),
               "attribution": self.attribution.to_json(),
               "orbit": self.orbit if isinstance(self.orbit, dict) else self.orbit.to_json()}
        if self.spectrum is not None:
            out["spectrum"] = self.spectrum.to_json()
        return out

    @classmethod
    def from_json(cls, d: dict) -> "AblationUnit":
        return cls(alpha=float(d["alpha"]), lambda1=float(d["lambda1"]),
                   attribution=LyapunovResult.from_json(d["attribution"]), orbit=dict(d["orbit"]),
                   spectrum=LyapunovResult.from_json(d["spectrum"]) if d.get("spectrum") else None)


def check_alphas(alphas) -> list[float]:
    """alphas as a list of distinct finite floats (at least one)."""
    out = [float(a) for a in np.asarray(alphas, dtype=np.float64).reshape(-1)]
    if not out:
        raise ValueError("need at least one injection scale alpha")
    if not all(math.isfinite(a) for a in out):
        raise ValueError(f"injection scales must be finite, got {out}")
    if len(set(out)) != len(out):
        raise ValueError(f"injection scales must be distinct, got {out}")
    return out


def ablation_unit(model: LoopModel, ids, alpha, *, key, steps_lambda1: int = 32, attr_steps: int = 32,
                  k: int | None = None, spectrum_steps: int = 64, orbit_steps: int = 64, mode: str | None = None,
                  **engine) -> AblationUnit:
    """λ1, k=1 attribution, orbit type (and the top-k spectrum if k) of `scale_injection(model, alpha, mode)`
    on one prompt `ids` (L,) with the prompt key `key`. `engine` (warmup, renorm_every, remat, ...) goes to
    the Lyapunov front-ends."""
    m = scale_injection(model, float(alpha), mode=mode)
    lam = lambda1(m, ids, steps=steps_lambda1, key=key, **engine)
    attr = attribution(m, ids, k=1, steps=attr_steps, key=key, **engine)
    spec = spectrum(m, ids, k=k, steps=spectrum_steps, key=key, **engine) if k else None
    return AblationUnit(alpha=float(alpha), lambda1=float(lam), attribution=attr,
                        orbit=orbit(m, ids, steps=orbit_steps, key=key), spectrum=spec)


def _take(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def _units_vmapped(model, ids, alphas, *, key, steps_lambda1, attr_steps, k, spectrum_steps, orbit_steps, mode,
                   **engine) -> list[AblationUnit]:
    """The same units, with the Lyapunov runs batched over alphas by jax.vmap (orbits: a loop)."""
    a = jnp.asarray(alphas, dtype=jnp.result_type(float))
    scaled = lambda x: scale_injection(model, x, mode=mode)  # noqa: E731
    lam = jax.vmap(lambda x: lambda1(scaled(x), ids, steps=steps_lambda1, key=key, **engine))(a)
    attr = jax.vmap(lambda x: attribution(scaled(x), ids, k=1, steps=attr_steps, key=key, **engine))(a)
    spec = (jax.vmap(lambda x: spectrum(scaled(x), ids, k=k, steps=spectrum_steps, key=key, **engine))(a)
            if k else None)
    lam = np.asarray(lam)
    if not np.all(np.isfinite(lam)):  # the host-side divergence check is skipped under vmap
        bad = [alphas[j] for j in np.flatnonzero(~np.isfinite(lam))]
        raise FloatingPointError(f"non-finite λ1 for injection scale(s) {bad}: the map diverged")
    return [AblationUnit(alpha=float(x), lambda1=float(lam[j]), attribution=_take(attr, j),
                         orbit=orbit(scaled(float(x)), ids, steps=orbit_steps, key=key),
                         spectrum=None if spec is None else _take(spec, j))
            for j, x in enumerate(alphas)]


# ---- the whole ablation ----------------------------------------------------------------------------------

@dataclasses.dataclass
class AblationResult:
    """`units[a][p]`: the AblationUnit of alpha a and prompt p; `settings`: the arguments of the run."""
    alphas: list[float]
    units: list[list[AblationUnit]]
    settings: dict

    @property
    def lambda1(self) -> np.ndarray:
        """(n_alphas, n_prompts) per-prompt λ1."""
        return np.asarray([[u.lambda1 for u in row] for row in self.units], dtype=np.float64)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.units[0][0].attribution.names)

    def contributions(self) -> np.ndarray:
        """(n_alphas, n_prompts, n_sublayers) k=1 λ1 contributions per sublayer."""
        return np.asarray([[np.asarray(u.attribution.exponents, np.float64)[:, 0] for u in row]
                           for row in self.units])

    def orbits(self) -> list[list[dict]]:
        return [[u.orbit if isinstance(u.orbit, dict) else u.orbit.to_json() for u in row] for row in self.units]

    def summary(self) -> "AblationSummary":
        return summarize_ablation(self)

    def to_json(self) -> dict:
        return {"alphas": list(self.alphas), "settings": dict(self.settings),
                "units": [[u.to_json() for u in row] for row in self.units]}

    @classmethod
    def from_json(cls, d: dict) -> "AblationResult":
        return cls(alphas=[float(a) for a in d["alphas"]], settings=dict(d.get("settings") or {}),
                   units=[[AblationUnit.from_json(u) for u in row] for row in d["units"]])


def injection_ablation(model: LoopModel, prompts_ids, alphas, *, steps_lambda1: int = 32, attr_steps: int = 32,
                       k: int | None = None, spectrum_steps: int = 64, seed: int = 0, orbit_steps: int = 64,
                       mode: str | None = None, vmap: bool = False, **engine) -> AblationResult:
    """λ1, the k=1 attribution and the orbit type (and with k the top-k spectrum) of
    `scale_injection(model, alpha, mode=mode)` for every alpha in `alphas` and every prompt (a list of 1-D
    token-id arrays; prompt i uses `loopjax.prompt_key(seed, i)` for every alpha).

    `vmap=True` batches the Lyapunov runs over alphas with jax.vmap (one compilation per prompt length for the
    whole batch) instead of a Python loop over alphas (one compilation per prompt length, reused by every
    alpha because alpha is a pytree leaf). `engine` (warmup, renorm_every, remat, ...) goes to the Lyapunov
    front-ends. Architectures without an injection (Ouro) raise ValueError. Returns an AblationResult;
    `summarize_ablation(result)` gives the per-alpha statistics and alpha*."""
    from loopjax.analysis import prompt_key

    scale_injection(model, 1.0, mode=mode)  # fails early for Ouro or a bad mode
    alphas = check_alphas(alphas)
    prompts_ids = [jnp.asarray(ids, jnp.int32) for ids in prompts_ids]
    if not prompts_ids:
        raise ValueError("need at least one prompt")
    if any(ids.ndim != 1 for ids in prompts_ids):
        raise ValueError("prompts_ids must be 1-D token-id arrays (one per prompt)")
    opts = dict(steps_lambda1=steps_lambda1, attr_steps=attr_steps, k=k, spectrum_steps=spectrum_steps,
                orbit_steps=orbit_steps, mode=mode)
    per_prompt = []
    for i, ids in enumerate(prompts_ids):
        key = prompt_key(seed, i)
        if vmap:
            per_prompt.append(_units_vmapped(model, ids, alphas, key=key, **opts, **engine))
        else:
            per_prompt.append([ablation_unit(model, ids, a, key=key, **opts, **engine) for a in alphas])
    units = [[per_prompt[i][j] for i in range(len(prompts_ids))] for j in range(len(alphas))]
    settings = {**opts, "seed": int(seed), "n_prompts": len(prompts_ids), "vmap": bool(vmap),
                **{name: v for name, v in engine.items() if isinstance(v, (bool, int, float, str, type(None)))}}
    return AblationResult(alphas=alphas, units=units, settings=settings)


# ---- the summary -----------------------------------------------------------------------------------------

def _kinds(orbits: Sequence[dict | OrbitType]) -> dict[str, int]:
    js = [o if isinstance(o, dict) else o.to_json() for o in orbits]
    kinds = [o["kind"] + (f"-{o['period']}" if o["kind"] == "periodic" else "") for o in js]
    return {k: kinds.count(k) for k in dict.fromkeys(kinds)}


@dataclasses.dataclass(frozen=True)
class AblationSummary(Summary):
    """Per alpha (lists in increasing alpha): λ1 over prompts (`lambda1_mean/std/sem/min/max`, from
    `loopjax.summarize(kind="lambda1")`, kept whole in `lambda1_summaries`); the k=1 attribution
    (`loopjax.summarize(kind="attribution")`): per-sublayer mean contributions `contribution_mean`
    (n_alphas, n_sublayers) named by `names`, `adapter_mean/sem`, `core_block0_mean/sem` (standard error over
    prompts, ddof=1) and `attribution_total_mean` (= the sum over sublayers: λ1 of the attribution run);
    `orbit_counts` (per alpha {kind: count}); with a spectrum, `spectrum_summaries` (per alpha
    `loopjax.summarize(kind="spectrum").to_json()`). `crossing`: `crossing_alpha(alphas, lambda1_mean, lambda1_sem)`."""
    kind: ClassVar[str] = "ablation"
    alphas: list
    mode: str | None
    n_prompts: int
    lambda1_mean: list
    lambda1_std: list
    lambda1_sem: list
    lambda1_min: list
    lambda1_max: list
    names: list
    contribution_mean: list
    adapter_mean: list
    adapter_sem: list
    core_block0_mean: list
    core_block0_sem: list
    attribution_total_mean: list
    orbit_counts: list
    crossing: dict
    lambda1_summaries: list = dataclasses.field(default_factory=list)
    spectrum_summaries: list | None = None

    @property
    def alpha_star(self) -> float | None:
        return self.crossing.get("alpha_star")

    def to_json(self) -> dict:
        out = super().to_json()
        nan_free = lambda v: [None if isinstance(x, float) and not math.isfinite(x) else x for x in v]  # noqa: E731
        for name in ("lambda1_mean", "lambda1_std", "lambda1_sem", "lambda1_min", "lambda1_max", "adapter_mean",
                     "adapter_sem", "core_block0_mean", "core_block0_sem", "attribution_total_mean"):
            out[name] = nan_free(out[name])
        return out

    @classmethod
    def from_json(cls, d: dict) -> "AblationSummary":
        nan = lambda v: [math.nan if x is None else x for x in v]  # noqa: E731
        d = dict(d)
        for name in ("lambda1_mean", "lambda1_std", "lambda1_sem", "lambda1_min", "lambda1_max", "adapter_mean",
                     "adapter_sem", "core_block0_mean", "core_block0_sem", "attribution_total_mean"):
            if name in d:
                d[name] = nan(d[name])
        return super().from_json(d)

    def rows(self) -> list[tuple[str, str]]:
        rows = [("prompts", str(self.n_prompts)), ("mode", self.mode or "scale (alpha * e)"),
                ("alpha* (mean λ1 = 0)", "none: " + NO_CROSSING if self.alpha_star is None
                 else f"{self.alpha_star:.4f}" + ("" if self.crossing["note"] == "one crossing"
                                                  else f" ({self.crossing['note']})"))]
        for j, a in enumerate(self.alphas):
            sem = self.lambda1_sem[j]
            rows.append((f"  alpha = {a:g}",
                         f"λ1 {self.lambda1_mean[j]:+.4f} ± {sem:.4f} (s.e.); adapter {self.adapter_mean[j]:+.4f}, "
                         f"core_block.0 {self.core_block0_mean[j]:+.4f}; orbits "
                         + ", ".join(f"{k} {n}" for k, n in self.orbit_counts[j].items())))
        return rows


def _as_result(r) -> LyapunovResult:
    return r if isinstance(r, LyapunovResult) else LyapunovResult.from_json(r)


INJECTION_SUBLAYERS = ("adapter", "injection")   # the sublayer that reads e: Huginn's adapter, Parcae's injection


def injection_sublayer(names) -> str:
    """The name of the loop map's injection sublayer among `names` (the `adapter_*` fields of AblationSummary
    are its contributions); ValueError unless there is one and a core_block.0."""
    found = next((n for n in INJECTION_SUBLAYERS if n in names), None)
    if found is None or "core_block.0" not in names:
        raise ValueError(f"the attribution has no {' / '.join(INJECTION_SUBLAYERS)} and core_block.0 sublayers "
                         f"({list(names)}): not a model with an input injection (Huginn, Parcae)")
    return found


def summarize_ablation(result_or_alphas, lambda1_values=None, *, attribution=None, orbits=None, spectra=None,
                       mode: str | None = None) -> AblationSummary:
    """The per-alpha statistics of an ablation: `summarize_ablation(result)` for an AblationResult, or
    `summarize_ablation(alphas, lambda1_values, attribution=..., orbits=..., spectra=..., mode=...)` with, per
    alpha, the per-prompt λ1 values, attribution results (LyapunovResult or its to_json dict), orbit types (or
    their to_json dicts) and optionally spectra. Alphas are sorted (with their data) before summarizing."""
    if isinstance(result_or_alphas, AblationResult):
        r = result_or_alphas
        return summarize_ablation(
            r.alphas, r.lambda1.tolist(), attribution=[[u.attribution for u in row] for row in r.units],
            orbits=r.orbits(), mode=r.settings.get("mode"),
            spectra=([[u.spectrum for u in row] for row in r.units]
                     if r.units[0][0].spectrum is not None else None))
    alphas = check_alphas(result_or_alphas)
    if lambda1_values is None or attribution is None or orbits is None:
        raise ValueError("summarize_ablation(alphas, lambda1_values, attribution=..., orbits=...) needs all three")
    n = len(alphas)
    for name, v in (("lambda1_values", lambda1_values), ("attribution", attribution), ("orbits", orbits),
                    ("spectra", spectra)):
        if v is not None and len(v) != n:
            raise ValueError(f"{name} has {len(v)} rows for {n} alphas")
    order = sorted(range(n), key=lambda j: alphas[j])
    lam_s = [summarize(list(lambda1_values[j]), kind="lambda1") for j in order]
    attrs = [[_as_result(x) for x in attribution[j]] for j in order]
    attr_s = [summarize(row, kind="attribution") for row in attrs]
    names = list(attr_s[0].names)
    ia, ic = names.index(injection_sublayer(names)), names.index("core_block.0")
    contrib = [np.asarray([np.asarray(x.exponents, np.float64)[:, 0] for x in row]) for row in attrs]  # (P, n_sub)
    means = [s.mean for s in lam_s]
    spec_s = None
    if spectra is not None:
        spec_s = [summarize([_as_result(x) for x in spectra[j]], kind="spectrum", orbits=list(orbits[j])).to_json()
                  for j in order]
    return AblationSummary(
        alphas=[alphas[j] for j in order], mode=mode, n_prompts=int(lam_s[0].n_prompts),
        lambda1_mean=means, lambda1_std=[s.std for s in lam_s], lambda1_sem=[s.sem for s in lam_s],
        lambda1_min=[s.min for s in lam_s], lambda1_max=[s.max for s in lam_s], names=names,
        contribution_mean=[list(s.lambda1_contribution_mean) for s in attr_s],
        adapter_mean=[float(s.lambda1_contribution_mean[ia]) for s in attr_s],
        adapter_sem=[float(stats.standard_error(c[:, ia])) for c in contrib],
        core_block0_mean=[float(s.lambda1_contribution_mean[ic]) for s in attr_s],
        core_block0_sem=[float(stats.standard_error(c[:, ic])) for c in contrib],
        attribution_total_mean=[float(s.lambda1_total_mean) for s in attr_s],
        orbit_counts=[_kinds(orbits[j]) for j in order],
        crossing=crossing_alpha([alphas[j] for j in order], means, [s.sem for s in lam_s]).to_json(),
        lambda1_summaries=[s.to_json() for s in lam_s], spectrum_summaries=spec_s)


__all__ = ["Crossing", "crossing_alpha", "AblationUnit", "ablation_unit", "AblationResult", "injection_ablation",
           "AblationSummary", "summarize_ablation", "check_alphas", "NO_CROSSING", "injection_sublayer"]
