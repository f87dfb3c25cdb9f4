"""What an orbit does, decided at a converged horizon and stated with its evidence: `classify_regime`.

Model-free like the rest of the engine: ``f`` maps an array to an array of the same shape (a callable or a
``jax.tree_util.Partial``). The procedure, with every threshold a field of `RegimeCriteria`:

1. **Horizon.** Benettin with k probes (`benettin`, then `benettin_continue` in segments of `min_steps`
   steps, one compilation). At the horizons T = min_steps * 2^j (and at `max_steps`) the estimate is the mean
   log-growth over the last half [T/2, T) (the first half is burn-in) with its batch-means standard error.
   The estimate has *converged* at T when

       se_T <= max(se_atol, se_rtol |l_T|)    and
       |l_T - l_prev| <= max(drift_atol, drift_rtol |l_T|, 3 sqrt(se_T^2 + se_prev^2))

   with (l_prev, se_prev) the estimate at the previous horizon (λ1 only; the other columns are reported).
   The second condition alone is "λ1 no longer drifts".
2. **Orbit.** Once λ1 no longer drifts, the orbit is continued `orbit_steps` = max(4 max_period, 64) steps
   from z_T and `orbit_type` (periods 1..max_period, the whole tail as its window) decides whether it
   closes (`stop_early`: the check ends as soon as every period has failed; evidence["orbit"]["steps_run"]).
   A closed orbit is judged by its own exponents (below); the other verdicts need full convergence
   (the se condition too: a leading complex pair makes the λ1 column oscillate at a fixed point, which
   inflates its batch-means se without making the fixed point any less certain).
3. **Verdict** (the first that applies):
   * diverged: a non-finite state (its step is named) or ||z_t|| > blowup * max(||z_0||, 1);
   * fixed_point: the orbit closes with period 1, and it has settled (orbit_type's return criterion holds
     from then on) by T/2, so the λ1 tail lies on it; z* = the state after the orbit check, refined by Newton
     (dense Jacobian when d <= dense_max, else GMRES on the JVP) when its residual ||f(z*) - z*|| /
     max(||z*||, floor) exceeds residual_tol; exponents = log|eig J(z*)| (dense eig of the jacfwd Jacobian,
     or Arnoldi (ARPACK, largest modulus) on the JVP at z*), whose largest must agree with the Benettin λ1
     within max(agree_atol, 3 se);
   * periodic: it closes with period p > 1 (settled by T/2 likewise); Floquet exponents
     (1/p) log|eig(J_{p-1} ... J_0)| on the cycle
     (the dense product, or Benettin over whole periods of the cycle), agreeing with λ1 as above;
   * chaotic: no period, λ1 - 2 se > 0 and λ1 > zero_atol, and the finite-perturbation λ1
     (`lambda1_perturbation` from z_T) agrees within max(agree_rtol |λ1|, 3 sqrt(se^2 + se_pert^2));
   * quasi_periodic: no period, bounded, and |λ1| <= max(2 se, zero_atol) (an invariant circle/torus: a
     zero exponent within error);
   * otherwise (e.g. λ1 < 0 but the orbit has not closed yet) the horizon is doubled; at `max_steps`
     without a verdict: undetermined, never a guess.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from loopjax.engine.lyapunov import benettin, benettin_continue
from loopjax.engine.dynamics import lambda1_perturbation, orbit_type, prepare_map
from loopjax.engine.stats import batch_means_se

__all__ = ["Regime", "RegimeCriteria", "classify_regime", "REGIME_KINDS"]

REGIME_KINDS = ("fixed_point", "periodic", "quasi_periodic", "chaotic", "undetermined", "diverged")


@dataclasses.dataclass(frozen=True)
class RegimeCriteria:
    """Every threshold `classify_regime` applies (see the module docstring for where each one enters)."""

    se_atol: float = 1e-3        # convergence: se of the tail mean of λ1 <= max(se_atol, se_rtol |λ1|)
    se_rtol: float = 0.01
    drift_atol: float = 1e-3     # convergence: change since the previous horizon (see module docstring)
    drift_rtol: float = 0.05
    orbit_rtol: float = 1e-4     # orbit_type's relative return distance for a closed orbit
    orbit_atol: float = 1e-8     # and its absolute floor
    zero_atol: float = 2e-4      # quasi-periodic: |λ1| <= max(2 se, zero_atol)
    agree_atol: float = 2e-3     # fixed point / cycle: |λ1 - eigen λ1| <= max(agree_atol, 3 se)
    agree_rtol: float = 0.1      # chaotic: |λ1 - λ1_pert| <= max(agree_rtol |λ1|, 3 sqrt(se^2 + se_pert^2))
    d0_relative: float = 1e-4    # finite perturbation size relative to ||z_T||
    blowup: float = 1e8          # diverged: ||z_t|| > blowup * max(||z_0||, 1)
    dense_max: int = 512         # dense Jacobian / eig when d <= dense_max
    newton_steps: int = 8        # at most this many Newton steps (each kept only if it lowers the residual)
    residual_tol: float | None = None  # Newton runs when ||f(z)-z||/||z|| > this (None: 100 eps of the dtype)
    eig_steps: int = 512         # cycle-Benettin steps for large cycles (whole periods of the last half)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _jsonable(x):
    """Plain JSON: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, (np.ndarray, jax.Array)):
        return _jsonable(np.asarray(x).tolist())
    return x


