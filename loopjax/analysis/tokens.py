"""Per-token Lyapunov spectra, and probe padding for meshes.

The loop map of a causal transformer is causal over positions: the new state of position p depends on the
states of positions 0..p only. Its Jacobian J (d x d, d = L*H, positions as blocks of H rows) is therefore
block lower-triangular, and so is every product J(z_{T-1})...J(z_0). The Lyapunov spectrum of such a
cocycle is the union of the spectra of its diagonal blocks J_pp: position p's own H x H tangent dynamics
(how a perturbation of token p's state grows, given the states of the earlier tokens). `token_spectrum`
measures each block with `loopjax.benettin(..., tangent_mask=mask_p)`, mask_p True on row p of the (L, H)
state: after every JVP the tangents are confined to row p, which is exactly W = J_pp Q_p there, because the
upper blocks of J are zero (the tangents of the rows below p are thrown away; the rows above p receive
nothing).

All positions run as one `jax.vmap` over the masks (one compiled program per prompt length); the probes
are passed explicitly: position p draws an (H, k) orthonormal block from `fold_in(probe_key, p)` (as
`benettin(..., key=fold_in(probe_key, p), tangent_mask=mask_p)` would) placed in rows p*H..(p+1)*H of a
zero (L*H, k) matrix. Cost: n_positions full JVPs of k probes per step, i.e. n_positions times a k-probe
`loopjax.spectrum` of the prompt; `position_chunk=c` runs c positions per vmapped call to bound memory.

`pad_probes_for_mesh` completes a probe matrix with extra orthonormal columns to a multiple of the device
count, so any k runs on a mesh (`benettin(..., mesh=)` shards the probe axis and needs k % devices == 0):
QR is column-ordered (column j of Q and R depend only on columns 0..j of W), so the first k exponents of
the padded run are those of the unpadded one, up to float rounding. `spectrum_probes_for_mesh` pads the
very probes `loopjax.spectrum` draws for a prompt and key, and `first_probes` cuts a result back to k.
"""
from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from loopjax.analysis.frontends import padded_loop_map, split_key
from loopjax.engine.dtypes import compute_dtype
from loopjax.engine.lyapunov import LyapunovResult, random_probes, benettin
from loopjax.models.loop_model import LoopModel, check_ids, default_key, loop_map

__all__ = ["TokenSpectrum", "token_spectrum", "position_probes", "pad_probes_for_mesh", "spectrum_probes_for_mesh",
           "first_probes"]


@dataclasses.dataclass(frozen=True)
class TokenSpectrum:
    """Per-position spectra of one prompt (`token_spectrum`).

    positions (n,), exponents (n, k) in column order, log_growth and running (n, steps, k), state_norms
    (n, steps+1) (the norm of the position's own row of the state), tokens (L,) the prompt's ids; `result`
    is the stacked LyapunovResult (leading position axis; final_probes (n, L*H, k) are zero outside the
    position's rows)."""

    positions: np.ndarray
    exponents: jax.Array
    log_growth: jax.Array
    running: jax.Array
    state_norms: jax.Array
    tokens: np.ndarray
    result: LyapunovResult

    @property
    def lambda1(self) -> jax.Array:
        """The largest exponent of each position (n,)."""
        return self.exponents.max(axis=-1)

    def sorted(self) -> jax.Array:
        """Each position's exponents in descending order (n, k)."""
        return -jnp.sort(-self.exponents, axis=-1)

    def union(self, top: int | None = None) -> jax.Array:
        """All positions' exponents in one descending list (the prompt's spectrum by the union property);
        its first k entries are the prompt's top k exponents when all L positions were measured."""
        u = -jnp.sort(-self.exponents.reshape(-1))
        return u if top is None else u[:top]

    def to_json(self) -> dict:
        tolist = lambda x: np.asarray(x, dtype=np.float64).tolist()  # noqa: E731
        return {"positions": [int(p) for p in self.positions], "tokens": [int(t) for t in self.tokens],
                "k": int(self.exponents.shape[-1]), "steps": int(self.log_growth.shape[-2]),
                "exponents": tolist(self.exponents), "sorted": tolist(self.sorted()),
                "lambda1": tolist(self.lambda1), "log_growth": tolist(self.log_growth),
                "running": tolist(self.running), "state_norms": tolist(self.state_norms),
                "orthogonality_error": tolist(self.result.orthogonality_error())}


def position_probes(key, positions, *, L: int, H: int, k: int, dtype=None) -> jax.Array:
    """(n, L*H, k): for each position p an (H, k) orthonormal block drawn from fold_in(key, p) in rows
    p*H..(p+1)*H, zero elsewhere -- the probes `benettin(..., key=fold_in(key, p), tangent_mask=mask_p)`
    draws itself."""
    return _position_probes(key, jnp.asarray(np.asarray(positions), jnp.int32), L=int(L), H=int(H), k=int(k),
                            dtype=jnp.dtype(dtype or compute_dtype()))


