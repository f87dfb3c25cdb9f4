"""The trainer's only door into loopjax's model internals, built on the library's own loop map and engine.

Everything in ``loopjax.train`` that needs more than the public API goes through the small functions below:
building a config (``loopjax.models.presets``, ``config_from_hf``), the loop map over a batch
(``loopjax.models.loop_model``: ``context``, ``init_state`` and the ``Sublayer`` map, the same Partial
``loopjax.loop_map`` returns, plus the architecture's readout), the differentiable λ1 probe
(``loopjax.lambda1``: Benettin with k = 1 in ``loopjax.engine``), the HF and orbax writers
(``loopjax.io.checkpoint.write_hf_checkpoint``, ``loopjax.io.weights``) and the built-in prompt texts
(``loopjax.io.prompts``). When any of these is renamed, only this file changes.

Architectures (the trainer's ``arch`` strings):
  * ``ouro``: z_0 = embed(ids); loop = decoder layers + final norm, ``total_ut_steps`` times; logits from
    the last loop (the early-exit gate is not trained).
  * ``huginn``: e = prelude(embed(ids)); z_0 random; loop = adapter(cat[z, e]) + core blocks; coda + head.
  * ``parcae``: e = ln_prelude(prelude(embed(ids))); z_0 random (like-init); loop = diagonal injection
    x exp(-dt A) + dt (e B^T), then pre-norm core blocks; C + coda + head. Trained like Huginn (sampled loop
    counts, truncated backprop through the last ``backprop_depth`` loops).
  * ``huginn-<variant>``: the Huginn backbone with another input injection (``HUGINN_INJECTIONS``; the
    config's ``injection_type``, also in the saved config.json, is the one switch that training,
    loopjax.lambda1, loopjax.logits and loopjax.load read): ``add`` z + e, ``diagonal`` Parcae's
    z exp(-dt A) + dt e B^T, ``gate`` z + sigmoid(g) e, ``inject-once`` z_0 = e then the loop without e,
    ``noinject`` (injection_type "none") the loop without e from a random start: the degenerate model whose
    output never depends on the prompt.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp

from jax.tree_util import Partial

from loopjax.analysis.frontends import lambda1
from loopjax.models import config_from_hf
from loopjax.models.loop_model import LoopModel, Sublayer, context, init_state
from loopjax.models.presets import huginn_config, ouro_config, parcae_config

# The Huginn backbone with each injection variant of the ablation (HuginnConfig.injection_type).
HUGINN_INJECTIONS = {"huginn": "linear", "huginn-add": "add", "huginn-diagonal": "diagonal",
                     "huginn-gate": "gate", "huginn-inject-once": "inject-once", "huginn-noinject": "none"}
ARCHS = ("ouro", *HUGINN_INJECTIONS, "parcae")


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    return arch


def is_huginn(arch: str) -> bool:
    return check_arch(arch).startswith("huginn")


def is_recurrent(arch: str) -> bool:
    """Prelude / looped core / coda with a random start, trained with sampled loop counts and truncated
    backprop (Huginn and Parcae); Ouro loops a fixed number of times from the embeddings."""
    return is_huginn(arch) or arch == "parcae"


def has_adapter(arch: str) -> bool:
    """Whether the loop starts with Huginn's linear adapter on cat(z, e) (linear, inject-once, none)."""
    return HUGINN_INJECTIONS.get(check_arch(arch)) in ("linear", "inject-once", "none")


def injects(arch: str) -> bool:
    """Whether the loop map reads the input injection (False for huginn-noinject and huginn-inject-once)."""
    return HUGINN_INJECTIONS.get(check_arch(arch), "linear") not in ("none", "inject-once")


# ---- configs ----

