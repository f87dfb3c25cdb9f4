"""Lyapunov spectra of arbitrary maps by Benettin's algorithm (QR re-orthonormalisation).

The engine knows nothing about models: a map ``f`` takes an array of any shape to an array of the same
shape. The state ``z`` is flattened row-major to ``d = z.size``; ``k`` orthonormal probe vectors are the
columns of ``Q`` (d, k). Every step

    W = J_f(z_t) Q          (one linearisation, k JVPs via vmap)
    Q, R = qr(W)            log_growth[t] = log|diag R|
    z_{t+1} = f(z_t)

and ``exponents = sum_t log_growth[t] / steps`` (natural log per step, column order, not sorted).
``benettin_sublayers`` does the same for a step split into maps ``g_0, ..., g_{n-1}`` (g_0 first), with a
QR after every map; since J = J_{n-1}...J_0 the per-sublayer exponents sum to the full-step ones.

Options (all inside one ``lax.scan``):
  * ``warmup``: steps that evolve state and probes (with QR) before recording starts.
  * ``renorm_every=r``: QR only at every r-th step (and the last one); in between, the tangent columns are
    scaled to unit norm every step (cheap, and nothing underflows however strongly the map contracts) and
    their log norms are added to the next QR's log|diag R|, so the rows of ``log_growth`` at non-QR steps
    are 0 and the exponents are still ``sum / steps``. For sublayer runs the attribution is then only
    meaningful at r=1.
  * ``probe_chunk=c``: the k JVPs run in chunks of c (``lax.map(..., batch_size=c)``) to bound memory.
  * ``mesh``: a ``jax.sharding.Mesh``; the probe axis is sharded over all its devices for the JVPs and
    gathered for the QR (k must be a multiple of ``mesh.size``). An axis named ``"prompts"`` is left to a
    batch of prompts (``spectrum`` on a list of prompts with a 2-D mesh: prompts x probes); the probes are
    then sharded over the remaining axes. Multi-host: call
    ``jax.distributed.initialize()`` in every process, build ``Mesh(np.array(jax.devices()), ("p",))``
    over the global device list, and call ``benettin`` in every process with the same inputs; the
    results are replicated, so every process can read them.

Maps are passed to the jitted core as pytrees (``jax.tree_util.Partial``), so weights bound in a Partial
are arguments, not constants: new weights of the same shapes reuse the compilation. State, tangents, QR
and sums use ``loopjax.engine.dtypes.compute_dtype()`` (float32, float64 under x64); the exponent sums are
Kahan-compensated, so float32 sums do not lose accuracy with the number of steps.

The core is traceable: ``benettin`` can be called inside ``jax.jit`` or ``jax.vmap`` (e.g. over a batch
of prompts: ``jax.vmap(lambda f, z: benettin(f, z, k=8, steps=64, key=key))(fs, z0s)``); host-side
checks that need concrete values are then skipped.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from jax.tree_util import Partial

from loopjax.engine.dtypes import compute_dtype

__all__ = [
    "LyapunovResult",
    "benettin",
    "benettin_sublayers",
    "benettin_continue",
    "concatenate",
    "running_average",
    "orthogonality_error",
    "spread",
    "random_probes",
    "normalise_columns",
    "EngineOptions",
    "map_output_shape",
]


@dataclasses.dataclass(frozen=True, eq=False)
class EngineOptions:
    """How a Benettin run is executed (not what it computes, except `warmup` and `tangent_mask`): one value to
    pass as `options=` to benettin / benettin_sublayers / benettin_continue instead of the keywords of the
    same names (see the module docstring). benettin_continue uses renorm_every, probe_chunk, mesh and
    tangent_mask (a continuation has no warmup; remat applies to differentiated runs)."""

    warmup: int = 0
    renorm_every: int = 1
    probe_chunk: int | None = None
    mesh: Any = None
    remat: bool = False
    tangent_mask: Any = None

    def replace(self, **changes) -> "EngineOptions":
        return dataclasses.replace(self, **changes)


_DEFAULTS = EngineOptions()


def _resolve(options: EngineOptions | None, **keywords) -> dict:
    """The keywords, or options' fields when options is given (then every keyword must be at its default)."""
    if options is None:
        return keywords
    if not isinstance(options, EngineOptions):
        raise TypeError(f"options must be an EngineOptions, got {type(options).__name__}")
    differs = lambda v, d: v is not None if d is None else bool(v != d)  # noqa: E731
    clash = [n for n, v in keywords.items() if differs(v, getattr(_DEFAULTS, n))]
    if clash:
        raise ValueError(f"give either options= or the keywords, not both: {', '.join(clash)}")
    return {n: getattr(options, n) for n in keywords}


