"""Complete Lyapunov spectra: all d exponents of a map, with the structural (-inf) ones reported apart.

Two methods, both on top of `loopjax.engine.lyapunov.benettin` (used as a black box):

* ``"dense"``: Benettin with k = d probes (``probe_chunk`` bounds the JVP memory). Per step: d JVPs and one
  (d, d) QR, i.e. ~(4/3) d^3 flops of QR.
* ``"blocks"``: for a map whose Jacobian is block lower-triangular over blocks of ``block_size`` = H
  consecutive coordinates (a causal loop map over token positions: position i's next state depends on
  positions <= i only), every product of Jacobians along the orbit is block lower-triangular too, so its
  spectrum is the union of its diagonal blocks' spectra. Block i runs H probes confined to its coordinates
  (``tangent_mask``); all blocks run as one ``jax.vmap`` over (mask, probes) (``block_chunk`` blocks per
  call to bound memory). The JVP work equals dense (L blocks x H probes = d JVPs) and, with the engine's
  (d, H) masked QR, the QR work is L * 2 d H^2 = 2 d^3 / L flops instead of (4/3) d^3 (an engine that QRs
  the H x H block alone would need L * (4/3) H^3). Block i's probes are drawn from ``fold_in(key, i)``
  exactly as ``benettin(..., key=fold_in(key, i), tangent_mask=mask_i)`` draws them (and as
  ``loopjax.analysis.tokens.position_probes`` does), so the result equals ``token_spectrum(k=H)``.

Structural exponents: a direction the map annihilates (exactly, like the radial direction of a
scale-invariant normalisation, or up to a regulariser such as RMSNorm's eps) has exponent -inf, which a
finite-precision run reports as the floating-point floor (float32: log(eps) = -15.9 per step plus
rounding; float32 resolves a contraction down to about eps * ||J||, and ||J|| ~ e^2 on the tiny models puts
Huginn's floor at -13.1). Every exponent below ``structural_threshold`` (default ``STRUCTURAL_FLOOR`` =
log(float32 eps) + 4 = -11.9 per step, the same in float64 so that float32 and float64 runs classify alike:
in float64 the RMSNorm radial exponents are resolved at log(eps_norm / ms^1.5) ~ -17.8 for Ouro) is reported as
-inf and counted in ``n_structural``; a caller that knows the architecture passes ``declared_structural``
(count) and ``structural_reason``, and the result says whether detection and declaration agree. Sums,
Kaplan-Yorke dimension and the entropy bound use the finite exponents only.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from loopjax.engine.lyapunov import LyapunovResult, benettin, orthogonality_error
from loopjax.engine.dtypes import compute_dtype
from loopjax.engine.dynamics import kaplan_yorke_dimension

__all__ = ["CompleteSpectrum", "complete_spectrum_of_map", "complete_from_result", "block_probes",
           "block_masks", "tangent_bytes", "STRUCTURAL_FLOOR", "METHODS"]

STRUCTURAL_FLOOR = float(np.log(np.finfo(np.float32).eps) + 4.0)  # -11.94 nats per step
METHODS = ("dense", "blocks")


@dataclasses.dataclass(frozen=True)
class CompleteSpectrum:
    """All d exponents of one orbit (nats per step).

    exponents (d,): descending, the structural ones -inf. measured (d,): the same order, the values the run
    measured (the structural ones at their floating-point floor). running (steps, d): running averages of
    the measured exponents, columns in the order of `exponents`. block (d,): the block (token position)
    each exponent came from (blocks method; None for dense). n_structural: how many exponents fell below
    structural_threshold; declared_structural / structural_reason: what the caller (the model) says.
    kaplan_yorke, entropy_bound (Ruelle: sum of the positive exponents) and sum are over the finite
    exponents. tangent_bytes: the probes and tangent images alive per step (see `tangent_bytes`)."""

    exponents: np.ndarray
    measured: np.ndarray
    running: np.ndarray
    block: np.ndarray | None
    n_structural: int
    structural_threshold: float
    declared_structural: int | None
    structural_reason: str | None
    kaplan_yorke: float
    entropy_bound: float
    sum: float
    d: int
    L: int
    H: int
    method: str
    steps: int
    warmup: int
    tangent_bytes: int
    orthogonality_error: float
    dtype: str

    @property
    def finite(self) -> np.ndarray:
        return self.exponents[np.isfinite(self.exponents)]

    @property
    def structural_agrees(self) -> bool | None:
        """Detected count == declared count (None when nothing was declared)."""
        return None if self.declared_structural is None else self.n_structural == self.declared_structural

    def structural_per_block(self) -> np.ndarray | None:
        """(L,) structural exponents per block (blocks method), e.g. 1 per position for a final RMSNorm."""
        if self.block is None:
            return None
        return np.bincount(self.block[~np.isfinite(self.exponents)], minlength=self.L)

    def to_json(self) -> dict:
        f = lambda x: [None if not np.isfinite(v) else float(v) for v in np.asarray(x, np.float64)]  # noqa: E731
        out = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        out.update(exponents=f(self.exponents), measured=f(self.measured),
                   running=np.asarray(self.running, np.float64).tolist(),
                   block=None if self.block is None else [int(b) for b in self.block],
                   kaplan_yorke=_num(self.kaplan_yorke), entropy_bound=float(self.entropy_bound),
                   sum=float(self.sum), structural_agrees=self.structural_agrees,
                   structural_per_block=(None if self.block is None else
                                         [int(c) for c in self.structural_per_block()]),
                   note="exponents: null = -inf (structural); sum, kaplan_yorke, entropy_bound over the finite ones")
        return out

    @classmethod
    def from_json(cls, d: dict) -> "CompleteSpectrum":
        arr = lambda x: np.array([-np.inf if v is None else v for v in x], np.float64)  # noqa: E731
        kw = {field.name: d[field.name] for field in dataclasses.fields(cls)}
        kw.update(exponents=arr(d["exponents"]), measured=arr(d["measured"]),
                  running=np.asarray(d["running"], np.float64),
                  block=None if d["block"] is None else np.asarray(d["block"], np.int64),
                  kaplan_yorke=math.nan if d["kaplan_yorke"] is None else float(d["kaplan_yorke"]))
        return cls(**kw)


def _num(x):
    return None if x is None or not np.isfinite(x) else float(x)


def tangent_bytes(d: int, *, method: str, block_size: int, block_chunk: int | None, itemsize: int) -> int:
    """Bytes of the probes Q and their images W = J Q alive at once: dense 2 d^2; blocks 2 c d H for c blocks
    per vmapped call (c = all blocks: 2 d^2 as well, since the engine keeps each block's probes in the full
    d coordinates). JVP activations per probe chunk come on top (measured in benchmarks/k_scaling.py)."""
    if method == "dense":
        return 2 * d * d * itemsize
    n = d // block_size
    c = n if block_chunk is None else min(int(block_chunk), n)
    return 2 * c * d * block_size * itemsize


def block_masks(shape, blocks, block_size: int, dtype) -> jax.Array:
    """(n, *shape) 0/1 masks, mask j True on the flat coordinates of block blocks[j]."""
    d = int(np.prod(shape))
    owner = np.arange(d) // block_size
    m = np.asarray(blocks)[:, None] == owner[None, :]
    return jnp.asarray(m.reshape((len(blocks),) + tuple(shape)), dtype)


def block_probes(key, blocks, *, d: int, block_size: int, dtype) -> jax.Array:
    """(n, d, H): block i's H orthonormal probes, an (H, H) QR of normal(fold_in(key, i)) in rows
    i*H..(i+1)*H, zero elsewhere (what benettin(key=fold_in(key, i), tangent_mask=mask_i) draws)."""
    out = []
    for i in blocks:
        g = jax.random.normal(jax.random.fold_in(key, int(i)), (block_size, block_size), dtype)
        q = jnp.linalg.qr(g, mode="reduced")[0]
        out.append(jnp.zeros((d, block_size), dtype).at[int(i) * block_size:(int(i) + 1) * block_size].set(q))
    return jnp.stack(out)


def _blocks_run(f, z0, *, key, steps, warmup, block_size, block_chunk, engine) -> LyapunovResult:
    d, dt = z0.size, z0.dtype
    n = d // block_size

    def one(mask, q):
        return benettin(f, z0, k=block_size, steps=steps, probes=q, tangent_mask=mask, warmup=warmup, **engine)

    def run(bs):
        return jax.vmap(one)(block_masks(z0.shape, bs, block_size, dt),
                             block_probes(key, bs, d=d, block_size=block_size, dtype=dt))

    c = n if block_chunk is None else int(block_chunk)
    parts = [run(np.arange(i, min(i + c, n))) for i in range(0, n, c)]
    res = parts[0] if len(parts) == 1 else jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
    bad = ~np.isfinite(np.asarray(res.log_growth)).all(axis=(1, 2))
    if bad.any() or not np.isfinite(np.asarray(res.final_state)).all():
        where = f" in block {int(np.flatnonzero(bad)[0])}" if bad.any() else ""
        raise FloatingPointError(f"non-finite log-growth or state{where}: the map diverged or a probe "
                                 f"direction collapsed")
    return res


def complete_spectrum_of_map(f: Callable, z0, *, key, steps: int, warmup: int = 0, method: str = "dense",
                             block_size: int | None = None, probe_chunk: int | None = None,
                             block_chunk: int | None = None, structural_threshold: float = STRUCTURAL_FLOOR,
                             declared_structural: int | None = None, structural_reason: str | None = None,
                             **engine) -> CompleteSpectrum:
    """All d = z0.size Lyapunov exponents of z -> f(z) from z0 (see the module docstring).

    method "dense" (any map; probes from `key` as `benettin(f, z0, k=d, key=key)`) or "blocks" (a map whose
    Jacobian is block lower-triangular over consecutive blocks of `block_size` flat coordinates; default
    the last axis of z0, i.e. rows of an (L, H) state). `engine` (renorm_every, remat) passes to benettin.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    z0 = jnp.asarray(z0, compute_dtype())
    d = int(z0.size)
    H = int(block_size if block_size is not None else (z0.shape[-1] if z0.ndim >= 1 else 1))
    if H < 1 or d % H:
        raise ValueError(f"block_size={H} must divide the state dimension d={d}")
    if block_chunk is not None and (not isinstance(block_chunk, (int, np.integer)) or block_chunk < 1):
        raise ValueError(f"block_chunk must be an integer >= 1, got {block_chunk!r}")
    if key is None:
        raise ValueError("key is required (it draws the probes)")
    if method == "dense":
        res = benettin(f, z0, k=d, steps=steps, key=key, warmup=warmup, probe_chunk=probe_chunk, **engine)
        ortho = float(np.asarray(orthogonality_error(res.final_probes)))
        blocks = None
    else:
        if engine.get("mesh") is not None:
            raise ValueError("method='blocks' does not take mesh= (the blocks run vmapped on one device)")
        res = _blocks_run(f, z0, key=key, steps=steps, warmup=warmup, block_size=H, block_chunk=block_chunk,
                          engine=dict(engine, probe_chunk=probe_chunk))
        ortho = float(np.max(np.asarray(orthogonality_error(res.final_probes))))
        blocks = np.repeat(np.arange(d // H), H)
    itemsize = jnp.dtype(z0.dtype).itemsize
    return complete_from_result(res, method=method, L=d // H, H=H, blocks=blocks, steps=steps, warmup=warmup,
                                structural_threshold=structural_threshold,
                                declared_structural=declared_structural, structural_reason=structural_reason,
                                tangent_bytes=tangent_bytes(d, method=method, block_size=H,
                                                            block_chunk=block_chunk, itemsize=itemsize),
                                orthogonality_error=ortho, dtype=str(z0.dtype))


def complete_from_result(res: LyapunovResult, *, method: str, L: int, H: int, blocks, steps: int, warmup: int,
                         structural_threshold: float, declared_structural, structural_reason, tangent_bytes: int,
                         orthogonality_error: float, dtype: str) -> CompleteSpectrum:
    """A CompleteSpectrum from a dense run (exponents (d,), running (steps, d)) or a stacked blocks run
    (exponents (L, H), running (L, steps, H)): sort, classify the structural exponents, summarise."""
    ex = np.asarray(res.exponents, np.float64).reshape(-1)
    run = np.asarray(res.running, np.float64)
    if run.ndim == 3:  # (L, steps, H) -> (steps, L*H), block-major like ex
        run = np.moveaxis(run, 0, 1).reshape(run.shape[1], -1)
    order = np.argsort(-ex, kind="stable")
    measured, run = ex[order], run[:, order]
    structural = measured < structural_threshold
    exponents = np.where(structural, -np.inf, measured)
    fin = exponents[~structural]
    ky = kaplan_yorke_dimension(fin) if fin.size else math.nan
    return CompleteSpectrum(
        exponents=exponents, measured=measured, running=run,
        block=None if blocks is None else np.asarray(blocks)[order], n_structural=int(structural.sum()),
        structural_threshold=float(structural_threshold),
        declared_structural=None if declared_structural is None else int(declared_structural),
        structural_reason=structural_reason, kaplan_yorke=float(ky), entropy_bound=float(fin[fin > 0].sum()),
        sum=float(fin.sum()), d=int(ex.size), L=int(L), H=int(H), method=method, steps=int(steps),
        warmup=int(warmup), tangent_bytes=int(tangent_bytes), orthogonality_error=float(orthogonality_error),
        dtype=dtype)