def make_config(arch: str, *, vocab_size: int, hidden: int, layers: int, heads: int, kv_heads: int,
                intermediate: int, loops: int, prelude_layers: int = 1, coda_layers: int = 1,
                backprop_depth: int | None = None):
    """The architecture config for a model of this size, from loopjax's HF config presets (every field the
    reference implementations read). `layers` is Ouro's looped decoder depth and Huginn's recurrent-block
    depth; `loops` is Ouro's total_ut_steps and Huginn's mean_recurrence. Ouro: tied embeddings,
    rope_theta 1e4. Huginn: the reference init (out_proj std scaled by 1/sqrt(2 * expected depth))."""
    if hidden % heads:
        raise ValueError(f"hidden {hidden} is not a multiple of heads {heads}")
    if arch == "parcae":
        cfg = parcae_config(n_embd=hidden, heads=heads, kv_heads=kv_heads, prelude=prelude_layers, core=layers,
                            coda=coda_layers, inter=intermediate, vocab=vocab_size, mean_recurrence=loops,
                            mean_backprop_depth=backprop_depth or 4)
    elif is_huginn(arch):
        if kv_heads != heads:
            raise ValueError("Huginn has no grouped KV heads: kv_heads must equal heads")
        cfg = huginn_config(n_embd=hidden, heads=heads, prelude=prelude_layers, core=layers, coda=coda_layers,
                            inter=intermediate, vocab=vocab_size, mean_recurrence=loops)
        if backprop_depth is not None:
            cfg["mean_backprop_depth"] = backprop_depth
        cfg["injection_type"] = HUGINN_INJECTIONS[arch]   # HuginnConfig's switch (see its INJECTION_TYPES)
    else:
        cfg = ouro_config(hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, head_dim=hidden // heads,
                          inter=intermediate, vocab=vocab_size, loops=loops, rope_theta=10000.0, tied=True)
    return config_from_hf(cfg)


def hf_config(config, arch: str) -> dict:
    """The config.json dict of a trained model (its injection_type names the Huginn variant)."""
    return config.to_hf()


def default_loops(config) -> int:
    """Ouro's total_ut_steps, Huginn's mean_recurrence."""
    return config.default_steps


# ---- the loop map and the forward pass: the library's, over a batch of ids ----

def loop_parts(params, config, ids, key=None):
    """(f, readout, z0) of `LoopModel(params, config)` on token ids (..., L): the library's loop map
    (`loopjax.models.loop_model.Sublayer` bound to the model and its context, a Partial pytree), the
    architecture's readout (float32 logits) and the default start state (Huginn: random from `key`).
    A huginn-noinject config (injection_type "none") already carries e = 0 in its own context."""
    model = LoopModel(params, config)
    ctx = context(model, ids)
    f = Partial(Sublayer(None), model, ctx)

    def readout(z):
        return model.arch.readout(model.params, model.config, ctx, z).astype(jnp.float32)

    return f, readout, init_state(model, ids, jax.random.key(0) if key is None else key)


def _truncated(f, z, n_loops, n_grad_loops: int):
    """Huginn's truncated backpropagation: max(n_loops - s, 0) loops with gradients stopped (weights, context
    and state: the whole Partial), then a fixed s-step scan that applies f min(n_loops, s) times."""
    n_loops = jnp.asarray(n_loops, jnp.int32)
    frozen = jax.lax.stop_gradient(f)
    n_free = jnp.maximum(n_loops - n_grad_loops, 0)
    z = jax.lax.stop_gradient(jax.lax.fori_loop(0, n_free, lambda _, z: frozen(z), jax.lax.stop_gradient(z)))
    n_active = jnp.minimum(n_loops, n_grad_loops)

    def body(z, j):
        return jnp.where(j < n_active, f(z), z), None

    return jax.lax.scan(body, z, jnp.arange(n_grad_loops))[0]