@flax.struct.dataclass
class LyapunovResult:
    """Output of `benettin` / `benettin_sublayers` (leading batch axes appear if the call was vmapped).

    exponents: (k,) or (n_maps, k), column order. log_growth, running: (steps, k) or (steps, n_maps, k).
    final_state: z's shape. final_probes: (d, k). state_norms: (steps+1,) ||z_t|| over the recorded
    steps. names: sublayer names (sublayer runs only; None for `benettin`). log_sum, compensation and
    total_steps carry the accumulation, so `benettin_continue` extends a run exactly.
    """

    exponents: jax.Array
    log_growth: jax.Array
    running: jax.Array
    final_state: jax.Array
    final_probes: jax.Array
    state_norms: jax.Array
    log_sum: jax.Array | None = None          # the Kahan-compensated sum of log_growth over all recorded steps
    compensation: jax.Array | None = None     # its Kahan compensation term (to continue the sum exactly)
    state_growth: jax.Array | None = None     # relative runs: (n_maps,) mean log(||z_out||/||z_in||) per step
    state_log_sum: jax.Array | None = None    # its sum over all recorded steps (to continue exactly)
    names: tuple[str, ...] | None = flax.struct.field(pytree_node=False, default=None)
    relative: bool = flax.struct.field(pytree_node=False, default=False)
    total_steps: int | None = flax.struct.field(pytree_node=False, default=None)  # incl. earlier segments
    stored_orthogonality_error: float | None = flax.struct.field(pytree_node=False, default=None)  # from_json

    def total(self):
        """Exponents of the full step: summed over sublayers for sublayer runs (plus the subtracted state
        growth for relative runs, so it is the full-step spectrum either way)."""
        if self.names is None:
            return self.exponents
        if self.relative:
            return self.exponents.sum(axis=-2) + self.net_state_growth()[..., None]
        return self.exponents.sum(axis=-2)

    def net_state_growth(self):
        """Relative runs: the state's net log growth per step, log(||z_T|| / ||z_0||) / T = the sum of the
        sublayers' state growth; the relative contributions sum to total() minus it (the sum rule)."""
        return None if self.state_growth is None else self.state_growth.sum(axis=-1)

    def sorted(self):
        """`total()` sorted in descending order."""
        total = self.total()
        if _is_traced(total):
            return -jnp.sort(-total, axis=-1)
        return -np.sort(-np.asarray(total), axis=-1)   # on the host: an eager sort compiles one program per shape

    def orthogonality_error(self):
        if self.final_probes is None:
            return self.stored_orthogonality_error
        return orthogonality_error(self.final_probes)

    def to_json(self) -> dict:
        """Plain JSON-serialisable dict (final_state/final_probes are left out: save them as arrays)."""
        tolist = lambda x: np.asarray(x, dtype=np.float64).tolist()
        return {
            "names": list(self.names) if self.names is not None else None,
            "steps": int(self.log_growth.shape[-3 if self.names is not None else -2]),
            "k": int(self.exponents.shape[-1]),
            "exponents": tolist(self.exponents),
            "total": tolist(self.total()),
            "sorted": tolist(self.sorted()),
            "log_growth": tolist(self.log_growth),
            "running": tolist(self.running),
            "state_norms": tolist(self.state_norms),
            "orthogonality_error": tolist(self.orthogonality_error()),
            "total_steps": self.total_steps,
            "relative": bool(self.relative),
            "state_growth": tolist(self.state_growth) if self.state_growth is not None else None,
            "net_state_growth": tolist(self.net_state_growth()) if self.state_growth is not None else None,
        }

    ARRAYS = ("exponents", "log_growth", "running", "final_state", "final_probes", "state_norms", "log_sum",
              "compensation", "state_growth", "state_log_sum")

    def to_arrays(self) -> dict:
        """Every array field (for an orbax checkpoint of a run in progress); `from_arrays` inverts it."""
        return {name: getattr(self, name) for name in self.ARRAYS if getattr(self, name) is not None}

    @classmethod
    def from_arrays(cls, arrays: dict, *, total_steps: int, names=None) -> "LyapunovResult":
        return cls(**{name: jnp.asarray(arrays[name]) if name in arrays else None for name in cls.ARRAYS},
                   names=tuple(names) if names is not None else None, total_steps=int(total_steps),
                   relative="state_growth" in arrays)

    @classmethod
    def from_json(cls, d: dict) -> "LyapunovResult":
        """The numbers of a `to_json()` dict as a result (final state and probes are not in it: None)."""
        arr = lambda key: np.asarray(d[key], dtype=np.float64)  # noqa: E731
        return cls(exponents=arr("exponents"), log_growth=arr("log_growth"), running=arr("running"),
                   final_state=None, final_probes=None, state_norms=arr("state_norms"),
                   names=tuple(d["names"]) if d.get("names") is not None else None,
                   total_steps=d.get("total_steps") or d["steps"], relative=bool(d.get("relative", False)),
                   state_growth=arr("state_growth") if d.get("state_growth") is not None else None,
                   stored_orthogonality_error=(np.asarray(d["orthogonality_error"], np.float64).max()
                                               if d.get("orthogonality_error") is not None else None))


