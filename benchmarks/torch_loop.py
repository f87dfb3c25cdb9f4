"""A plain PyTorch port of the Ouro and Huginn LOOP MAPS (not the full language models).

This is the baseline the JAX implementation is benchmarked against, written from the definitions in
``tests/fixtures/README.md`` (no reference code was used). It reads an HF-format checkpoint folder
(``config.json`` + ``model.safetensors`` or a sharded ``model.safetensors.index.json``, float32 or
bfloat16) and builds, for one prompt ``tokens`` of length L:

* **Ouro** ``f(z) = norm(layer_{n-1}(... layer_0(z)))``: sandwich-norm decoder layers (4 RMSNorms),
  GQA attention with explicit ``head_dim``, rotate-half RoPE (``rope_theta``), SiLU gated MLP.
  ``z0`` = the token embeddings (not scaled).
* **Huginn** ``f(z) = core_block(adapter(cat([z, e])))`` with ``e`` the prelude output
  (``wte(ids) * embed_scale`` -> prelude blocks; embed_scale = the config's ``init_values.embed_scale``,
  as the reference reads it, = sqrt(n_embd) in RavenConfig); SandwichBlocks with fused ``Wqkv``, ``qk_bias``
  added before the interleaved-pair rotary (``rope_base``), fused gate/up ``fc``. ``z0`` is whatever
  the caller passes (the reference draws it at random); by default a seeded truncated normal like the
  reference's ``initialize_state``.

The state is (L, H) (one prompt, no batch axis). RoPE tables are computed from the config in the
compute dtype (Huginn's stored ``freqs_cis`` buffer is ignored). Attention is an explicit causal
softmax (no SDPA: the CPU flash kernel has no forward-mode AD).

JVP baselines (``Q`` is (L*H, k): one probe per column, row-major flattening l*H + h):

* ``jvp_per_probe(f, z, Q)``: a Python loop of ``torch.func.jvp``, one call per probe (what the paper did);
* ``jvp_vmap(f, z, Q)``: ``torch.func.vmap`` over ``torch.func.jvp`` (one batched call);
* ``benettin_step(f, z, Q, mode)``: ``W = J Q``; ``Q', R = qr(W)``; returns ``(f(z), Q', log|diag R|)``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from safetensors import safe_open

__all__ = [
    "read_config",
    "load_tensors",
    "load_loop_map",
    "jvp_per_probe",
    "jvp_vmap",
    "benettin_step",
    "benettin",
    "JVP_MODES",
]

Tensor = torch.Tensor
LoopMap = Callable[[Tensor], Tensor]


# ----------------------------------------------------------------------------------------------
# checkpoint reading
# ----------------------------------------------------------------------------------------------


def read_config(ckpt_dir: str) -> dict:
    with open(os.path.join(ckpt_dir, "config.json")) as fh:
        return json.load(fh)


def _weight_files(ckpt_dir: str) -> Dict[str, str]:
    """Map tensor name -> safetensors file path (sharded or single-file checkpoints)."""
    index = os.path.join(ckpt_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as fh:
            weight_map = json.load(fh)["weight_map"]
        return {name: os.path.join(ckpt_dir, fname) for name, fname in weight_map.items()}
    single = os.path.join(ckpt_dir, "model.safetensors")
    if not os.path.exists(single):
        raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {ckpt_dir}")
    with safe_open(single, framework="pt") as fh:
        return {name: single for name in fh.keys()}


def load_tensors(ckpt_dir: str, want: Callable[[str], bool], dtype: Optional[torch.dtype]) -> Dict[str, Tensor]:
    """Load the tensors whose names satisfy ``want``, cast to ``dtype`` (None: keep the stored dtype).

    Tensors are read one at a time (``safe_open``), so a large checkpoint is never held twice.
    """
    files = _weight_files(ckpt_dir)
    by_file: Dict[str, list] = {}
    for name, path in files.items():
        if want(name):
            by_file.setdefault(path, []).append(name)
    out: Dict[str, Tensor] = {}
    for path, names in by_file.items():
        with safe_open(path, framework="pt") as fh:
            for name in names:
                t = fh.get_tensor(name)
                out[name] = t if dtype is None or t.dtype == dtype else t.to(dtype)
                del t
    return out


def model_type(cfg: dict) -> str:
    mt = cfg.get("model_type", "")
    if mt == "ouro":
        return "ouro"
    if mt in ("huginn_raven", "huginn", "raven") or "n_layers_in_recurrent_block" in cfg:
        return "huginn"
    raise ValueError(f"unsupported model_type {mt!r}")


# ----------------------------------------------------------------------------------------------
# shared pieces
# ----------------------------------------------------------------------------------------------


def _rms_norm(x: Tensor, w: Tensor, eps: float) -> Tensor:
    return w.to(x.dtype) * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _linear(x: Tensor, w: Tensor) -> Tensor:
    """HF Linear: w is (out, in), y = x w^T. Low-precision stored weights are upcast per use."""
    return x @ w.to(x.dtype).t()


class _LinearTangentRule(torch.autograd.Function):
    """y = x w^T with an explicit forward-mode rule dx -> dx w^T.

    PyTorch's built-in forward-AD rule for mm/linear materialises a zero tangent for the weight (which has
    none): every JVP then allocates and multiplies a weight-sized zero matrix, ~2x the cost of the
    tangent product itself. This rule skips it (``set_materialize_grads(False)``). Forward mode only."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w):
        return x @ w.t()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.w = inputs[1]
        ctx.set_materialize_grads(False)

    @staticmethod
    def jvp(ctx, x_t, w_t):
        if w_t is not None:
            raise NotImplementedError("tangents of the weights are not supported")
        return None if x_t is None else x_t @ ctx.w.t()

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError("forward mode only")


