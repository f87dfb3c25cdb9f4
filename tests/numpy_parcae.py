"""An independent float64 NumPy Parcae, written from the pseudo-code of tests/fixtures/PARCAE.md (4.10) and reading
the state-dict tensor names directly (it shares no code with loopjax). Also a writer of random Parcae checkpoints
for the shapes the fixture does not cover, naming the tensors from PARCAE.md section 3 and placing the value
embeddings by the two rules of section 4.6."""
import numpy as np

from loopjax.io.checkpoint import write_hf_checkpoint


def rms(x, w, eps):
    return w * x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)


def rope(t, base, condense=1.0):
    """t (L, heads, hd): adjacent pairs (2i, 2i+1) rotated by angle_i(p) = (p / condense) * base^(-2i/hd)."""
    L, hd = t.shape[0], t.shape[-1]
    ang = (np.arange(L) / condense)[:, None] * base ** (-np.arange(0, hd, 2) / hd)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = t[..., 0::2], t[..., 1::2]
    out = np.empty_like(t)
    out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
    return out


def causal_softmax_attention(q, k, v):
    L, n, hd = q.shape
    r = n // k.shape[1]
    k, v = np.repeat(k, r, axis=1), np.repeat(v, r, axis=1)
    s = np.einsum("pad,qad->apq", q, k) / np.sqrt(hd)
    s = np.where(np.tril(np.ones((L, L), bool)), s, -np.inf)
    s = np.exp(s - s.max(-1, keepdims=True))
    s = s / s.sum(-1, keepdims=True)
    return np.einsum("apq,qad->pad", s, v).reshape(L, n * hd)


class NumpyParcae:
    def __init__(self, cfg: dict, w: dict):
        self.c, self.w = cfg, {k: np.asarray(v, np.float64) for k, v in w.items()}
        self.nh = cfg["num_attention_heads"]
        self.nkv = cfg.get("num_key_value_heads") or self.nh
        self.nhr = cfg.get("recurrent_num_attention_heads") or self.nh
        self.P, self.C, self.D = cfg["n_layers_in_prelude"], cfg["n_layers_in_recurrent_block"], cfg["n_layers_in_coda"]
        rs = cfg.get("rope_settings") or {}
        self.base, self.condense = rs.get("rope_base", 50000), rs.get("rope_condense_ratio", 1)

    def block(self, x, pre, n, m, ve):
        W, eps, L = self.w, self.c["norm_eps"], x.shape[0]
        hd = x.shape[-1] // n
        h = rms(x, W[pre + "norm_1.weight"], eps)
        q = (h @ W[pre + "attn.c_q.weight"].T).reshape(L, n, hd)
        k = (h @ W[pre + "attn.c_k.weight"].T).reshape(L, m, hd)
        v = (h @ W[pre + "attn.c_v.weight"].T).reshape(L, m, hd)
        if ve is not None and pre + "attn.ve_gate.weight" in W:
            gate = 2 / (1 + np.exp(-(h[:, :32] @ W[pre + "attn.ve_gate.weight"].T)))
            v = v + gate[:, :, None] * ve.reshape(L, m, hd)
        q, k = rope(q, self.base, self.condense), rope(k, self.base, self.condense)
        if self.c.get("qk_norm"):
            e = np.finfo(np.float64).eps
            q, k = q / np.sqrt((q * q).mean(-1, keepdims=True) + e), k / np.sqrt((k * k).mean(-1, keepdims=True) + e)
        x = x + causal_softmax_attention(q, k, v) @ W[pre + "attn.c_proj.weight"].T
        a = rms(x, W[pre + "norm_2.weight"], eps) @ W[pre + "mlp.fc.weight"].T
        return x + (0.5 * np.maximum(a, 0) ** 2) @ W[pre + "mlp.proj.weight"].T

    def VE(self, j, ids):
        name = f"value_embeds.{j}.weight"
        return self.w[name][ids] if name in self.w else None

    def injection(self, ids):
        e = self.w["transformer.wte.weight"][ids]
        for i in range(self.P):
            e = self.block(e, f"transformer.prelude.{i}.", self.nh, self.nkv, self.VE(i, ids))
        if self.c.get("prelude_norm", True):
            e = rms(e, self.w["transformer.ln_prelude.weight"], self.c["norm_eps"])
        return e

    def g(self, x, e):
        kind, W = self.c.get("injection_type", "diagonal"), self.w
        if kind == "diagonal":
            dt = np.log1p(np.exp(W["transformer.adapter.dt_bias"]))
            return x * np.exp(-dt * np.exp(W["transformer.adapter.A_log"])) + dt * (e @ W["transformer.adapter.B"].T)
        if kind == "linear":
            return np.concatenate([x, e], -1) @ W["transformer.adapter.adapter.weight"].T
        return x + e

    def step(self, x, e, ids):
        x = self.g(x, e)
        for c in range(self.C):
            x = self.block(x, f"transformer.core_block.{c}.", self.nhr, self.nhr, self.VE(self.P + c, ids))
        return x

    def logits(self, ids, x0, steps):
        e, x = self.injection(ids), x0
        for _ in range(steps):
            x = self.step(x, e, ids)
        y = x @ self.w["transformer.C.weight"].T
        for k in range(self.D):
            y = self.block(y, f"transformer.coda.{k}.", self.nh, self.nkv, self.VE(self.P + self.C + k, ids))
        y = rms(y, self.w["transformer.ln_f.weight"], self.c["norm_eps"])
        head = self.w["transformer.wte.weight"] if self.c.get("tie_embeddings", True) else self.w["lm_head.weight"]
        out = y @ head.T
        cap = self.c.get("logit_softcap")
        return out if cap is None else cap * np.tanh(out / cap)