def running_average(log_growth):
    """cumsum(log_growth over axis 0) / t for t = 1..steps."""
    t = jnp.arange(1, log_growth.shape[0] + 1, dtype=log_growth.dtype)
    return jnp.cumsum(log_growth, axis=0) / t.reshape((-1,) + (1,) * (log_growth.ndim - 1))


def orthogonality_error(Q):
    """max |Q^T Q - I| (over the last two axes' Gram matrix); a concrete Q in float64 on the host (eager
    jax arithmetic would compile one program per shape)."""
    if _is_traced(Q):
        G = jnp.matmul(jnp.swapaxes(Q, -1, -2), Q, precision=jax.lax.Precision.HIGHEST)
        return jnp.max(jnp.abs(G - jnp.eye(Q.shape[-1], dtype=Q.dtype)), axis=(-2, -1))
    q = np.asarray(Q, np.float64)
    return np.max(np.abs(np.swapaxes(q, -1, -2) @ q - np.eye(q.shape[-1])), axis=(-2, -1))


def spread(exponents_stack, axis=0):
    """Spread of exponents across prompts / probe starts: dict(mean, std, min, max) along `axis`."""
    x = jnp.asarray(exponents_stack)
    return {"mean": x.mean(axis), "std": x.std(axis), "min": x.min(axis), "max": x.max(axis)}


def _qr_log(W):
    Q, R = jnp.linalg.qr(W, mode="reduced")
    return Q, jnp.log(jnp.abs(jnp.diagonal(R)))


def _renormalise(W, pending, do_qr, renorm_every):
    """(Q, log-growth row, pending) after one map's tangents W: QR every step (renorm_every=1) or, between
    QRs, unit columns with their log norms held in `pending` and added to the next QR's log|diag R| (so
    nothing underflows in between)."""
    if renorm_every == 1:
        return (*_qr_log(W), pending)
    W, ln = normalise_columns(W)
    acc = pending + ln
    Q, lg_qr = jax.lax.cond(do_qr, _qr_log, lambda W: (W, jnp.zeros(W.shape[1], W.dtype)), W)
    # a non-QR row is 0, or the non-finite log norm itself (a collapsed column is reported at its step)
    lg = jnp.where(do_qr, lg_qr + acc, jnp.where(jnp.isfinite(ln), 0, ln))
    return Q, lg, jnp.where(do_qr, 0, acc)