def _linear_rule(x: Tensor, w: Tensor) -> Tensor:
    return _LinearTangentRule.apply(x, w.to(x.dtype))


LINEARS = {"native": _linear, "jvp_rule": _linear_rule}


def _causal_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """q, k, v: (heads, L, hd) -> (heads, L, hd); explicit masked softmax (forward-AD friendly)."""
    L = q.shape[-2]
    scores = (q @ k.transpose(-1, -2)) * scale
    mask = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) @ v


def _silu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


# ----------------------------------------------------------------------------------------------
# Ouro
# ----------------------------------------------------------------------------------------------


def _ouro_rope(L: int, hd: int, theta: float, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.arange(L, dtype=torch.float64)[:, None] * inv_freq[None, :]  # (L, hd/2)
    ang = torch.cat([ang, ang], dim=-1)  # (L, hd)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def _rotate_half(x: Tensor) -> Tensor:
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def _ouro_loop_map(cfg: dict, w: Dict[str, Tensor], L: int, dtype: torch.dtype, _linear=_linear) -> LoopMap:
    n_layers = int(cfg["num_hidden_layers"])
    nh = int(cfg["num_attention_heads"])
    nkv = int(cfg.get("num_key_value_heads") or nh)
    H = int(cfg["hidden_size"])
    hd = int(cfg.get("head_dim") or H // nh)
    eps = float(cfg["rms_norm_eps"])
    rep = nh // nkv
    cos, sin = _ouro_rope(L, hd, float(cfg.get("rope_theta", 10000.0)), dtype)
    scale = hd ** -0.5
    layers = []
    for i in range(n_layers):
        p = f"model.layers.{i}."
        layers.append({k: w[p + k] for k in (
            "input_layernorm.weight", "input_layernorm_2.weight",
            "post_attention_layernorm.weight", "post_attention_layernorm_2.weight",
            "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
            "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
            "mlp.down_proj.weight")})
    final_norm = w["model.norm.weight"]

    def attn(x: Tensor, lw: Dict[str, Tensor]) -> Tensor:
        q = _linear(x, lw["self_attn.q_proj.weight"]).view(L, nh, hd).transpose(0, 1)
        k = _linear(x, lw["self_attn.k_proj.weight"]).view(L, nkv, hd).transpose(0, 1)
        v = _linear(x, lw["self_attn.v_proj.weight"]).view(L, nkv, hd).transpose(0, 1)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if rep > 1:  # kv head j serves query heads j*rep .. j*rep+rep-1
            k = k.repeat_interleave(rep, dim=0)
            v = v.repeat_interleave(rep, dim=0)
        o = _causal_attention(q, k, v, scale).transpose(0, 1).reshape(L, nh * hd)
        return _linear(o, lw["self_attn.o_proj.weight"])

    def mlp(x: Tensor, lw: Dict[str, Tensor]) -> Tensor:
        g = _linear(x, lw["mlp.gate_proj.weight"])
        u = _linear(x, lw["mlp.up_proj.weight"])
        return _linear(_silu(g) * u, lw["mlp.down_proj.weight"])

    def f(z: Tensor) -> Tensor:
        x = z
        for lw in layers:
            h = x + _rms_norm(attn(_rms_norm(x, lw["input_layernorm.weight"], eps), lw),
                              lw["input_layernorm_2.weight"], eps)
            x = h + _rms_norm(mlp(_rms_norm(h, lw["post_attention_layernorm.weight"], eps), lw),
                              lw["post_attention_layernorm_2.weight"], eps)
        return _rms_norm(x, final_norm, eps)

    return f


def _ouro_wanted(name: str) -> bool:
    return name.startswith("model.layers.") or name in ("model.norm.weight", "model.embed_tokens.weight")


# ----------------------------------------------------------------------------------------------
# Huginn
# ----------------------------------------------------------------------------------------------


def _huginn_dims(cfg: dict) -> Tuple[int, int, int]:
    H = int(cfg["n_embd"])
    nh = int(cfg["n_heads"])
    hd = int(cfg.get("head_dim") or H // nh)
    return H, nh, hd


def _huginn_rope(L: int, hd: int, base: float, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    inv_freq = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))  # (hd/2,)
    ang = torch.arange(L, dtype=torch.float64)[:, None] * inv_freq[None, :]  # (L, hd/2)
    # broadcast over heads: (L, 1, hd/2)
    return ang.cos().to(dtype)[:, None, :], ang.sin().to(dtype)[:, None, :]


def _huginn_block(cfg: dict, w: Dict[str, Tensor], prefix: str, L: int, cos: Tensor, sin: Tensor,
                  _linear=_linear):
    H, nh, hd = _huginn_dims(cfg)
    eps = float(cfg["norm_eps"])
    I = int(cfg["intermediate_size"])
    scale = 1.0 / math.sqrt(hd)
    g = lambda k: w[prefix + k]  # noqa: E731
    Wqkv, proj = g("attn.Wqkv.weight"), g("attn.proj.weight")
    qk_bias = w.get(prefix + "attn.qk_bias")
    fc, mproj = g("mlp.fc.weight"), g("mlp.proj.weight")
    n1, n2, n3, n4 = (g(f"norm_{i}.weight") for i in (1, 2, 3, 4))

    def rotary(x: Tensor) -> Tensor:  # x (L, nh, hd); interleaved pairs (x_{2i}, x_{2i+1})
        xp = x.reshape(L, nh, hd // 2, 2)
        a, b = xp[..., 0], xp[..., 1]
        return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).reshape(L, nh, hd)

    def attn(x: Tensor) -> Tensor:
        qkv = _linear(x, Wqkv)
        q, k, v = (t.reshape(L, nh, hd) for t in qkv.split(H, dim=-1))
        if qk_bias is not None:
            qb = qk_bias.to(x.dtype)
            q = q + qb[0, 0]
            k = k + qb[1, 0]
        q, k = rotary(q), rotary(k)
        o = _causal_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), scale)
        return _linear(o.transpose(0, 1).reshape(L, H), proj)

    def mlp(x: Tensor) -> Tensor:
        a = _linear(x, fc)
        return _linear(_silu(a[..., :I]) * a[..., I:], mproj)

    def block(x: Tensor) -> Tensor:
        x = _rms_norm(attn(_rms_norm(x, n1, eps)) + x, n2, eps)
        x = _rms_norm(mlp(_rms_norm(x, n3, eps)) + x, n4, eps)
        return x

    return block


