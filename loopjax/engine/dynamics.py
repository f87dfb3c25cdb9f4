"""Orbit classification, finite-perturbation lambda_1 and spectrum summaries for arbitrary maps.

Like `loopjax.engine.lyapunov`, this module knows no model: a map ``f`` (a callable or a
``jax.tree_util.Partial``) takes an array of any shape to an array of the same shape, and the state is
iterated as ``z_{t+1} = f(z_t)``, t = 0..steps-1, in ``loopjax.engine.dtypes.compute_dtype()`` (float32, float64
under jax x64). Norms are Euclidean norms of the flattened state.

  * `orbit_type`: fixed point / period-p orbit / not converged / diverged, from relative return
    distances over the tail of the trajectory.
  * `lambda1_perturbation`: the largest exponent from two trajectories a distance d0 apart, the
    separation renormalised to d0 every step (no Jacobian needed).
  * `kaplan_yorke_dimension`, `ruelle_bound`: summaries of one (partial) Lyapunov spectrum
    (`pesin_entropy`: deprecated alias of `ruelle_bound`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from loopjax.engine.dtypes import compute_dtype
from loopjax.engine.lyapunov import map_output_shape

__all__ = [
    "OrbitType",
    "orbit_type",
    "Lambda1Perturbation",
    "lambda1_perturbation",
    "kaplan_yorke_dimension",
    "PesinEntropy",
    "pesin_entropy",
    "prepare_map",
    "RuelleBound",
    "ruelle_bound",
    "ORBIT_RTOL",
    "ORBIT_ATOL",
    "ORBIT_MAX_PERIOD",
    "D0_MIN_EPS",
]

ORBIT_RTOL = 1e-4      # r_p <= rtol: the orbit returns to within rtol (relative) after p steps
ORBIT_ATOL = 1e-8      # absolute floor: states with ||z|| < atol/rtol are compared in absolute terms
ORBIT_MAX_PERIOD = 8   # periods 1..max_period are tested
D0_MIN_EPS = 10.0      # lambda1_perturbation needs d0 >= D0_MIN_EPS * eps(dtype) * ||z0||


# ---------------------------------------------------------------- shared helpers

def _check_int(name, value, lo):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")


def _check_positive(name, value, *, allow_zero=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return v


def prepare_map(f, z0):
    """(Partial f, z0 in the compute dtype), after checking z0 (finite, real, non-empty) and the shape f
    returns. Shared by every engine function that iterates a map."""
    f = f if isinstance(f, Partial) else Partial(f)
    dt = compute_dtype()
    z0 = jnp.asarray(z0)
    if not (jnp.issubdtype(z0.dtype, jnp.floating) or jnp.issubdtype(z0.dtype, jnp.integer)):
        raise ValueError(f"z0 must be a real numeric array, got dtype {z0.dtype}")
    if z0.size == 0:
        raise ValueError(f"z0 is empty (shape {z0.shape})")
    z0 = z0.astype(dt)
    if not np.all(np.isfinite(np.asarray(z0))):
        raise ValueError("z0 contains NaN or inf")
    shape = map_output_shape(f, z0.shape, dt)
    if shape != z0.shape:
        raise ValueError(f"f must return an array of the state's shape {z0.shape}, got {shape}")
    return f, z0


def _norm(x, axis=None):
    """Euclidean norm, scaled by max|x| so that large finite states do not overflow."""
    a = jnp.abs(x)
    s = jnp.max(a, axis=axis, keepdims=True)
    safe = jnp.where(s > 0, s, 1)
    n = jnp.sqrt(jnp.sum((a / safe) ** 2, axis=axis, keepdims=True)) * s
    return jnp.squeeze(n, axis=axis) if axis is not None else n.reshape(())


def _ratio(num, den):
    """num / den with 0/0 = 0 and x/0 = inf (den >= 0)."""
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), jnp.where(num > 0, jnp.inf, 0))


# ---------------------------------------------------------------- orbit_type

@dataclasses.dataclass(frozen=True)
class OrbitType:
    """Result of `orbit_type`.

    kind: "fixed_point", "periodic", "not_converged" or "diverged". period: p for fixed_point (1) and
    periodic, else None. residual: r_p of the chosen p (the smallest r_p when not_converged; NaN when
    diverged). step_norm_last: ||z_T - z_{T-1}|| / max(||z_{T-1}||, atol/rtol). return_distances:
    (r_1, ..., r_max_period). diverged_at: first step t whose state z_t is non-finite (else None).
    steps_run: the steps actually iterated (fewer than `steps` only with stop_early); step_norm_last is at
    the last of them.
    """

    kind: str
    period: int | None
    residual: float
    step_norm_last: float
    return_distances: tuple[float, ...]
    diverged_at: int | None = None
    steps_run: int | None = None

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "period": self.period,
            "residual": float(self.residual),
            "step_norm_last": float(self.step_norm_last),
            "return_distances": [float(r) for r in self.return_distances],
            "diverged_at": self.diverged_at,
            "steps_run": self.steps_run,
        }


def _advance(f, z, bad, t0, n, *, keep):
    """n steps from z = z_{t0}: (the states z_{t0+1}, ..., z_{t0+n} stacked if `keep`, else the last one; the
    first non-finite step, or `bad` when that is >= 0 already or none is)."""
    def step(carry, t):
        z, bad = carry
        z = f(z).astype(z.dtype)
        return (z, jnp.where((bad < 0) & ~jnp.all(jnp.isfinite(z)), t, bad)), (z if keep else None)

    (z, bad), zs = jax.lax.scan(step, (z, bad), t0 + jnp.arange(1, n + 1, dtype=jnp.int32))
    return (zs if keep else z), bad


def _row_distances(a, b, scale):
    """||a_i - b_i|| per row of two (n, d) stacks, computed on the rows divided by scale_i >= max |entries| of
    both (no overflow of the squares for large finite states)."""
    s = jnp.where(scale > 0, scale, 1)
    return jnp.sqrt(jnp.sum(jnp.square((a - b) / s[:, None]), axis=1)) * s


def _return_chunk(f, floor, first, m, n, carry):
    """n more steps of the orbit and r_p(t) = ||z_t - z_{t-p}|| / max(||z_{t-p}||, floor) for p = 1..m at each
    new step t (the m states before the chunk are in `hist`), maximised into r_max over t >= first."""
    hist, hist_norms, hist_peaks, bad, r_max, _, t0 = carry
    new, bad = _advance(f, hist[-1], bad, t0, n, keep=True)
    flat = new.reshape(n, -1)
    both = jnp.concatenate([hist.reshape(m, -1), flat])            # z_{t0-m+1}, ..., z_{t0+n}
    peak = jnp.max(jnp.abs(flat), axis=1)
    peaks = jnp.concatenate([hist_peaks, peak])
    norms = jnp.concatenate([hist_norms, _norm(flat, axis=1)])
    on = (t0 + jnp.arange(1, n + 1)) >= first

    def r_lag(p):   # r_p(t) for t = t0+1..t0+n: the rows z_{t-p} start at row m - p of `both`
        rows = functools.partial(jax.lax.dynamic_slice_in_dim, start_index=m - p, slice_size=n)
        dist = _row_distances(flat, rows(both), jnp.maximum(peak, rows(peaks)))
        return _ratio(dist, jnp.maximum(rows(norms), floor))

    r1 = r_lag(1)
    r_max = r_max.at[0].max(jnp.max(jnp.where(on, r1, 0)))
    r_max = jax.lax.fori_loop(2, m + 1, lambda p, r_max: r_max.at[p - 1].max(jnp.max(jnp.where(on, r_lag(p), 0))),
                              r_max)
    return both[n:].reshape(hist.shape), norms[n:], peaks[n:], bad, r_max, r1[-1], t0 + n


@functools.partial(jax.jit, static_argnames=("n_pre", "window", "max_period", "stop_early"))
def _orbit_core(f, z0, floor, rtol, *, n_pre, window, max_period, stop_early):
    """(r_p maximised over the window for p = 1..max_period, r_1 at the last step run, first non-finite
    step, steps run). After n_pre plain steps the tail runs in chunks: each chunk's states are compared with
    the max_period states before them lag by lag (no ring of states rewritten every step: that cost more
    than the map). With stop_early, no further chunk runs once every r_p > rtol (a maximum only grows)."""
    m, dt = max_period, z0.dtype
    steps = n_pre + window + m - 1
    first = steps - window + 1  # first step of the window over which r_p is maximised
    z, bad = _advance(f, z0, jnp.int32(-1), jnp.int32(0), n_pre, keep=False)
    carry = (jnp.broadcast_to(z, (m,) + z.shape), jnp.broadcast_to(_norm(z), (m,)),
             jnp.broadcast_to(jnp.max(jnp.abs(z)), (m,)), bad, jnp.zeros((m,), dt), jnp.zeros((), dt), jnp.int32(n_pre))
    chunk = min(max(m, 64), steps - n_pre)
    full, rest = divmod(steps - n_pre, chunk)

    def more(c):
        i, carry = c
        return (i < full) & ~(stop_early & jnp.all(carry[4] > rtol))

    _, carry = jax.lax.while_loop(more, lambda c: (c[0] + 1, _return_chunk(f, floor, first, m, chunk, c[1])),
                                  (0, carry))
    if rest:
        carry = jax.lax.cond(stop_early & jnp.all(carry[4] > rtol), lambda c: c,
                             lambda c: _return_chunk(f, floor, first, m, rest, c), carry)
    _, _, _, bad, r_max, last, t = carry
    return r_max, last, bad, t


def orbit_type(f: Callable | Partial, z0, *, steps: int, max_period: int = ORBIT_MAX_PERIOD,
               rtol: float = ORBIT_RTOL, atol: float = ORBIT_ATOL, window: int | None = None,
               stop_early: bool = False) -> OrbitType:
    """Classify the orbit of z0 under f after `steps` iterations.

    With floor = atol / rtol and a window of the last W = min(max(2*max_period, steps // 4),
    steps - max_period + 1) steps, the relative return distance for p = 1..max_period is

        r_p = max_{t = T-W+1..T} ||z_t - z_{t-p}|| / max(||z_{t-p}||, floor)      (T = steps)

    so r_p <= rtol means ||z_t - z_{t-p}|| <= max(rtol ||z_{t-p}||, atol) over the whole window
    (W >= max_period + 1 > p: every point of a p-cycle is checked). The smallest p with r_p <= rtol
    gives "fixed_point" (p = 1) or "periodic" (period p); a p-cycle also returns after 2p, 3p, ...
    steps but never after fewer than p, so period 2 is not mistaken for a fixed point. If no p
    qualifies (chaos, quasi-periodicity, slow convergence, period > max_period) the kind is
    "not_converged". A non-finite state at any step gives "diverged". Defaults: rtol = 1e-4,
    atol = 1e-8, max_period = 8 (float32 round-off, ~1e-7 relative, is far below rtol).
    Needs steps >= 2 * max_period. One jitted program; memory about 2 max(max_period, 64) states.
    `window` (default as above) sets W explicitly, max_period + 1 <= W <= steps - max_period + 1: a short
    default tail (16 of 64 steps) says "not converged" for an orbit that has not settled *yet*; a long
    window over a long run (as `classify_regime` uses) makes a "fixed_point"/"periodic" verdict hold
    over the whole tail.
    `stop_early=True` stops once every r_p > rtol (the kind is then "not_converged" whatever follows, as a
    maximum only grows): the r_p are then maxima over the steps run (`steps_run`), and a non-finite state
    after them is not seen.
    """
    _check_int("steps", steps, 1)
    _check_int("max_period", max_period, 1)
    if steps < 2 * max_period:
        raise ValueError(f"steps={steps} is too short to test periods up to max_period={max_period}: "
                         f"need steps >= 2 * max_period = {2 * max_period}")
    rtol = _check_positive("rtol", rtol)
    atol = _check_positive("atol", atol, allow_zero=True)
    f, z0 = prepare_map(f, z0)
    if window is None:
        window = min(max(2 * max_period, steps // 4), steps - max_period + 1)
    else:
        _check_int("window", window, max_period + 1)
        if window > steps - max_period + 1:
            raise ValueError(f"window={window} exceeds steps - max_period + 1 = {steps - max_period + 1}")
    n_pre = steps - window - max_period + 1
    r_max, last, bad, ran = _orbit_core(f, z0, jnp.asarray(atol / rtol, z0.dtype), jnp.asarray(rtol, z0.dtype),
                                        n_pre=n_pre, window=window, max_period=max_period, stop_early=bool(stop_early))
    bad, ran = int(bad), int(ran)
    if bad >= 0:
        return OrbitType(kind="diverged", period=None, residual=math.nan, step_norm_last=math.nan,
                         return_distances=(math.nan,) * max_period, diverged_at=bad, steps_run=ran)
    r = tuple(float(x) for x in np.asarray(r_max, dtype=np.float64))
    last = float(last)
    hits = [p for p in range(1, max_period + 1) if r[p - 1] <= rtol]
    if hits:
        p = hits[0]
        return OrbitType(kind="fixed_point" if p == 1 else "periodic", period=p, residual=r[p - 1],
                         step_norm_last=last, return_distances=r, steps_run=ran)
    return OrbitType(kind="not_converged", period=None, residual=min(r), step_norm_last=last,
                     return_distances=r, steps_run=ran)


# ---------------------------------------------------------------- lambda1_perturbation

@dataclasses.dataclass(frozen=True)
class Lambda1Perturbation:
    """Result of `lambda1_perturbation`.

    lambda1: sum_t log_growth[t] / steps (natural log per step). log_growth: (steps,) log(d_t / d0).
    running: (steps,) cumulative mean of log_growth. d0: the separation used. max_state_norm: max ||z_t||
    over the run (d0 should stay well above eps * max_state_norm).
    """

    lambda1: float
    log_growth: np.ndarray
    running: np.ndarray
    d0: float
    max_state_norm: float

    def to_json(self) -> dict:
        return {
            "lambda1": float(self.lambda1),
            "steps": int(self.log_growth.shape[0]),
            "d0": float(self.d0),
            "max_state_norm": float(self.max_state_norm),
            "log_growth": np.asarray(self.log_growth, dtype=np.float64).tolist(),
            "running": np.asarray(self.running, dtype=np.float64).tolist(),
        }


@functools.partial(jax.jit, static_argnames=("steps", "warmup"))
def _lambda1_core(f, z0, u, d0, *, steps, warmup):
    dt = z0.dtype
    zero = jnp.zeros((), dt)

    def step(carry, t):
        z, w, s, c, zmax, bad = carry
        z, w = f(z).astype(dt), f(w).astype(dt)
        d = _norm(w - z)
        lg = jnp.log(d / d0)
        w = z + (w - z) * (d0 / d)
        ok = jnp.isfinite(lg) & jnp.all(jnp.isfinite(z)) & jnp.all(jnp.isfinite(w))
        bad = jnp.where((bad < 0) & ~ok, t, bad)
        # Kahan-compensated sum of the recorded log-growth (accurate in float32 over many steps).
        y = jnp.where(t < warmup, zero, lg) - c
        s_new = s + y
        c = (s_new - s) - y
        return (z, w, s_new, c, jnp.maximum(zmax, _norm(z)), bad), (lg, s_new)

    carry = (z0, z0 + d0 * u, zero, zero, _norm(z0), jnp.int32(-1))
    (_, _, s, _, zmax, bad), (lg, sums) = jax.lax.scan(
        step, carry, jnp.arange(warmup + steps, dtype=jnp.int32))
    t = jnp.arange(1, steps + 1, dtype=dt)
    return s / steps, lg[warmup:], sums[warmup:] / t, zmax, bad


def lambda1_perturbation(f: Callable | Partial, z0, *, steps: int, d0: float = 1e-6, key=None,
                         warmup: int = 0) -> Lambda1Perturbation:
    """Largest Lyapunov exponent by a renormalised finite perturbation (no Jacobian).

    w_0 = z_0 + d0 u with u a random unit direction (normal draw from `key`, default PRNGKey(0)).
    Every step z <- f(z), w <- f(w), d = ||w - z||, log_growth = log(d / d0), then the separation is
    reset to length d0 along its current direction: w <- z + (w - z) d0 / d. After `warmup` unrecorded
    steps (which align the separation with the leading direction), lambda1 = mean of log_growth over
    `steps`. For d0 -> 0 this is the largest exponent; d0 must be small against the attractor but
    well above round-off: w - z is resolved only to ~eps ||z||, so d0 < 10 eps ||z0|| (eps of the
    compute dtype: 1.2e-7 float32, 2.2e-16 float64) raises ValueError, and a RuntimeWarning is given
    if the state norm grows past d0 / (10 eps) during the run. Raises FloatingPointError if the state
    or the separation become non-finite or the separation collapses to 0. One jitted scan.
    """
    _check_int("steps", steps, 1)
    _check_int("warmup", warmup, 0)
    d0 = _check_positive("d0", d0)
    f, z0 = prepare_map(f, z0)
    dt = z0.dtype
    eps = float(jnp.finfo(dt).eps)
    z0_norm = float(np.linalg.norm(np.asarray(z0, dtype=np.float64)))
    if d0 < D0_MIN_EPS * eps * z0_norm:
        raise ValueError(
            f"d0={d0:g} is below {D0_MIN_EPS:g} * eps * ||z0|| = {D0_MIN_EPS * eps * z0_norm:.3g} "
            f"({jnp.dtype(dt).name}, eps={eps:.3g}, ||z0||={z0_norm:.3g}): the perturbation would be "
            f"lost to round-off; use a larger d0 or float64 (jax x64)")
    if key is None:
        key = jax.random.PRNGKey(0)
    u = jax.random.normal(key, z0.shape, dt)
    u = u / _norm(u)
    lam, lg, running, zmax, bad = _lambda1_core(f, z0, u, jnp.asarray(d0, dt), steps=steps,
                                                warmup=warmup)
    bad = int(bad)
    if bad >= 0:
        when = f"warmup step {bad}" if bad < warmup else f"step {bad - warmup}"
        raise FloatingPointError(
            f"non-finite log-growth or state at {when}: the map diverged, or the separation collapsed "
            f"to 0 (d0 too small for the dtype, or the map is locally constant)")
    zmax = float(zmax)
    if d0 < D0_MIN_EPS * eps * zmax:
        warnings.warn(f"the state norm reached {zmax:.3g}, so d0={d0:g} fell below {D0_MIN_EPS:g} * eps "
                      f"* ||z|| = {D0_MIN_EPS * eps * zmax:.3g}: lambda1 may be dominated by round-off",
                      RuntimeWarning, stacklevel=2)
    return Lambda1Perturbation(lambda1=float(lam), log_growth=np.asarray(lg), running=np.asarray(running),
                               d0=d0, max_state_norm=zmax)


# ---------------------------------------------------------------- spectrum summaries

def _exponents(exponents) -> np.ndarray:
    x = np.asarray(exponents, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"exponents must be 1-D, got shape {x.shape}")
    if x.size == 0:
        raise ValueError("exponents is empty")
    if not np.all(np.isfinite(x)):
        raise ValueError("exponents contain NaN or inf")
    return x


def kaplan_yorke_dimension(exponents) -> float:
    """Kaplan-Yorke (Lyapunov) dimension of a spectrum, any order (it is sorted descending first).

    With S_j = lambda_1 + ... + lambda_j and j the largest index with S_j >= 0,
    D = j + S_j / |lambda_{j+1}|. D = 0.0 if lambda_1 < 0. If the sum of all given exponents is >= 0
    the dimension is not determined by them (it is >= k, and needs more exponents): NaN.
    """
    x = -np.sort(-_exponents(exponents))
    if x[0] < 0:
        return 0.0
    S = np.cumsum(x)
    if S[-1] >= 0:
        return math.nan
    j = int(np.nonzero(S >= 0)[0][-1]) + 1  # 1-based; j < k since S_k < 0
    return float(j + S[j - 1] / abs(x[j]))


@dataclasses.dataclass(frozen=True)
class RuelleBound:
    """Ruelle's inequality h_KS <= sum of the positive exponents (nats per step): `value` is that sum, an
    upper bound on the Kolmogorov-Sinai entropy of any invariant measure (equality, Pesin's formula, needs
    an SRB measure, which nothing here establishes).

    lower_bound: True when even the smallest given exponent is > 0, so exponents beyond the k measured
    ones may be positive too and `value` underestimates the full sum (the bound itself is then unknown).
    """

    value: float
    lower_bound: bool

    def to_json(self) -> dict:
        return {"value": float(self.value), "lower_bound": bool(self.lower_bound)}


def ruelle_bound(exponents) -> RuelleBound:
    """RuelleBound(value = sum of lambda_i > 0, lower_bound = min lambda_i > 0) of one spectrum (per prompt:
    never average it over states of different dimension)."""
    x = _exponents(exponents)
    return RuelleBound(value=float(x[x > 0].sum()), lower_bound=bool(x.min() > 0))


PesinEntropy = RuelleBound  # deprecated name (the sum is Ruelle's upper bound, not Pesin's equality)


def pesin_entropy(exponents) -> RuelleBound:
    """Deprecated alias of `ruelle_bound`."""
    warnings.warn("pesin_entropy is deprecated: use ruelle_bound (h_KS <= sum of positive exponents)",
                  DeprecationWarning, stacklevel=2)
    return ruelle_bound(exponents)