def _float(x):
    return math.nan if x is None else float(x)


@dataclasses.dataclass(frozen=True)
class Regime:
    """Result of `classify_regime` / `loopjax.regime`.

    kind: one of REGIME_KINDS. period: p for fixed_point (1) and periodic, else None. horizon: Benettin steps
    actually used. lambda1, lambda1_se: the tail estimate of the largest exponent and its batch-means se at
    that horizon. transient: for fixed_point / periodic, the steps after which the orbit stays closed
    (orbit_type's return criterion) up to the end of the run; None otherwise (evidence["burn_in"] gives the
    steps discarded). exponents: the top exponents by the verdict's own method (evidence["exponents_method"]):
    log|eig J(z*)|, Floquet, or the Benettin tail. evidence: every criterion value (JSON-able). reason: one
    line saying why this kind.
    """

    kind: str
    period: int | None
    horizon: int
    lambda1: float
    lambda1_se: float
    transient: int | None
    exponents: tuple[float, ...]
    evidence: dict
    reason: str

    def to_json(self) -> dict:
        return _jsonable({"kind": self.kind, "period": self.period, "horizon": self.horizon,
                          "lambda1": self.lambda1, "lambda1_se": self.lambda1_se, "transient": self.transient,
                          "exponents": list(self.exponents), "evidence": self.evidence, "reason": self.reason})

    @classmethod
    def from_json(cls, d: dict) -> "Regime":
        if d.get("kind") not in REGIME_KINDS:
            raise ValueError(f"kind must be one of {REGIME_KINDS}, got {d.get('kind')!r}")
        return cls(kind=d["kind"], period=d.get("period"), horizon=int(d["horizon"]),
                   lambda1=_float(d.get("lambda1")), lambda1_se=_float(d.get("lambda1_se")),
                   transient=d.get("transient"), exponents=tuple(_float(x) for x in d.get("exponents", ())),
                   evidence=dict(d.get("evidence") or {}), reason=str(d.get("reason", "")))


# ---------------------------------------------------------------- small jitted pieces

def _nrm(x):
    return jnp.linalg.norm(x.reshape(-1))


def _tangent_map(f, z, u):
    """u -> J_f(z) u: a linear map whose Lyapunov exponents are log|eig J_f(z)| (orthogonal iteration)."""
    return jax.jvp(f, (z,), (u,))[1]


@jax.jit
def _dense_jacobian(f, z):
    return jax.jacfwd(f)(z).reshape(z.size, z.size)


@jax.jit
def _gmres_newton_step(f, z):
    delta, _ = jax.scipy.sparse.linalg.gmres(lambda u: _tangent_map(f, z, u) - u, z - f(z), tol=1e-7,
                                             atol=0.0, restart=40, maxiter=5)
    return z + delta


@jax.jit
def _rel_residual(f, z, floor):
    return _nrm(f(z) - z) / jnp.maximum(_nrm(z), floor)


@jax.jit
def _cycle_residual(f, cycle, floor):  # ||f^p(c_0) - c_0|| / max(||c_0||, floor)
    return _nrm(f(cycle[-1]) - cycle[0]) / jnp.maximum(_nrm(cycle[0]), floor)