def forward_logits(params, config, ids, *, n_loops=None, n_grad_loops: int | None = None, key=None,
                   every_loop: bool = False):
    """Logits (..., L, V), float32, after `n_loops` loops (default: the config's own count); with
    every_loop=True (static n_loops, no truncation) the logits read out after every loop, (n_loops, ..., L, V).

    n_grad_loops=None: plain `lax.scan` over a static `n_loops`, differentiable throughout.
    n_grad_loops=s (static): truncated backpropagation as in Huginn's training: `n_loops` may be a traced
    integer; the first max(n_loops - s, 0) loops run in a `lax.fori_loop` with gradients stopped (weights,
    injection and state), then a fixed s-step `lax.scan` applies the loop min(n_loops, s) times with
    gradients (the remaining scan steps are the identity). Huginn's random start z_0 is drawn from `key`
    exactly as `loopjax.logits(model, ids, key=key)` draws it.
    """
    f, readout, z = loop_parts(params, config, ids, key)
    n_loops = default_loops(config) if n_loops is None else n_loops
    if every_loop:
        if n_grad_loops is not None:
            raise ValueError("every_loop=True needs a static loop count without truncation")

        def body(z, _):
            z = f(z)
            return z, readout(z)

        return jax.lax.scan(body, z, None, length=int(n_loops))[1]
    if n_grad_loops is None:
        z = jax.lax.scan(lambda z, _: (f(z), None), z, None, length=int(n_loops))[0]
    else:
        z = _truncated(f, z, n_loops, n_grad_loops)
    return readout(z)


def lambda1_probe(params, config, ids, *, horizon: int = 8, key=None):
    """A differentiable single-probe λ1 estimate of the loop map on one sequence ids (L,): the library's
    `loopjax.lambda1` (Benettin with k = 1 from `split_key(key)`: Huginn's z_0 from the state key, the probe
    from the probe key) over `horizon` steps. Differentiable w.r.t. params (reverse mode through the JVPs
    and the QR)."""
    return lambda1(LoopModel(params, config), ids, steps=horizon, key=jax.random.key(0) if key is None else key)


def injection_loop_step(model, arch: str, ids, *, key=None):
    """(g, z0, e): the loop step as a function g(z, e) of the state and the injection, the start state and
    the model's injection for `ids` (Huginn and Parcae). e replaces the context fields the config declares as
    injections (`injection_fields`): none for huginn-noinject, whose g therefore ignores e."""
    if not is_recurrent(arch):
        raise ValueError("only Huginn and Parcae models have an input injection")
    ctx = context(model, ids)
    fields = model.arch.injection_fields(model.config)
    z0 = init_state(model, ids, jax.random.key(0) if key is None else key)

    def g(z, e):
        return Sublayer(None)(model, {**ctx, **{name: e for name in fields}}, z)

    return g, z0, ctx["injection"]


# ---- writing checkpoints ----

def save_hf_checkpoint(model, out_dir, *, arch: str, tokenizer_json=None, overwrite: bool = False) -> Path:
    """config.json + model.safetensors (+ tokenizer.json) in out_dir, atomically; loopjax.load reads it."""
    from loopjax.io.checkpoint import write_hf_checkpoint
    from loopjax.io.weights import to_hf_tensors

    extra = [tokenizer_json] if tokenizer_json is not None else []
    return write_hf_checkpoint(out_dir, hf_config(model.config, arch), to_hf_tensors(model), extra_files=extra,
                               overwrite=overwrite)


def save_orbax_checkpoint(model, out_dir, *, arch: str, tokenizer_json=None, meta: dict | None = None) -> Path:
    """The `loopjax convert` layout (params/ + config.json + loopjax.json + tokenizer.json), atomically."""
    from loopjax.io.weights import save_orbax

    extra = [tokenizer_json] if tokenizer_json is not None else []
    return save_orbax(model, out_dir, hf_config(model.config, arch), meta, extra)


# ---- other internals the trainer uses ----

def builtin_prompt_texts() -> list[str]:
    """The texts of loopjax's 20 built-in analysis prompts, in order."""
    from loopjax.io.prompts import builtin_prompts

    return [p.text for p in builtin_prompts()]


def describe_config(config) -> dict:
    """The architecture config as a JSON-able dict (for the settings)."""
    return dataclasses.asdict(config)
