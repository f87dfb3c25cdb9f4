"""An independent float64 NumPy implementation of both loop models, written from the definitions in
tests/fixtures/README.md and reading the HF tensor names directly (it shares no code with loopjax).
Used as the oracle for checkpoints the reference fixtures do not cover."""
import json
from pathlib import Path

import numpy as np
from safetensors import safe_open


def read_checkpoint(ckpt_dir):
    ckpt_dir = Path(ckpt_dir)
    cfg = json.loads((ckpt_dir / "config.json").read_text())
    weights = {}
    for file in sorted(ckpt_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="flax") as f:
            for name in f.keys():
                weights[name] = np.asarray(f.get_tensor(name), dtype=np.float64)
    return cfg, weights


def rms_norm(x, w, eps):
    return w * x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    p = np.exp(x)
    return p / p.sum(-1, keepdims=True)


def attend(q, k, v):
    """q (L, nh, hd), k/v (L, nkv, hd); causal; kv head j serves query heads j*r..j*r+r-1."""
    r = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, r, axis=1), np.repeat(v, r, axis=1)
    s = np.einsum("lhd,mhd->hlm", q, k) / np.sqrt(q.shape[-1])
    L = q.shape[0]
    s = np.where(np.tril(np.ones((L, L), bool)), s, -np.inf)
    return np.einsum("hlm,mhd->lhd", softmax(s), v).reshape(L, -1)


def angles(L, hd, base):
    return np.arange(L)[:, None] * base ** (-np.arange(0, hd, 2) / hd)


class Ouro:
    def __init__(self, cfg, w):
        self.c, self.w = cfg, w
        self.hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]

    def embed(self, ids):
        return self.w["model.embed_tokens.weight"][ids]

    def rope(self, x):
        a = angles(x.shape[0], self.hd, self.c["rope_theta"])
        cos, sin = np.cos(np.concatenate([a, a], -1))[:, None], np.sin(np.concatenate([a, a], -1))[:, None]
        h = self.hd // 2
        return x * cos + np.concatenate([-x[..., h:], x[..., :h]], -1) * sin

    def layer(self, i, x):
        c, p = self.c, f"model.layers.{i}."
        W, eps, L = self.w, c["rms_norm_eps"], x.shape[0]
        a = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        q = self.rope((a @ W[p + "self_attn.q_proj.weight"].T).reshape(L, c["num_attention_heads"], self.hd))
        k = self.rope((a @ W[p + "self_attn.k_proj.weight"].T).reshape(L, c["num_key_value_heads"], self.hd))
        v = (a @ W[p + "self_attn.v_proj.weight"].T).reshape(L, c["num_key_value_heads"], self.hd)
        h = x + rms_norm(attend(q, k, v) @ W[p + "self_attn.o_proj.weight"].T, W[p + "input_layernorm_2.weight"], eps)
        m = rms_norm(h, W[p + "post_attention_layernorm.weight"], eps)
        g, u = m @ W[p + "mlp.gate_proj.weight"].T, m @ W[p + "mlp.up_proj.weight"].T
        mlp = (g / (1 + np.exp(-g)) * u) @ W[p + "mlp.down_proj.weight"].T
        return h + rms_norm(mlp, W[p + "post_attention_layernorm_2.weight"], eps)

    def step(self, z):
        for i in range(self.c["num_hidden_layers"]):
            z = self.layer(i, z)
        return rms_norm(z, self.w["model.norm.weight"], self.c["rms_norm_eps"])

    def logits(self, ids, steps):
        z = self.embed(ids)
        for _ in range(steps):
            z = self.step(z)
        head = self.w["model.embed_tokens.weight"] if self.c.get("tie_word_embeddings") else self.w["lm_head.weight"]
        return z @ head.T


class Huginn:
    def __init__(self, cfg, w):
        self.c, self.w = cfg, w
        self.nh, self.hd = cfg["n_heads"], cfg["n_embd"] // cfg["n_heads"]

    def rope(self, x):
        a = angles(x.shape[0], self.hd, self.c["rope_base"])
        cos, sin = np.cos(a)[:, None], np.sin(a)[:, None]
        p, q = x[..., 0::2], x[..., 1::2]
        return np.stack([p * cos - q * sin, q * cos + p * sin], -1).reshape(x.shape)

    def block(self, name, x):
        W, eps, L, H = self.w, self.c["norm_eps"], x.shape[0], self.c["n_embd"]
        p = f"transformer.{name}."
        a = rms_norm(x, W[p + "norm_1.weight"], eps)
        qkv = a @ W[p + "attn.Wqkv.weight"].T
        q, k, v = (qkv[:, j * H:(j + 1) * H].reshape(L, self.nh, self.hd) for j in range(3))
        if p + "attn.qk_bias" in W:
            q, k = q + W[p + "attn.qk_bias"][0, 0], k + W[p + "attn.qk_bias"][1, 0]
        x = rms_norm(attend(self.rope(q), self.rope(k), v) @ W[p + "attn.proj.weight"].T + x, W[p + "norm_2.weight"], eps)
        m = rms_norm(x, W[p + "norm_3.weight"], eps) @ W[p + "mlp.fc.weight"].T
        g, u = np.split(m, 2, axis=-1)
        return rms_norm((g / (1 + np.exp(-g)) * u) @ W[p + "mlp.proj.weight"].T + x, W[p + "norm_4.weight"], eps)

    def injection(self, ids):
        x = self.w["transformer.wte.weight"][ids] * np.sqrt(self.c["n_embd"])
        for i in range(self.c["n_layers_in_prelude"]):
            x = self.block(f"prelude.{i}", x)
        return x

    def step(self, z, e):
        z = np.concatenate([z, e], -1) @ self.w["transformer.adapter.weight"].T
        for i in range(self.c["n_layers_in_recurrent_block"]):
            z = self.block(f"core_block.{i}", z)
        return z

    def logits(self, ids, z0, steps):
        e, z = self.injection(ids), z0
        for _ in range(steps):
            z = self.step(z, e)
        eps, ln_f = self.c["norm_eps"], self.w["transformer.ln_f.weight"]
        x = rms_norm(z, ln_f, eps)
        for i in range(self.c["n_layers_in_coda"]):
            x = self.block(f"coda.{i}", x)
        x = rms_norm(x, ln_f, eps)
        head = self.w["transformer.wte.weight"] if self.c.get("tie_embeddings", True) else self.w["lm_head.weight"]
        return x @ head.T


def benettin_fd(f, z0, Q0, steps, eps=1e-6):
    """Benettin with central finite-difference JVPs (float64): an oracle independent of autodiff."""
    z, Q, log_growth = z0, Q0, []
    for _ in range(steps):
        W = np.stack([(f(z + eps * q.reshape(z.shape)) - f(z - eps * q.reshape(z.shape))).ravel() / (2 * eps)
                      for q in Q.T], axis=1)
        Q, R = np.linalg.qr(W)
        log_growth.append(np.log(np.abs(np.diag(R))))
        z = f(z)
    return np.array(log_growth)
