"""Params <-> checkpoint files through each architecture's HF name table (loopjax/models/<name>/params.py).

Loading fills the abstract param tree (jax.eval_shape of the model's init): every checkpoint tensor is
consumed or listed as ignored, and all missing / unexpected / mis-shaped tensors are reported together.
File formats (safetensors, orbax) are read and written by loopjax.io.checkpoint.
"""
import asyncio
import contextlib
import re
import threading
from functools import partial
from pathlib import Path

import jax
import numpy as np

from loopjax.io import checkpoint
from loopjax.io.tokenizer import TOKENIZER_FILES  # noqa: F401  (re-exported: the one list)
from loopjax.models.loop_model import LoopModel
from loopjax.models import BY_CLASS_NAME, BY_MODEL_TYPE, architecture, config_from_hf

TRANSFORMS = {None: lambda w: w, "T": lambda w: w.T}
SHAPE_TRANSFORMS = {None: lambda s: tuple(s), "T": lambda s: tuple(reversed(s))}
SAFETENSORS_DTYPES = {"F32", "F16", "BF16", "F64"}
FORMAT_VERSION = 1
SHOW = 5  # offenders listed per kind of mismatch; the rest are counted


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


def _listing(what: str, items: list[str]) -> str:
    more = f"\n    ... and {len(items) - SHOW} more" if len(items) > SHOW else ""
    return f"{len(items)} {what}:\n    " + "\n    ".join(items[:SHOW]) + more


def plan(config, infos: dict[str, checkpoint.TensorInfo]):
    """HF name -> (param path, transform) for every used tensor, or one ValueError naming every offender."""
    arch = architecture(config)
    expected = _flat_paths(abstract_params(config))
    ignored = [_compile(p) for p, _ in arch.ignored(config)]
    rules = [(_compile(hf), _template(param), t) for hf, param, t in arch.table]
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
            bad_dtype.append(f"{name} {list(info.shape)}: stored as {info.dtype}, expected one of "
                             f"{', '.join(sorted(SAFETENSORS_DTYPES))}")
        shape = SHAPE_TRANSFORMS[rule[2]](info.shape)
        if shape != expected[path].shape:
            want = SHAPE_TRANSFORMS[rule[2]](expected[path].shape)
            misshaped.append(f"{name}: checkpoint {list(info.shape)}, config expects {list(want)}")
        mapping[name] = (path, rule[2])
    filled = {path for path, _ in mapping.values()}
    missing = sorted(set(expected) - filled)
    problems = [_listing(what, v) for what, v in
                (("missing (param paths with no tensor)", missing), ("unexpected tensor(s)", unexpected),
                 ("mis-shaped tensor(s)", misshaped), ("tensor(s) of unsupported dtype", bad_dtype)) if v]
    if problems:
        raise ValueError(f"checkpoint does not match its config ({config.model_type}): "
                         + "; ".join(p.split(":")[0] for p in problems) + "\n  " + "\n  ".join(problems))
    return mapping


def read_config(ckpt_dir):
    """The config dataclass of a checkpoint directory's config.json; a config without `model_type` is
    refused saying so, with what the architectures it names and the model types loopjax reads."""
    path = Path(ckpt_dir) / "config.json"
    cfg = checkpoint.read_json(path)
    class_name = cfg.get("_class_name") or cfg.get("model_class_name")
    if cfg.get("model_type") in (None, "") and class_name not in BY_CLASS_NAME:
        named = (f" (it names architectures {cfg['architectures']})" if cfg.get("architectures") else
                 f" (its _class_name {class_name!r} is not one loopjax reads)" if class_name else "")
        raise ValueError(f"{path} has no 'model_type'{named}, so loopjax cannot tell which model it is; loopjax "
                         f"supports model_type {', '.join(sorted(BY_MODEL_TYPE))} (or, without one, _class_name "
                         f"{', '.join(sorted(BY_CLASS_NAME))})")
    return config_from_hf(cfg)


def check_finite(tensors: dict, where) -> None:
    """ValueError naming every tensor (up to SHOW) that holds NaN or inf, with the counts; integer tensors
    are skipped. `where` (the checkpoint) prefixes the message."""
    bad = []
    for name in sorted(tensors):
        t = tensors[name]
        if not jax.numpy.issubdtype(t.dtype, jax.numpy.inexact) or bool(jax.numpy.isfinite(t).all()):
            continue
        a = np.asarray(t, dtype=np.float32)
        bad.append(f"{name} {list(a.shape)}: {int(np.isnan(a).sum())} NaN, {int(np.isinf(a).sum())} inf")
    if bad:
        more = f"; ... and {len(bad) - SHOW} more" if len(bad) > SHOW else ""
        raise ValueError(f"{where}: non-finite weights in {len(bad)} tensor(s): {'; '.join(bad[:SHOW])}{more}; "
                         f"the checkpoint is corrupt")


