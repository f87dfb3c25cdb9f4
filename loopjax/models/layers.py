"""Pieces both models share: RMSNorm, bias-free linear maps, the two RoPE variants, causal GQA attention.

Every function works on states with any leading batch dims: (..., L, H). Weights keep their stored dtype
and are cast to the compute dtype at use; matmuls run at HIGHEST precision.
"""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from loopjax.engine.dtypes import HIGHEST, compute_dtype


class RMSNorm(nn.Module):
    eps: float
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        w = self.param("weight", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
        x = x.astype(compute_dtype())
        inv_rms = jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
        return w.astype(x.dtype) * (x * inv_rms)


class Linear(nn.Module):
    """y = x @ kernel (+ bias); kernel is (in, out), i.e. the HF weight transposed."""
    features: int
    std: float = 0.02
    use_bias: bool = False
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.normal(self.std), (x.shape[-1], self.features), self.param_dtype)
        cd = compute_dtype()
        y = jnp.einsum("...i,io->...o", x.astype(cd), kernel.astype(cd), precision=HIGHEST)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype).astype(cd)
        return y


class Embed(nn.Module):
    num_embeddings: int
    features: int
    std: float = 0.02
    param_dtype: Any = jnp.float32

    def setup(self):
        self.embedding = self.param("embedding", nn.initializers.normal(self.std),
                                    (self.num_embeddings, self.features), self.param_dtype)

    def __call__(self, ids):
        return jnp.take(self.embedding, ids, axis=0).astype(compute_dtype())

    def attend(self, x):
        """Tied output head: x @ embedding^T."""
        cd = compute_dtype()
        return jnp.einsum("...h,vh->...v", x.astype(cd), self.embedding.astype(cd), precision=HIGHEST)


def diagonal_injection(x, e, A_log, dt_bias, B):
    """Parcae's diagonal injection x exp(-dt A) + dt (e B^T) with A = exp(A_log), dt = softplus(dt_bias), each (R,),
    and B (R, H): a per-channel contraction of the state plus a linear read of e (PARCAE.md 4.8)."""
    cd = x.dtype
    dt = jax.nn.softplus(dt_bias.astype(cd))
    decay = jnp.exp(-dt * jnp.exp(A_log.astype(cd)))
    return x * decay + dt * jnp.einsum("...h,rh->...r", e.astype(cd), B.astype(cd), precision=HIGHEST)


def rope_angles(length: int, head_dim: int, base: float):
    """angle[p, i] = p * base^(-2i/head_dim), i < head_dim/2, in the compute dtype."""
    cd = compute_dtype()
    inv_freq = 1.0 / (base ** (jnp.arange(0, head_dim, 2, dtype=cd) / head_dim))
    return jnp.arange(length, dtype=cd)[:, None] * inv_freq[None, :]


def rope_rotate_half(x, angles):
    """Ouro/Llama RoPE on pairs (i, i + hd/2). x: (..., L, heads, hd); angles: (L, hd/2)."""
    cos = jnp.concatenate([jnp.cos(angles)] * 2, axis=-1)[:, None, :]
    sin = jnp.concatenate([jnp.sin(angles)] * 2, axis=-1)[:, None, :]
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def rope_interleaved(x, angles):
    """Huginn's complex-like RoPE on pairs (2i, 2i+1): (a, b) -> (a cos - b sin, b cos + a sin)."""
    pairs = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    cos, sin = jnp.cos(angles)[:, None, :], jnp.sin(angles)[:, None, :]
    return jnp.stack([a * cos - b * sin, b * cos + a * sin], axis=-1).reshape(x.shape)


def attention_probs(q, k):
    """Softmax(q k^T / sqrt(hd) + causal mask): (..., nh, L, L), rows = queries. q: (..., L, nh, hd); k: (..., L,
    nkv, hd) with GQA (kv head j serves query heads j*r .. j*r+r-1)."""
    nh, nkv, hd = q.shape[-2], k.shape[-2], q.shape[-1]
    if nh != nkv:
        k = jnp.repeat(k, nh // nkv, axis=-2)
    scores = jnp.einsum("...qhd,...khd->...hqk", q, k, precision=HIGHEST) * (hd ** -0.5)
    length = q.shape[-3]
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))
    scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
    return jax.nn.softmax(scores, axis=-1)


def causal_attention(q, k, v):
    """Softmax(q k^T / sqrt(hd) + causal mask) v with GQA (`attention_probs` applied to v).

    q: (..., L, nh, hd); k, v: (..., L, nkv, hd); kv head j serves query heads j*r .. j*r+r-1.
    """
    nh, nkv = q.shape[-2], k.shape[-2]
    if nh != nkv:
        v = jnp.repeat(v, nh // nkv, axis=-2)
    return jnp.einsum("...hqk,...khd->...qhd", attention_probs(q, k), v, precision=HIGHEST)


def split_heads(x, heads: int, head_dim: int):
    return x.reshape(*x.shape[:-1], heads, head_dim)


def merge_heads(x):
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def require(cfg: dict, fields: dict[str, type], model: str) -> dict[str, Any]:
    """Pick typed fields from a config.json dict; every missing or mistyped field is named in one error.
    An int field must be a JSON integer; a float field accepts integers too."""
    missing = [f for f in fields if f not in cfg]
    if missing:
        raise ValueError(f"{model} config.json is missing required field(s): {', '.join(missing)}")
    wrong = []
    for name, kind in fields.items():
        v = cfg[name]
        ok = (isinstance(v, (int, float)) if kind is float else isinstance(v, kind)) and not isinstance(v, bool)
        if not ok or (kind is int and v < 1):
            want = "a positive integer" if kind is int else "a number"
            wrong.append(f"{name}={v!r} (expected {want})")
    if wrong:
        raise ValueError(f"{model} config.json has invalid field(s): {', '.join(wrong)}")
    return {f: (float(cfg[f]) if kind is float else cfg[f]) for f, kind in fields.items()}


def require_positive(values: dict[str, Any], model: str) -> None:
    """Every value (a config number: rope base, norm eps, a scale) must be finite and > 0; one error names
    every offender."""
    wrong = [f"{name}={v!r}" for name, v in values.items()
             if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0]
    if wrong:
        raise ValueError(f"{model} config.json has invalid field(s): {', '.join(wrong)} (expected a finite "
                         f"number > 0)")
