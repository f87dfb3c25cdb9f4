"""Converters between HF checkpoints and loopjax params (import name: loopjax_convert).

One table per model (ouro.py, huginn.py): HF tensor name <-> param path, with the transform each needs.
Loading fills the abstract param tree (jax.eval_shape of the model's init): every checkpoint tensor is
consumed or listed as ignored, and all missing / unexpected / mis-shaped tensors are reported together.
"""
import json
import os
import re
import shutil
from functools import partial
from pathlib import Path

import jax
import numpy as np

from loopjax import checkpoint
from loopjax.dtypes import parse_dtype
from loopjax.model import LoopModel
from loopjax import models
from loopjax.models import architecture, config_from_hf
from loopjax_convert import huginn as huginn_table
from loopjax_convert import ouro as ouro_table

# model file -> its name table (the submodules above shadow the model names in this package)
TABLES = {models.ouro: ouro_table, models.huginn: huginn_table}
TRANSFORMS = {None: lambda w: w, "T": lambda w: w.T}
SHAPE_TRANSFORMS = {None: lambda s: tuple(s), "T": lambda s: tuple(reversed(s))}
SAFETENSORS_DTYPES = {"F32", "F16", "BF16", "F64"}
FORMAT_VERSION = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _compile(pattern: str):
    return re.compile(pattern.replace(".", r"\."))


def _template(pattern: str) -> str:
    """The substitution template of a table regex: its k-th group becomes \\k."""
    count = iter(range(1, 100))
    return re.sub(r"\([^()]*\)", lambda _: f"\\{next(count)}", pattern)


def _flat_paths(tree) -> dict[str, jax.ShapeDtypeStruct]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {".".join(k.key for k in path): leaf for path, leaf in flat}


def _unflatten(flat: dict):
    tree: dict = {}
    for path, leaf in flat.items():
        node = tree
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = leaf
    return tree


def abstract_params(config):
    return jax.eval_shape(partial(architecture(config).init_params, config), jax.random.key(0))


def plan(config, infos: dict[str, checkpoint.TensorInfo]):
    """HF name -> (param path, transform) for every used tensor, or one ValueError naming every offender."""
    table = TABLES[architecture(config)]
    expected = _flat_paths(abstract_params(config))
    ignored = [_compile(p) for p, _ in table.ignored(config)]
    rules = [(_compile(hf), _template(param), t) for hf, param, t in table.TABLE]
    mapping, unexpected, misshaped, bad_dtype = {}, [], [], []
    for name, info in sorted(infos.items()):
        if any(p.fullmatch(name) for p in ignored):
            continue
        rule = next(((rx, tpl, t) for rx, tpl, t in rules if rx.fullmatch(name)), None)
        path = rule[0].fullmatch(name).expand(rule[1]) if rule else None
        if path not in expected:
            unexpected.append(f"{name} {list(info.shape)}")
            continue
        if info.dtype not in SAFETENSORS_DTYPES:
            bad_dtype.append(f"{name} ({info.dtype})")
        shape = SHAPE_TRANSFORMS[rule[2]](info.shape)
        if shape != expected[path].shape:
            want = SHAPE_TRANSFORMS[rule[2]](expected[path].shape)
            misshaped.append(f"{name}: checkpoint {list(info.shape)}, config expects {list(want)}")
        mapping[name] = (path, rule[2])
    filled = {path for path, _ in mapping.values()}
    missing = sorted(set(expected) - filled)
    problems = [f"{len(v)} {what}:\n    " + "\n    ".join(v) for what, v in
                (("missing (param paths with no tensor)", missing), ("unexpected tensor(s)", unexpected),
                 ("mis-shaped tensor(s)", misshaped), ("tensor(s) of unsupported dtype", bad_dtype)) if v]
    if problems:
        raise ValueError(f"checkpoint does not match its config ({config.model_type}):\n  " + "\n  ".join(problems))
    return mapping