def _huginn_scales(cfg: dict) -> Tuple[float, float]:
    """(embed_scale, init std): the config's ``init_values`` (what the reference reads), defaulting to
    the values RavenConfig derives, sqrt(n_embd) and sqrt(2/(5 n_embd))."""
    H = int(cfg["n_embd"])
    init = cfg.get("init_values") or {}
    return float(init.get("embed_scale", math.sqrt(H))), float(init.get("std", math.sqrt(2.0 / (5 * H))))


def _huginn_init_state(cfg: dict, L: int, dtype: torch.dtype, seed: int) -> Tensor:
    """Truncated normal N(0, std^2) cut at 3 std, times embed_scale (README: std sqrt(2/(5 n_embd)),
    scale sqrt(n_embd))."""
    H = int(cfg["n_embd"])
    scale, std = _huginn_scales(cfg)
    gen = torch.Generator().manual_seed(seed)
    x = torch.empty(L, H, dtype=torch.float64)
    torch.nn.init.trunc_normal_(x, std=std, a=-3 * std, b=3 * std, generator=gen)
    return (x * scale).to(dtype)


def _huginn_loop_map(cfg: dict, ckpt_dir: str, tokens: Tensor, dtype: torch.dtype,
                     weight_dtype: Optional[torch.dtype], _linear=_linear) -> Tuple[LoopMap, Tensor]:
    H, nh, hd = _huginn_dims(cfg)
    L = int(tokens.shape[0])
    n_pre = int(cfg["n_layers_in_prelude"])
    n_core = int(cfg["n_layers_in_recurrent_block"])
    cos, sin = _huginn_rope(L, hd, float(cfg.get("rope_base", 50000.0)), dtype)

    # 1) the injection e: prelude weights are needed only for this, then dropped.
    pre = load_tensors(ckpt_dir, lambda n: n == "transformer.wte.weight" or n.startswith("transformer.prelude."),
                       weight_dtype)
    with torch.no_grad():
        x = pre["transformer.wte.weight"][tokens].to(dtype) * _huginn_scales(cfg)[0]
        for i in range(n_pre):
            x = _huginn_block(cfg, pre, f"transformer.prelude.{i}.", L, cos, sin)(x)
    e = x.detach()
    del pre, x

    # 2) the loop map: adapter + core blocks.
    w = load_tensors(ckpt_dir, lambda n: n == "transformer.adapter.weight" or n.startswith("transformer.core_block."),
                     weight_dtype)
    adapter = w["transformer.adapter.weight"]
    blocks = [_huginn_block(cfg, w, f"transformer.core_block.{i}.", L, cos, sin, _linear) for i in range(n_core)]

    def f(z: Tensor) -> Tensor:
        x = _linear(torch.cat([z, e], dim=-1), adapter)
        for blk in blocks:
            x = blk(x)
        return x

    f.injection = e  # type: ignore[attr-defined]
    return f, e


