"""HF Ouro tensor names -> loopjax param paths. HF Linear weights are (out, in): kernels are their transpose."""

# (HF name, param path, transform); both sides are regexes with the same groups ('.' is literal).
TABLE = (
    ("model.embed_tokens.weight",                                  "embed_tokens.embedding",        None),
    (r"model.layers.(\d+).self_attn.(q|k|v|o)_proj.weight",        r"layers_(\d+).(q|k|v|o)_proj.kernel", "T"),
    (r"model.layers.(\d+).mlp.(gate|up|down)_proj.weight",         r"layers_(\d+).(gate|up|down)_proj.kernel", "T"),
    (r"model.layers.(\d+).(input_layernorm|input_layernorm_2|post_attention_layernorm|post_attention_layernorm_2).weight",
     r"layers_(\d+).(input_layernorm|input_layernorm_2|post_attention_layernorm|post_attention_layernorm_2).weight", None),
    ("model.norm.weight",                                          "norm.weight",                   None),
    ("model.early_exit_gate.weight",                               "early_exit_gate.kernel",        "T"),
    ("model.early_exit_gate.bias",                                 "early_exit_gate.bias",          None),
    ("lm_head.weight",                                             "lm_head.kernel",                "T"),
)

# Tensors a checkpoint may hold that loopjax does not use, and why.
IGNORED = (
    (r"model.rotary_emb.inv_freq", "RoPE buffer: recomputed from rope_theta in the compute dtype"),
)
IGNORED_WHEN_TIED = (
    ("lm_head.weight", "tied to model.embed_tokens.weight (tie_word_embeddings)"),
)


def ignored(config):
    return IGNORED + (IGNORED_WHEN_TIED if config.tie_word_embeddings else ())
