"""LoopModel (weights + static architecture) and the forward API: logits, trajectory, loop maps.

Generic over architectures: everything model-specific goes through `model.arch`, the
`loopjax.models.base.Architecture` registered for the config's type.
"""
import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.tree_util import Partial

from loopjax.engine.dtypes import compute_dtype, parse_dtype
from loopjax.models import architecture


@struct.dataclass
class LoopModel:
    """Weights (a pytree leaf collection) plus the architecture config as static metadata.

    `injection_scale` (a leaf: a scalar, so it can be traced, vmapped and differentiated) and
    `injection_mode` (static) transform the input injection of architectures that have one; see
    `loopjax.scale_injection`. Both are unset for a loaded model."""
    params: Any
    config: Any = struct.field(pytree_node=False)
    injection_scale: Any = None
    injection_mode: str | None = struct.field(pytree_node=False, default=None)

    @property
    def arch(self):
        return architecture(self.config)

    @property
    def sublayer_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.arch.sublayers(self.config))

    @property
    def model_type(self) -> str:
        return self.config.model_type

    def astype(self, dtype) -> "LoopModel":
        dtype = parse_dtype(dtype)
        if dtype is None:
            return self
        return self.replace(params=jax.tree.map(lambda w: w.astype(dtype), self.params))

    def num_params(self) -> int:
        return sum(int(np.prod(w.shape)) for w in jax.tree.leaves(self.params))


def random_model(config, key, dtype=None) -> LoopModel:
    """A model with fresh weights drawn by the architecture's own initialisation scheme.

    Weights are drawn directly in `dtype` (default float32). Large models are initialised one top-level
    submodule per compiled program (XLA drops the rest as dead code), so the random bits of a 3.5B-parameter
    model never have to exist all at once; the values are the same as one whole init.
    """
    param_dtype = parse_dtype(dtype) or jnp.float32
    init = partial(architecture(config).init_params, config, param_dtype=param_dtype)
    abstract = jax.eval_shape(init, key)
    size = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(abstract))
    if size < 2**30:
        return LoopModel(jax.jit(init)(key), config)
    params = {name: jax.jit(lambda k, name=name: init(k)[name])(key) for name in abstract}
    return LoopModel(params, config)


# ---- input checks: clear errors before anything is traced ----

def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_ids(model: LoopModel, input_ids, ndim=(1, 2), what: str = "input_ids"):
    """Token ids as int32 after checking rank, dtype, emptiness and (when concrete) the vocabulary range.
    Under jax.jit the range cannot be checked: an out-of-vocabulary id then gives NaN logits/states
    (jnp.take fills out-of-range rows with NaN); use `validate_ids` inside jitted code to check it."""
    ids = jnp.asarray(input_ids)
    if ids.ndim not in ndim:
        raise ValueError(f"{what} must have {' or '.join(map(str, ndim))} dims, got shape {ids.shape}")
    if ids.size == 0:
        raise ValueError(f"{what} is empty: a prompt needs at least one token")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"{what} must be integers, got {ids.dtype}")
    if _concrete(ids):
        host = np.asarray(ids)
        bad = host[(host < 0) | (host >= model.config.embedding_rows)]
        if bad.size:
            raise ValueError(f"{what}: token id(s) {sorted(set(bad.tolist()))[:8]} out of vocabulary "
                             f"[0, {model.config.embedding_rows})")
    return ids.astype(jnp.int32)


def validate_ids(model: LoopModel, input_ids):
    """Token ids as int32, with the vocabulary range checked by `jax.experimental.checkify.check`, so the check
    also runs inside jitted code, where `check_ids` cannot see the values (and an out-of-vocabulary id would
    silently give NaN). Functionalise your function with checkify to get the error::

        from jax.experimental import checkify

        @jax.jit
        def f(model, ids):
            return loopjax.logits(model, loopjax.validate_ids(model, ids))

        err, out = checkify.checkify(f)(model, ids)   # or jax.jit(checkify.checkify(f))
        err.throw()                                   # JaxRuntimeError naming the bad ids' range

    Traced without checkify, jax refuses it ("Cannot abstractly evaluate a checkify.check which was not
    functionalized"): that is the point, the check cannot be dropped silently. Rank, dtype and emptiness are
    checked by `check_ids` (they are static); with concrete ids (outside jit/checkify) a bad id raises
    its ValueError at once."""
    from jax.experimental import checkify

    ids = check_ids(model, input_ids)
    if _concrete(ids):
        return ids
    rows = model.config.embedding_rows
    checkify.check(jnp.all((ids >= 0) & (ids < rows)),
                   f"token id(s) out of vocabulary [0, {rows}): ids range from {{lo}} to {{hi}}",
                   lo=ids.min(), hi=ids.max())
    return ids


