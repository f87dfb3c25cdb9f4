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
instead); `loopjax.summary.ablation.summarize_ablation` (one layer up) reduces them per alpha: λ1 mean ±
standard error over prompts, mean adapter and core_block.0 contributions, orbit counts, and `crossing_alpha`
(here), the alpha* where the mean λ1 crosses 0 (linear interpolation between the bracketing alphas).

No matplotlib here; the figures are drawn by `loopjax ablate` (`loopjax/cli/ablate.py`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from loopjax.analysis.frontends import attribution, lambda1, orbit, spectrum
from loopjax.engine.dynamics import OrbitType
from loopjax.engine.lyapunov import LyapunovResult
from loopjax.models.loop_model import LoopModel, scale_injection

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
                  pad_multiple: int | None = None, **engine) -> AblationUnit:
    """λ1, k=1 attribution, orbit type (and the top-k spectrum if k) of `scale_injection(model, alpha, mode)`
    on one prompt `ids` (L,) with the prompt key `key`. `engine` (warmup, renorm_every, remat, ...) goes to
    the Lyapunov front-ends. pad_multiple=N runs the prompt right-padded to a multiple of N tokens (as a
    one-prompt list: the same key, pad rows held at 0), so prompts of nearby lengths share compilations;
    not with mode="mean", whose mean over positions must not see the pads."""
    m = scale_injection(model, float(alpha), mode=mode)
    pad = pad_multiple if mode is None else None
    if pad:
        one = dict(key=[key], pad_multiple=pad, **engine)
        lam = lambda1(m, [ids], steps=steps_lambda1, **one)[0]
        attr = attribution(m, [ids], k=1, steps=attr_steps, **one)[0]
        spec = spectrum(m, [ids], k=k, steps=spectrum_steps, **one)[0] if k else None
    else:
        lam = lambda1(m, ids, steps=steps_lambda1, key=key, **engine)
        attr = attribution(m, ids, k=1, steps=attr_steps, key=key, **engine)
        spec = spectrum(m, ids, k=k, steps=spectrum_steps, key=key, **engine) if k else None
    return AblationUnit(alpha=float(alpha), lambda1=float(lam), attribution=attr,
                        orbit=orbit(m, ids, steps=orbit_steps, key=key, pad_multiple=pad), spectrum=spec)


def ablation_units(model: LoopModel, prompts_ids, alpha, *, keys, steps_lambda1: int = 32, attr_steps: int = 32,
                   k: int | None = None, spectrum_steps: int = 64, orbit_steps: int = 64, pad_multiple: int = 8,
                   **engine) -> list[AblationUnit]:
    """`ablation_unit` of every prompt in `prompts_ids` (a list of (L,) arrays, prompt i with key keys[i]) at
    one alpha, the Lyapunov runs of all prompts as padded batches (`loopjax.spectrum` on a list: one vmapped
    program per bucket of `pad_multiple` tokens, instead of one call per prompt). Equal to the per-prompt
    units with the same keys up to float rounding (tests/test_ragged.py). Not for mode="mean"."""
    m = scale_injection(model, float(alpha))
    one = dict(key=list(keys), pad_multiple=pad_multiple, **engine)
    lam = np.asarray(lambda1(m, list(prompts_ids), steps=steps_lambda1, **one))
    attr = attribution(m, list(prompts_ids), k=1, steps=attr_steps, **one)
    spec = spectrum(m, list(prompts_ids), k=k, steps=spectrum_steps, **one) if k else [None] * len(attr)
    return [AblationUnit(alpha=float(alpha), lambda1=float(lam[i]), attribution=attr[i],
                         orbit=orbit(m, ids, steps=orbit_steps, key=keys[i], pad_multiple=pad_multiple),
                         spectrum=spec[i]) for i, ids in enumerate(prompts_ids)]


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
    `loopjax.summarize(result)` gives the per-alpha statistics and alpha*."""
    from loopjax.analysis.frontends import prompt_key

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


INJECTION_SUBLAYERS = ("adapter", "injection")   # the sublayer that reads e: Huginn's adapter, Parcae's injection


def injection_sublayer(names) -> str:
    """The name of the loop map's injection sublayer among `names` (the `adapter_*` fields of AblationSummary
    are its contributions); ValueError unless there is one and a core_block.0."""
    found = next((n for n in INJECTION_SUBLAYERS if n in names), None)
    if found is None or "core_block.0" not in names:
        raise ValueError(f"the attribution has no {' / '.join(INJECTION_SUBLAYERS)} and core_block.0 sublayers "
                         f"({list(names)}): not a model with an input injection (Huginn, Parcae)")
    return found


__all__ = ["Crossing", "crossing_alpha", "AblationUnit", "ablation_unit", "ablation_units", "AblationResult",
           "injection_ablation",
           "check_alphas", "NO_CROSSING", "injection_sublayer"]