# ----------------------------------------------------------------------------------------------
# public constructor
# ----------------------------------------------------------------------------------------------


def load_loop_map(ckpt_dir: str, tokens: Sequence[int], dtype: torch.dtype = torch.float32, *,
                  z0: Optional[Tensor] = None, seed: int = 0,
                  weight_dtype: Optional[torch.dtype] = None, linear: str = "native") -> Tuple[LoopMap, Tensor]:
    """Build the loop map ``f: (L, H) -> (L, H)`` of the checkpoint in ``ckpt_dir`` for one prompt.

    ``dtype``: compute dtype (activations, tangents, rope tables). ``weight_dtype``: dtype the loop
    weights are kept in; default = ``dtype`` (cast once at load). Pass ``"stored"`` to keep the
    checkpoint's dtype (e.g. bf16) and upcast each weight to ``dtype`` at each use (saves memory).
    ``z0``: initial state; Ouro default = embeddings of ``tokens``; Huginn default = a seeded
    truncated-normal draw (``seed``), like the reference's random ``initialize_state``.
    ``linear``: ``"native"`` (plain ``x @ w.T``: what a torch.func user gets) or ``"jvp_rule"`` (the same
    product with an explicit forward-mode rule that avoids PyTorch's zero weight tangents; ~2x faster JVPs
    at large sizes, forward mode only).
    Returns ``(f, z0)``; ``f`` also carries ``f.config`` and ``f.model_type``.
    """
    lin = LINEARS[linear]
    cfg = read_config(ckpt_dir)
    mt = model_type(cfg)
    tokens = torch.as_tensor(list(tokens) if not isinstance(tokens, Tensor) else tokens, dtype=torch.long)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D (one prompt), got shape {tuple(tokens.shape)}")
    L = int(tokens.shape[0])
    wdt = None if weight_dtype == "stored" else (weight_dtype or dtype)
    if mt == "ouro":
        w = load_tensors(ckpt_dir, _ouro_wanted, wdt)
        emb = w.pop("model.embed_tokens.weight")
        z_default = emb[tokens].to(dtype)
        del emb
        f = _ouro_loop_map(cfg, w, L, dtype, lin)
    else:
        f, _ = _huginn_loop_map(cfg, ckpt_dir, tokens, dtype, wdt, lin)
        z_default = None
    if z0 is None:
        z0 = z_default if z_default is not None else _huginn_init_state(cfg, L, dtype, seed)
    else:
        z0 = torch.as_tensor(z0).to(dtype)
        H = int(cfg.get("hidden_size") or cfg["n_embd"])
        if tuple(z0.shape) != (L, H):
            raise ValueError(f"z0 must have shape {(L, H)}, got {tuple(z0.shape)}")
    f.config = cfg  # type: ignore[attr-defined]
    f.model_type = mt  # type: ignore[attr-defined]
    return f, z0


