"""Model front-ends of the Lyapunov engine and the loop diagnostics the paper reports.

All take a LoopModel and token ids; one prompt is (L,), several are (B, L) (results stacked on a leading
prompt axis). A `key` seeds the probes and, for Huginn, the random initial state; see `prompt_key` and
`split_key` for the one key scheme every front-end and the CLI follow.
"""
from functools import partial

import jax
import jax.numpy as jnp
from jax.tree_util import Partial
import numpy as np

from loopjax.engine.dynamics import lambda1_perturbation, orbit_type
from loopjax.engine.regime import Regime, classify_regime
from loopjax.engine.lyapunov import PROMPT_AXIS, benettin, benettin_sublayers, prefix_probes
from loopjax.models.loop_model import (LoopModel, check_ids, check_state, check_steps, default_key, loop_map,
                                       padded_init_state, sublayer_maps)


def prompt_key(seed: int, index: int):
    """The key of prompt `index` in a run seeded `seed`: `jax.random.fold_in(jax.random.key(seed), index)`.

    The key scheme, in full (every front-end and every `loopjax` command follows it):
      * prompt i of a run with seed S has the key  K_i = fold_in(key(S), i)  (this function);
        a (B, L) batch passed with key K uses fold_in(K, b) for row b, so key=key(S) on the batch gives
        row b exactly the numbers of prompt_key(S, b) on that row alone;
      * `split_key(K_i)` = (state key, probe key): Huginn's random z_0 is drawn from the state key
        (Ouro starts from its embeddings and ignores it), the Benettin probes from the probe key;
      * spectrum / attribution / lambda1 / similarity / convergence called with the same K_i therefore
        start from the same z_0, and `loopjax spectrum --seed S` prompt i is exactly
        `loopjax.spectrum(model, ids_i, k=..., steps=..., key=prompt_key(S, i))`.
    """
    for name, v, hi in (("seed", seed, 2**63 - 1), ("index", index, 2**32 - 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if not 0 <= v <= hi:
            raise ValueError(f"{name} must be in [0, {hi}], got {v}")
    return jax.random.fold_in(jax.random.key(int(seed)), int(index))


def split_key(key):
    """(state key, probe key) of a prompt key (see `prompt_key`); key None is key(0), an int n is key(n)."""
    state_key, probe_key = jax.random.split(default_key(key))
    return state_key, probe_key


def _per_prompt(run, model: LoopModel, tokens, key, init_state, probes):
    """Run `run(tokens_1d, state_key, probe_key, init_state, probes)` per prompt and stack the results."""
    tokens = check_ids(model, tokens)
    key = default_key(key)
    if tokens.ndim == 1:
        return run(tokens, *split_key(key), init_state, probes)
    pick = lambda x, b: None if x is None else (x[b] if jnp.ndim(x) == 3 else x)  # noqa: E731
    results = [run(tokens[b], *split_key(jax.random.fold_in(key, b)), pick(init_state, b), pick(probes, b))
               for b in range(tokens.shape[0])]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *results)


def _is_ragged(tokens) -> bool:
    """A list/tuple of 1-D prompts (possibly of different lengths), as opposed to one (L,) or (B, L) array."""
    return isinstance(tokens, (list, tuple)) and len(tokens) > 0 and all(jnp.ndim(t) == 1 for t in tokens) and \
        not all(isinstance(t, (int, np.integer)) for t in tokens)


def padded_length(length: int, pad_multiple: int = 8) -> int:
    """The bucket a prompt of `length` tokens is padded to: the next multiple of pad_multiple."""
    return -(-int(length) // pad_multiple) * pad_multiple


def bucket_multiple(lengths, multiple: int = 8, max_overhead: float = 2.0) -> int:
    """The pad multiple for a prompt set: the longest prompt rounded up to `multiple`, so that every prompt
    shares one bucket (one compiled program per analysis), when the padded tokens stay within
    `max_overhead` times the real ones; otherwise `multiple` (buckets of `multiple` tokens). On CPU, and
    for small models anywhere, compiling a program costs more than running it on padded rows. The 20
    built-in prompts (8 to 23 tokens) give 24: 480 padded against 358 real tokens."""
    lengths = [int(n) for n in lengths]
    if not lengths or min(lengths) < 1:
        raise ValueError(f"lengths must be positive prompt lengths, got {lengths}")
    one = padded_length(max(lengths), multiple)
    return one if one * len(lengths) <= max_overhead * sum(lengths) else int(multiple)


def _ragged(model: LoopModel, prompts, key, *, k, steps, sublayers: bool, pad_multiple: int, engine: dict):
    """Prompts of different lengths as padded batches, one vmapped program per bucket.

    Prompt i (key fold_in(key, i), as for a (B, L) batch) is right-padded to its bucket with token 0; its
    start state is drawn for the unpadded prompt and zero-padded; its probes are drawn for the unpadded
    state and zero-padded; after every JVP the tangents are projected onto the real positions
    (`tangent_mask`). Causal attention makes the real positions autonomous (the pads never feed them), so
    each prompt's exponents equal its single-prompt call with the same key, up to float rounding of the
    larger matmuls. `key` may also be a list with one key per prompt (used as is, e.g. prompt_key(seed, i)
    for a subset of a prompt set). Returns one result per prompt (unpadded final state and probes), in order."""
    prompts = [check_ids(model, t, ndim=(1,), what=f"prompt {i}") for i, t in enumerate(prompts)]
    if isinstance(key, (list, tuple)):
        if len(key) != len(prompts):
            raise ValueError(f"got {len(key)} keys for {len(prompts)} prompts")
        keys = [default_key(kk) for kk in key]
    else:
        keys = [jax.random.fold_in(default_key(key), i) for i in range(len(prompts))]
    H = model.config.hidden_size
    buckets: dict[int, list[int]] = {}
    for i, ids in enumerate(prompts):
        buckets.setdefault(padded_length(ids.shape[0], pad_multiple), []).append(i)
    out = [None] * len(prompts)
    for Lb, members in buckets.items():
        for i in members:
            if k > prompts[i].shape[0] * H:
                raise ValueError(f"k={k} probes exceed the state dimension d={prompts[i].shape[0] * H} of prompt {i}")
        lengths = [int(prompts[i].shape[0]) for i in members]
        ids_b = jnp.asarray(np.stack([np.pad(np.asarray(prompts[i]), (0, Lb - n)) for i, n in zip(members, lengths)]))
        state_keys, probe_keys = (jnp.stack(x) for x in zip(*(split_key(keys[i]) for i in members)))
        z0_b, q_b, m_b = _bucket_starts(model, ids_b, jnp.asarray(lengths, jnp.int32), state_keys, probe_keys, k=k)

        def one(ids, z0, q0, mask):
            if sublayers:
                names, maps, _ = sublayer_maps(model, ids, init_state=z0)
                return benettin_sublayers(maps, z0, k=k, steps=steps, probes=q0, names=names, tangent_mask=mask,
                                          **engine)
            f, _ = loop_map(model, ids, init_state=z0)
            return benettin(f, z0, k=k, steps=steps, probes=q0, tangent_mask=mask, **engine)

        mesh = engine.get("mesh")
        if mesh is not None and PROMPT_AXIS in mesh.axis_names:
            # 2-D mesh (prompts x probes): the batch axis is sharded over the prompts axis; pad the batch to a
            # multiple of it by repeating the last prompt (its extra results are dropped)
            extra = -len(ids_b) % mesh.shape[PROMPT_AXIS]
            batch = [jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)]) for x in (ids_b, z0_b, q_b, m_b)]
            res = jax.vmap(one, spmd_axis_name=PROMPT_AXIS)(*batch)
        else:
            res = jax.vmap(one)(ids_b, z0_b, q_b, m_b)
        # one transfer of the batch, sliced on the host: indexing each device array per prompt dispatched
        # (and on CPU compiled) one slicing program per leaf and prompt, ~13 s for 20 prompts
        host = jax.device_get(res)
        for b, (i, L) in enumerate(zip(members, lengths)):
            r = jax.tree.map(lambda x, b=b: x[b], host)
            r = r.replace(final_state=r.final_state[:L], final_probes=r.final_probes[:L * H])
            out[i] = jax.tree.map(jnp.asarray, r)
    return out


