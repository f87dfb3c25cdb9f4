"""Parcae (Prairie et al., arXiv 2604.12946; parcae_lm): prelude -> injection + pre-norm core blocks (looped) -> C
-> coda, as described in the fixtures' PARCAE.md.

e = ln_prelude(prelude(wte(ids)));  loop map f(x) = core_{C-1}(... core_0(g(x, e))) on a state x (L, R), with the
injection g = x * exp(-softplus(dt_bias) exp(A_log)) + softplus(dt_bias) (e B^T) (diagonal), cat([x, e]) W^T
(linear) or x + e (add);  logits = softcap(lm_head(ln_f(coda(x_S C^T)))).  Blocks are plain pre-norm:
x = x + attn(norm_1(x)); x = x + mlp(norm_2(x)), mlp = proj(0.5 relu(fc(h))^2); attention has interleaved
(complex-like) RoPE, optional parameter-free qk-norm after RoPE, GQA outside the loop, and on some layers a
gated value embedding v += 2 sigmoid(h[:, :32] W_gate^T) * value_embeds[ids].
"""
import dataclasses
import math
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from loopjax.engine.dtypes import compute_dtype
from loopjax.models import layers
from loopjax.models.base import Architecture
from loopjax.models.layers import (Embed, causal_attention, merge_heads, require, rope_angles, rope_interleaved,
                                   split_heads)
from loopjax.models.parcae import params as params_table

MODEL_TYPE = "parcae"
CLASS_NAMES = ("ParcaeConfig", "Parcae")  # config.json "_class_name" / "model_class_name"
GATE_CHANNELS = 32                        # the value-embedding gate reads the first 32 channels of norm_1(x)
STATE_INITS = ("like-init", "zero", "normal", "embed", "unit")
INJECTION_TYPES = ("diagonal", "linear", "add")