def load_hf(ckpt_dir, dtype=None) -> LoopModel:
    """An HF checkpoint directory (config.json + safetensors, single or sharded) -> LoopModel. Shards
    outside the directory and non-finite weights are refused, naming the entry / tensor."""
    ckpt_dir = Path(ckpt_dir)
    config = read_config(ckpt_dir)
    infos = checkpoint.tensor_index(ckpt_dir)
    mapping = plan(config, infos)
    tensors = checkpoint.read_tensors({n: infos[n] for n in mapping})
    check_finite(tensors, ckpt_dir)
    flat = {path: TRANSFORMS[t](tensors[name]) for name, (path, t) in mapping.items()}
    return LoopModel(_unflatten(flat), config).astype(dtype)


def to_hf_tensors(model: LoopModel) -> dict[str, np.ndarray]:
    """The inverse table: loopjax params -> HF tensor names (for export and round-trip tests)."""
    rules = [(_compile(param), _template(hf), t) for hf, param, t in model.arch.table]
    out = {}
    for path, w in _flat_paths(model.params).items():
        rx, tpl, t = next((r for r in rules if r[0].fullmatch(path)), (None, None, None))
        if rx is None:
            raise ValueError(f"no HF name for param {path}")
        out[rx.fullmatch(path).expand(tpl)] = TRANSFORMS[t](w)
    return out


def save_hf(model: LoopModel, out_dir, *, shards: int = 1, extra_files=(), overwrite: bool = False) -> Path:
    """Write an HF-format checkpoint directory (config.json + safetensors) that `load` reads back."""
    return checkpoint.write_hf_checkpoint(out_dir, model.config.to_hf(), to_hf_tensors(model), shards=shards,
                                          extra_files=extra_files, overwrite=overwrite)


_DRAIN_LOCK = threading.Lock()


def _draining_run(run):
    """orbax's `_run_sync_via_new_loop`, except that when the coroutine fails, the tasks it leaves behind
    (the other arrays' reads and writes) are awaited before the loop is closed. Without this they finish on
    a closed loop and print dozens of 'Event loop is closed' / 'exception was never retrieved' tracebacks
    after loopjax has already reported the error in one line."""

    def run_sync_via_new_loop(coro):
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            return loop.run_until_complete(coro)
        except BaseException:
            for _ in range(100):
                pending = asyncio.all_tasks(loop)
                if not pending:
                    break
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            raise
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    run_sync_via_new_loop.loopjax_original = run
    return run_sync_via_new_loop


@contextlib.contextmanager
def orbax_drained():
    """Within this block a failing orbax read or write raises its error and leaves nothing running
    (see `_draining_run`). A no-op if this orbax version runs its coroutines differently."""
    try:
        from orbax.checkpoint._src import asyncio_utils
    except ImportError:
        yield
        return
    with _DRAIN_LOCK:
        original = getattr(asyncio_utils, "_run_sync_via_new_loop", None)
        if original is None or hasattr(original, "loopjax_original"):  # other orbax, or already drained
            original = None
        else:
            asyncio_utils._run_sync_via_new_loop = _draining_run(original)
    if original is None:
        yield
        return
    try:
        yield
    finally:
        with _DRAIN_LOCK:
            asyncio_utils._run_sync_via_new_loop = original


def save_orbax(model: LoopModel, out_dir, hf_config: dict, meta: dict | None = None, extra_files=()) -> Path:
    """Params as an orbax checkpoint + the HF config.json + loopjax.json (+ e.g. the tokenizer), atomically."""
    with orbax_drained():
        return checkpoint.write_orbax_checkpoint(
            out_dir, model.params, hf_config, {"format_version": FORMAT_VERSION, "model_type": model.model_type,
                                               **(meta or {})}, extra_files)


def load_orbax(ckpt_dir, dtype=None) -> LoopModel:
    """An orbax directory written by `save_orbax` / `loopjax convert` -> LoopModel (shapes checked)."""
    ckpt_dir = Path(ckpt_dir).resolve()
    config = read_config(ckpt_dir)
    with orbax_drained():
        params = checkpoint.read_orbax_params(ckpt_dir)  # restored in the stored dtypes
    check_finite(_flat_paths(params), ckpt_dir)
    got, want = _flat_paths(params), _flat_paths(abstract_params(config))
    problems = sorted(f"{p}: {got[p].shape if p in got else 'missing'} vs expected "
                      f"{want[p].shape if p in want else 'none'}" for p in set(got) | set(want)
                      if p not in got or p not in want or got[p].shape != want[p].shape)
    if problems:
        raise ValueError(f"orbax checkpoint {ckpt_dir} does not match its config.json: "
                         + _listing("param(s) differ", problems))
    return LoopModel(params, config).astype(dtype)