@partial(jax.jit, static_argnames="k")
def _bucket_starts(model: LoopModel, ids_b, lengths, state_keys, probe_keys, *, k: int):
    """Per prompt of a padded bucket (ids_b (B, Lb), lengths (B,)): the default start state zero-padded
    (`padded_init_state`), k probes drawn on its real coordinates (`prefix_probes`) and the real-row mask:
    each equal to the unpadded prompt's, from one program per bucket shape."""
    Lb, H = ids_b.shape[1], model.config.hidden_size

    def one(ids, n, state_key, probe_key):
        z0 = padded_init_state(model, ids, n, state_key)
        q = prefix_probes(probe_key, n * H, d=Lb * H, k=k, dtype=jnp.dtype(z0.dtype))
        return z0, q, jnp.broadcast_to((jnp.arange(Lb) < n)[:, None], (Lb, H))

    return jax.vmap(one)(ids_b, lengths, state_keys, probe_keys)


def spectrum(model: LoopModel, tokens, *, k=50, steps=64, key=None, probes=None, init_state=None, pad_multiple=8,
             **engine):
    """Top-k Lyapunov spectrum of the loop map over a prompt's whole state (L, H) by Benettin's algorithm.

    Returns a LyapunovResult: exponents (k,) in column order (`.sorted()` sorts), log_growth (steps, k),
    running averages; with (B, L) tokens every field gets a leading prompt axis. A list of prompts of
    different lengths runs as padded batches (one compiled, vmapped program per length bucket of
    `pad_multiple` tokens) and returns a list with one result per prompt, equal to the single-prompt calls
    with keys fold_in(key, i). `engine` passes warmup, renorm_every, probe_chunk, mesh, remat through to
    loopjax.benettin.
    """
    if _is_ragged(tokens):
        if probes is not None or init_state is not None:
            raise ValueError("a list of prompts takes no probes= / init_state= (they are drawn per prompt)")
        return _ragged(model, tokens, key, k=k, steps=steps, sublayers=False, pad_multiple=pad_multiple,
                       engine=engine)
    def run(toks, state_key, probe_key, z0, q0):
        f, z0 = loop_map(model, toks, key=state_key, init_state=z0)
        return benettin(f, z0, k=k, steps=steps, key=probe_key, probes=q0, **engine)

    return _per_prompt(run, model, tokens, key, init_state, probes)


