"""Ouro (ByteDance Ouro-1.4B): a Qwen2-style decoder whose n layers + final norm are looped.

Loop map on a prompt's state z (L, H):  f(z) = norm(layer_{n-1}(... layer_0(z))), z_0 = embed(ids).
Each decoder layer is a sandwich: h = x + norm_a2(attn(norm_a1(x))); out = h + norm_m2(mlp(norm_m1(h))).
The early-exit gate reads the normed state of every loop; it plays no part in the loop map.
"""
import dataclasses
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from loopjax.models import layers
from loopjax.models.base import Architecture
from loopjax.models.ouro import params as params_table
from loopjax.models.layers import (Embed, causal_attention, merge_heads, require, require_positive, rope_angles,
                                   rope_rotate_half, split_heads)

MODEL_TYPE = "ouro"


@dataclasses.dataclass(frozen=True)
class OuroConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    total_ut_steps: int
    initializer_range: float = 0.02
    model_type: str = MODEL_TYPE

    REQUIRED = {"vocab_size": int, "hidden_size": int, "intermediate_size": int, "num_hidden_layers": int,
                "num_attention_heads": int, "num_key_value_heads": int, "rope_theta": float, "rms_norm_eps": float,
                "total_ut_steps": int}

    @classmethod
    def from_hf(cls, cfg: dict) -> "OuroConfig":
        fields = require(cfg, cls.REQUIRED, "Ouro")
        require_positive({k: fields[k] for k in ("rope_theta", "rms_norm_eps")}
                         | {k: cfg[k] for k in ("head_dim", "initializer_range") if cfg.get(k) is not None}, "Ouro")
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise NotImplementedError(f"Ouro config: hidden_act {act!r} is not supported (only 'silu')")
        if cfg.get("rope_scaling") not in (None, {}) and cfg["rope_scaling"].get("rope_type", "default") != "default":
            raise NotImplementedError(f"Ouro config: rope_scaling {cfg['rope_scaling']} is not supported")
        if cfg.get("use_sliding_window") or "sliding_attention" in (cfg.get("layer_types") or []):
            raise NotImplementedError("Ouro config: sliding-window attention is not supported")
        heads, kv = fields["num_attention_heads"], fields["num_key_value_heads"]
        if heads % kv:
            raise ValueError(f"Ouro config: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}")
        return cls(**fields,
                   # HF's Qwen2 family falls back to hidden/heads when head_dim is absent.
                   head_dim=int(cfg.get("head_dim") or fields["hidden_size"] // heads),
                   tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                   initializer_range=float(cfg.get("initializer_range", 0.02)))

    def to_hf(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**out, "architectures": ["OuroForCausalLM"], "hidden_act": "silu", "rope_scaling": None,
                "use_sliding_window": False}

    @property
    def default_steps(self) -> int:
        return self.total_ut_steps

    @property
    def embedding_rows(self) -> int:
        return self.vocab_size


def _with_dtype(param_dtype):
    return partial(layers.Linear, param_dtype=param_dtype), partial(layers.RMSNorm, param_dtype=param_dtype)


class OuroLayer(nn.Module):
    cfg: OuroConfig
    param_dtype: Any = jnp.float32

    def setup(self):
        c, std = self.cfg, self.cfg.initializer_range
        Linear, RMSNorm = _with_dtype(self.param_dtype)  # noqa: N806
        self.q_proj = Linear(c.num_attention_heads * c.head_dim, std)
        self.k_proj = Linear(c.num_key_value_heads * c.head_dim, std)
        self.v_proj = Linear(c.num_key_value_heads * c.head_dim, std)
        self.o_proj = Linear(c.hidden_size, std)
        self.gate_proj = Linear(c.intermediate_size, std)
        self.up_proj = Linear(c.intermediate_size, std)
        self.down_proj = Linear(c.hidden_size, std)
        norm = lambda: RMSNorm(c.rms_norm_eps)  # noqa: E731
        self.input_layernorm, self.input_layernorm_2 = norm(), norm()
        self.post_attention_layernorm, self.post_attention_layernorm_2 = norm(), norm()

    def attention(self, x, angles):
        c = self.cfg
        q = rope_rotate_half(split_heads(self.q_proj(x), c.num_attention_heads, c.head_dim), angles)
        k = rope_rotate_half(split_heads(self.k_proj(x), c.num_key_value_heads, c.head_dim), angles)
        v = split_heads(self.v_proj(x), c.num_key_value_heads, c.head_dim)
        if self.is_mutable_collection("intermediates"):  # only when asked (OuroArchitecture.attention_probs)
            self.sow("intermediates", "attention_probs", layers.attention_probs(q, k))
        return self.o_proj(merge_heads(causal_attention(q, k, v)))

    def mlp(self, x):
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))

    def __call__(self, x, angles):
        h = x + self.input_layernorm_2(self.attention(self.input_layernorm(x), angles))
        return h + self.post_attention_layernorm_2(self.mlp(self.post_attention_layernorm(h)))