@partial(jax.jit, static_argnames=("L", "H", "k", "dtype"))
def _position_probes(key, positions, *, L, H, k, dtype):
    def one(p):
        q = random_probes(jax.random.fold_in(key, p), d=H, k=k, dtype=dtype)
        return jax.lax.dynamic_update_slice(jnp.zeros((L * H, k), dtype), q, (p * H, jnp.zeros_like(p)))

    return jax.vmap(one)(positions)


def _check_positions(positions, L: int) -> np.ndarray:
    if positions is None:
        return np.arange(L)
    pos = np.asarray(positions)
    if pos.ndim == 0:
        pos = pos[None]
    if pos.ndim != 1 or pos.size == 0 or not np.issubdtype(pos.dtype, np.integer):
        raise ValueError(f"positions must be a non-empty list of integers, got {positions!r}")
    pos = np.where(pos < 0, pos + L, pos)
    if pos.min() < 0 or pos.max() >= L:
        raise ValueError(f"positions {np.asarray(positions).tolist()} out of range for a prompt of {L} tokens")
    if np.unique(pos).size != pos.size:
        raise ValueError(f"positions has duplicates: {np.asarray(positions).tolist()}")
    return pos


def token_spectrum(model: LoopModel, tokens, *, k: int, steps: int, positions=None, key=None,
                   position_chunk: int | None = None, pad_multiple: int | None = None, **engine) -> TokenSpectrum:
    """Top-k Lyapunov exponents of every position's diagonal block of the loop map's Jacobian (see the
    module docstring): the per-token decomposition of `loopjax.spectrum`, whose top exponents are the
    largest of the union over positions.

    tokens: one prompt (L,). positions: the positions to measure (default all; negative counts from the
    end). k <= hidden size. Start state as every front-end (`split_key(key)[0]`); position p's probes from
    fold_in(split_key(key)[1], p). `engine` (warmup, renorm_every, probe_chunk, remat) passes through to
    `loopjax.benettin`. Raises FloatingPointError if a position's state or log growth becomes non-finite.

    pad_multiple=N shares one compilation between prompts of nearby lengths: the state is right-padded to
    the next multiple of N tokens (`padded_loop_map`: real rows are the prompt's loop, pad rows held at 0)
    and the positions run N at a time (the last chunk filled up with repeats of its first position, whose
    results are dropped). Every position's probes are the unpadded run's, so the numbers agree with it up
    to float rounding.
    """
    ids = check_ids(model, tokens, ndim=(1,), what="tokens")
    L, H = int(ids.shape[0]), int(model.config.hidden_size)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if k > H:
        raise ValueError(f"k={k} exceeds the hidden size H={H}: a position's block of the Jacobian is H x H, "
                         f"so it has at most H exponents")
    if position_chunk is not None and (isinstance(position_chunk, bool) or
                                       not isinstance(position_chunk, (int, np.integer)) or position_chunk < 1):
        raise ValueError(f"position_chunk must be an integer >= 1, got {position_chunk!r}")
    if engine.get("mesh") is not None:
        raise ValueError("token_spectrum does not take mesh= (the positions run vmapped on one device)")
    pos = _check_positions(positions, L)
    state_key, probe_key = split_key(default_key(key))
    if pad_multiple is None:
        f, z0 = loop_map(model, ids, key=state_key)
        chunk = pos.size if position_chunk is None else int(position_chunk)
    else:
        f, z0 = padded_loop_map(model, ids, None, int(pad_multiple), key=state_key)
        chunk = int(pad_multiple) if position_chunk is None else int(position_chunk)
    Ls, dt = int(z0.shape[0]), z0.dtype   # Ls: the (padded) state's length

    def one(mask, q):
        return benettin(f, z0, k=k, steps=steps, probes=q, tangent_mask=mask, **engine)

    def run(ps):  # masks and probes built per chunk, so position_chunk also bounds their memory
        n = ps.size
        if pad_multiple is not None:   # every chunk the same size: one program per padded length
            ps = np.concatenate([ps, np.full(chunk - n, ps[0])])
        masks = jnp.asarray(np.broadcast_to(np.arange(Ls)[None, :, None] == ps[:, None, None], (ps.size, Ls, H))
                            .astype(dt))
        r = jax.device_get(jax.vmap(one)(masks, position_probes(probe_key, ps, L=Ls, H=H, k=k, dtype=dt)))
        return r if ps.size == n else jax.tree.map(lambda x: x[:n], r)   # on the host: no program per shape

    parts = [run(pos[i:i + chunk]) for i in range(0, pos.size, chunk)]
    res = parts[0] if len(parts) == 1 else jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
    res = jax.tree.map(jnp.asarray, res.replace(final_state=res.final_state[:, :L],
                                                final_probes=res.final_probes[:, :L * H]))
    lg = np.asarray(res.log_growth)
    bad = ~np.isfinite(lg).all(axis=(1, 2)) | ~np.isfinite(np.asarray(res.final_state)).all(axis=(1, 2))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        t = np.flatnonzero(~np.isfinite(lg[i]).all(axis=-1))
        when = f" at step {int(t[0])}" if t.size else ""
        raise FloatingPointError(f"non-finite log-growth or state for position {int(pos[i])}{when}: the map "
                                 f"diverged or a probe direction collapsed")
    return TokenSpectrum(positions=pos, exponents=res.exponents, log_growth=res.log_growth, running=res.running,
                         state_norms=res.state_norms, tokens=np.asarray(ids), result=res)