@dataclasses.dataclass(frozen=True)
class ParcaeConfig:
    vocab_size: int                # config.json vocab_size (ids are below it)
    padded_vocab_size: int         # rows of wte / value_embeds / lm_head, columns of the logits
    n_embd: int                    # H
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    recurrent_embedding_dimension: int                  # R: the loop state's width
    recurrent_intermediation_embedding_dimension: int
    recurrent_num_attention_heads: int
    n_layers_in_prelude: int
    n_layers_in_recurrent_block: int
    n_layers_in_coda: int
    mean_recurrence: int
    mean_backprop_depth: int
    norm_eps: float
    rope_base: float = 50000.0
    rope_condense_ratio: float = 1.0
    block_size: int = 4096
    qk_norm: bool = True
    clip_qkv: float | None = None
    logit_softcap: float | None = None
    tie_embeddings: bool = True
    prelude_norm: bool = True
    injection_type: str = "diagonal"
    state_init: str = "like-init"
    padding_multiple: int = 64
    model_type: str = MODEL_TYPE

    REQUIRED = {"n_embd": int, "num_attention_heads": int, "intermediate_size": int, "vocab_size": int,
                "n_layers_in_prelude": int, "n_layers_in_recurrent_block": int, "n_layers_in_coda": int,
                "norm_eps": float, "mean_recurrence": int}
    # fields with only one supported value (the value every published config has)
    SUPPORTED = {"block_class_name": "TransformerPreNormBlock", "norm_class_name": "RMSNorm",
                 "mlp_class_name": "BaseMLP", "nonlin_name": "ReLU2", "bias": False, "qk_bias": False,
                 "init_strategy": "scaled-zero", "mup_model_scaling_factor": 1, "use_abacus": False,
                 "debias_attention": False, "center_attention": False, "randomize_positions_from": None}

    @classmethod
    def from_hf(cls, cfg: dict) -> "ParcaeConfig":
        f = require(cfg, cls.REQUIRED, "Parcae")
        for key, want in cls.SUPPORTED.items():
            if cfg.get(key, want) != want:
                raise NotImplementedError(f"Parcae config: {key}={cfg[key]!r} is not supported (only {want!r})")
        rope = cfg.get("rope_settings") or {}
        if not rope.get("use_rope", True):
            raise NotImplementedError("Parcae config: rope_settings.use_rope=false is not supported")
        H, nh = f["n_embd"], f["num_attention_heads"]
        multiple = int(cfg.get("padding_multiple") or 1)
        padded = int(cfg.get("padded_vocab_size") or -(-f["vocab_size"] // multiple) * multiple)
        out = cls(vocab_size=f["vocab_size"], padded_vocab_size=padded, n_embd=H, num_attention_heads=nh,
                  num_key_value_heads=int(cfg.get("num_key_value_heads") or nh),
                  intermediate_size=f["intermediate_size"],
                  recurrent_embedding_dimension=int(cfg.get("recurrent_embedding_dimension") or H),
                  recurrent_intermediation_embedding_dimension=int(
                      cfg.get("recurrent_intermediation_embedding_dimension") or f["intermediate_size"]),
                  recurrent_num_attention_heads=int(cfg.get("recurrent_num_attention_heads") or nh),
                  n_layers_in_prelude=f["n_layers_in_prelude"],
                  n_layers_in_recurrent_block=f["n_layers_in_recurrent_block"],
                  n_layers_in_coda=f["n_layers_in_coda"], mean_recurrence=f["mean_recurrence"],
                  mean_backprop_depth=int(cfg.get("mean_backprop_depth") or f["mean_recurrence"]),
                  norm_eps=f["norm_eps"], rope_base=float(rope.get("rope_base", 50000.0)),
                  rope_condense_ratio=float(rope.get("rope_condense_ratio", 1)),
                  block_size=int(cfg.get("block_size") or 4096), qk_norm=bool(cfg.get("qk_norm", False)),
                  clip_qkv=_optional_float(cfg.get("clip_qkv")),
                  logit_softcap=_optional_float(cfg.get("logit_softcap")),
                  tie_embeddings=bool(cfg.get("tie_embeddings", True)),
                  prelude_norm=bool(cfg.get("prelude_norm", True)),
                  injection_type=cfg.get("injection_type", "diagonal"),
                  state_init=cfg.get("state_init", "like-init"), padding_multiple=multiple)
        out.check()
        return out

    def check(self) -> None:
        """ValueError / NotImplementedError for settings the architecture cannot run (one line each)."""
        if self.injection_type not in INJECTION_TYPES:
            raise NotImplementedError(f"Parcae config: injection_type={self.injection_type!r} is not supported "
                                      f"(only {INJECTION_TYPES})")
        if self.state_init not in STATE_INITS:
            raise NotImplementedError(f"Parcae config: state_init={self.state_init!r} is not supported "
                                      f"(only {STATE_INITS})")
        H, nh, nkv, R, nhr = (self.n_embd, self.num_attention_heads, self.num_key_value_heads,
                              self.recurrent_embedding_dimension, self.recurrent_num_attention_heads)
        if H % nh or nh % nkv:
            raise ValueError(f"Parcae config: n_embd {H} must be a multiple of num_attention_heads {nh}, and that "
                             f"of num_key_value_heads {nkv}")
        if R != nhr * self.head_dim:
            raise ValueError(f"Parcae config: recurrent_embedding_dimension {R} must equal "
                             f"recurrent_num_attention_heads {nhr} x head_dim {self.head_dim} (one rope table)")
        if self.injection_type == "add" and R != H:
            raise ValueError(f"Parcae config: injection_type 'add' needs recurrent_embedding_dimension {R} == "
                             f"n_embd {H}")
        if self.padded_vocab_size < self.vocab_size:
            raise ValueError(f"Parcae config: padded_vocab_size {self.padded_vocab_size} < vocab_size "
                             f"{self.vocab_size}")
        for stack, i in self.value_embedding_layers():
            width = R if stack == "core_block" else H
            if width < GATE_CHANNELS:
                raise ValueError(f"Parcae config: {stack}.{i} has a value-embedding gate, which needs a width >= "
                                 f"{GATE_CHANNELS}, got {width}")
            if stack == "core_block" and nkv * self.head_dim != R:
                raise ValueError(f"Parcae config: core_block.{i} has a value embedding of width "
                                 f"{nkv * self.head_dim} (num_key_value_heads x head_dim) != "
                                 f"recurrent_embedding_dimension {R}")

    def to_hf(self) -> dict:
        """config.json as parcae_lm writes it (no model_type: its ParcaeConfig dataclass has no such field)."""
        return {"name": "loopjax-parcae", "block_size": self.block_size, "n_embd": self.n_embd,
                "intermediate_size": self.intermediate_size, "num_attention_heads": self.num_attention_heads,
                "num_key_value_heads": self.num_key_value_heads, "vocab_size": self.vocab_size,
                "padding_multiple": self.padding_multiple, "padded_vocab_size": self.padded_vocab_size,
                "rope_settings": {"use_rope": True, "rope_condense_ratio": self.rope_condense_ratio,
                                  "rope_base": self.rope_base},
                "norm_eps": self.norm_eps, "qk_norm": self.qk_norm, "clip_qkv": self.clip_qkv,
                "logit_softcap": self.logit_softcap, "injection_type": self.injection_type,
                "n_layers_in_recurrent_block": self.n_layers_in_recurrent_block,
                "n_layers_in_prelude": self.n_layers_in_prelude, "n_layers_in_coda": self.n_layers_in_coda,
                "state_init": self.state_init, "recurrent_embedding_dimension": self.recurrent_embedding_dimension,
                "recurrent_intermediation_embedding_dimension": self.recurrent_intermediation_embedding_dimension,
                "recurrent_num_attention_heads": self.recurrent_num_attention_heads,
                "prelude_norm": self.prelude_norm, "mean_recurrence": self.mean_recurrence,
                "mean_backprop_depth": self.mean_backprop_depth, "tie_embeddings": self.tie_embeddings,
                **self.SUPPORTED, "model_class_name": "Parcae", "_class_name": "ParcaeConfig"}

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.num_attention_heads

    @property
    def hidden_size(self) -> int:
        """The loop state's width (R): what the analyses call the hidden size."""
        return self.recurrent_embedding_dimension

    @property
    def default_steps(self) -> int:
        return self.mean_recurrence

    @property
    def embedding_rows(self) -> int:
        return self.padded_vocab_size

    @property
    def init_std(self) -> float:
        """The reference's scaled-zero std sqrt(2 / (5 H)): the like-init state std and loopjax's init std."""
        return math.sqrt(2 / (5 * self.n_embd))

    def stacks(self):
        """(name, layer count, effective index of layer 0, layer id of layer 0) of prelude, core, coda."""
        P, C = self.n_layers_in_prelude, self.n_layers_in_recurrent_block
        return (("prelude", P, 0, 0), ("core_block", C, P, P),
                ("coda", self.n_layers_in_coda, P + C, P + C * self.mean_recurrence))

    def value_embedding_tables(self) -> tuple[int, ...]:
        """Effective indices j with a `value_embeds.{j}` table: j mod 2 = (P + C + D - 1) mod 2."""
        total = self.n_layers_in_prelude + self.n_layers_in_recurrent_block + self.n_layers_in_coda
        return tuple(j for j in range(total) if j % 2 == (total - 1) % 2)

    def has_ve_gate(self, stack: str, i: int) -> bool:
        """Whether layer i of a stack has an `attn.ve_gate`: layer id mod 2 = (C * mean_backprop_depth - 1) mod 2."""
        _, _, _, first_id = next(s for s in self.stacks() if s[0] == stack)
        n_layer = self.n_layers_in_recurrent_block * self.mean_backprop_depth
        return (first_id + i) % 2 == (n_layer - 1) % 2

    def value_embedding_index(self, stack: str, i: int) -> int | None:
        """The `value_embeds` table layer i of a stack uses (gate and table both exist), else None."""
        _, _, first_j, _ = next(s for s in self.stacks() if s[0] == stack)
        j = first_j + i
        return j if self.has_ve_gate(stack, i) and j in self.value_embedding_tables() else None

    def value_embedding_layers(self) -> tuple[tuple[str, int], ...]:
        return tuple((stack, i) for stack, n, _, _ in self.stacks() for i in range(n)
                     if self.value_embedding_index(stack, i) is not None)


def _optional_float(v):
    return None if v is None else float(v)


def _with_dtype(param_dtype):
    return partial(layers.Linear, param_dtype=param_dtype), partial(layers.RMSNorm, param_dtype=param_dtype)


def _rms_unit(x):
    """Parameter-free RMS normalisation over the last axis, eps = the compute dtype's machine epsilon."""
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + jnp.finfo(x.dtype).eps)


@dataclasses.dataclass(frozen=True)
class BlockShape:
    """Widths of one stack's blocks: prelude/coda (H, nh, nkv, I) or the core (R, nh_R, nh_R, I_R)."""
    width: int
    heads: int
    kv_heads: int
    intermediate: int
    std: float
    out_std: float


def block_shape(cfg: ParcaeConfig, stack: str) -> BlockShape:
    depth = cfg.n_layers_in_prelude + cfg.n_layers_in_coda + cfg.n_layers_in_recurrent_block * cfg.mean_recurrence
    if stack == "core_block":
        R = cfg.recurrent_embedding_dimension
        std = math.sqrt(2 / (5 * R))
        return BlockShape(R, cfg.recurrent_num_attention_heads, cfg.recurrent_num_attention_heads,
                          cfg.recurrent_intermediation_embedding_dimension, std, std / math.sqrt(2 * depth))
    return BlockShape(cfg.n_embd, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size,
                      cfg.init_std, cfg.init_std / math.sqrt(2 * depth))


class Attention(nn.Module):
    cfg: ParcaeConfig
    shape: BlockShape
    gate: bool                       # this layer has an attn.ve_gate tensor
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, angles, ve):
        c, s, hd = self.cfg, self.shape, self.cfg.head_dim
        Linear, _ = _with_dtype(self.param_dtype)  # noqa: N806
        q = split_heads(Linear(s.heads * hd, s.std, name="c_q")(h), s.heads, hd)
        k = split_heads(Linear(s.kv_heads * hd, s.std, name="c_k")(h), s.kv_heads, hd)
        v = split_heads(Linear(s.kv_heads * hd, s.std, name="c_v")(h), s.kv_heads, hd)
        if self.gate:
            g = 2 * jax.nn.sigmoid(Linear(s.kv_heads, 0.02, name="ve_gate")(h[..., :GATE_CHANNELS]))
            if ve is not None:
                v = v + g[..., None] * split_heads(ve.astype(v.dtype), s.kv_heads, hd)
        if c.clip_qkv is not None:
            q, k, v = (jnp.clip(t, -c.clip_qkv, c.clip_qkv) for t in (q, k, v))
        q, k = rope_interleaved(q, angles), rope_interleaved(k, angles)
        if c.qk_norm:
            q, k = _rms_unit(q), _rms_unit(k)
        return Linear(s.width, s.out_std, name="c_proj")(merge_heads(causal_attention(q, k, v)))