def random_tensors(cfg: dict, rng) -> dict:
    """A random state dict for a Parcae config.json, tensor names and shapes as PARCAE.md section 3 lists them."""
    H, I, Vp = cfg["n_embd"], cfg["intermediate_size"], cfg["padded_vocab_size"]
    nh = cfg["num_attention_heads"]
    nkv, hd = cfg.get("num_key_value_heads") or nh, H // nh
    R = cfg.get("recurrent_embedding_dimension") or H
    IR = cfg.get("recurrent_intermediation_embedding_dimension") or I
    nhr = cfg.get("recurrent_num_attention_heads") or nh
    P, C, D = cfg["n_layers_in_prelude"], cfg["n_layers_in_recurrent_block"], cfg["n_layers_in_coda"]
    lin = lambda o, i: rng.normal(0, 0.8 / np.sqrt(i), (o, i))  # noqa: E731
    t = {"transformer.wte.weight": rng.normal(0, 1, (Vp, H)), "transformer.ln_f.weight": rng.uniform(0.6, 1.4, H),
         "transformer.C.weight": lin(H, R)}
    n_layer = C * cfg["mean_backprop_depth"]
    stacks = (("prelude", P, 0, 0, H, nh, nkv, I), ("core_block", C, P, P, R, nhr, nhr, IR),
              ("coda", D, P + C, P + C * cfg["mean_recurrence"], H, nh, nkv, I))
    for stack, n, j0, id0, width, q_heads, kv_heads, inter in stacks:
        for i in range(n):
            p = f"transformer.{stack}.{i}."
            t.update({p + "norm_1.weight": rng.uniform(0.6, 1.4, width),
                      p + "norm_2.weight": rng.uniform(0.6, 1.4, width),
                      p + "attn.c_q.weight": lin(q_heads * hd, width), p + "attn.c_k.weight": lin(kv_heads * hd, width),
                      p + "attn.c_v.weight": lin(kv_heads * hd, width),
                      p + "attn.c_proj.weight": lin(width, q_heads * hd),
                      p + "mlp.fc.weight": lin(inter, width), p + "mlp.proj.weight": lin(width, inter)})
            if (id0 + i) % 2 == (n_layer - 1) % 2:
                t[p + "attn.ve_gate.weight"] = rng.normal(0, 1 / np.sqrt(32), (kv_heads, 32))
    for j in range(P + C + D):
        if j % 2 == (P + C + D - 1) % 2:
            t[f"value_embeds.{j}.weight"] = rng.normal(0, 0.5, (Vp, nkv * hd))
    if cfg.get("prelude_norm", True):
        t["transformer.ln_prelude.weight"] = rng.uniform(0.6, 1.4, H)
    kind = cfg.get("injection_type", "diagonal")
    if kind == "diagonal":
        t.update({"transformer.adapter.A_log": rng.uniform(-0.7, 0.7, R),
                  "transformer.adapter.dt_bias": rng.normal(0.2, 0.5, R), "transformer.adapter.B": lin(R, H)})
    elif kind == "linear":
        t["transformer.adapter.adapter.weight"] = lin(R, R + H)
    t["lm_head.weight"] = t["transformer.wte.weight"].copy() if cfg.get("tie_embeddings", True) else lin(Vp, H)
    return t


def write_parcae(out_dir, cfg: dict, seed: int = 0):
    return write_hf_checkpoint(out_dir, cfg, random_tensors(cfg, np.random.default_rng(seed)), dtype="float32")