# ----------------------------------------------------------------------------------------------
# JVPs and the Benettin step
# ----------------------------------------------------------------------------------------------


def _as_columns(z: Tensor, Q: Tensor) -> Tensor:
    d = z.numel()
    if Q.ndim != 2 or Q.shape[0] != d:
        raise ValueError(f"Q must be (L*H, k) = ({d}, k), got {tuple(Q.shape)}")
    return Q


def jvp_per_probe(f: LoopMap, z: Tensor, Q: Tensor) -> Tuple[Tensor, Tensor]:
    """``(f(z), J_f(z) Q)`` with one ``torch.func.jvp`` call per column of ``Q`` (L*H, k)."""
    Q = _as_columns(z, Q)
    cols = []
    fz = None
    for j in range(Q.shape[1]):
        fz, t = torch.func.jvp(f, (z,), (Q[:, j].reshape(z.shape),))
        cols.append(t.reshape(-1))
    if fz is None:
        fz = f(z)
    return fz, torch.stack(cols, dim=1)


def jvp_vmap(f: LoopMap, z: Tensor, Q: Tensor) -> Tuple[Tensor, Tensor]:
    """``(f(z), J_f(z) Q)`` with ``torch.func.vmap`` over ``torch.func.jvp`` (one batched call).

    The primal is not batched, so it is computed once (``out_dims=None``)."""
    Q = _as_columns(z, Q)
    tangents = Q.t().reshape(Q.shape[1], *z.shape)  # (k, L, H)

    def one(t: Tensor):
        return torch.func.jvp(f, (z,), (t,))

    fz, W = torch.func.vmap(one, in_dims=0, out_dims=(None, 0))(tangents)
    return fz, W.reshape(Q.shape[1], -1).t()


JVP_MODES = {"per_probe": jvp_per_probe, "vmap": jvp_vmap}


def benettin_step(f: LoopMap, z: Tensor, Q: Tensor, mode: str = "vmap") -> Tuple[Tensor, Tensor, Tensor]:
    """One Benettin step: ``W = J_f(z) Q``; ``Q', R = qr(W)`` (reduced); ``log|diag R|``.

    Returns ``(f(z), Q', log_growth)`` with log_growth of shape (k,)."""
    fz, W = JVP_MODES[mode](f, z, Q)
    Qn, R = torch.linalg.qr(W, mode="reduced")
    return fz, Qn, torch.log(torch.abs(torch.diagonal(R)))


def benettin(f: LoopMap, z0: Tensor, Q0: Tensor, steps: int, mode: str = "vmap") -> Tuple[Tensor, Tensor, Tensor]:
    """``steps`` Benettin steps from (z0, Q0).

    Returns (log_growth (steps, k), exponents (k,), states (steps+1, L, H))."""
    z, Q = z0, Q0
    growth, states = [], [z0]
    with torch.no_grad():
        for _ in range(steps):
            z, Q, lg = benettin_step(f, z, Q, mode)
            growth.append(lg)
            states.append(z)
    g = torch.stack(growth)
    return g, g.sum(0) / steps, torch.stack(states)