@functools.partial(jax.jit, static_argnames=("steps", "warmup", "renorm_every", "probe_chunk", "mesh",
                                             "squeeze", "remat"))
def _core(maps, z0, Q0, s0, c0, t0, mask=None, *, steps, warmup, renorm_every, probe_chunk, mesh, squeeze,
          remat=False):
    dt, shape, n = z0.dtype, z0.shape, warmup + steps
    k = Q0.shape[1]

    def constrain(x, spec):
        return x if mesh is None else jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    probe_axes = probe_mesh_axes(mesh) if mesh is not None else None

    def tangents(g, u, Q):
        u_next, lin = jax.linearize(lambda x: g(x).astype(dt), u)
        col = lambda q: lin(q.reshape(shape)).reshape(-1)
        Q = constrain(Q, P(None, probe_axes))
        if probe_chunk is None or probe_chunk >= k:
            W = jax.vmap(col, in_axes=1, out_axes=1)(Q)
        else:
            W = jax.lax.map(col, Q.T, batch_size=probe_chunk).T
        W = constrain(W, P(None, probe_axes))
        if mask is not None:  # confine the tangents to the masked coordinates (exact for a block-triangular J)
            W = W * mask.reshape(-1, 1).astype(dt)
        return u_next, constrain(W, P())

    def norm(z):  # of the masked coordinates only, when there is a mask
        return jnp.linalg.norm((z if mask is None else z * mask.astype(z.dtype)).reshape(-1))

    def step(carry, g_idx):
        z, Q, s, c, pend = carry
        in_warmup = g_idx < warmup
        local = jnp.where(in_warmup, g_idx, g_idx - warmup)
        last = jnp.where(in_warmup, warmup, n) - 1
        do_qr = ((local + 1) % renorm_every == 0) | (g_idx == last)
        u, logs, ok, pends, grow = z, [], [], [], []
        for j, g in enumerate(maps):
            u_in = u
            u, W = tangents(g, u, Q)
            Q, lg, p = _renormalise(W, pend[j], do_qr, renorm_every)
            logs.append(lg)
            pends.append(p)
            ok.append(jnp.all(jnp.isfinite(u)))
            grow.append(jnp.log(norm(u) / norm(u_in)))  # the sublayer's own state growth
        lg = jnp.stack(logs)
        # Kahan-compensated running sum: float32 sums stay accurate over ~1e5+ steps.
        y = jnp.where(in_warmup, 0, lg) - c
        s_new = s + y
        c = (s_new - s) - y
        return (u, Q, s_new, c, jnp.stack(pends)), (lg, s_new, jnp.stack(ok), norm(z), jnp.stack(grow))

    if remat:  # reverse mode stores only the carry per step and recomputes the step's internals
        step = jax.checkpoint(step)
    with jax.default_matmul_precision("highest"):
        (z, Q, s, c, _), (lg_all, sums, state_ok, norms, grow) = jax.lax.scan(
            step, (z0, Q0, s0, c0, jnp.zeros_like(s0)), jnp.arange(n))
    t = t0 + jnp.arange(1, steps + 1, dtype=dt)[:, None, None]
    lg, running, exponents = lg_all[warmup:], sums[warmup:] / t, s / t[-1]
    if squeeze:  # a single map: drop the sublayer axis
        lg, running, exponents, s, c = lg[:, 0], running[:, 0], exponents[0], s[0], c[0]
    return dict(
        exponents=exponents,
        log_growth=lg,
        running=running,
        final_state=z,
        final_probes=constrain(Q, P()),
        state_norms=jnp.concatenate([norms[warmup:], norm(z)[None]]),
        state_ok=state_ok,
        lg_all=lg_all,
        state_growth=grow[warmup:],  # (steps, n_maps) log(||z_out|| / ||z_in||) per sublayer and step
        log_sum=s,
        compensation=c,
    )


