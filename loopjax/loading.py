"""loopjax.load: one entry point for every source, the built-in offline models, and `convert`."""
from pathlib import Path

import jax
import numpy as np

from loopjax import checkpoint, weights
from loopjax.dtypes import parse_dtype
from loopjax.model import LoopModel, random_model
from loopjax.models import config_from_hf
from loopjax.models.presets import preset

# Built-in models: tiny, randomly initialised by each architecture's own scheme from a fixed seed.
BUILTIN = {"ouro-tiny": ("ouro-tiny", 0), "huginn-tiny": ("huginn-tiny", 0)}


def load(source, revision=None, dtype=None) -> LoopModel:
    """A LoopModel from a local HF dir (single or sharded safetensors), a hub id (+ revision), an orbax dir
    written by `loopjax convert`, or `builtin:ouro-tiny` / `builtin:huginn-tiny`.

    dtype=None keeps the stored weight dtype (bf16 stays bf16); arithmetic follows loopjax.dtypes.
    """
    parse_dtype(dtype)  # a bad dtype fails before anything is read
    kind, where = checkpoint.resolve(source, revision)
    if kind == "builtin":
        if where not in BUILTIN:
            raise ValueError(f"unknown built-in model {source!r}; choose one of "
                             f"{', '.join('builtin:' + n for n in BUILTIN)}")
        name, seed = BUILTIN[where]
        return random_model(config_from_hf(preset(name)), jax.random.key(seed), dtype)
    if kind == "orbax":
        return weights.load_orbax(where, dtype)
    return weights.load_hf(where, dtype)


def source_dir(source, revision=None) -> Path | None:
    """The local directory behind a source (hub snapshot for hub ids), None for built-ins."""
    kind, where = checkpoint.resolve(source, revision)
    return None if kind == "builtin" else Path(where)


def hf_config_of(source, revision, model: LoopModel) -> dict:
    """The HF config.json dict of a source (the checkpoint's own, verbatim, when there is one)."""
    where = source_dir(source, revision)
    return model.config.to_hf() if where is None else checkpoint.read_json(where / "config.json")


def convert(src, out, revision=None, dtype=None) -> Path:
    """Any source `load` takes -> an orbax checkpoint dir that `load` reads back (tokenizer files kept)."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose a new output directory")
    model = load(src, revision=revision, dtype=dtype)
    meta = {"source": str(src), "revision": revision,
            "dtype": None if dtype is None else np.dtype(parse_dtype(dtype)).name}
    where = source_dir(src, revision)
    extras = [where / name for name in weights.TOKENIZER_FILES if where is not None and (where / name).exists()]
    return weights.save_orbax(model, out, hf_config_of(src, revision, model), meta, extras)