def attribution(model: LoopModel, tokens, *, k=1, steps=32, key=None, probes=None, init_state=None, pad_multiple=8,
                relative=False, **engine):
    """Per-sublayer exponents: Benettin with a QR after every named sublayer (Ouro: each decoder layer and the
    final norm; Huginn: the adapter and each core block). exponents (n_sub, k) sum over sublayers to the
    full-step spectrum from the same start; `.names` names the rows. A list of prompts runs as padded
    batches, as in `spectrum`. relative=True subtracts each sublayer's own state growth
    log(||z_out||/||z_in||) per step (gauge-relative: unchanged by a rescaling of the state between
    sublayers; the rows then sum to `.total()` - `.net_state_growth()`); see loopjax.benettin_sublayers."""
    engine = {**engine, "relative": relative}
    if _is_ragged(tokens):
        if probes is not None or init_state is not None:
            raise ValueError("a list of prompts takes no probes= / init_state= (they are drawn per prompt)")
        return _ragged(model, tokens, key, k=k, steps=steps, sublayers=True, pad_multiple=pad_multiple,
                       engine=engine)
    def run(toks, state_key, probe_key, z0, q0):
        names, maps, z0 = sublayer_maps(model, toks, key=state_key, init_state=z0)
        return benettin_sublayers(maps, z0, k=k, steps=steps, key=probe_key, probes=q0, names=names, **engine)

    return _per_prompt(run, model, tokens, key, init_state, probes)


