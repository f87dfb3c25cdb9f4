"""Parcae (parcae_lm state dict) tensor names -> loopjax param paths. PyTorch Linear weights are (out, in):
kernels are their transpose. The diagonal injection's A_log, dt_bias and B are kept as stored (B is (R, H),
used as e B^T); the linear injection's weight is `transformer.adapter.adapter.weight` (the doubled name)."""

_BLOCK = r"(prelude|core_block|coda).(\d+)"
_PARAM_BLOCK = r"(prelude|core_block|coda)_(\d+)"

# (state-dict name, param path, transform); both sides are regexes with the same groups ('.' is literal).
TABLE = (
    ("transformer.wte.weight",                                  "wte.embedding",                        None),
    (rf"transformer.{_BLOCK}.attn.(c_q|c_k|c_v|c_proj|ve_gate).weight",
     rf"{_PARAM_BLOCK}.attn.(c_q|c_k|c_v|c_proj|ve_gate).kernel",                                        "T"),
    (rf"transformer.{_BLOCK}.mlp.(fc|proj).weight",             rf"{_PARAM_BLOCK}.mlp.(fc|proj).kernel", "T"),
    (rf"transformer.{_BLOCK}.(norm_1|norm_2).weight",           rf"{_PARAM_BLOCK}.(norm_1|norm_2).weight", None),
    ("transformer.ln_prelude.weight",                           "ln_prelude.weight",                    None),
    ("transformer.adapter.(A_log|dt_bias|B)",                   "adapter.(A_log|dt_bias|B)",            None),
    ("transformer.adapter.adapter.weight",                      "adapter.adapter.kernel",               "T"),
    ("transformer.C.weight",                                    "C.kernel",                             "T"),
    ("transformer.ln_f.weight",                                 "ln_f.weight",                          None),
    (r"value_embeds.(\d+).weight",                              r"value_embeds_(\d+).embedding",        None),
    ("lm_head.weight",                                          "lm_head.kernel",                       "T"),
)

IGNORED = (
    ("freqs_cis", "stored RoPE table (float32): recomputed from rope_settings in the compute dtype"),
)
IGNORED_WHEN_TIED = (
    # torch.save of the tied model writes both names (one shared storage)
    ("lm_head.weight", "tied to transformer.wte.weight (tie_embeddings)"),
)


def ignored(config):
    return IGNORED + (IGNORED_WHEN_TIED if config.tie_embeddings else ())
