"""Huginn-0125 (tomg-group-umd): prelude -> recurrent core block (looped) -> coda, with input injection.

e = prelude(wte(ids) * embed_scale); loop map f(z) = core_block(adapter(cat([z, e]))), z_0 random;
logits = lm_head(ln_f(coda(ln_f(z_S)))) with lm_head tied to wte. Blocks are sandwich blocks:
x = norm_2(attn(norm_1(x)) + x); x = norm_4(mlp(norm_3(x)) + x).
"""
import dataclasses
from functools import partial
from typing import Any
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from loopjax.engine.dtypes import compute_dtype
from loopjax.models import layers
from loopjax.models.base import Architecture
from loopjax.models.huginn import params as params_table
from loopjax.models.layers import (Embed, causal_attention, merge_heads, require, require_positive, rope_angles,
                                   rope_interleaved, split_heads)

MODEL_TYPE = "huginn"


@dataclasses.dataclass(frozen=True)
class HuginnConfig:
    vocab_size: int            # embedding rows (padded_vocab_size)
    n_embd: int
    n_heads: int
    intermediate_size: int
    n_layers_in_prelude: int
    n_layers_in_recurrent_block: int
    n_layers_in_coda: int
    rope_base: float
    norm_eps: float
    qk_bias: bool
    tie_embeddings: bool
    mean_recurrence: int
    embed_scale: float
    init_std: float
    init_out_std: float
    init_embedding_std: float

    injection_type: str = "linear"
    model_type: str = MODEL_TYPE

    REQUIRED = {"n_embd": int, "n_heads": int, "intermediate_size": int, "n_layers_in_prelude": int,
                "n_layers_in_recurrent_block": int, "n_layers_in_coda": int, "rope_base": float, "norm_eps": float,
                "mean_recurrence": int, "vocab_size": int}
    SUPPORTED = {"block_class_name": "SandwichBlock", "mlp_class_name": "GatedMLP",
                 "norm_class_name": "RMSNorm_llama", "nonlin_name": "SiLU"}
    # How the loop reads the prompt (loopjax's ablation variants; the reference has only "linear"):
    #   linear       adapter(cat(z, e))                        -- Huginn-0125
    #   add          z + e                                     (no injection parameters)
    #   diagonal     z exp(-dt A) + dt (e B^T)                 -- Parcae's (PARCAE.md 4.8)
    #   gate         z + sigmoid(g) * e, g per channel         (H parameters)
    #   inject-once  z_0 = e, then adapter(cat(z, 0))          -- reads the prompt only through the start state
    #   none         adapter(cat(z, 0)) from a random z_0      -- never reads the prompt in the loop
    INJECTION_TYPES = ("linear", "add", "diagonal", "gate", "inject-once", "none")
    LOOP_IGNORES_E = ("inject-once", "none")  # the loop map does not depend on e

    @classmethod
    def from_hf(cls, cfg: dict) -> "HuginnConfig":
        f = require(cfg, cls.REQUIRED, "Huginn")
        init = cfg.get("init_values") or {}
        require_positive({k: f[k] for k in ("rope_base", "norm_eps")}
                         | {f"init_values.{k}": init[k] for k in ("embed_scale", "std", "out_proj", "embedding")
                            if init.get(k) is not None}, "Huginn")
        for key, want in cls.SUPPORTED.items():
            if cfg.get(key, want) != want:
                raise NotImplementedError(f"Huginn config: {key}={cfg[key]!r} is not supported (only {want!r})")
        injection = cfg.get("injection_type", "linear")
        if injection not in cls.INJECTION_TYPES:
            raise NotImplementedError(f"Huginn config: injection_type={injection!r} is not supported "
                                      f"(only {cls.INJECTION_TYPES})")
        if cfg.get("bias"):
            raise NotImplementedError("Huginn config: bias=true (linear biases) is not supported")
        if cfg.get("num_key_value_heads", f["n_heads"]) != f["n_heads"]:
            raise NotImplementedError("Huginn config: the fused Wqkv layout has no grouped KV heads")
        if "head_dim" in cfg and cfg["head_dim"] * f["n_heads"] != f["n_embd"]:
            raise ValueError(f"Huginn config: head_dim {cfg['head_dim']} * n_heads {f['n_heads']} != n_embd")
        std = math.sqrt(2 / (5 * f["n_embd"]))
        return cls(vocab_size=int(cfg.get("padded_vocab_size") or f["vocab_size"]),
                   n_embd=f["n_embd"], n_heads=f["n_heads"], intermediate_size=f["intermediate_size"],
                   n_layers_in_prelude=f["n_layers_in_prelude"],
                   n_layers_in_recurrent_block=f["n_layers_in_recurrent_block"],
                   n_layers_in_coda=f["n_layers_in_coda"], rope_base=float(f["rope_base"]),
                   norm_eps=float(f["norm_eps"]), qk_bias=bool(cfg.get("qk_bias", False)),
                   tie_embeddings=bool(cfg.get("tie_embeddings", True)), mean_recurrence=int(f["mean_recurrence"]),
                   embed_scale=float(init.get("embed_scale", math.sqrt(f["n_embd"]))),
                   init_std=float(init.get("std", std)), init_out_std=float(init.get("out_proj", std)),
                   init_embedding_std=float(init.get("embedding", std)), injection_type=injection)

    def to_hf(self) -> dict:
        n = self.n_layers_in_prelude + self.n_layers_in_recurrent_block + self.n_layers_in_coda
        return {"architectures": ["RavenForCausalLM"], "model_type": "huginn_raven", "n_embd": self.n_embd,
                "n_heads": self.n_heads, "num_key_value_heads": self.n_heads, "head_dim": self.head_dim,
                "intermediate_size": self.intermediate_size, "n_layers": n,
                "n_layers_in_prelude": self.n_layers_in_prelude,
                "n_layers_in_recurrent_block": self.n_layers_in_recurrent_block,
                "n_layers_in_coda": self.n_layers_in_coda, "rope_base": self.rope_base, "norm_eps": self.norm_eps,
                "qk_bias": self.qk_bias, "tie_embeddings": self.tie_embeddings,
                "mean_recurrence": self.mean_recurrence, "vocab_size": self.vocab_size,
                "padded_vocab_size": self.vocab_size, "bias": False, "block_size": 4096, **self.SUPPORTED,
                "injection_type": self.injection_type,
                "init_values": {"embed_scale": self.embed_scale, "std": self.init_std,
                                "out_proj": self.init_out_std, "embedding": self.init_embedding_std}}

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_heads

    @property
    def hidden_size(self) -> int:
        return self.n_embd

    @property
    def default_steps(self) -> int:
        return self.mean_recurrence

    @property
    def embedding_rows(self) -> int:
        return self.vocab_size


