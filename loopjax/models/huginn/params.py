"""HF Huginn (Raven) tensor names -> loopjax param paths. HF Linear weights are (out, in): kernels are their
transpose. Wqkv stays fused (rows [q; k; v]) and mlp.fc stays fused (rows [gate; up]); the model splits them."""

_BLOCK = r"(prelude|core_block|coda).(\d+)"
_PARAM_BLOCK = r"(prelude|core_block|coda)_(\d+)"

# (HF name, param path, transform); both sides are regexes with the same groups ('.' is literal).
TABLE = (
    ("transformer.wte.weight",                        "wte.embedding",                        None),
    ("transformer.adapter.weight",                    "adapter.kernel",                       "T"),
    ("transformer.adapter.(A_log|dt_bias|B|gate)",    "adapter.(A_log|dt_bias|B|gate)",       None),  # loopjax variants
    ("transformer.ln_f.weight",                       "ln_f.weight",                          None),
    (rf"transformer.{_BLOCK}.attn.(Wqkv|proj).weight", rf"{_PARAM_BLOCK}.attn.(Wqkv|proj).kernel", "T"),
    (rf"transformer.{_BLOCK}.attn.qk_bias",           rf"{_PARAM_BLOCK}.attn.qk_bias",        None),
    (rf"transformer.{_BLOCK}.mlp.(fc|proj).weight",   rf"{_PARAM_BLOCK}.mlp.(fc|proj).kernel", "T"),
    (rf"transformer.{_BLOCK}.(norm_1|norm_2|norm_3|norm_4).weight", rf"{_PARAM_BLOCK}.(norm_1|norm_2|norm_3|norm_4).weight", None),
    ("lm_head.weight",                                "lm_head.kernel",                       "T"),
)

IGNORED = (
    ("freqs_cis", "stored RoPE table (checkpoint dtype, bf16-rounded in bf16 files): recomputed from rope_base"),
)
IGNORED_WHEN_TIED = (
    # save_pretrained writes only wte; the public huginn-0125 upload also holds a second copy.
    ("lm_head.weight", "tied to transformer.wte.weight (tie_embeddings)"),
)


def ignored(config):
    return IGNORED + (IGNORED_WHEN_TIED if config.tie_embeddings else ())