@functools.partial(jax.jit, static_argnames="p")
def _settle(f, buf, last, start, stop, floor, rtol, *, p):
    """Continue z_{t+1} = f(z_t) for t = start, ..., stop - 1 (dynamic bounds: one compilation) from buf, the
    last p states (buf[-1] = z_start; a fresh run starts from p copies of z_0 with last = -1). Returns (the
    last p states z_{stop+1-p}, ..., z_stop; the last t < stop + 1 - p with r_p(t) = ||z_{t+p} - z_t|| /
    max(||z_t||, floor) > rtol, else `last`). A run split at any step gives the same numbers, bit for bit,
    as one run (each step depends only on the carried states)."""

    def body(t, carry):
        buf, last = carry
        z_new = f(buf[-1]).astype(buf.dtype)  # z_{t+1}; buf[0] = z_{t+1-p}
        r = _nrm(z_new - buf[0]) / jnp.maximum(_nrm(buf[0]), floor)
        last = jnp.where((t + 1 >= p) & ~(r <= rtol), t + 1 - p, last)
        return jnp.concatenate([buf[1:], z_new[None]]), last

    return jax.lax.fori_loop(start, stop, body, (buf, last))


def _orbit_from(z, p):
    """The start of a `_settle` run from z: (p copies of z, last = -1, 0 steps taken)."""
    return jnp.broadcast_to(z, (p,) + z.shape), jnp.asarray(-1, jnp.int32), 0


def _transient(f, z0, ctx, p, n):
    """First step t0 with r_p(t) <= rtol for every t0 <= t < n - p (0 if always), from the orbit of z0.
    The run is kept per p in ctx["settle"] and continued when a later horizon asks for a larger n: the same
    numbers as a fresh run from z0, without repeating the steps already taken."""
    buf, last, done = ctx["settle"].get(p) or _orbit_from(z0, p)
    if n - 1 > done:
        buf, last = _settle(f, buf, last, done, n - 1, ctx["floor"], ctx["criteria"].orbit_rtol, p=p)
        ctx["settle"][p] = (buf, last, n - 1)
    return int(last) + 1


def _last_states(f, z, ctx, p, n):
    """The last p states of n steps from z (z_{n-p+1}, ..., z_n)."""
    buf, last, _ = _orbit_from(z, p)
    return _settle(f, buf, last, 0, n, ctx["floor"], ctx["criteria"].orbit_rtol, p=p)[0]


TAIL_BATCHES = 16  # batch-means se of the tail mean: 16 batches (few, long batches: an oscillating
                   # λ1 column, e.g. on an invariant circle, inflates the se less than with sqrt(T) batches)