def normalise_columns(W):
    """(W with unit columns, log of the column norms); norms scaled by max|column| so tiny columns do not
    underflow. A zero column stays zero with log norm -inf."""
    scale = jnp.max(jnp.abs(W), axis=0)
    safe = jnp.where(scale > 0, scale, 1)
    norms = jnp.sqrt(jnp.sum((W / safe) ** 2, axis=0)) * scale
    return W / jnp.where(norms > 0, norms, 1), jnp.log(norms)


@functools.partial(jax.jit, static_argnames=("d", "k", "dtype"))
def random_probes(key, *, d, k, dtype):
    """k orthonormal probes (d, k): Q of the QR of a standard normal (d, k) draw from `key` (every probe draw
    of loopjax goes through this)."""
    return jnp.linalg.qr(jax.random.normal(key, (d, k), dtype), mode="reduced")[0]


@functools.partial(jax.jit, static_argnames=("d", "k", "dtype"))
def prefix_probes(key, n, *, d, k, dtype):
    """(d, k) orthonormal probes on the first n coordinates (n a traced scalar, k <= n <= d), zero below:
    `random_probes(key, d=n, k=k)` zero-padded to d rows, from one compiled program for every n. jax's
    threefry draws are partitionable (the default since jax 0.5): the (d, k) normal draw begins with the
    (n, k) one, row for row, and the Householder QR of a zero-padded matrix is the padded QR of the matrix."""
    draw = jax.random.normal(key, (d, k), dtype)
    return jnp.linalg.qr(jnp.where((jnp.arange(d) < n)[:, None], draw, jnp.zeros_like(draw)), mode="reduced")[0]


@functools.lru_cache(maxsize=256)
def _output_shape_cached(treedef, leaf_types, shape, dtype):
    g = jax.tree_util.tree_unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaf_types])
    out = jax.eval_shape(lambda g, x: g(x), g, jax.ShapeDtypeStruct(shape, dtype))
    return getattr(out, "shape", type(out).__name__)


def map_output_shape(g, shape, dtype):
    """The shape map g (a callable or Partial) returns for a state of `shape` and `dtype` (or the type name
    of a non-array result), traced once per map structure (the Partial's function and its leaves' shapes
    and dtypes), not once per call: a model's maps for prompts of one padded length share one trace."""
    leaves, treedef = jax.tree_util.tree_flatten(g)
    leaf_types = tuple((tuple(jnp.shape(x)), jnp.result_type(x)) for x in leaves)
    try:
        return _output_shape_cached(treedef, leaf_types, tuple(shape), jnp.dtype(dtype))
    except TypeError:  # an unhashable static part: trace without the cache
        return _output_shape_cached.__wrapped__(treedef, leaf_types, tuple(shape), jnp.dtype(dtype))


def _is_traced(*trees):
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(trees))


def _check_int(name, value, lo):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")


PROMPT_AXIS = "prompts"  # a mesh axis of this name carries a batch of prompts; the others carry the probes


def probe_mesh_axes(mesh) -> tuple[str, ...]:
    """The mesh axes the probe axis is sharded over: all of them except a `prompts` axis."""
    return tuple(a for a in mesh.axis_names if a != PROMPT_AXIS)


def probe_mesh_size(mesh) -> int:
    return int(np.prod([mesh.shape[a] for a in probe_mesh_axes(mesh)], dtype=np.int64))


def _masked_probes(key, mask, k, dt):
    """Orthonormal probes drawn on the coordinates where mask is True (in order) and zero elsewhere: for a
    prefix mask (right padding) they equal the unpadded problem's probes, row for row."""
    idx = np.flatnonzero(np.asarray(mask).reshape(-1))
    if k > idx.size:
        raise ValueError(f"k={k} probes exceed the {idx.size} coordinates tangent_mask leaves free")
    q = random_probes(key, d=int(idx.size), k=k, dtype=jnp.dtype(dt))
    return jnp.zeros((np.asarray(mask).size, k), dt).at[idx].set(q)