def _with_dtype(param_dtype):
    return partial(layers.Linear, param_dtype=param_dtype), partial(layers.RMSNorm, param_dtype=param_dtype)


class Attention(nn.Module):
    cfg: HuginnConfig
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, angles):
        c = self.cfg
        Linear, _ = _with_dtype(self.param_dtype)  # noqa: N806
        qkv = Linear(3 * c.n_embd, c.init_std, name="Wqkv")(x)
        q, k, v = (split_heads(t, c.n_heads, c.head_dim) for t in jnp.split(qkv, 3, axis=-1))
        if c.qk_bias:
            bias = self.param("qk_bias", nn.initializers.zeros, (2, 1, c.n_heads, c.head_dim), self.param_dtype)
            bias = bias.astype(q.dtype)
            q, k = q + bias[0, 0], k + bias[1, 0]
        q, k = rope_interleaved(q, angles), rope_interleaved(k, angles)
        if self.is_mutable_collection("intermediates"):  # only when asked (HuginnArchitecture.attention_probs)
            self.sow("intermediates", "attention_probs", layers.attention_probs(q, k))
        return Linear(c.n_embd, c.init_out_std, name="proj")(merge_heads(causal_attention(q, k, v)))


class GatedMLP(nn.Module):
    cfg: HuginnConfig
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.cfg
        Linear, _ = _with_dtype(self.param_dtype)  # noqa: N806
        gate, up = jnp.split(Linear(2 * c.intermediate_size, c.init_std, name="fc")(x), 2, axis=-1)
        return Linear(c.n_embd, c.init_out_std, name="proj")(jax.nn.silu(gate) * up)