def lambda1(model: LoopModel, tokens, steps=32, key=None, probes=None, init_state=None, **engine):
    """The single-probe estimate of the largest exponent (one per prompt for (B, L) tokens or a list)."""
    r = spectrum(model, tokens, k=1, steps=steps, key=key, probes=probes, init_state=init_state, **engine)
    if isinstance(r, list):
        return jnp.stack([x.exponents[0] for x in r])
    return r.exponents[..., 0]


@partial(jax.jit, static_argnames="loops")
def _sublayer_states(maps, z0, loops: int):
    def one_loop(z, _):
        outs = []
        for g in maps:
            z = g(z)
            outs.append(z)
        return z, jnp.stack(outs)

    return jax.lax.scan(one_loop, z0, None, length=loops)[1]


def similarity(model: LoopModel, tokens, loops=4, key=None, init_state=None, pad_multiple: int | None = None):
    """Cosine similarity between the residual-stream states after every sublayer, across `loops` loops.

    Returns {"names": ["loop0/layers.0", ...], "matrix": (n, n), "states_norm": (n,)} with
    n = loops * n_sublayers, states flattened over the whole prompt. pad_multiple=N runs the sublayers of
    the prompt right-padded to a multiple of N tokens with the pad rows held at 0 (one compilation per
    bucket; norms and inner products are the prompt's own up to float rounding)."""
    check_steps(loops, model)
    if pad_multiple is None:
        names, maps, z0 = sublayer_maps(model, tokens, key=split_key(key)[0], init_state=init_state)
    else:
        names, maps, z0 = padded_sublayer_maps(model, tokens, init_state, pad_multiple, key=split_key(key)[0])
    states = _sublayer_states(maps, z0, loops).reshape(loops * len(names), -1)
    norms = jnp.linalg.norm(states, axis=-1)
    unit = states / norms[:, None]
    return {"names": [f"loop{t}/{n}" for t in range(loops) for n in names],
            "matrix": unit @ unit.T, "states_norm": norms}


@partial(jax.jit, static_argnames="steps")
def _trajectory_norms(f, z0, steps: int):
    def body(z, _):
        z_next = f(z)
        return z_next, (jnp.linalg.norm(z_next - z), jnp.linalg.norm(z_next))

    _, (step_norm, state_norm) = jax.lax.scan(body, z0, None, length=steps)
    return step_norm, jnp.concatenate([jnp.linalg.norm(z0)[None], state_norm])


def convergence(model: LoopModel, tokens, steps=64, key=None, init_state=None, pad_multiple: int | None = None):
    """‖z_{t+1} - z_t‖ (steps,), ‖z_t‖ (steps+1,) and their ratio along the loop of one prompt.
    pad_multiple=N runs `padded_loop_map` (one compilation per bucket of N tokens; its pad rows stay 0, so
    the norms are the prompt's own up to float rounding)."""
    steps = check_steps(steps, model)
    if pad_multiple is None:
        f, z0 = loop_map(model, tokens, key=split_key(key)[0], init_state=init_state)
    else:
        f, z0 = padded_loop_map(model, tokens, init_state, pad_multiple, key=split_key(key)[0])
    step_norm, state_norm = _trajectory_norms(f, z0, steps)
    return {"step_norm": step_norm, "state_norm": state_norm, "relative_step": step_norm / state_norm[:-1]}