def check_steps(steps, model: LoopModel) -> int:
    steps = model.config.default_steps if steps is None else steps
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}")
    return int(steps)


def check_state(z, shape, what="init_state"):
    z = jnp.asarray(z, compute_dtype())
    if z.shape != tuple(shape):
        raise ValueError(f"{what} has shape {z.shape}, expected {tuple(shape)} (prompt length, hidden size)")
    if _concrete(z) and not bool(jnp.isfinite(z).all()):
        raise FloatingPointError(f"{what} contains NaN or inf")
    return z


def default_key(key):
    """A PRNG key: None -> key(0), an int seed n -> key(n), a key (new-style or raw uint32[2]) as is."""
    if key is None:
        return jax.random.key(0)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if not (hasattr(key, "dtype") and (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
                                       or (key.dtype == jnp.uint32 and key.shape[-1:] == (2,)))):
        raise TypeError(f"key must be a jax.random.key(...) (or an int seed), got {type(key).__name__}")
    return key


# ---- loop maps as pytrees: the bound weights and context are leaves, so they are jit arguments ----

@dataclasses.dataclass(frozen=True)
class Sublayer:
    """The index-th named sublayer of a model's loop map (index None = the whole step)."""
    index: int | None = None

    def __call__(self, model: LoopModel, ctx, z):
        layers = model.arch.sublayers(model.config)
        for _, fn in (layers if self.index is None else layers[self.index:self.index + 1]):
            z = fn(model.params, model.config, ctx, z)
        return z


@jax.jit
def _context(model: LoopModel, ids):
    ctx = model.arch.context(model.params, model.config, ids)
    return _transform_injection(model, ctx)


def _transform_injection(model: LoopModel, ctx: dict) -> dict:
    """Apply the model's injection transform: e -> mean over positions (mode "mean"), then e -> alpha * e."""
    if model.injection_scale is None and model.injection_mode is None:
        return ctx
    ctx = dict(ctx)
    for name in model.arch.injection_fields(model.config):
        e = ctx[name]
        if model.injection_mode == "mean":
            e = jnp.broadcast_to(jnp.mean(e, axis=-2, keepdims=True), e.shape)
        if model.injection_scale is not None:
            e = jnp.asarray(model.injection_scale, e.dtype) * e
        ctx[name] = e
    return ctx


def scale_injection(model: LoopModel, alpha, *, mode: str | None = None) -> LoopModel:
    """The same model with its input injection e replaced by alpha * e: the adapter's input becomes
    concat(z, alpha * e) (Huginn). alpha = 1 is the model itself, bit for bit; alpha = 0 removes the
    injection (the adapter sees concat(z, 0)). `mode="mean"` first replaces e by its mean over the prompt's
    positions (every position gets the same injection). alpha is a pytree leaf: the result composes with
    every analysis, with jax.vmap over a batch of alphas and with jax.grad with respect to alpha.
    Architectures without an injection (Ouro) raise ValueError."""
    if not model.arch.injection_fields(model.config):
        raise ValueError(f"{model.arch.name} has no input injection to scale (only Huginn-style models do)")
    if mode not in (None, "mean"):
        raise ValueError(f"mode must be None or 'mean', got {mode!r}")
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        alpha = jnp.asarray(alpha, compute_dtype())
    return model.replace(injection_scale=alpha, injection_mode=mode or model.injection_mode)


@jax.jit
def _default_state(model: LoopModel, ids, ctx, key):
    return model.arch.initial_state(model.params, model.config, ids, ctx, key)


def _prepare(model, input_ids, init_state, key, ndim=(1, 2)):
    ids = check_ids(model, input_ids, ndim)
    ctx = _context(model, ids)
    shape = ids.shape + (model.config.hidden_size,)
    if init_state is None:
        z0 = _default_state(model, ids, ctx, default_key(key))
    else:
        z0 = check_state(init_state, shape)
    return ids, ctx, z0


def context(model: LoopModel, input_ids) -> dict:
    """The loop map's fixed context for these ids: RoPE angles and, for Huginn, the injection e."""
    return _context(model, check_ids(model, input_ids))