class MLP(nn.Module):
    shape: BlockShape
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h):
        Linear, _ = _with_dtype(self.param_dtype)  # noqa: N806
        a = Linear(self.shape.intermediate, self.shape.std, name="fc")(h)
        return Linear(self.shape.width, self.shape.out_std, name="proj")(0.5 * jnp.square(jax.nn.relu(a)))


class Block(nn.Module):
    """TransformerPreNormBlock: x = x + attn(norm_1(x)); x = x + mlp(norm_2(x))."""
    cfg: ParcaeConfig
    stack: str
    index: int
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, angles, ve=None):
        c, pd = self.cfg, self.param_dtype
        shape = block_shape(c, self.stack)
        _, RMSNorm = _with_dtype(pd)  # noqa: N806
        gate = c.has_ve_gate(self.stack, self.index)
        x = x + Attention(c, shape, gate, pd, name="attn")(RMSNorm(c.norm_eps, name="norm_1")(x), angles, ve)
        return x + MLP(shape, pd, name="mlp")(RMSNorm(c.norm_eps, name="norm_2")(x))


class Injection(nn.Module):
    """g(x, e) -> (..., L, R): diagonal x exp(-dt A) + dt (e B^T), linear cat([x, e]) W^T, or add x + e."""
    cfg: ParcaeConfig
    param_dtype: Any = jnp.float32

    def setup(self):
        c, pd = self.cfg, self.param_dtype
        R, H = c.recurrent_embedding_dimension, c.n_embd
        if c.injection_type == "diagonal":
            # loopjax's init: A = 1, dt = softplus(dt_bias) = 0.5 (decay exp(-0.5)), B ~ N(0, 1/H)
            self.A_log = self.param("A_log", nn.initializers.zeros, (R,), pd)
            self.dt_bias = self.param("dt_bias", nn.initializers.constant(math.log(math.expm1(0.5))), (R,), pd)
            self.B = self.param("B", nn.initializers.normal(1 / math.sqrt(H)), (R, H), pd)
        elif c.injection_type == "linear":
            self.adapter = layers.Linear(R, math.sqrt(2 / (5 * (R + H))), param_dtype=pd)

    def __call__(self, x, e):
        kind, e = self.cfg.injection_type, e.astype(x.dtype)
        if kind == "diagonal":
            return layers.diagonal_injection(x, e, self.A_log, self.dt_bias, self.B)
        if kind == "linear":
            return self.adapter(jnp.concatenate([x, e], axis=-1))
        return x + e