def _relative(out, previous, t0, steps):
    """The relative fields: each sublayer's state growth subtracted from its log-growth, per step."""
    g = out["state_growth"]  # (steps, n_maps)
    g0 = jnp.zeros(g.shape[1:], g.dtype) if previous is None else jnp.asarray(previous.state_log_sum, g.dtype)
    cum = g0 + jnp.cumsum(g, axis=0)
    t = t0 + jnp.arange(1, steps + 1, dtype=g.dtype)[:, None]
    mean = cum[-1] / (t0 + steps)
    return dict(exponents=out["exponents"] - mean[:, None], log_growth=out["log_growth"] - g[:, :, None],
                running=out["running"] - (cum / t)[:, :, None], state_growth=mean, state_log_sum=cum[-1])


def _initial_probes(probes, key, tangent_mask, *, d, k, dt):
    """The (d, k) start probes: `probes` checked for shape and orthonormality, else drawn from `key` (on the
    masked coordinates when there is a tangent_mask)."""
    if probes is not None:
        probes = jnp.asarray(probes)
        if probes.shape != (d, k):
            raise ValueError(f"probes must have shape (d, k) = {(d, k)}, got {probes.shape}")
        if not _is_traced(probes):
            q = np.asarray(probes, dtype=np.float64)
            tol = 1e-10 if probes.dtype == jnp.float64 else 1e-5
            err = np.max(np.abs(q.T @ q - np.eye(k))) if np.all(np.isfinite(q)) else np.inf
            if not err <= tol:
                raise ValueError(f"probes are not orthonormal: max|Q^T Q - I| = {err:.3g} > {tol:g}")
        Q0 = probes if probes.dtype == dt else probes.astype(dt)
    elif key is None:
        raise ValueError("give either key (random orthonormal probes) or probes (a (d, k) array)")
    elif tangent_mask is not None:
        if _is_traced(tangent_mask):
            raise ValueError("with a traced tangent_mask pass probes= (drawing them needs a concrete mask)")
        Q0 = _masked_probes(key, tangent_mask, k, dt)
    else:
        Q0 = random_probes(key, d=d, k=k, dtype=jnp.dtype(dt))
    return Q0


def _run(maps, z0, *, k, steps, key, probes, warmup, renorm_every, probe_chunk, mesh, names, squeeze,
         previous=None, remat=False, tangent_mask=None, relative=False):
    if len(maps) == 0:
        raise ValueError("maps is empty: need at least one map")
    maps = tuple(g if isinstance(g, Partial) else Partial(g) for g in maps)
    for name, value, lo in (("steps", steps, 1), ("k", k, 1), ("warmup", warmup, 0),
                            ("renorm_every", renorm_every, 1)):
        _check_int(name, value, lo)
    if probe_chunk is not None:
        _check_int("probe_chunk", probe_chunk, 1)
    dt = compute_dtype()
    z0 = jnp.asarray(z0)
    if not jnp.issubdtype(z0.dtype, jnp.inexact) and not jnp.issubdtype(z0.dtype, jnp.integer):
        raise ValueError(f"z0 must be a numeric array, got dtype {z0.dtype}")
    if z0.dtype != dt:
        z0 = z0.astype(dt)
    d = z0.size
    if k > d:
        raise ValueError(f"k={k} probes exceed the state dimension d={d}")
    if mesh is not None and k % probe_mesh_size(mesh):
        raise ValueError(f"k={k} must be a multiple of the number of mesh devices ({probe_mesh_size(mesh)}) the "
                         f"probes are sharded over (the axes other than '{PROMPT_AXIS}')")
    if not _is_traced(z0) and not np.all(np.isfinite(np.asarray(z0))):
        raise ValueError("z0 contains NaN or inf")
    for j, g in enumerate(maps):
        shape = map_output_shape(g, z0.shape, dt)
        if shape != z0.shape:
            where = f"map {j}" if len(maps) > 1 else "f"
            raise ValueError(f"{where} must return an array of the state's shape {z0.shape}, got {shape}")

    Q0 = _initial_probes(probes, key, tangent_mask, d=d, k=k, dt=dt)
    if tangent_mask is not None:
        tangent_mask = jnp.asarray(tangent_mask)
        if tangent_mask.shape != z0.shape:
            raise ValueError(f"tangent_mask must have the state's shape {z0.shape}, got {tangent_mask.shape}")

    shape = (len(maps), k)
    if previous is None:
        s0 = c0 = jnp.zeros(shape, dt)
        t0 = 0
    else:
        s0, c0 = (jnp.asarray(x, dt).reshape(shape) for x in (previous.log_sum, previous.compensation))
        t0 = previous.total_steps
    if mesh is not None and not _is_traced(z0, Q0):
        z0, Q0 = jax.device_put((z0, Q0), NamedSharding(mesh, P()))
    out = _core(maps, z0, Q0, s0, c0, jnp.asarray(t0, dt), tangent_mask, steps=steps, warmup=warmup,
                renorm_every=renorm_every, probe_chunk=probe_chunk, mesh=mesh, squeeze=squeeze, remat=remat)
    if not _is_traced(out):
        _raise_if_nonfinite(np.asarray(out["lg_all"]), np.asarray(out["state_ok"]), warmup, names)
    fields = dict(exponents=out["exponents"], log_growth=out["log_growth"], running=out["running"])
    if relative:
        fields = _relative(out, previous, t0, steps)
    return LyapunovResult(
        **fields, final_state=out["final_state"], final_probes=out["final_probes"],
        state_norms=out["state_norms"], log_sum=out["log_sum"], compensation=out["compensation"],
        names=names, total_steps=t0 + steps, relative=relative)


