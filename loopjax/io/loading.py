"""loopjax.load: one entry point for every source, the built-in offline models, and `convert`."""
from pathlib import Path

import jax
import numpy as np

from loopjax.io import checkpoint
from loopjax.io import weights
from loopjax.engine.dtypes import parse_dtype
from loopjax.models.loop_model import LoopModel, random_model
from loopjax.models import config_from_hf
from loopjax.models.presets import preset

# Built-in models. Trained: tiny loop language models trained by `loopjax train` on CPython's documentation
# and shipped in loopjax/builtin_models/<name>/ (HF layout + tokenizer.json; regenerate with
# `python -m loopjax.train.builtins`). Random: the same kind of tiny shapes, randomly initialised by each
# architecture's own scheme from a fixed seed (preset, seed) -- fast, for tests and the engine.
BUILTIN_DIR = Path(__file__).parent.parent / "builtin_models"
TRAINED = ("ouro-tiny", "huginn-tiny", "huginn-tiny-noinject", "parcae-tiny", "huginn-tiny-inject-once")
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
    `builtin:parcae-tiny`, `builtin:huginn-tiny-inject-once` (trained, shipped), `builtin:ouro-tiny-random`, `builtin:huginn-tiny-random`,
    `builtin:parcae-tiny-random`.

    dtype=None keeps the stored weight dtype (bf16 stays bf16); arithmetic follows loopjax.engine.dtypes.
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


def tokenizer_files(source, revision=None) -> list[Path]:
    """The tokenizer files (tokenizer.json, tokenizer_config.json, ...) a source has, each checked to resolve
    inside its folder; [] for the random built-ins. What a converted checkpoint carries."""
    where = source_dir(source, revision)
    if where is None:
        return []
    return [checkpoint.confined(where, name, "tokenizer file") for name in weights.TOKENIZER_FILES
            if (where / name).is_file()]


def convert(src, out, revision=None, dtype=None) -> Path:
    """Any source `load` takes -> an orbax checkpoint dir that `load` reads back (tokenizer files kept)."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose a new output directory")
    model = load(src, revision=revision, dtype=dtype)
    meta = {"source": str(src), "revision": revision,
            "dtype": None if dtype is None else np.dtype(parse_dtype(dtype)).name}
    extras = tokenizer_files(src, revision)
    return weights.save_orbax(model, out, hf_config_of(src, revision, model), meta, extras)


def convert_to_hf(src, out, revision=None, dtype=None, shards: int = 1) -> Path:
    """Any source `load` takes -> an HF safetensors dir (config.json + `shards` files) with the source's
    tokenizer files, so the converted model tokenises prompts as the original does."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose a new output directory")
    model = load(src, revision=revision, dtype=dtype)
    return weights.save_hf(model, out, shards=shards, extra_files=tokenizer_files(src, revision))