def spectrum_probe_seeds(model: LoopModel, tokens, *, k=50, steps=64, key=None, n_seeds=3, **engine):
    """The spectrum of one prompt from the same start state (split_key(key)[0]) with `n_seeds` other probe
    keys: seed j draws its probes from fold_in(split_key(key)[1], j + 1). Their spread measures how much
    the finite-time estimate depends on the initial probes. Returns a list of LyapunovResults."""
    state_key, probe_key = split_key(key)
    f, z0 = loop_map(model, tokens, key=state_key)
    return [benettin(f, z0, k=k, steps=steps, key=jax.random.fold_in(probe_key, j + 1), **engine)
            for j in range(n_seeds)]


def orbit(model: LoopModel, tokens, *, steps=64, key=None, max_period=8, pad_multiple: int | None = None,
          **thresholds):
    """What the loop's orbit does for one prompt (loopjax.orbit_type of the loop map from the same start
    as the other front-ends): fixed point, period-p cycle (p <= max_period), not converged, diverged.
    pad_multiple=N runs `padded_loop_map` (prompts of nearby lengths share one compilation): its pad rows
    stay 0, so every norm the test takes, hence the verdict, is the unpadded prompt's up to float rounding."""
    state_key = split_key(key)[0]
    ids = check_ids(model, tokens)
    if pad_multiple is None or ids.ndim != 1 or padded_length(ids.shape[0], pad_multiple) == ids.shape[0]:
        f, z0 = loop_map(model, ids, key=state_key)
    else:
        f, z0 = padded_loop_map(model, ids, None, pad_multiple, key=state_key)
    return orbit_type(f, z0, steps=steps, max_period=max_period, **thresholds)


def lambda1_finite(model: LoopModel, tokens, *, steps=64, key=None, d0_relative=1e-3):
    """λ1 by finite perturbations (loopjax.lambda1_perturbation) with d0 = d0_relative * ||z_0||: a check
    of the linearised estimate (bf16 weights, large norms)."""
    f, z0 = loop_map(model, tokens, key=split_key(key)[0])
    d0 = float(d0_relative * jnp.linalg.norm(z0))
    return lambda1_perturbation(f, z0, steps=steps, d0=d0, key=split_key(key)[1])


def regime(model: LoopModel, tokens, *, key=None, init_state=None, pad_multiple: int | None = None,
           **options) -> Regime | list[Regime]:
    """The regime of the loop's orbit for a prompt (`loopjax.classify_regime` of the loop map), from the same
    start state as the other front-ends: z_0 from split_key(key)[0] (Huginn's random state; Ouro ignores it),
    the Benettin probes from split_key(key)[1]. `options` pass to classify_regime (k, n_exponents, min_steps,
    max_steps, max_period, criteria). (B, L) tokens or a list of prompts give a list, prompt b with key
    fold_in(key, b) as in `spectrum` (init_state is then not accepted).

    pad_multiple=N runs the prompt right-padded to the next multiple of N tokens, so that prompts of nearby
    lengths share one compilation: the map is `padded_loop_map`'s, whose real rows are the prompt's own loop
    (causal attention) and whose pad rows are held at 0 (their Jacobian block is 0, exponents -inf), so the
    orbit, its fixed points and the leading exponents are the unpadded prompt's; only the random probes
    differ (drawn in the padded space). evidence["padded_length"] records it."""
    if _is_ragged(tokens) or np.ndim(tokens) == 2:
        if init_state is not None:
            raise ValueError("several prompts take no init_state= (it is drawn per prompt)")
        key = default_key(key)
        return [regime(model, t, key=jax.random.fold_in(key, b), pad_multiple=pad_multiple, **options)
                for b, t in enumerate(tokens)]
    state_key, probe_key = split_key(key)
    ids = check_ids(model, tokens)
    if pad_multiple is None or padded_length(ids.shape[0], pad_multiple) == ids.shape[0]:
        f, z0 = loop_map(model, ids, key=state_key, init_state=init_state)
        return classify_regime(f, z0, key=probe_key, **options)
    f, z0 = padded_loop_map(model, ids, init_state, pad_multiple, key=state_key)
    r = classify_regime(f, z0, key=probe_key, **options)
    r.evidence["padded_length"] = int(z0.shape[0])   # evidence["d"] is the padded state's size
    r.evidence["d_prompt"] = int(ids.shape[0] * z0.shape[1])
    return r