def _raise_if_nonfinite(lg_all, state_ok, warmup, names):
    bad_lg = ~np.isfinite(lg_all).all(axis=-1)  # (n, n_maps)
    bad = bad_lg | ~state_ok
    if not bad.any():
        return
    t, j = np.argwhere(bad)[0]  # row-major: first step, then first sublayer
    when = f"warmup step {t}" if t < warmup else f"step {t - warmup}"
    sub = f" (sublayer {j}{f' {names[j]!r}' if names[j] != f'map{j}' else ''})" if names else ""
    if bad_lg[t, j] and state_ok[t, j]:  # a non-finite state is reported as such, whatever its tangents did
        row = lg_all[t, j]
        if np.isnan(row).any() or np.isposinf(row).any():
            why = "the map diverged"
        else:
            why = "log|R_ii| = -inf: the tangent map is singular (a probe direction collapsed)"
        raise FloatingPointError(f"non-finite log-growth at {when}{sub}: {why}")
    raise FloatingPointError(f"non-finite state at {when}{sub}: the map diverged")


def benettin(f: Callable | Partial, z0, *, k: int, steps: int, key=None, probes=None, warmup: int = 0,
             renorm_every: int = 1, probe_chunk: int | None = None, mesh=None, remat: bool = False,
             tangent_mask=None, options: EngineOptions | None = None) -> LyapunovResult:
    """The k leading-by-construction Lyapunov exponents of z -> f(z), with log_growth (steps, k).

    `probes` (d, k), if given, must be orthonormal and is used as is (so a run continued from
    (final_state, final_probes) reproduces an uninterrupted one); otherwise `key` draws them.
    Raises ValueError on bad inputs and FloatingPointError if state or log-growth become non-finite.
    The exponents are differentiable (jax.grad with respect to anything f closes over); `remat=True`
    checkpoints the scan body so reverse mode keeps one carry per step instead of every intermediate.
    `tangent_mask` (bool/0-1 array of z's shape) zeroes the tangents outside the mask after every JVP, i.e.
    the exponents of the masked diagonal block of J (exact when J is block lower-triangular over the
    blocks, as a causal loop map is over positions: padding, per-token spectra); random probes are then
    drawn on the masked coordinates only. `options` (EngineOptions) replaces warmup ... tangent_mask.
    """
    opts = _resolve(options, warmup=warmup, renorm_every=renorm_every, probe_chunk=probe_chunk, mesh=mesh,
                    remat=remat, tangent_mask=tangent_mask)
    return _run((f,), z0, k=k, steps=steps, key=key, probes=probes, names=None, squeeze=True, **opts)


