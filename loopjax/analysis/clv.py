"""Model front-ends of the covariant Lyapunov vectors: `clv`, their localisation over token positions, and
direction selectivity (per-sublayer growth) on CLVs next to the Gram–Schmidt attribution.

Key convention as for `loopjax.spectrum`: `split_key(key)` = (state key, probe key); the start state is the
one `loopjax.spectrum(model, tokens, key=key)` starts from, the initial GS probes are drawn from the probe key
(the same probes as spectrum's when warmup = 0), the backward start from fold_in(probe key, 1).
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from loopjax.analysis.frontends import padded_loop_map, split_key
from loopjax.engine.lyapunov import benettin_sublayers, prefix_probes
from loopjax.engine.clv import (CovariantResult, covariant_vectors, participation_ratio, position_weights,
                                sublayer_growth)
from loopjax.models.loop_model import LoopModel, check_ids, default_key, loop_map, sublayer_maps


def clv(model: LoopModel, tokens, *, k: int = 8, steps: int = 64, key=None, warmup: int = 64,
        backward: int | None = None, init_state=None, probes=None, split: int | None = None,
        host_chunk: int | None = None, pad_multiple: int | None = None):
    """The k leading covariant Lyapunov vectors of the loop map over a window of `steps` loops after `warmup`
    loops (loopjax.covariant_vectors; `backward` loops follow the window for the backward transient).
    One prompt (L,): a CovariantResult with vectors (W, L*H, k) (row-major (L, H) per column) and states
    (W, L, H). (B, L): a list of B results, row b with key fold_in(key, b).

    pad_multiple=N runs the prompt right-padded to a multiple of N tokens (`padded_loop_map`: the Jacobian is
    diag(J, 0), so the pads carry no tangent) from the unpadded run's start state and probes
    (`prefix_probes`), one compiled program per padded length; the result is cut back to the prompt's rows
    (on the host) and equals the unpadded one up to float rounding."""
    ids = check_ids(model, tokens)
    key = default_key(key)
    if ids.ndim == 2:
        return [clv(model, ids[b], k=k, steps=steps, key=jax.random.fold_in(key, b), warmup=warmup,
                    backward=backward, split=split, host_chunk=host_chunk, pad_multiple=pad_multiple)
                for b in range(ids.shape[0])]
    state_key, probe_key = split_key(key)
    if pad_multiple is None:
        f, z0 = loop_map(model, ids, key=state_key, init_state=init_state)
    else:
        f, z0 = padded_loop_map(model, ids, init_state, pad_multiple, key=state_key)
        d_real = int(ids.shape[0]) * int(z0.shape[1])
        _check_k(k, d_real)
        probes = (prefix_probes(probe_key, d_real, d=z0.size, k=k, dtype=jnp.dtype(z0.dtype)) if probes is None
                  else jnp.asarray(np.pad(np.asarray(probes), ((0, z0.size - d_real), (0, 0)))))
    r = covariant_vectors(f, z0, k=k, steps=steps, warmup=warmup, key=probe_key, probes=probes,
                          backward=backward, split=split, host_chunk=host_chunk,
                          seed_key=jax.random.fold_in(probe_key, 1))
    return r if pad_multiple is None else _unpadded(r, int(ids.shape[0]))


def _check_k(k, d):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= d:
        raise ValueError(f"k={k!r} vectors: need an integer in [1, d={d}] (the prompt's state dimension)")


def _unpadded(r: CovariantResult, L: int) -> CovariantResult:
    """A padded prompt's CovariantResult cut to its first L positions (numpy: slicing device arrays of
    every shape would compile one program each)."""
    H = int(r.states.shape[-1])
    vectors, states, probes = jax.device_get((r.vectors, r.states, r.window_probes))
    return r.replace(vectors=vectors[:, :L * H], states=states[:, :L], window_probes=probes[:L * H])


def localisation(result: CovariantResult) -> dict:
    """Where the CLVs live: participation ratios per window step, over token positions ("positions", (W, k),
    in [1/L, 1]) and over coordinates ("coordinates", (W, k), in [1/d, 1]), and the fraction of ‖v_i(t)‖² on
    each position ("weights", (k, W, L)) for the position × loop-step heatmap."""
    L = int(result.states.shape[1])
    V = jnp.asarray(result.vectors)
    return {"positions": participation_ratio(V, positions=L, axis=-2),
            "coordinates": participation_ratio(V, axis=-2),
            "weights": jnp.moveaxis(position_weights(V, L, axis=-2), -2, 0)}


@flax.struct.dataclass
class ClvAttribution:
    """Per-sublayer growth rates over one window, CLVs next to Gram–Schmidt (rows = `names`, columns = k).

    clv / clv_plain: mean log(‖J_j v_i‖/‖v_i‖) of CLV i through sublayer j, gauge-relative (the sublayer's state
    growth `state_growth` subtracted) / plain. gs / gs_plain: the same from `benettin_sublayers` (QR after every
    sublayer) on the same window, started from the GS basis at the window start. Column 0 agrees (v_1 = q_1);
    columns >= 1 differ: GS column i measures growth orthogonal to the first i-1 GS vectors, CLV i the
    growth of a direction the dynamics carries. Sums over rows of the plain forms are the full-step rates
    (clv_exponents, gs_exponents)."""
    clv: np.ndarray
    clv_plain: np.ndarray
    gs: np.ndarray
    gs_plain: np.ndarray
    state_growth: np.ndarray
    clv_exponents: np.ndarray
    gs_exponents: np.ndarray
    names: tuple = flax.struct.field(pytree_node=False, default=())

    def to_json(self) -> dict:
        out = {"names": list(self.names)}
        for f in ("clv", "clv_plain", "gs", "gs_plain", "state_growth", "clv_exponents", "gs_exponents"):
            out[f] = np.asarray(getattr(self, f), np.float64).tolist()
        return out


def clv_attribution(model: LoopModel, tokens, *, k: int = 4, steps: int = 32, key=None, warmup: int = 32,
                    backward: int | None = None, init_state=None) -> ClvAttribution:
    """Direction selectivity on CLVs: per-sublayer growth of each of the k CLVs of one prompt (L,), gauge-
    relative and plain, next to the Gram–Schmidt attribution over the same window (see ClvAttribution)."""
    ids = check_ids(model, tokens, ndim=(1,))
    state_key, probe_key = split_key(key)
    names, maps, z0 = sublayer_maps(model, ids, key=state_key, init_state=init_state)
    f, _ = loop_map(model, ids, init_state=z0)
    r = covariant_vectors(f, z0, k=k, steps=steps, warmup=warmup, key=probe_key, backward=backward,
                          seed_key=jax.random.fold_in(probe_key, 1))
    g = sublayer_growth(maps, r.states, r.vectors, names=names)
    gs = benettin_sublayers(maps, r.states[0], k=k, steps=steps, probes=r.window_probes, names=names)
    state = np.asarray(g.state.mean(0))
    gs_plain = np.asarray(gs.exponents)
    return ClvAttribution(clv=np.asarray(g.relative.mean(0)), clv_plain=np.asarray(g.plain.mean(0)),
                          gs=gs_plain - state[:, None], gs_plain=gs_plain, state_growth=state,
                          clv_exponents=np.asarray(r.exponents), gs_exponents=np.asarray(gs.total()), names=names)


__all__ = ["clv", "localisation", "ClvAttribution", "clv_attribution"]