def _real_rows_only(f, mask, z):
    return jnp.where(mask, f(z), jnp.zeros_like(z))


def _pad_rows(x, n: int):
    """x with n zero rows appended (on the host when x is concrete: an eager jnp.pad compiles per shape)."""
    if isinstance(x, jax.core.Tracer):
        return jnp.pad(x, ((0, n),) + ((0, 0),) * (x.ndim - 1))
    host = np.asarray(x)
    return jnp.asarray(np.pad(host, ((0, n),) + ((0, 0),) * (host.ndim - 1)))


def padded_start(model: LoopModel, ids, pad_multiple: int = 8, *, key=None, init_state=None):
    """(ids_pad, z0_pad, mask) for one prompt `ids` (L,) right-padded with token 0 to Lb = padded_length(L,
    pad_multiple): z0_pad is `init_state` zero-padded, or without it the default start drawn from `key` (a
    state key, as `split_key(...)[0]`) by `loopjax.models.loop_model.padded_init_state` (one program per Lb,
    equal to the unpadded start); mask (Lb, H) is True on the real rows."""
    ids = check_ids(model, ids, ndim=(1,), what="tokens")
    L = int(ids.shape[0])
    Lb = padded_length(L, pad_multiple)
    ids_pad = _pad_rows(ids, Lb - L)
    z0_pad = (padded_init_state(model, ids_pad, L, key) if init_state is None
              else _pad_rows(check_state(init_state, (L, model.config.hidden_size)), Lb - L))
    mask = jnp.asarray(np.broadcast_to((np.arange(Lb) < L)[:, None], z0_pad.shape))
    return ids_pad, z0_pad, mask


def padded_sublayer_maps(model: LoopModel, ids, z0=None, pad_multiple: int = 8, *, key=None):
    """(names, maps, z0_pad): `sublayer_maps` of `ids` right-padded with token 0 to padded_length(L,
    pad_multiple), each map's pad rows set to 0 (as `padded_loop_map` does for the whole step); z0 or, if
    None, the default start from the state key `key` (`padded_start`)."""
    ids_pad, z0_pad, mask = padded_start(model, ids, pad_multiple, key=key, init_state=z0)
    names, maps, _ = sublayer_maps(model, ids_pad, init_state=z0_pad)
    return names, [Partial(_real_rows_only, g, mask) for g in maps], z0_pad


def padded_loop_map(model: LoopModel, ids, z0=None, pad_multiple: int = 8, *, key=None):
    """(f_pad, z0_pad): the loop map of `ids` right-padded with token 0 to padded_length(L, pad_multiple), with
    the pad rows of its output set to 0, and z0 zero-padded (None: the default start from the state key
    `key`, see `padded_start`). The first L rows of f_pad(z) are exactly the prompt's own f(z[:L]) (causal
    attention: no real position reads a pad), so f_pad = f on the real rows and 0 on the pads: a
    block-diagonal Jacobian diag(J, 0)."""
    ids_pad, z0_pad, mask = padded_start(model, ids, pad_multiple, key=key, init_state=z0)
    f_pad, _ = loop_map(model, ids_pad, init_state=z0_pad)
    return Partial(_real_rows_only, f_pad, mask), z0_pad


__all__ = ["prompt_key", "split_key", "spectrum", "attribution", "lambda1", "similarity", "convergence",
           "spectrum_probe_seeds", "orbit", "lambda1_finite", "regime", "padded_loop_map", "padded_sublayer_maps",
           "padded_start", "bucket_multiple"]