def benettin_sublayers(maps: Sequence[Callable | Partial], z0, *, k: int, steps: int, key=None,
                       probes=None, warmup: int = 0, renorm_every: int = 1,
                       probe_chunk: int | None = None, mesh=None,
                       names: Sequence[str] | None = None, remat: bool = False,
                       tangent_mask=None, relative: bool = False,
                       options: EngineOptions | None = None) -> LyapunovResult:
    """Per-sublayer exponents (n_maps, k) of the step maps[-1] o ... o maps[0], QR after every map.

    `names` (optional) labels the maps; it defaults to ("map0", "map1", ...).

    relative=False (plain): row j is the mean log|diag R| after map j, the growth of the tangent columns
    through that map. It depends on the coordinates between sublayers: rescaling the state by c after map j
    and by 1/c in map j+1 (f unchanged) adds ln c to row j and -ln c to row j+1.
    relative=True (gauge-relative): each row has the map's own state growth log(||z_out|| / ||z_in||)
    subtracted per step (`state_growth`), so a rescaling of the state between sublayers cancels out of every
    row; the rows then sum to total() - net_state_growth() (the full exponents minus the state's net log
    growth, ~0 on a bounded orbit). Neither form is coordinate-free (a non-scalar change of coordinates
    between sublayers still moves the contributions).
    """
    maps = tuple(maps)
    if names is None:
        names = tuple(f"map{j}" for j in range(len(maps)))
    elif len(names) != len(maps):
        raise ValueError(f"got {len(names)} names for {len(maps)} maps")
    opts = _resolve(options, warmup=warmup, renorm_every=renorm_every, probe_chunk=probe_chunk, mesh=mesh,
                    remat=remat, tangent_mask=tangent_mask)
    return _run(maps, z0, k=k, steps=steps, key=key, probes=probes, names=tuple(names), squeeze=False,
                relative=bool(relative), **opts)


def benettin_continue(maps, previous: LyapunovResult, *, steps: int, renorm_every: int = 1,
                      probe_chunk: int | None = None, mesh=None,
                      options: EngineOptions | None = None) -> LyapunovResult:
    """Extend a run of `benettin` (maps = f) or `benettin_sublayers` (maps = the same list) by `steps` steps
    from its final state and probes, continuing its compensated sum: `exponents` and `running` are over all
    recorded steps so far, `log_growth` covers the new steps only. `concatenate` joins the segments; the
    joined result equals one uninterrupted run of the total length (bit for bit on one machine).
    """
    if previous.log_sum is None or previous.total_steps is None:
        raise ValueError("previous has no accumulation state (log_sum/total_steps); pass a result of "
                         "benettin, benettin_sublayers or benettin_continue")
    sublayers = previous.names is not None
    maps = tuple(maps) if sublayers else (maps,)
    k = previous.exponents.shape[-1]
    opts = _resolve(options, renorm_every=renorm_every, probe_chunk=probe_chunk, mesh=mesh)
    mask = options.tangent_mask if options is not None else None
    return _run(maps, previous.final_state, k=k, steps=steps, key=None, probes=previous.final_probes, warmup=0,
                names=previous.names, squeeze=not sublayers, previous=previous, relative=previous.relative,
                tangent_mask=mask, **opts)


def concatenate(segments: Sequence[LyapunovResult]) -> LyapunovResult:
    """One result from consecutive segments (a run, then its `benettin_continue` extensions)."""
    segments = list(segments)
    if not segments:
        raise ValueError("no segments to concatenate")
    for a, b in zip(segments, segments[1:]):
        if b.total_steps != a.total_steps + b.log_growth.shape[0]:
            raise ValueError(f"segments are not consecutive: a run of {a.total_steps} steps followed by one "
                             f"that continues from step {b.total_steps - b.log_growth.shape[0]}")
    last = segments[-1]
    cat = lambda xs: jnp.concatenate(xs, axis=0)  # noqa: E731
    return last.replace(
        log_growth=cat([s.log_growth for s in segments]),
        running=cat([s.running for s in segments]),
        state_norms=cat([segments[0].state_norms[:1]] + [s.state_norms[1:] for s in segments]))