class Parcae(nn.Module):
    """Parameter tree: wte, prelude_{i}, ln_prelude, adapter, core_block_{i}, C, coda_{i}, ln_f,
    value_embeds_{j}, lm_head (absent when tied)."""
    cfg: ParcaeConfig
    param_dtype: Any = jnp.float32

    def setup(self):
        c, pd = self.cfg, self.param_dtype
        Linear, RMSNorm = _with_dtype(pd)  # noqa: N806
        self.wte = Embed(c.padded_vocab_size, c.n_embd, c.init_std, pd)
        self.prelude = [Block(c, "prelude", i, pd) for i in range(c.n_layers_in_prelude)]
        if c.prelude_norm:
            self.ln_prelude = RMSNorm(c.norm_eps)
        self.adapter = Injection(c, pd)
        self.core_block = [Block(c, "core_block", i, pd) for i in range(c.n_layers_in_recurrent_block)]
        self.C = Linear(c.n_embd, math.sqrt(2 / (5 * c.recurrent_embedding_dimension)))
        self.coda = [Block(c, "coda", i, pd) for i in range(c.n_layers_in_coda)]
        self.ln_f = RMSNorm(c.norm_eps)
        self.value_embeds = {str(j): Embed(c.padded_vocab_size, c.num_key_value_heads * c.head_dim, c.init_std, pd)
                             for j in c.value_embedding_tables()}
        if not c.tie_embeddings:
            self.lm_head = Linear(c.padded_vocab_size, c.init_std)

    def value_embedding(self, stack: str, i: int, ids):
        j = self.cfg.value_embedding_index(stack, i)
        return None if j is None else self.value_embeds[str(j)](ids)

    def inject(self, ids, angles):
        """e: wte(ids) (embedding scale 1) -> prelude blocks -> ln_prelude (if prelude_norm)."""
        x = self.wte(ids)
        for i, block in enumerate(self.prelude):
            x = block(x, angles, self.value_embedding("prelude", i, ids))
        return self.ln_prelude(x) if self.cfg.prelude_norm else x

    def core_value_embeds(self, ids) -> dict:
        """The value embeddings the core layers read (the same at every loop step), by sublayer name."""
        return {f"core_block.{i}": self.value_embedding("core_block", i, ids)
                for i in range(self.cfg.n_layers_in_recurrent_block)
                if self.cfg.value_embedding_index("core_block", i) is not None}

    def sublayer(self, index: int, z, e, angles, ves):
        if index == 0:
            return self.adapter(z, e)
        return self.core_block[index - 1](z, angles, ves.get(f"core_block.{index - 1}"))

    def readout(self, z, angles, ids):
        x = self.C(z)
        for i, block in enumerate(self.coda):
            x = block(x, angles, self.value_embedding("coda", i, ids))
        x = self.ln_f(x)
        out = self.wte.attend(x) if self.cfg.tie_embeddings else self.lm_head(x)
        cap = self.cfg.logit_softcap
        return out if cap is None else cap * jnp.tanh(out / cap)

    def __call__(self, ids):
        """The whole forward from a zero state (used by init: it touches every parameter, including value
        tables that no layer reads, e.g. a table whose layer has no ve_gate)."""
        for table in self.value_embeds.values():
            table(ids)
        angles = parcae_angles(self.cfg, ids.shape[-1])
        e = self.inject(ids, angles)
        ves = self.core_value_embeds(ids)
        z = jnp.zeros(e.shape[:-1] + (self.cfg.recurrent_embedding_dimension,), e.dtype)
        for i in range(self.cfg.n_layers_in_recurrent_block + 1):
            z = self.sublayer(i, z, e, angles, ves)
        return self.readout(z, angles, ids)


