"""Named architecture configs as HF config.json dicts: the built-in models, the shapes the tests and
benchmarks use, and the real checkpoints' shapes. One home for all of them.

`ouro_config(...)` / `huginn_config(...)` / `parcae_config(...)` write every field the reference implementations
read, so a checkpoint saved with one of these configs loads in loopjax and in the reference PyTorch code alike.
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


def parcae_config(*, n_embd, heads, prelude, core, coda, inter, vocab, kv_heads=None, recurrent_dim=None,
                  recurrent_inter=None, recurrent_heads=None, mean_recurrence=8, mean_backprop_depth=4,
                  injection_type="diagonal", qk_norm=True, prelude_norm=True, tied=True, logit_softcap=None,
                  state_init="like-init", padding_multiple=64, rope_base=50000.0, eps=1e-5, block_size=4096) -> dict:
    """config.json as parcae_lm's save_pretrained writes it: the ParcaeConfig fields + "_class_name" (no
    model_type). None for kv_heads / recurrent_* means the prelude's value (the reference's own defaults)."""
    padded = -(-vocab // padding_multiple) * padding_multiple
    return {"name": "loopjax-parcae", "hf_config": {"org": "loopjax", "name": "parcae"}, "block_size": block_size,
            "n_embd": n_embd, "intermediate_size": inter, "num_attention_heads": heads,
            "num_key_value_heads": kv_heads or heads, "vocab_size": vocab, "padding_multiple": padding_multiple,
            "padded_vocab_size": padded,
            "rope_settings": {"use_rope": True, "rope_condense_ratio": 1, "rope_base": rope_base},
            "use_abacus": False, "randomize_positions_from": None, "block_class_name": "TransformerPreNormBlock",
            "norm_class_name": "RMSNorm", "attn_impl": "flash", "norm_eps": eps, "mlp_class_name": "BaseMLP",
            "nonlin_name": "ReLU2", "bias": False, "qk_bias": False, "init_strategy": "scaled-zero",
            "init_orthogonal": True, "skip_initialization": False, "mup_model_scaling_factor": 1,
            "use_fused_head": "pytorch", "debias_attention": False, "center_attention": False, "clip_qkv": None,
            "qk_norm": qk_norm, "logit_softcap": logit_softcap, "activation_checkpoint_impl": "per-iteration",
            "simple_ops": False, "strategy": "single", "injection_type": injection_type,
            "n_layers_in_recurrent_block": core, "n_layers_in_prelude": prelude, "n_layers_in_coda": coda,
            "state_init": state_init, "recurrent_embedding_dimension": recurrent_dim or n_embd,
            "recurrent_intermediation_embedding_dimension": recurrent_inter or inter,
            "recurrent_num_attention_heads": recurrent_heads, "prelude_norm": prelude_norm,
            "sampling_scheme": "poisson-truncated-full", "mean_recurrence": mean_recurrence,
            "mean_backprop_depth": mean_backprop_depth, "lockstep_n": False, "lockstep_k": False,
            "curriculum_target": "forward", "recurrent_iteration_method": "per-sequence", "tie_embeddings": tied,
            "model_class_name": "Parcae", "_is_recurrent_block_config": False, "_class_name": "ParcaeConfig"}


PRESETS = {
    # built-in random models (`builtin:<name>`)
    "ouro-tiny": ouro_config(hidden=64, layers=4, heads=4, kv_heads=2, head_dim=16, inter=160, vocab=512),
    # (huginn-tiny keeps the unscaled out_proj init it was published with, so its numbers stay comparable)
    "huginn-tiny": huginn_config(n_embd=64, heads=4, prelude=2, core=4, coda=2, inter=160, vocab=512,
                                 scaled_out_proj=False),
    # the parcae-tiny fixture's shape (diagonal injection, qk-norm, value embeddings on prelude.1, core_block.1,
    # coda.1), with the built-ins' vocabulary
    "parcae-tiny": parcae_config(n_embd=64, heads=4, prelude=2, core=2, coda=2, inter=160, vocab=512),
    # unseen shapes for the tests: GQA 6q/2kv with head_dim != hidden/heads, tied; Huginn 3 heads, untied
    "ouro-gqa-tied": ouro_config(hidden=48, layers=3, heads=6, kv_heads=2, head_dim=12, inter=96, vocab=200,
                                 loops=3, rope_theta=10000.0, eps=1e-5, tied=True),
    "huginn-untied": huginn_config(n_embd=48, heads=3, prelude=1, core=3, coda=1, inter=80, vocab=160,
                                   mean_recurrence=6, rope_base=10000.0, eps=1e-5, tied=False, block_size=32),
    # Parcae with everything the fixture does not show: GQA 8q/4kv outside the loop, R 32 != H 64 (4 heads of 8),
    # I_R != I, linear injection, no prelude norm, no qk-norm, untied head, softcap 30, vocab 200 padded to 256,
    # a ve_gate without a table (coda.0) and a table without a gate (coda.1)
    "parcae-unseen": parcae_config(n_embd=64, heads=8, kv_heads=4, prelude=1, core=3, coda=2, inter=96, vocab=200,
                                   recurrent_dim=32, recurrent_inter=80, recurrent_heads=4, mean_recurrence=6,
                                   injection_type="linear", qk_norm=False, prelude_norm=False, tied=False,
                                   logit_softcap=30.0, rope_base=10000.0, block_size=32),
    # benchmark shapes
    "ouro-medium": ouro_config(hidden=512, layers=8, heads=8, kv_heads=8, head_dim=64, inter=1408, vocab=4096),
    "huginn-medium": huginn_config(n_embd=512, heads=8, prelude=2, core=4, coda=2, inter=1408, vocab=4096),
    "parcae-medium": parcae_config(n_embd=512, heads=8, prelude=2, core=4, coda=2, inter=2048, vocab=4096),
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
