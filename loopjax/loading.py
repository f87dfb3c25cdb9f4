"""loopjax.load: one entry point for every source, and the built-in offline models."""
from pathlib import Path

import jax

from loopjax import checkpoint
from loopjax.model import LoopModel, random_model
from loopjax.models import config_from_hf

# Built-in models: tiny, randomly initialised by each architecture's own scheme from a fixed seed.
BUILTIN = {
    "ouro-tiny": ({"model_type": "ouro", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 160,
                   "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                   "rope_theta": 1e6, "rms_norm_eps": 1e-6, "total_ut_steps": 4, "tie_word_embeddings": False,
                   "initializer_range": 0.02}, 0),
    "huginn-tiny": ({"model_type": "huginn_raven", "vocab_size": 512, "n_embd": 64, "n_heads": 4,
                     "intermediate_size": 160, "n_layers_in_prelude": 2, "n_layers_in_recurrent_block": 4,
                     "n_layers_in_coda": 2, "rope_base": 50000.0, "norm_eps": 1e-6, "qk_bias": True,
                     "tie_embeddings": True, "mean_recurrence": 32}, 0),
}


def load(source, revision=None, dtype=None) -> LoopModel:
    """A LoopModel from a local HF dir (single or sharded safetensors), a hub id (+ revision), an orbax dir
    written by `loopjax convert`, or `builtin:ouro-tiny` / `builtin:huginn-tiny`.

    dtype=None keeps the stored weight dtype (bf16 stays bf16); arithmetic follows loopjax.dtypes.
    """
    import loopjax_convert

    kind, where = checkpoint.resolve(source, revision)
    if kind == "builtin":
        if where not in BUILTIN:
            raise ValueError(f"unknown built-in model {source!r}; choose one of "
                             f"{', '.join('builtin:' + n for n in BUILTIN)}")
        cfg, seed = BUILTIN[where]
        return random_model(config_from_hf(cfg), jax.random.key(seed), dtype)
    if kind == "orbax":
        return loopjax_convert.load_orbax(where, dtype)
    return loopjax_convert.load_hf(where, dtype)


def source_dir(source, revision=None) -> Path | None:
    """The local directory behind a source (hub snapshot for hub ids), None for built-ins."""
    kind, where = checkpoint.resolve(source, revision)
    return None if kind == "builtin" else Path(where)


def hf_config_of(source, revision, model: LoopModel) -> dict:
    """The HF config.json dict of a source (the checkpoint's own, verbatim, when there is one)."""
    where = source_dir(source, revision)
    return model.config.to_hf() if where is None else checkpoint.read_json(where / "config.json")