def init_state(model: LoopModel, input_ids, key=None):
    """The default loop start (..., L, H): Ouro's embeddings, Huginn's random state from `key`."""
    return _prepare(model, input_ids, None, key)[2]


@jax.jit
def _padded_init_state(model: LoopModel, ids, length, key):
    z0 = _default_state(model, ids, _context(model, ids), key)
    return jnp.where((jnp.arange(ids.shape[-1]) < length)[:, None], z0, jnp.zeros_like(z0))


def padded_init_state(model: LoopModel, padded_ids, length, key=None):
    """The default loop start of the first `length` tokens of `padded_ids` (Lb,), zero-padded to (Lb, H):
    `init_state(model, padded_ids[:length], key)` with zero rows below, computed on the padded ids so that
    one compiled program serves every length (`length` is a traced scalar). Exactly the unpadded start for
    Ouro (embeddings) and for the random starts (jax's threefry draws, partitionable since jax 0.5, give a
    larger array whose leading rows are the smaller array's); for a start that is the prelude's output
    (Huginn inject-once) the real rows agree up to float rounding (causal attention: no real position reads
    a pad)."""
    ids = check_ids(model, padded_ids, ndim=(1,), what="padded_ids")
    return _padded_init_state(model, ids, jnp.asarray(length, jnp.int32), default_key(key))


def loop_map(model: LoopModel, tokens, key=None, init_state=None):
    """(f, z0) for one prompt: f maps its state (L, H) -> (L, H) and is a jax.tree_util.Partial."""
    _, ctx, z0 = _prepare(model, tokens, init_state, key, ndim=(1,))
    return Partial(Sublayer(None), model, ctx), z0


def sublayer_maps(model: LoopModel, tokens, key=None, init_state=None):
    """(names, maps, z0): the loop map split into named sublayers; composing maps (in order) is f."""
    _, ctx, z0 = _prepare(model, tokens, init_state, key, ndim=(1,))
    maps = tuple(Partial(Sublayer(i), model, ctx) for i in range(len(model.sublayer_names)))
    return model.sublayer_names, maps, z0


@partial(jax.jit, static_argnames="steps")
def _trajectory(model: LoopModel, ctx, z0, steps: int):
    step = Partial(Sublayer(None), model, ctx)

    def body(z, _):
        z = step(z)
        return z, z

    _, states = jax.lax.scan(body, z0, None, length=steps)
    return jnp.concatenate([z0[None], states], axis=0)


@jax.jit
def _readout(model: LoopModel, ctx, z):
    return model.arch.readout(model.params, model.config, ctx, z).astype(compute_dtype())


def trajectory(model: LoopModel, input_ids, steps=None, init_state=None, key=None):
    """Loop states z_0..z_S, shape (S+1, *input_ids.shape, H). Ouro: z_s is the normed state after loop s
    (the reference's per-step hidden states are z_1..z_S); Huginn: the raw latent after each core pass."""
    steps = check_steps(steps, model)
    _, ctx, z0 = _prepare(model, input_ids, init_state, key)
    return _trajectory(model, ctx, z0, steps)


def logits(model: LoopModel, input_ids, steps=None, init_state=None, key=None):
    """Logits (*input_ids.shape, V) after `steps` loops (default: the checkpoint's own), float32 (64 under x64)."""
    steps = check_steps(steps, model)
    _, ctx, z0 = _prepare(model, input_ids, init_state, key)
    return _readout(model, ctx, _trajectory(model, ctx, z0, steps)[-1])


def early_exit(model: LoopModel, input_ids, steps=None, threshold=None, init_state=None):
    """Ouro only: gate logits (S, B, L), exit pdf (B, L, S), logits at every step (S, B, L, V) and, with a
    threshold, each token's exit step and the logits it exits with."""
    steps = check_steps(steps, model)
    _, ctx, z0 = _prepare(model, input_ids, init_state, None)
    states = _trajectory(model, ctx, z0, steps)[1:]
    out = model.arch.early_exit(model.params, model.config, states, threshold)
    out["logits_per_step"] = jax.vmap(lambda z: _readout(model, ctx, z))(states)
    if threshold is not None:
        pick = jnp.moveaxis(jax.nn.one_hot(out["exit_steps"], steps, dtype=bool), -1, 0)[..., None]
        out["logits"] = jnp.where(pick, out["logits_per_step"], 0).sum(0)
    return out
