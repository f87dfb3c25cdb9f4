"""Covariant Lyapunov vectors (Ginelli et al. 2007) of arbitrary maps, their angles, localisation and
finite-time exponents. Knows no model: a map ``f`` takes an array to an array of the same shape.

Gram–Schmidt (Benettin) vectors depend on the inner product and on the QR order; the covariant vectors
v_i(t) do not: they are carried by the tangent dynamics, J(z_t) v_i(t) ∥ v_i(t+1), and grow at the rate λ_i
in both time directions. Algorithm (all ``lax.scan``; JVPs by ``jax.linearize`` + ``vmap``, reduced QR):

  1. warm-up: ``warmup`` Benettin steps (state and GS basis relax onto the attractor; the same
     step as ``loopjax.benettin``, which is used as is for the GS comparisons);
  2. window: ``steps`` = W forward steps storing Q_t (d, k), R_t (k, k) and z_t, where J(z_t) Q_t = Q_{t+1} R_t;
  3. backward transient: ``backward`` = B further forward steps storing only R_t;
  4. backward: from a random upper-triangular C_{W+B} (unit columns), C_t = R_t^{-1} C_{t+1} with columns
     normalised, t = W+B-1 .. 0; the column norms n_t give the CLV growth log‖J v_i(t)‖ = -log n_{t,i};
  5. v(t) = Q_t C_t for t < W.

Memory: Q over the window is W·d·k floats (plus the states, W·d, and the vectors, another W·d·k); the R's
are (W+B)·k² floats. With ``host_chunk=c`` the window runs in chunks of c steps whose Q's and states go
to host memory (numpy) after each chunk, so the device holds c·d·k floats; the vectors are then
assembled on the host, chunk by chunk, and returned as numpy arrays.

The first CLV equals the first GS vector (C is upper triangular), so λ1's finite-time statistics are the
same on both paths; CLVs i >= 2 and every angle are what the GS vectors cannot give.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from loopjax.engine.dtypes import compute_dtype

__all__ = ["CovariantResult", "covariant_vectors", "subspace_angle", "pairwise_angles", "participation_ratio",
           "position_weights", "finite_time_exponents", "FiniteTimeStats", "finite_time_statistics",
           "SublayerGrowth", "sublayer_growth"]


def _tolist(x):
    return None if x is None else np.asarray(x, dtype=np.float64).tolist()


@flax.struct.dataclass
class CovariantResult:
    """Output of `covariant_vectors`. W = window steps, d = state size, k = number of vectors.

    vectors (W, d, k): unit CLVs v_i(t) (sign arbitrary), column i ↔ exponent i. states (W, *shape): z_t.
    log_growth (W, k): log‖J(z_t) v_i(t)‖; exponents (k,): its window mean (the CLV exponents).
    gs_log_growth (W, k), gs_exponents (k,): log|diag R_t| and its mean (Benettin, same window).
    angles (W,): minimal angle (radians) between span(v_1..v_split) and span(v_split+1..v_k), None if k = 1.
    pairwise (W, k, k): angle between the lines of v_i and v_j, in [0, π/2].
    window_probes (d, k): the GS basis Q_0 at the window start (to rerun Benettin on the same window).
    """

    vectors: jax.Array
    states: jax.Array
    log_growth: jax.Array
    exponents: jax.Array
    gs_log_growth: jax.Array
    gs_exponents: jax.Array
    angles: jax.Array | None
    pairwise: jax.Array
    window_probes: jax.Array
    split: int = flax.struct.field(pytree_node=False, default=1)
    warmup: int = flax.struct.field(pytree_node=False, default=0)
    backward: int = flax.struct.field(pytree_node=False, default=0)

    def to_json(self) -> dict:
        """The numbers (vectors, states and probes are left out: save them as arrays)."""
        return {"steps": int(self.log_growth.shape[0]), "k": int(self.exponents.shape[-1]),
                "warmup": self.warmup, "backward": self.backward, "split": self.split,
                "exponents": _tolist(self.exponents), "gs_exponents": _tolist(self.gs_exponents),
                "log_growth": _tolist(self.log_growth), "gs_log_growth": _tolist(self.gs_log_growth),
                "angles": _tolist(self.angles), "pairwise": _tolist(self.pairwise)}


@partial(jax.jit, static_argnames=("n", "store"))
def _forward(f, z, Q, *, n: int, store: bool):
    """n Benettin steps from (z, Q); returns (z_n, Q_n, R's (n, k, k)[, Q's (n, d, k), z's (n, *shape)])."""
    dt, shape = z.dtype, z.shape

    def step(carry, _):
        z, Q = carry
        z_next, lin = jax.linearize(lambda x: f(x).astype(dt), z)
        W = jax.vmap(lambda q: lin(q.reshape(shape)).reshape(-1), in_axes=1, out_axes=1)(Q)
        Q_next, R = jnp.linalg.qr(W, mode="reduced")
        return (z_next, Q_next), ((R, Q, z) if store else (R,))

    with jax.default_matmul_precision("highest"):
        (z, Q), out = jax.lax.scan(step, (z, Q), None, length=n)
    return (z, Q) + out


@jax.jit
def _backward(Rs, C_end):
    """C_t = R_t^{-1} C_{t+1} / column norms, t = n-1 .. 0. Returns C's (n, k, k) and log‖J v‖ (n, k)."""
    def step(C, R):
        C = jax.scipy.linalg.solve_triangular(R, C, lower=False)
        norms = jnp.linalg.norm(C, axis=0)
        C = C / norms
        return C, (C, -jnp.log(norms))

    with jax.default_matmul_precision("highest"):
        _, (Cs, growth) = jax.lax.scan(step, C_end, Rs, reverse=True)
    return Cs, growth


def subspace_angle(V, split: int):
    """Minimal principal angle (radians) between span(V[..., :split]) and span(V[..., split:]).

    V: (..., d, k). cos from σ_max(Qa^T Qb), sin from σ_min(Qb - Qa Qa^T Qb); arctan2 of the two keeps
    small angles accurate (arccos alone loses half the digits near 0)."""
    if not 0 < split < V.shape[-1]:
        raise ValueError(f"split must be in [1, k-1] = [1, {V.shape[-1] - 1}], got {split}")
    with jax.default_matmul_precision("highest"):
        Qa = jnp.linalg.qr(V[..., :split], mode="reduced")[0]
        Qb = jnp.linalg.qr(V[..., split:], mode="reduced")[0]
        M = jnp.swapaxes(Qa, -1, -2) @ Qb
        cos = jnp.linalg.svd(M, compute_uv=False)[..., 0]
        sin = jnp.linalg.svd(Qb - Qa @ M, compute_uv=False)[..., -1]
    return jnp.arctan2(sin, cos)


def pairwise_angles(V):
    """Angles (..., k, k) in [0, π/2] between the lines of the columns of V (..., d, k) (unit or not)."""
    with jax.default_matmul_precision("highest"):
        U = V / jnp.linalg.norm(V, axis=-2, keepdims=True)
        G = jnp.abs(jnp.swapaxes(U, -1, -2) @ U)
    eye = jnp.eye(G.shape[-1], dtype=bool)
    return jnp.where(eye, 0.0, jnp.arccos(jnp.clip(G, 0.0, 1.0)))


def _check(k, steps, warmup, backward, d):
    for name, v, lo in (("k", k, 1), ("steps", steps, 1), ("warmup", warmup, 0), ("backward", backward, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if k > d:
        raise ValueError(f"k={k} vectors exceed the state dimension d={d}")


def _start(f, z0, k, warmup, key, probes):
    """(z, Q) at the window start: `warmup` Benettin steps from z0 and the given/drawn orthonormal probes."""
    dt = compute_dtype()
    d = z0.size
    if probes is None:
        if key is None:
            raise ValueError("give either key (random orthonormal probes) or probes (a (d, k) array)")
        probes = jnp.linalg.qr(jax.random.normal(key, (d, k), dt), mode="reduced")[0]
    probes = jnp.asarray(probes, dt)
    if probes.shape != (d, k):
        raise ValueError(f"probes must have shape (d, k) = {(d, k)}, got {probes.shape}")
    err = float(jnp.max(jnp.abs(probes.T @ probes - jnp.eye(k, dtype=dt))))
    if not err <= (1e-10 if dt == jnp.float64 else 1e-5):
        raise ValueError(f"probes are not orthonormal: max|Q^T Q - I| = {err:.3g}")
    if warmup == 0:
        return z0, probes
    z, Q, _ = _forward(f, z0, probes, n=warmup, store=False)
    if not bool(jnp.all(jnp.isfinite(z))):
        raise FloatingPointError(f"non-finite state after the {warmup}-step warm-up: the map diverged")
    return z, Q


def _window(f, z, Q, steps, host_chunk):
    """Forward over the window (optionally in host-offloaded chunks): z after it, Q after it, R's, Q's, z's."""
    chunk = steps if host_chunk is None else int(host_chunk)
    Rs, Qs, zs = [], [], []
    for start in range(0, steps, chunk):
        z, Q, R, Qc, zc = _forward(f, z, Q, n=min(chunk, steps - start), store=True)
        Rs.append(R)
        Qs.append(Qc if host_chunk is None else np.asarray(jax.device_get(Qc)))
        zs.append(zc if host_chunk is None else np.asarray(jax.device_get(zc)))
    return z, Q, jnp.concatenate(Rs), Qs, zs


def covariant_vectors(f: Callable | Partial, z0, *, k: int, steps: int, warmup: int = 0, key=None,
                      probes=None, backward: int | None = None, split: int | None = None,
                      host_chunk: int | None = None, seed_key=None) -> CovariantResult:
    """The k leading covariant Lyapunov vectors of z -> f(z) over a window of `steps` steps (Ginelli).

    `warmup` forward steps (Benettin) precede the window, `backward` (default: `warmup`, at least
    `steps`) further forward steps follow it for the backward transient. `key` draws the initial GS probes
    (or pass orthonormal `probes` (d, k)); the random upper-triangular backward start is drawn from
    fold_in(key, 1) (or `seed_key`). `split` (default: the number of positive CLV exponents, clipped to
    [1, k-1]) sets the unstable/stable split of `angles`. `host_chunk=c` keeps Q's and states on the host
    in chunks of c steps (see the module docstring for memory). Returns a CovariantResult.
    Raises FloatingPointError if a backward step is non-finite (R singular: a direction collapsed)."""
    f = f if isinstance(f, Partial) else Partial(f)
    dt = compute_dtype()
    z0 = jnp.asarray(z0, dt)
    backward = max(warmup, steps) if backward is None else backward
    _check(k, steps, warmup, backward, z0.size)
    if host_chunk is not None and (not isinstance(host_chunk, (int, np.integer)) or host_chunk < 1):
        raise ValueError(f"host_chunk must be an integer >= 1 or None, got {host_chunk!r}")
    z, Q0 = _start(f, z0, k, warmup, key, probes)
    z, Q, R_win, Qs, zs = _window(f, z, Q0, steps, host_chunk)
    R_all = R_win if backward == 0 else jnp.concatenate([R_win, _forward(f, z, Q, n=backward, store=False)[2]])
    seed_key = seed_key if seed_key is not None else jax.random.fold_in(key if key is not None else
                                                                        jax.random.key(0), 1)
    C_end = jnp.triu(jax.random.normal(seed_key, (k, k), dt))
    C_end = C_end / jnp.linalg.norm(C_end, axis=0)
    Cs, growth = _backward(R_all, C_end)
    if not bool(jnp.all(jnp.isfinite(growth))):
        t = int(np.argwhere(~np.isfinite(np.asarray(growth)).all(-1))[0, 0])
        raise FloatingPointError(f"non-finite CLV growth at step {t} of the window+backward stretch: R_t is "
                                 f"singular (a tangent direction collapsed; use a smaller k)")
    Cs, growth = Cs[:steps], growth[:steps]
    gs_growth = jnp.log(jnp.abs(jnp.diagonal(R_win, axis1=-2, axis2=-1)))
    exponents = growth.mean(0)
    if split is None:
        split = int(np.clip(int(np.sum(np.asarray(exponents) > 0)), 1, max(k - 1, 1)))
    V, angles, pair = _assemble(Qs, Cs, split if k > 1 else None, host_chunk is not None)
    states = np.concatenate(zs) if host_chunk is not None else jnp.concatenate(zs)
    return CovariantResult(vectors=V, states=states, log_growth=growth, exponents=exponents,
                           gs_log_growth=gs_growth, gs_exponents=gs_growth.mean(0), angles=angles, pairwise=pair,
                           window_probes=Q0, split=int(split), warmup=int(warmup), backward=int(backward))


@partial(jax.jit, static_argnames="split")
def _vectors_and_angles(Q, C, split):
    # one step at a time (lax.map), not batched over the window: every report process seen to wedge inside
    # jaxlib's CPU runtime was waiting for this program's output, and its batched QR/SVD are the only
    # batched LAPACK calls of that analysis (jaxlib runs a batch on a thread pool)
    def one(QC):
        with jax.default_matmul_precision("highest"):
            V = QC[0] @ QC[1]
        V = V / jnp.linalg.norm(V, axis=-2, keepdims=True)
        return V, (jnp.zeros(()) if split is None else subspace_angle(V, split)), pairwise_angles(V)

    V, angles, pair = jax.lax.map(one, (Q, C))
    return V, (None if split is None else angles), pair


def _assemble(Qs, Cs, split, on_host):
    """v(t) = Q_t C_t chunk by chunk, with the angles; numpy when the Q's live on the host."""
    out, start = [], 0
    for Q in Qs:
        n = Q.shape[0]
        V, a, p = _vectors_and_angles(jnp.asarray(Q), Cs[start:start + n], split)
        out.append(jax.device_get((V, a, p)) if on_host else (V, a, p))
        start += n
    cat = np.concatenate if on_host else jnp.concatenate
    V = cat([o[0] for o in out])
    angles = None if split is None else cat([o[1] for o in out])
    return V, angles, cat([o[2] for o in out])


# ---- localisation ----

def position_weights(v, positions: int, axis: int = -1):
    """Fraction of ‖v‖² on each of `positions` rows: v's `axis` (size d = positions·H, row-major (L, H)) is
    replaced by a `positions` axis summing to 1."""
    v = jnp.moveaxis(jnp.asarray(v), axis, -1)
    d = v.shape[-1]
    if positions < 1 or d % positions:
        raise ValueError(f"positions={positions} does not divide the coordinate axis of size {d}")
    p = jnp.sum(jnp.square(v).reshape(*v.shape[:-1], positions, d // positions), axis=-1)
    return p / jnp.sum(p, axis=-1, keepdims=True)


def participation_ratio(v, positions: int | None = None, axis: int = -1):
    """Normalised participation ratio of vectors along `axis`: PR = (Σ p)² / (n Σ p²) in [1/n, 1].

    positions=None: over coordinates (p_i = v_i², n = d); positions=L: over token positions (p_l = Σ_h v_{l,h}²
    of the row-major (L, H) state, n = L). 1 = spread evenly, 1/n = on one coordinate/position."""
    if positions is None:
        p = jnp.square(jnp.moveaxis(jnp.asarray(v), axis, -1))
    else:
        p = position_weights(v, positions, axis)
    return jnp.sum(p, -1) ** 2 / (p.shape[-1] * jnp.sum(p * p, -1))


# ---- finite-time exponents ----

def finite_time_exponents(log_growth, tau: int, *, overlapping: bool = False):
    """Finite-time exponents over windows of `tau` steps: means of log_growth (T, ...) over
    non-overlapping windows ((T // tau, ...); the remainder is dropped) or, overlapping=True, over every
    window start ((T - tau + 1, ...))."""
    lg = jnp.asarray(log_growth)
    T = lg.shape[0]
    if isinstance(tau, bool) or not isinstance(tau, (int, np.integer)) or not 1 <= tau <= T:
        raise ValueError(f"tau must be an integer in [1, {T}] (the number of steps), got {tau!r}")
    if overlapping:
        c = jnp.concatenate([jnp.zeros_like(lg[:1]), jnp.cumsum(lg, axis=0)])
        return (c[tau:] - c[:-tau]) / tau
    n = T // tau
    return lg[:n * tau].reshape(n, tau, *lg.shape[1:]).mean(1)


@flax.struct.dataclass
class FiniteTimeStats:
    """Finite-time exponents of one column over several window lengths (non-overlapping windows).

    taus (n,), n_windows (n,), mean (n,), var (n,) (ddof=1; NaN with one window), samples: a tuple
    with the (T // tau,) exponents per tau."""
    taus: tuple
    n_windows: tuple
    mean: np.ndarray
    var: np.ndarray
    samples: tuple
    column: int = 0

    def to_json(self) -> dict:
        return {"column": self.column, "taus": list(self.taus), "n_windows": list(self.n_windows),
                "mean": _tolist(self.mean), "var": _tolist(self.var), "samples": [_tolist(s) for s in self.samples]}


def finite_time_statistics(log_growth, taus: Sequence[int], column: int = 0) -> FiniteTimeStats:
    """Distribution of the finite-time exponent of `column` of log_growth (T, k) for each tau: for a chaotic
    orbit var ~ 1/tau (exponential decay of correlations); near a fixed point the samples collapse."""
    lg = np.asarray(log_growth, dtype=np.float64)
    lg = lg[:, column] if lg.ndim > 1 else lg
    samples = tuple(np.asarray(finite_time_exponents(lg, int(t))) for t in taus)
    var = np.array([s.var(ddof=1) if s.size > 1 else np.nan for s in samples])
    return FiniteTimeStats(taus=tuple(int(t) for t in taus), n_windows=tuple(int(s.size) for s in samples),
                           mean=np.array([s.mean() for s in samples]), var=var, samples=samples, column=column)


# ---- per-sublayer growth of given tangent vectors ----

@flax.struct.dataclass
class SublayerGrowth:
    """Growth of k tangent vectors through the maps g_0..g_{n-1} of one step, at every window step.

    plain (W, n, k): log(‖J_j w‖/‖w‖) per sublayer (sums over j to the full-step growth; coordinate-
    dependent). state (W, n): log(‖u_{j+1}‖/‖u_j‖), the sublayer's growth of the state itself.
    relative (W, n, k) = plain - state: the gauge-relative growth (a sublayer that only rescales the state
    expands no direction relative to it)."""
    plain: jax.Array
    state: jax.Array
    names: tuple = flax.struct.field(pytree_node=False, default=())

    @property
    def relative(self):
        return self.plain - self.state[..., None]

    def to_json(self) -> dict:
        return {"names": list(self.names), "plain_mean": _tolist(self.plain.mean(0)),
                "relative_mean": _tolist(self.relative.mean(0)), "state_mean": _tolist(self.state.mean(0))}


@jax.jit
def _growth_through(maps, states, vectors):
    def one(args):
        u, w = args
        shape, dt = u.shape, u.dtype
        plain, state = [], []
        for g in maps:
            u_next, lin = jax.linearize(lambda x, g=g: g(x).astype(dt), u)
            w_next = jax.vmap(lambda q: lin(q.reshape(shape)).reshape(-1), in_axes=1, out_axes=1)(w)
            n_in, n_out = jnp.linalg.norm(w, axis=0), jnp.linalg.norm(w_next, axis=0)
            plain.append(jnp.log(n_out / n_in))
            state.append(jnp.log(jnp.linalg.norm(u_next) / jnp.linalg.norm(u)))
            u, w = u_next, w_next / n_out
        return jnp.stack(plain), jnp.stack(state)

    with jax.default_matmul_precision("highest"):
        return jax.lax.map(one, (states, vectors))


def sublayer_growth(maps: Sequence[Callable | Partial], states, vectors, names: Sequence[str] | None = None
                    ) -> SublayerGrowth:
    """Per-sublayer growth of the tangent vectors `vectors` (W, d, k) at the states (W, *shape) through the
    step maps[-1] ∘ ... ∘ maps[0] (e.g. a CovariantResult's vectors and states). Unlike
    `benettin_sublayers` there is no QR between sublayers: each vector keeps its own direction."""
    maps = tuple(g if isinstance(g, Partial) else Partial(g) for g in maps)
    names = tuple(names) if names is not None else tuple(f"map{j}" for j in range(len(maps)))
    if len(names) != len(maps):
        raise ValueError(f"got {len(names)} names for {len(maps)} maps")
    dt = compute_dtype()
    plain, state = _growth_through(maps, jnp.asarray(states, dt), jnp.asarray(vectors, dt))
    return SublayerGrowth(plain=plain, state=state, names=names)
