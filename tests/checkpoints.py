"""Build HF-format checkpoints the fixtures do not cover (other head counts, GQA, head_dim != H/nh, tied or
untied, bf16, sharded) with random weights, naming every tensor as the HF classes do (independently of
loopjax's converter tables)."""
import numpy as np

from loopjax.io.checkpoint import write_hf_checkpoint
from loopjax.models.presets import preset


def ouro_tensors(cfg, rng):
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    lin = lambda o, i: rng.normal(0, 1 / np.sqrt(i), (o, i))  # noqa: E731
    norm = lambda: rng.uniform(0.6, 1.4, (H,))  # noqa: E731
    t = {"model.embed_tokens.weight": rng.normal(0, 1, (V, H)), "model.norm.weight": norm(),
         "model.early_exit_gate.weight": rng.normal(0, 2 / np.sqrt(H), (1, H)),
         "model.early_exit_gate.bias": rng.normal(0, 1, (1,))}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t.update({p + "self_attn.q_proj.weight": lin(nh * hd, H), p + "self_attn.k_proj.weight": lin(nkv * hd, H),
                  p + "self_attn.v_proj.weight": lin(nkv * hd, H), p + "self_attn.o_proj.weight": lin(H, nh * hd),
                  p + "mlp.gate_proj.weight": lin(I, H), p + "mlp.up_proj.weight": lin(I, H),
                  p + "mlp.down_proj.weight": lin(H, I)})
        for n in ("input_layernorm", "input_layernorm_2", "post_attention_layernorm", "post_attention_layernorm_2"):
            t[p + n + ".weight"] = norm()
    if not cfg["tie_word_embeddings"]:
        t["lm_head.weight"] = lin(V, H)
    return t


def huginn_tensors(cfg, rng, lm_head_copy=False):
    H, I, V, nh = cfg["n_embd"], cfg["intermediate_size"], cfg["vocab_size"], cfg["n_heads"]
    hd = H // nh
    lin = lambda o, i: rng.normal(0, 1 / np.sqrt(i), (o, i))  # noqa: E731
    t = {"transformer.wte.weight": rng.normal(0, np.sqrt(2 / (5 * H)), (V, H)),
         "transformer.adapter.weight": lin(H, 2 * H), "transformer.ln_f.weight": rng.uniform(0.6, 1.4, (H,)),
         "freqs_cis": rng.normal(0, 1, (1, cfg["block_size"], 1, hd // 2, 2))}
    for part, n in (("prelude", cfg["n_layers_in_prelude"]), ("core_block", cfg["n_layers_in_recurrent_block"]),
                    ("coda", cfg["n_layers_in_coda"])):
        for i in range(n):
            p = f"transformer.{part}.{i}."
            t.update({p + "attn.Wqkv.weight": lin(3 * H, H), p + "attn.proj.weight": lin(H, H),
                      p + "attn.qk_bias": rng.normal(0, 0.5, (2, 1, nh, hd)),
                      p + "mlp.fc.weight": lin(2 * I, H), p + "mlp.proj.weight": lin(H, I)})
            for k in range(1, 5):
                t[p + f"norm_{k}.weight"] = rng.uniform(0.6, 1.4, (H,))
    if not cfg["tie_embeddings"] or lm_head_copy:
        t["lm_head.weight"] = t["transformer.wte.weight"].copy() if lm_head_copy else lin(V, H)
    return t


def write_checkpoint(out_dir, cfg, tensors, dtype="float32", shards=1):
    """config.json + safetensors through the project's one HF writer (loopjax.io.checkpoint)."""
    return write_hf_checkpoint(out_dir, cfg, tensors, dtype=dtype, shards=shards)


OURO_GQA_TIED = preset("ouro-gqa-tied")
HUGINN_UNTIED = preset("huginn-untied")
