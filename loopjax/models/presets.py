"""Named architecture configs as HF config.json dicts: the built-in models, the shapes the tests and
benchmarks use, and the real checkpoints' shapes. One home for all of them.

`ouro_config(...)` / `huginn_config(...)` write every field the reference implementations read, so a
checkpoint saved with one of these configs loads in loopjax and in the reference PyTorch code alike.
"""
import math


def ouro_config(*, hidden, layers, heads, kv_heads, head_dim, inter, vocab, loops=4, rope_theta=1e6, eps=1e-6,
                tied=False, init_std=0.02, max_positions=4096, dtype="float32") -> dict:
    return {"model_type": "ouro", "architectures": ["OuroForCausalLM"], "vocab_size": vocab, "hidden_size": hidden,
            "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "head_dim": head_dim, "rope_theta": rope_theta, "rms_norm_eps": eps,
            "total_ut_steps": loops, "early_exit_threshold": 1.0, "tie_word_embeddings": tied,
            "initializer_range": init_std, "hidden_act": "silu", "rope_scaling": None, "use_sliding_window": False,
            "sliding_window": None, "max_window_layers": layers, "layer_types": ["full_attention"] * layers,
            "max_position_embeddings": max_positions, "attention_dropout": 0.0, "bos_token_id": 0,
            "eos_token_id": 0, "pad_token_id": 0, "use_cache": False, "torch_dtype": dtype}


def huginn_config(*, n_embd, heads, prelude, core, coda, inter, vocab, mean_recurrence=32, rope_base=50000.0,
                  eps=1e-6, qk_bias=True, tied=True, block_size=4096, injection_type="linear",
                  scaled_out_proj=True, dtype="float32") -> dict:
    # what the reference's RavenConfig derives from n_embd (it reads embed_scale and the stds from here)
    std = math.sqrt(2 / (5 * n_embd))
    depth = prelude + coda + core * mean_recurrence
    return {"model_type": "huginn_raven", "architectures": ["RavenForCausalLM"], "vocab_size": vocab,
            "padded_vocab_size": vocab, "n_embd": n_embd, "n_heads": heads, "num_key_value_heads": heads,
            "head_dim": n_embd // heads, "intermediate_size": inter, "n_layers": prelude + core + coda,
            "n_layers_in_prelude": prelude, "n_layers_in_recurrent_block": core, "n_layers_in_coda": coda,
            "mean_recurrence": mean_recurrence, "mean_backprop_depth": min(8, mean_recurrence),
            "rope_base": rope_base, "norm_eps": eps, "qk_bias": qk_bias, "tie_embeddings": tied, "bias": False,
            "block_size": block_size, "block_class_name": "SandwichBlock", "mlp_class_name": "GatedMLP",
            "norm_class_name": "RMSNorm_llama", "nonlin_name": "SiLU", "injection_type": injection_type,
            "effective_expected_depth": depth,
            "init_values": {"std": std, "embedding": std, "embed_scale": math.sqrt(n_embd),
                            "out_proj": std / math.sqrt(2 * depth) if scaled_out_proj else std},
            "torch_dtype": dtype}


PRESETS = {
    # built-in random models (`builtin:<name>`)
    "ouro-tiny": ouro_config(hidden=64, layers=4, heads=4, kv_heads=2, head_dim=16, inter=160, vocab=512),
    # (huginn-tiny keeps the unscaled out_proj init it was published with, so its numbers stay comparable)
    "huginn-tiny": huginn_config(n_embd=64, heads=4, prelude=2, core=4, coda=2, inter=160, vocab=512,
                                 scaled_out_proj=False),
    # unseen shapes for the tests: GQA 6q/2kv with head_dim != hidden/heads, tied; Huginn 3 heads, untied
    "ouro-gqa-tied": ouro_config(hidden=48, layers=3, heads=6, kv_heads=2, head_dim=12, inter=96, vocab=200,
                                 loops=3, rope_theta=10000.0, eps=1e-5, tied=True),
    "huginn-untied": huginn_config(n_embd=48, heads=3, prelude=1, core=3, coda=1, inter=80, vocab=160,
                                   mean_recurrence=6, rope_base=10000.0, eps=1e-5, tied=False, block_size=32),
    # benchmark shapes
    "ouro-medium": ouro_config(hidden=512, layers=8, heads=8, kv_heads=8, head_dim=64, inter=1408, vocab=4096),
    "huginn-medium": huginn_config(n_embd=512, heads=8, prelude=2, core=4, coda=2, inter=1408, vocab=4096),
    # the real checkpoints' shapes (ByteDance/Ouro-1.4B, tomg-group-umd/huginn-0125)
    "ouro-1.4b": ouro_config(hidden=2048, layers=24, heads=16, kv_heads=16, head_dim=128, inter=5632, vocab=49152,
                             max_positions=65536, dtype="bfloat16"),
    "huginn-0125": huginn_config(n_embd=5280, heads=55, prelude=2, core=4, coda=2, inter=17920, vocab=65536,
                                 dtype="bfloat16"),
}


def preset(name: str) -> dict:
    """A copy of the named config dict."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return dict(PRESETS[name])
