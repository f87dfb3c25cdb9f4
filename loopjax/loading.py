"""loopjax.load: one entry point for every source, the built-in offline models, and `convert`."""
from pathlib import Path

import jax
import numpy as np

from loopjax import checkpoint, weights
from loopjax.dtypes import parse_dtype
from loopjax.model import LoopModel, random_model
from loopjax.models import config_from_hf
from loopjax.models.presets import preset

# Built-in models. Trained: tiny loop language models trained by `loopjax train` on CPython's documentation
# and shipped in loopjax/builtin_models/<name>/ (HF layout + tokenizer.json; regenerate with
# `python -m loopjax.train.builtins`). Random: the same kind of tiny shapes, randomly initialised by each
# architecture's own scheme from a fixed seed (preset, seed) -- fast, for tests and the engine.
BUILTIN_DIR = Path(__file__).parent / "builtin_models"
TRAINED = ("ouro-tiny", "huginn-tiny", "huginn-tiny-noinject", "parcae-tiny")
RANDOM = {"ouro-tiny-random": ("ouro-tiny", 0), "huginn-tiny-random": ("huginn-tiny", 0),
          "parcae-tiny-random": ("parcae-tiny", 0)}
BUILTIN = (*TRAINED, *RANDOM)


def _builtin(name: str, source) -> tuple[str, object]:
    if name in RANDOM:
        return "random", RANDOM[name]
    if name in TRAINED:
        return "hf", BUILTIN_DIR / name
    raise ValueError(f"unknown built-in model {source!r}; choose one of {', '.join('builtin:' + n for n in BUILTIN)}")


def load(source, revision=None, dtype=None) -> LoopModel:
    """A LoopModel from a local HF dir (single or sharded safetensors, or a PyTorch `pytorch_model.bin` read by
    the restricted reader loopjax.io.torch_pickle), a hub id (+ revision), an orbax dir written by
    `loopjax convert`, or a built-in: `builtin:ouro-tiny`, `builtin:huginn-tiny`, `builtin:huginn-tiny-noinject`,
    `builtin:parcae-tiny` (trained, shipped), `builtin:ouro-tiny-random`, `builtin:huginn-tiny-random`,
    `builtin:parcae-tiny-random`.

    dtype=None keeps the stored weight dtype (bf16 stays bf16); arithmetic follows loopjax.dtypes.
    """
    parse_dtype(dtype)  # a bad dtype fails before anything is read
    kind, where = checkpoint.resolve(source, revision)
    if kind == "builtin":
        kind, where = _builtin(where, source)
        if kind == "random":
            name, seed = where
            return random_model(config_from_hf(preset(name)), jax.random.key(seed), dtype)
    if kind == "orbax":
        return weights.load_orbax(where, dtype)
    return weights.load_hf(where, dtype)


def source_dir(source, revision=None) -> Path | None:
    """The local directory behind a source (hub snapshot for hub ids, the package folder of a trained
    built-in), None for the random built-ins."""
    kind, where = checkpoint.resolve(source, revision)
    if kind == "builtin":
        kind, where = _builtin(where, source)
    return None if kind == "random" else Path(where)


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