def pad_probes_for_mesh(probes, n_devices: int, key) -> jax.Array:
    """probes (d, k) orthonormal -> (d, k') with k' the next multiple of n_devices >= k: the first k columns
    unchanged (bit for bit), the rest random columns orthonormal to them and to each other (drawn from
    `key`). Run `benettin(..., probes=padded, mesh=mesh)` and keep the first k exponents / log-growth
    columns: QR is column-ordered, so they equal the run with `probes` alone up to float rounding."""
    probes = jnp.asarray(probes)
    if probes.ndim != 2:
        raise ValueError(f"probes must be a (d, k) matrix, got shape {probes.shape}")
    if isinstance(n_devices, bool) or not isinstance(n_devices, (int, np.integer)) or n_devices < 1:
        raise ValueError(f"n_devices must be an integer >= 1, got {n_devices!r}")
    d, k = probes.shape
    k_pad = -(-k // int(n_devices)) * int(n_devices)
    if k_pad == k:
        return probes
    if k_pad > d:
        raise ValueError(f"k={k} padded to {k_pad} (a multiple of {n_devices} devices) exceeds the state "
                         f"dimension d={d}")
    hi = jax.lax.Precision.HIGHEST
    extra = jax.random.normal(default_key(key), (d, k_pad - k), probes.dtype)
    for _ in range(2):  # project out the given columns (twice: classical Gram-Schmidt re-orthogonalised)
        extra = extra - jnp.matmul(probes, jnp.matmul(probes.T, extra, precision=hi), precision=hi)
    extra = jnp.linalg.qr(extra, mode="reduced")[0]
    extra = extra - jnp.matmul(probes, jnp.matmul(probes.T, extra, precision=hi), precision=hi)
    extra = jnp.linalg.qr(extra, mode="reduced")[0]
    return jnp.concatenate([probes, extra], axis=1)


def spectrum_probes_for_mesh(model: LoopModel, tokens, *, k: int, key, n_devices: int) -> jax.Array:
    """The (L*H, k) probes `loopjax.spectrum(model, tokens, k=k, key=key)` draws (from split_key(key)[1]),
    padded by `pad_probes_for_mesh` to a multiple of n_devices (the extra columns from a key folded off the
    probe key). So, on a mesh of n devices,

        q = spectrum_probes_for_mesh(model, ids, k=50, key=K, n_devices=mesh.size)
        res = first_probes(loopjax.spectrum(model, ids, k=q.shape[1], steps=64, key=K, probes=q, mesh=mesh), 50)

    is `loopjax.spectrum(model, ids, k=50, steps=64, key=K)` up to float rounding (same start state, same
    first 50 probes; QR is column-ordered)."""
    ids = check_ids(model, tokens, ndim=(1,), what="tokens")
    d = int(ids.shape[0]) * int(model.config.hidden_size)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= d:
        raise ValueError(f"k must be an integer in [1, d={d}], got {k!r}")
    probe_key = split_key(default_key(key))[1]
    q = random_probes(probe_key, d=d, k=int(k), dtype=jnp.dtype(compute_dtype()))
    return pad_probes_for_mesh(q, n_devices, jax.random.fold_in(probe_key, 0x5EED))


def first_probes(result: LyapunovResult, k: int) -> LyapunovResult:
    """The result restricted to its first k probe columns (exponents, log growth, running averages, final
    probes and the accumulation), e.g. after a run with probes padded for a mesh. `benettin_continue`
    continues the restricted result as a k-probe run."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= result.exponents.shape[-1]:
        raise ValueError(f"k must be an integer in [1, {result.exponents.shape[-1]}], got {k!r}")
    cut = lambda x: None if x is None else x[..., :k]  # noqa: E731
    return result.replace(exponents=cut(result.exponents), log_growth=cut(result.log_growth),
                          running=cut(result.running), final_probes=cut(result.final_probes),
                          log_sum=cut(result.log_sum), compensation=cut(result.compensation))