class SandwichBlock(nn.Module):
    cfg: HuginnConfig
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, angles):
        eps, pd = self.cfg.norm_eps, self.param_dtype
        _, RMSNorm = _with_dtype(pd)  # noqa: N806
        x = RMSNorm(eps, name="norm_2")(Attention(self.cfg, pd, name="attn")(RMSNorm(eps, name="norm_1")(x), angles) + x)
        return RMSNorm(eps, name="norm_4")(GatedMLP(self.cfg, pd, name="mlp")(RMSNorm(eps, name="norm_3")(x)) + x)


class Injection(nn.Module):
    """The parameter-light injections of the ablation (add, diagonal, gate): g(z, e) -> (..., L, H)."""
    cfg: HuginnConfig
    param_dtype: Any = jnp.float32

    def setup(self):
        c, pd = self.cfg, self.param_dtype
        if c.injection_type == "diagonal":  # Parcae's init: A = 1, dt = 0.5 (decay exp(-0.5)), B ~ N(0, 1/H)
            self.A_log = self.param("A_log", nn.initializers.zeros, (c.n_embd,), pd)
            self.dt_bias = self.param("dt_bias", nn.initializers.constant(math.log(math.expm1(0.5))), (c.n_embd,), pd)
            self.B = self.param("B", nn.initializers.normal(1 / math.sqrt(c.n_embd)), (c.n_embd, c.n_embd), pd)
        elif c.injection_type == "gate":   # sigmoid(0) = 1/2 at init
            self.gate = self.param("gate", nn.initializers.zeros, (c.n_embd,), pd)

    def __call__(self, z, e):
        kind, e = self.cfg.injection_type, e.astype(z.dtype)
        if kind == "diagonal":
            return layers.diagonal_injection(z, e, self.A_log, self.dt_bias, self.B)
        if kind == "gate":
            return z + jax.nn.sigmoid(self.gate.astype(z.dtype)) * e
        return z + e


class Huginn(nn.Module):
    """Parameter tree: wte, prelude_{i}, adapter, core_block_{i}, coda_{i}, ln_f, lm_head (absent when tied)."""
    cfg: HuginnConfig
    param_dtype: Any = jnp.float32

    def setup(self):
        c, pd = self.cfg, self.param_dtype
        Linear, RMSNorm = _with_dtype(pd)  # noqa: N806
        self.wte = Embed(c.vocab_size, c.n_embd, c.init_embedding_std, pd)
        self.prelude = [SandwichBlock(c, pd) for _ in range(c.n_layers_in_prelude)]
        self.adapter = (Injection(c, pd) if c.injection_type in ("add", "diagonal", "gate")
                        else Linear(c.n_embd, c.init_std))
        self.core_block = [SandwichBlock(c, pd) for _ in range(c.n_layers_in_recurrent_block)]
        self.coda = [SandwichBlock(c, pd) for _ in range(c.n_layers_in_coda)]
        self.ln_f = RMSNorm(c.norm_eps)
        if not c.tie_embeddings:
            self.lm_head = Linear(c.vocab_size, c.init_embedding_std)

    def inject(self, ids, angles):
        x = self.wte(ids) * self.cfg.embed_scale
        for block in self.prelude:
            x = block(x, angles)
        return x

    def sublayer(self, index: int, z, e, angles):
        if index == 0:
            if self.cfg.injection_type in HuginnConfig.LOOP_IGNORES_E:
                e = jnp.zeros_like(z)
            if isinstance(self.adapter, Injection):
                return self.adapter(z, e)
            return self.adapter(jnp.concatenate([z, e.astype(z.dtype)], axis=-1))
        return self.core_block[index - 1](z, angles)

    def readout(self, z, angles):
        x = self.ln_f(z)
        for block in self.coda:
            x = block(x, angles)
        x = self.ln_f(x)
        return self.wte.attend(x) if self.cfg.tie_embeddings else self.lm_head(x)

    def __call__(self, ids):
        angles = rope_angles(ids.shape[-1], self.cfg.head_dim, self.cfg.rope_base)
        e = self.inject(ids, angles)
        z = e
        for i in range(self.cfg.n_layers_in_recurrent_block + 1):
            z = self.sublayer(i, z, e, angles)
        return self.readout(z, angles)