def _tail(lg):
    """(mean, batch-means se with TAIL_BATCHES batches) over the last half of a (T, k) log-growth record."""
    tail = lg[lg.shape[0] // 2:]
    return tail.mean(axis=0), np.atleast_1d(batch_means_se(tail, n_batches=min(TAIL_BATCHES, tail.shape[0])))


def _log_moduli(M, n):
    mu = np.linalg.eigvals(np.asarray(M, np.float64))
    with np.errstate(divide="ignore"):
        return np.sort(np.log(np.abs(mu)))[::-1][:n]


@jax.jit
def _step_diff(f, z):
    return f(z) - z


def _newton(f, z, *, dense, floor, steps):
    """Newton on f(z) = z from z: (z*, relative residual ||f(z*) - z*|| / max(||z*||, floor), steps taken).
    Dense solve of (J - I) delta = z - f(z) in float64 when `dense`, else GMRES on the JVP; a step is kept
    only if it lowers the residual (so the result is never worse than the iterate it started from)."""
    res, taken = float(_rel_residual(f, z, floor)), 0
    for _ in range(steps):
        if res == 0:
            break
        if dense:
            J = np.asarray(_dense_jacobian(f, z), np.float64)
            F = np.asarray(_step_diff(f, z), np.float64).reshape(-1)
            try:
                delta = np.linalg.solve(J - np.eye(J.shape[0]), -F)
            except np.linalg.LinAlgError:
                break
            z_new = z + jnp.asarray(delta.reshape(z.shape), z.dtype)
        else:
            z_new = _gmres_newton_step(f, z)
        r_new = float(_rel_residual(f, z_new, floor))
        if not r_new < res:
            break
        z, res, taken = z_new, r_new, taken + 1
    return z, res, taken


def _benettin_record(f, z, *, k, key, steps, segment):
    """(steps, k) log-growth of Benettin from z in segments of `segment` steps (the compilation the horizon
    loop already made), steps a multiple of segment."""
    r = benettin(f, z, k=k, steps=segment, key=key)
    lg = [np.asarray(r.log_growth, np.float64)]
    for _ in range(steps // segment - 1):
        r = benettin_continue(f, r, steps=segment)
        lg.append(np.asarray(r.log_growth, np.float64))
    return np.concatenate(lg)


@jax.jit
def _jvp(f, z, u):
    return _tangent_map(f, z, u)


def _arnoldi_log_moduli(f, z, k):
    """The k largest log|eig J_f(z)| by implicitly restarted Arnoldi (scipy ARPACK, which='LM') on the JVP,
    asking for k + 4 (a cluster of nearly equal moduli is then resolved) at a tolerance near the dtype's
    eps (a loose tolerance can converge to the wrong members of a cluster). Returns (log moduli, note)."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigs  # scipy: a dependency of jax
    d, shape, dt = z.size, z.shape, z.dtype
    op = LinearOperator((d, d), dtype=np.float64, matvec=lambda v: np.asarray(
        _jvp(f, z, jnp.asarray(np.real(v).reshape(shape), dt)), np.float64).reshape(-1))
    n = min(k + 4, d - 2)
    tol = float(jnp.finfo(dt).eps)
    note = f"Arnoldi (ARPACK, largest modulus, {n} eigenvalues, tol {tol:.1e}) on the JVP at z*"
    try:
        mu = eigs(op, k=n, which="LM", tol=tol, ncv=min(d, max(2 * n + 1, 32)), maxiter=50 * d,
                  v0=np.ones(d) / math.sqrt(d), return_eigenvectors=False)
    except ArpackNoConvergence as e:
        mu, note = e.eigenvalues, note + f" (NOT converged: {len(e.eigenvalues)} of {n})"
    with np.errstate(divide="ignore"):
        return np.sort(np.log(np.abs(mu)))[::-1][:k], note


def _eigen_exponents(f, z, ctx):
    """The k largest log|eig J_f(z*)| and how they were computed: dense eig of the jacfwd Jacobian when
    d <= dense_max, else Arnoldi (ARPACK) on the JVP at z*."""
    c, k = ctx["criteria"], ctx["k"]
    if z.size <= c.dense_max:
        return _log_moduli(_dense_jacobian(f, z), k), "dense eig of the jacfwd Jacobian at z*"
    return _arnoldi_log_moduli(f, z, k)


def _floquet_exponents(f, cycle, ctx):
    """The k largest Floquet exponents (1/p) log|eig(J_{p-1} ... J_0)| of a cycle (p,) + state shape: the
    dense product when small, else Benettin on the cycle averaged over whole periods of its last half."""
    c, k = ctx["criteria"], ctx["k"]
    p, d = cycle.shape[0], cycle[0].size
    if d <= c.dense_max and p * float(d) ** 3 <= 2e10:
        M = np.eye(d)
        for j in range(p):
            M = np.asarray(_dense_jacobian(f, cycle[j]), np.float64) @ M
        return _log_moduli(M, k) / p, "dense product of the cycle's Jacobians"
    steps = ctx["segment"] * max(2, -(-max(ctx["eig_steps"], 2 * p) // ctx["segment"]))
    lg = _benettin_record(f, cycle[0], k=k, key=jax.random.fold_in(ctx["key"], 3), steps=steps,
                          segment=ctx["segment"])
    whole = p * ((steps // 2) // p)
    return np.sort(lg[-whole:].mean(axis=0))[::-1], f"Benettin on the cycle over {whole // p} whole periods"


def _agreement(name, lam, se, other, c):
    tol = max(c.agree_atol, 3 * se)
    delta = abs(float(other) - lam)
    return delta <= tol, {f"{name}_lambda1": float(other), "benettin_lambda1": lam, "difference": delta,
                          "tolerance": tol}


def _closed(kind, f, z0, r, ctx, o):
    """fixed_point / periodic verdict from a closed orbit (o: orbit_type result), or (None, reason)."""
    c, p, T, floor = ctx["criteria"], o.period, ctx["T"], ctx["floor"]
    transient = _transient(f, z0, ctx, p, T + ctx["n_orbit"] + 1)
    ctx["evidence"]["transient"] = transient
    if transient > T // 2:  # λ1's tail [T/2, T) must lie on the settled orbit
        return None, (f"the orbit closes (period {p}) only from step {transient}, after the burn-in T/2 = "
                      f"{T // 2} of the λ1 estimate")
    cycle = _last_states(f, r.final_state, ctx, p, ctx["n_orbit"])
    if p == 1:
        z = cycle[0]
        res, taken = float(_rel_residual(f, z, floor)), 0
        if not res <= ctx["residual_tol"]:  # continued iteration did not get there: Newton
            z, res, taken = _newton(f, z, dense=z.size <= c.dense_max, floor=floor, steps=c.newton_steps)
        lm, method = _eigen_exponents(f, z, ctx)
        detail = {"residual": res, "residual_tol": ctx["residual_tol"], "newton_steps": taken,
                  "newton": None if not taken else ("dense" if z.size <= c.dense_max else "gmres"),
                  "z_norm": float(_nrm(z))}
    else:
        lm, method = _floquet_exponents(f, cycle, ctx)
        detail = {"residual": float(_cycle_residual(f, cycle, floor))}
    ok, agree = _agreement("eigen" if p == 1 else "floquet", ctx["l"], ctx["s"], lm[0], c)
    ctx["evidence"][kind] = {**detail, "exponents": lm, "method": method, "agreement": agree}
    ctx["evidence"]["exponents_method"] = method
    if not ok:
        return None, (f"the orbit closes (period {p}) but Benettin λ1 = {ctx['l']:.4g} and the "
                      f"{'eigen' if p == 1 else 'Floquet'} λ1 = {lm[0]:.4g} differ by {agree['difference']:.2g}"
                      f" > {agree['tolerance']:.2g}")
    why = (f"closed orbit of period {p} over the {ctx['n_orbit']} steps after T = {T}; "
           f"{'log|eig J(z*)|' if p == 1 else 'Floquet'} λ1 = {lm[0]:.4g} agrees with Benettin {ctx['l']:.4g}")
    return _regime(kind, ctx, period=p, transient=transient, exponents=lm, reason=why), None


def _chaotic(f, r, ctx):
    c, l, s, T = ctx["criteria"], ctx["l"], ctx["s"], ctx["T"]
    zT = r.final_state
    nz = float(_nrm(zT))
    d0 = max(c.d0_relative * nz, 100 * float(jnp.finfo(zT.dtype).eps) * nz) if nz > 0 else c.d0_relative
    steps = max(T // 2, 64)
    try:
        pert = lambda1_perturbation(f, zT, steps=steps, d0=d0, key=jax.random.fold_in(ctx["key"], 1),
                                    warmup=64)
    except FloatingPointError as e:
        return None, f"λ1 > 0 but the finite-perturbation check failed: {e}"
    sp = float(batch_means_se(pert.log_growth))
    tol = max(c.agree_rtol * abs(l), 3 * math.hypot(s, sp))
    ok = abs(pert.lambda1 - l) <= tol
    ctx["evidence"]["perturbation"] = {"lambda1": pert.lambda1, "se": sp, "d0": d0, "steps": steps,
                                       "warmup": 64, "difference": abs(pert.lambda1 - l), "tolerance": tol}
    if not ok:
        return None, (f"λ1 = {l:.4g} ± {s:.2g} > 0 but the finite-perturbation λ1 = {pert.lambda1:.4g} ± {sp:.2g}"
                      f" differs by more than {tol:.2g}")
    ctx["evidence"]["exponents_method"] = "Benettin tail"
    why = (f"λ1 = {l:.4g} ± {s:.2g} > 2 se at a converged horizon T = {T}, finite perturbations give "
           f"{pert.lambda1:.4g} ± {sp:.2g}, no period <= {ctx['max_period']}")
    return _regime("chaotic", ctx, reason=why), None


def _decide(f, z0, r, ctx, *, converged):
    """The verdict at a horizon whose λ1 no longer drifts, or (None, why not yet). A closed orbit is judged
    by its own exponents (eigen / Floquet, which must agree with λ1); chaotic and quasi-periodic need the
    full convergence criterion (se too)."""
    c, n_orbit, l, s = ctx["criteria"], ctx["n_orbit"], ctx["l"], ctx["s"]
    o = orbit_type(f, r.final_state, steps=n_orbit, max_period=ctx["max_period"], rtol=c.orbit_rtol,
                   atol=c.orbit_atol, window=n_orbit - ctx["max_period"] + 1, stop_early=True)
    ctx["evidence"]["orbit"] = {**o.to_json(), "from_step": ctx["T"], "steps": n_orbit}
    if o.kind == "diverged":
        return _diverged(ctx, ctx["T"] + o.diverged_at, "non-finite state in the orbit check"), None
    if o.kind in ("fixed_point", "periodic"):
        return _closed(o.kind, f, z0, r, ctx, o)
    if not converged:
        return None, f"no closed orbit and λ1 = {l:.4g} ± {s:.2g} not converged at T = {ctx['T']} (se)"
    if l - 2 * s > 0 and l > c.zero_atol:
        return _chaotic(f, r, ctx)
    if abs(l) <= max(2 * s, c.zero_atol):
        ctx["evidence"]["exponents_method"] = "Benettin tail"
        why = (f"no closed orbit (periods <= {ctx['max_period']}, smallest return distance {o.residual:.2g}), "
               f"bounded, λ1 = {l:.3g} ± {s:.2g} consistent with 0 (|λ1| <= max(2 se, {c.zero_atol:g}))")
        return _regime("quasi_periodic", ctx, reason=why), None
    return None, (f"λ1 = {l:.4g} ± {s:.2g} but the orbit has not closed (periods <= {ctx['max_period']}, "
                  f"smallest return distance {o.residual:.2g} > {c.orbit_rtol:g}) by step {ctx['T'] + o.steps_run}")


def _regime(kind, ctx, *, period=None, transient=None, exponents=None, reason=""):
    est, se = ctx.get("est"), ctx.get("se")
    if exponents is None:
        exponents = np.sort(est)[::-1] if est is not None else ()
    return Regime(kind=kind, period=period, horizon=int(ctx["T"]), lambda1=_float(ctx.get("l")),
                  lambda1_se=_float(ctx.get("s")), transient=transient,
                  exponents=tuple(float(x) for x in exponents), evidence=_jsonable(ctx["evidence"]), reason=reason)


def _diverged(ctx, step, why):
    """diverged at `step` (the first t with z_t non-finite or too large; the horizon is set to it)."""
    ctx["evidence"]["diverged_at"] = int(step)
    ctx["T"] = int(step)
    ctx["l"] = ctx["s"] = None
    ctx["est"] = None
    return _regime("diverged", ctx, reason=f"{why}: z_t at t = {step}")


def _converged(l, s, prev, c):
    """The stated convergence criterion (module docstring): (se and drift both hold, drift holds, numbers)."""
    se_tol = max(c.se_atol, c.se_rtol * abs(l))
    if prev is None:
        return False, False, {"se_tol": se_tol, "drift": None, "drift_tol": None, "converged": False}
    drift = abs(l - prev[0])
    drift_tol = max(c.drift_atol, c.drift_rtol * abs(l), 3 * math.hypot(s, prev[1]))
    settled = bool(drift <= drift_tol)
    ok = bool(s <= se_tol) and settled
    return ok, settled, {"se_tol": se_tol, "drift": drift, "drift_tol": drift_tol, "converged": ok}


def _check_args(k, min_steps, max_steps, max_period):
    for name, v, lo in (("k", k, 1), ("min_steps", min_steps, 8), ("max_steps", max_steps, 1),
                        ("max_period", max_period, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if max_steps < 2 * min_steps or max_steps % min_steps:
        raise ValueError(f"max_steps={max_steps} must be a multiple of min_steps={min_steps} and at least twice it")


def _segment_failed(f, start, T, seg, err, ctx):
    """A Benettin segment raised FloatingPointError: diverged if the state went non-finite (its step named),
    else undetermined (e.g. a singular tangent map: λ = -inf somewhere)."""
    o = orbit_type(f, start, steps=max(seg, 2), max_period=1)
    if o.diverged_at is not None:
        return _diverged(ctx, T + o.diverged_at, "non-finite state")
    ctx["evidence"]["error"] = str(err)
    return _regime("undetermined", ctx, reason=f"the Benettin segment from step {T} failed: {err}")


def classify_regime(f: Callable | Partial, z0, *, key, k: int = 4, min_steps: int = 64, max_steps: int = 8192,
                    max_period: int = 128, criteria: RegimeCriteria | None = None) -> Regime:
    """The regime of the orbit of z0 under f, decided at a converged horizon (see the module docstring).

    `key` draws the k Benettin probes (and, folded in, the eigen / perturbation probes); k (capped at d) is
    also the number of exponents reported. Benettin runs in segments of `min_steps` steps (one compilation)
    up to `max_steps` (a multiple of it); the horizon is tested at min_steps * 2^j and at max_steps. Periods
    up to `max_period` are tested over max(4 max_period, 64) steps after the horizon. Thresholds: `criteria`
    (RegimeCriteria()). Never raises for what the orbit does (a non-finite state is "diverged", a failed
    check "undetermined" with its reason); raises ValueError for bad arguments.
    """
    _check_args(k, min_steps, max_steps, max_period)
    c = criteria if criteria is not None else RegimeCriteria()
    f, z0 = prepare_map(f, z0)
    d = z0.size
    k = min(k, d)
    checks = {min(min_steps * 2 ** j, max_steps) for j in range(64) if min_steps * 2 ** (j - 1) < max_steps}
    eps = float(jnp.finfo(z0.dtype).eps)
    ctx = {"criteria": c, "key": key, "k": k, "max_period": max_period, "n_orbit": max(4 * max_period, 64),
           "segment": min_steps, "eig_steps": min_steps * max(2, -(-c.eig_steps // min_steps)),
           "residual_tol": c.residual_tol if c.residual_tol is not None else 100 * eps,
           "floor": c.orbit_atol / c.orbit_rtol, "settle": {}, "T": 0, "l": None, "s": None,
           "evidence": {"criteria": c.to_json(), "d": d, "k": k, "min_steps": min_steps, "max_steps": max_steps,
                        "max_period": max_period, "dtype": jnp.dtype(z0.dtype).name, "horizons": []}}
    limit = c.blowup * max(float(_nrm(z0)), 1.0)
    r, lg, prev, why = None, [], None, f"no horizon up to max_steps={max_steps} converged"
    while ctx["T"] < max_steps:
        start = z0 if r is None else r.final_state
        try:
            r = benettin(f, z0, k=k, steps=min_steps, key=key) if r is None else \
                benettin_continue(f, r, steps=min_steps)
        except FloatingPointError as e:
            return _segment_failed(f, start, ctx["T"], min_steps, e, ctx)
        lg.append(np.asarray(r.log_growth, np.float64))
        norms = np.asarray(r.state_norms, np.float64)[1:]
        if not np.all(norms <= limit):
            return _diverged(ctx, ctx["T"] + int(np.flatnonzero(~(norms <= limit))[0]) + 1,
                             f"||z|| exceeded {c.blowup:g} * max(||z_0||, 1)")
        ctx["T"] += min_steps
        if ctx["T"] not in checks:
            continue
        verdict, why, prev = _at_horizon(f, z0, r, np.concatenate(lg), prev, ctx)
        if verdict is not None:
            return verdict
    ctx["evidence"]["exponents_method"] = "Benettin tail (no verdict)"
    return _regime("undetermined", ctx, reason=f"at the cap max_steps={max_steps}: {why}")


def _at_horizon(f, z0, r, lg, prev, ctx):
    """Estimate at the current horizon; the verdict if there is one. Returns (verdict or None, why, prev)."""
    est, se = _tail(lg)
    l, s = float(est[0]), float(se[0])
    ok, settled, crit = _converged(l, s, prev, ctx["criteria"])
    ctx.update(est=est, se=se, l=l, s=s)
    ctx["evidence"].update(burn_in=ctx["T"] // 2, benettin_exponents=est, benettin_se=se, converged=ok)
    ctx["evidence"]["horizons"].append({"horizon": ctx["T"], "lambda1": l, "se": s, **crit})
    if not settled:
        return None, f"λ1 = {l:.4g} ± {s:.2g} still drifting at T = {ctx['T']} ({crit})", (l, s)
    verdict, why = _decide(f, z0, r, ctx, converged=ok)
    return verdict, why, (l, s)