class Ouro(nn.Module):
    """Parameter tree: embed_tokens, layers_{i}, norm, early_exit_gate, lm_head (absent when tied)."""
    cfg: OuroConfig
    param_dtype: Any = jnp.float32

    def setup(self):
        c = self.cfg
        Linear, RMSNorm = _with_dtype(self.param_dtype)  # noqa: N806
        self.embed_tokens = Embed(c.vocab_size, c.hidden_size, c.initializer_range, self.param_dtype)
        self.layers = [OuroLayer(c, self.param_dtype) for _ in range(c.num_hidden_layers)]
        self.norm = RMSNorm(c.rms_norm_eps)
        self.early_exit_gate = Linear(1, c.initializer_range, use_bias=True)
        if not c.tie_word_embeddings:
            self.lm_head = Linear(c.vocab_size, c.initializer_range)

    def embed(self, ids):
        return self.embed_tokens(ids)

    def sublayer(self, index: int, z, angles):
        if index < self.cfg.num_hidden_layers:
            return self.layers[index](z, angles)
        return self.norm(z)

    def gate_logits(self, z):
        return self.early_exit_gate(z)[..., 0]

    def head(self, z):
        return self.embed_tokens.attend(z) if self.cfg.tie_word_embeddings else self.lm_head(z)

    def __call__(self, ids):
        angles = rope_angles(ids.shape[-1], self.cfg.head_dim, self.cfg.rope_theta)
        z = self.embed(ids)
        for i in range(self.cfg.num_hidden_layers + 1):
            z = self.sublayer(i, z, angles)
        return self.head(z), self.gate_logits(z)


# ---- the architecture (loopjax.models.base.Architecture) ----

def _layer(index: int, params, cfg: OuroConfig, ctx, z):
    return Ouro(cfg).apply({"params": params}, index, z, ctx["angles"], method=Ouro.sublayer)


class OuroArchitecture(Architecture):
    name = "ouro"
    model_types = ("ouro",)
    config_class = OuroConfig
    table = params_table.TABLE

    def ignored(self, config):
        return params_table.ignored(config)

    def init_params(self, config, key, param_dtype=None):
        """Qwen2-style init: linear and embedding weights N(0, initializer_range^2), norms 1, gate bias 0."""
        return Ouro(config, param_dtype or jnp.float32).init(key, jnp.zeros((1, 2), jnp.int32))["params"]

    def context(self, params, config, ids):
        """The RoPE angles for positions 0..L-1."""
        return {"angles": rope_angles(ids.shape[-1], config.head_dim, config.rope_theta)}

    def initial_state(self, params, config, ids, ctx, key):
        """Ouro loops from the token embeddings (no scaling); `key` is not used."""
        return Ouro(config).apply({"params": params}, ids, method=Ouro.embed)

    def sublayers(self, config):
        """layers.0 .. layers.{n-1}, then the final norm: f(z) = norm(layer_{n-1}(... layer_0(z)))."""
        n = config.num_hidden_layers
        return tuple((f"layers.{i}", partial(_layer, i)) for i in range(n)) + (("norm", partial(_layer, n)),)

    def readout(self, params, config, ctx, z):
        """Logits from a loop state (already normed by the loop's final norm)."""
        return Ouro(config).apply({"params": params}, z, method=Ouro.head)

    def attention_probs(self, params, config, ctx, z):
        """{"layers.i": (heads, L, L)}: each decoder layer's attention probabilities on one loop from z."""
        out = {}
        for i in range(config.num_hidden_layers):
            z, state = Ouro(config).apply({"params": params}, i, z, ctx["angles"], method=Ouro.sublayer,
                                          mutable=["intermediates"])
            out[f"layers.{i}"] = jax.tree.leaves(state["intermediates"])[0]
        return out

    def early_exit(self, params, config, states, threshold=None):
        """Ouro's exit distribution over the loop states (S, ..., L, H), each already normed.

        lambda_s = sigmoid(gate(z_s)); p_s = lambda_s prod_{j<s}(1 - lambda_j) for s < S-1 and the remainder
        p_{S-1} = prod_{j<S-1}(1 - lambda_j). With a threshold, each token exits at the first s whose
        cumulative p reaches it (the last step if none does).
        """
        model = Ouro(config)
        gate = jax.vmap(lambda z: model.apply({"params": params}, z, method=Ouro.gate_logits))(states)
        lam = jax.nn.sigmoid(gate)
        survive = jnp.cumprod(1.0 - lam, axis=0)
        before = jnp.concatenate([jnp.ones_like(lam[:1]), survive[:-1]], axis=0)
        pdf = jnp.concatenate([(lam * before)[:-1], before[-1:]], axis=0)
        out = {"gate_logits": gate, "exit_pdf": jnp.moveaxis(pdf, 0, -1)}
        if threshold is not None:
            reached = jnp.cumsum(out["exit_pdf"], axis=-1) >= threshold
            last = states.shape[0] - 1
            out["exit_steps"] = jnp.where(reached.any(-1), jnp.argmax(reached, axis=-1), last)
        return out


OURO = OuroArchitecture()