def load_hf(ckpt_dir, dtype=None) -> LoopModel:
    """An HF checkpoint directory (config.json + safetensors, single or sharded) -> LoopModel."""
    ckpt_dir = Path(ckpt_dir)
    config = config_from_hf(checkpoint.read_json(ckpt_dir / "config.json"))
    infos = checkpoint.tensor_index(ckpt_dir)
    mapping = plan(config, infos)
    tensors = checkpoint.read_tensors({n: infos[n] for n in mapping})
    flat = {path: TRANSFORMS[t](tensors[name]) for name, (path, t) in mapping.items()}
    return LoopModel(_unflatten(flat), config).astype(dtype)


def to_hf_tensors(model: LoopModel) -> dict[str, np.ndarray]:
    """The inverse table: loopjax params -> HF tensor names (for export and round-trip tests)."""
    table = TABLES[model.arch]
    rules = [(_compile(param), _template(hf), t) for hf, param, t in table.TABLE]
    out = {}
    for path, w in _flat_paths(model.params).items():
        rx, tpl, t = next((r for r in rules if r[0].fullmatch(path)), (None, None, None))
        if rx is None:
            raise ValueError(f"no HF name for param {path}")
        out[rx.fullmatch(path).expand(tpl)] = np.asarray(TRANSFORMS[t](w))
    return out


def save_hf(model: LoopModel, out_dir) -> Path:
    """Write an HF-format checkpoint directory (config.json + model.safetensors)."""
    from safetensors.flax import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: jax.numpy.asarray(v) for k, v in to_hf_tensors(model).items()}
    save_file(tensors, str(out_dir / "model.safetensors"))
    (out_dir / "config.json").write_text(json.dumps(model.config.to_hf(), indent=2))
    return out_dir


def save_orbax(model: LoopModel, out_dir, hf_config: dict, meta: dict | None = None, extra_files=()) -> Path:
    """Params as an orbax checkpoint + the HF config.json + loopjax.json (+ extra files such as the
    tokenizer), written atomically."""
    import orbax.checkpoint as ocp

    out_dir = Path(out_dir).resolve()
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new output directory")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(tmp / "params", model.params)
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2))
        for file in extra_files:
            shutil.copyfile(file, tmp / Path(file).name)
        (tmp / checkpoint.ORBAX_MARKER).write_text(json.dumps(
            {"format_version": FORMAT_VERSION, "model_type": model.model_type, **(meta or {})}, indent=2))
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def load_orbax(ckpt_dir, dtype=None) -> LoopModel:
    import orbax.checkpoint as ocp

    ckpt_dir = Path(ckpt_dir).resolve()
    config = config_from_hf(checkpoint.read_json(ckpt_dir / "config.json"))
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(ckpt_dir / "params")
    got, want = _flat_paths(params), _flat_paths(abstract_params(config))
    problems = sorted(f"{p}: {got[p].shape if p in got else 'missing'} vs expected "
                      f"{want[p].shape if p in want else 'none'}" for p in set(got) | set(want)
                      if p not in got or p not in want or got[p].shape != want[p].shape)
    if problems:
        raise ValueError(f"orbax checkpoint {ckpt_dir} does not match its config:\n  " + "\n  ".join(problems))
    return LoopModel(params, config).astype(dtype)


def convert(src, out, revision=None, dtype=None) -> Path:
    """`loopjax convert`: any source loopjax.load takes -> orbax checkpoint dir."""
    from loopjax.loading import hf_config_of, load, source_dir

    model = load(src, revision=revision, dtype=dtype)
    meta = {"source": str(src), "revision": revision, "dtype": None if dtype is None else str(parse_dtype(dtype).__name__)}
    where = source_dir(src, revision)
    extras = [where / name for name in TOKENIZER_FILES if where is not None and (where / name).exists()]
    return save_orbax(model, out, hf_config_of(src, revision, model), meta, extras)