def parcae_angles(cfg: ParcaeConfig, length: int):
    """angle_i(p) = (p / rope_condense_ratio) * rope_base^(-2i/hd)."""
    angles = rope_angles(length, cfg.head_dim, cfg.rope_base)
    return angles if cfg.rope_condense_ratio == 1 else angles / cfg.rope_condense_ratio


def initial_state(cfg: ParcaeConfig, shape, key):
    """The reference's initialize_state: like-init = N(0, (2/(5H))) cut at 3 std (embedding scale 1); zero;
    normal N(0, 1); embed N(0, 1)/sqrt(H); unit = N(0, 1) standardised per token."""
    cd = compute_dtype()
    if cfg.state_init == "zero":
        return jnp.zeros(shape, cd)
    if key is None:
        raise ValueError(f"Parcae (state_init {cfg.state_init!r}) starts its loop from a random state: pass "
                         f"key=jax.random.key(seed) (or an explicit init_state)")
    if cfg.state_init == "like-init":
        return jax.random.truncated_normal(key, -3.0, 3.0, shape, cd) * cfg.init_std
    x = jax.random.normal(key, shape, cd)
    if cfg.state_init == "embed":
        return x / math.sqrt(cfg.n_embd)
    if cfg.state_init == "unit":
        return (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    return x


# ---- the architecture (loopjax.models.base.Architecture) ----

def _injection(params, cfg: ParcaeConfig, ctx, z):
    return Parcae(cfg).apply({"params": params}, 0, z, ctx["injection"], ctx["angles"], ctx["value_embeds"],
                             method=Parcae.sublayer)


def _core_block(index: int, params, cfg: ParcaeConfig, ctx, z):
    return Parcae(cfg).apply({"params": params}, index + 1, z, None, ctx["angles"], ctx["value_embeds"],
                             method=Parcae.sublayer)


class ParcaeArchitecture(Architecture):
    name = "parcae"
    model_types = ("parcae",)
    class_names = CLASS_NAMES
    config_class = ParcaeConfig
    table = params_table.TABLE

    def ignored(self, config):
        return params_table.ignored(config)

    def init_params(self, config, key, param_dtype=None):
        """loopjax's init (the reference's scaled-zero table is not reproduced): linear weights N(0, 2/(5 width)),
        output projections scaled by 1/sqrt(2 x expected depth), embeddings N(0, 2/(5H)), norms 1, the diagonal
        injection at A = 1, dt = 0.5."""
        return Parcae(config, param_dtype or jnp.float32).init(key, jnp.zeros((1, 2), jnp.int32))["params"]

    def context(self, params, config, ids):
        """RoPE angles, the injection e (prelude output, fixed for the loop) and the core layers' value
        embeddings of these ids (also fixed: the same at every loop step)."""
        angles = parcae_angles(config, ids.shape[-1])
        model = Parcae(config)
        e = model.apply({"params": params}, ids, angles, method=Parcae.inject)
        ves = model.apply({"params": params}, ids, method=Parcae.core_value_embeds)
        return {"angles": angles, "injection": e, "value_embeds": ves, "ids": ids}

    def initial_state(self, params, config, ids, ctx, key):
        return initial_state(config, ids.shape + (config.recurrent_embedding_dimension,), key)

    def sublayers(self, config):
        """The injection x -> g(x, e), then core_block.0 .. core_block.{C-1}."""
        return (("injection", _injection),) + tuple(
            (f"core_block.{i}", partial(_core_block, i)) for i in range(config.n_layers_in_recurrent_block))

    def readout(self, params, config, ctx, z):
        """C, the coda (with its value embeddings of the prompt's ids), ln_f, the head, the softcap."""
        return Parcae(config).apply({"params": params}, z, ctx["angles"], ctx["ids"], method=Parcae.readout)

    def injection_fields(self, config=None):
        return ("injection",)


PARCAE = ParcaeArchitecture()