# ---- the architecture (loopjax.models.base.Architecture) ----

def _adapter(params, cfg: HuginnConfig, ctx, z):
    return Huginn(cfg).apply({"params": params}, 0, z, ctx["injection"], ctx["angles"], method=Huginn.sublayer)


def _core_block(index: int, params, cfg: HuginnConfig, ctx, z):
    return Huginn(cfg).apply({"params": params}, index + 1, z, None, ctx["angles"], method=Huginn.sublayer)


class HuginnArchitecture(Architecture):
    name = "huginn"
    model_types = ("huginn_raven", "huginn")
    config_class = HuginnConfig
    table = params_table.TABLE

    def ignored(self, config):
        return params_table.ignored(config)

    def init_params(self, config, key, param_dtype=None):
        """The reference's scaled init from config.init_values: std for inputs, out_proj std for the output
        projections, the embedding std for wte; norms 1, qk_bias 0."""
        return Huginn(config, param_dtype or jnp.float32).init(key, jnp.zeros((1, 2), jnp.int32))["params"]

    def context(self, params, config, ids):
        """RoPE angles and the input injection e (the prelude output), fixed for the whole loop. With
        injection_type "none" (the no-injection model) e is all zeros; with "inject-once" e is kept (it is the
        start state) but the loop map does not read it (its adapter sees cat(z, 0))."""
        angles = rope_angles(ids.shape[-1], config.head_dim, config.rope_base)
        e = Huginn(config).apply({"params": params}, ids, angles, method=Huginn.inject)
        if config.injection_type == "none":
            e = jnp.zeros_like(e)
        return {"angles": angles, "injection": e}

    def initial_state(self, params, config, ids, ctx, key):
        """The reference's random start: N(0, std^2) truncated at 3 std, times embed_scale; "inject-once"
        starts from the prompt's injection z_0 = e (no key needed)."""
        if config.injection_type == "inject-once":
            return ctx["injection"].astype(compute_dtype())
        if key is None:
            raise ValueError("Huginn starts its loop from a random state: pass key=jax.random.key(seed) "
                             "(or an explicit init_state)")
        shape = ctx["injection"].shape
        return (jax.random.truncated_normal(key, -3.0, 3.0, shape, compute_dtype())
                * (config.init_std * config.embed_scale))

    def sublayers(self, config):
        """The adapter on cat(z, e), then core_block.0 .. core_block.{n-1}."""
        return (("adapter", _adapter),) + tuple(
            (f"core_block.{i}", partial(_core_block, i)) for i in range(config.n_layers_in_recurrent_block))

    def readout(self, params, config, ctx, z):
        return Huginn(config).apply({"params": params}, z, ctx["angles"], method=Huginn.readout)

    def attention_probs(self, params, config, ctx, z):
        """{"core_block.i": (heads, L, L)}: each core block's attention probabilities on one loop from z."""
        z, out = _adapter(params, config, ctx, z), {}
        for i in range(config.n_layers_in_recurrent_block):
            z, state = Huginn(config).apply({"params": params}, i + 1, z, None, ctx["angles"],
                                            method=Huginn.sublayer, mutable=["intermediates"])
            out[f"core_block.{i}"] = jax.tree.leaves(state["intermediates"])[0]
        return out

    def injection_fields(self, config=None):
        return () if config is not None and config.injection_type in HuginnConfig.LOOP_IGNORES_E else ("injection",)


HUGINN = HuginnArchitecture()
