"""What every command sets up: the loaded model with its tokenizer and tokenised prompts, names,
software versions, the XLA compile cache."""
from __future__ import annotations

import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

import jax
import numpy as np

import loopjax
from loopjax.models.loop_model import check_ids
from loopjax.io.prompts import Prompt
from loopjax.cli.runstore import RunError
from loopjax.io.tokenizer import get_tokenizer


class CLIError(RunError):
    """A user error the CLI reports as one line (exit status 2)."""


def software_versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("loopjax", "jax", "jaxlib", "flax", "numpy", "orbax-checkpoint", "tokenizers", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    out["jax_backend"] = jax.default_backend()
    out["jax_x64"] = bool(jax.config.jax_enable_x64)
    return out


def model_name(source: str, revision: str | None = None) -> str:
    """A short, filesystem-safe name: builtin:ouro-tiny -> ouro-tiny, org/name -> name, dir -> basename."""
    s = str(source)
    name = s[len("builtin:"):] if s.startswith("builtin:") else (Path(s.rstrip("/\\")).name or s)
    if revision:
        name = f"{name}@{revision}"
    return re.sub(r"[^A-Za-z0-9._@+-]+", "_", name)


def parse_checkpoint_spec(spec: str) -> tuple[str, str | None]:
    """``path``, ``org/name`` or ``org/name@revision`` -> (source, revision)."""
    if os.path.exists(spec) or "@" not in spec:
        return spec, None
    src, rev = spec.rsplit("@", 1)
    if not src or not rev:
        raise CLIError(f"bad checkpoint spec {spec!r}: use PATH, ORG/NAME or ORG/NAME@REVISION")
    return src, rev


def check_source_exists(source: str) -> None:
    if source.startswith("builtin:"):
        return
    looks_local = source.startswith((".", "/", "~")) or source.count("/") != 1
    if looks_local and not os.path.exists(os.path.expanduser(source)):
        raise CLIError(f"model path {source!r} does not exist (and it is not a hub id ORG/NAME)")


def compile_cache_dir(environ=None) -> str | None:
    """The persistent XLA cache folder `enable_compile_cache` uses: ``LOOPJAX_COMPILE_CACHE`` when it names
    a folder; None (no persistent cache) when it is unset, empty or ``0``.

    Off by default: with jaxlib 0.10's CPU runtime and a persistent cache, `loopjax report --model
    builtin:parcae-tiny` waited forever on a program's output in its covariant-vector analysis (2 of 2 runs;
    without the cache 2 of 2 finished), and so did one report process in 3 of 5 `make run` runs. The cause
    inside jaxlib is not known."""
    env = os.environ if environ is None else environ
    where = env.get("LOOPJAX_COMPILE_CACHE", "")
    return None if where in ("", "0") else where


def enable_compile_cache() -> None:
    """Persistent XLA compilation cache (every prompt length is a new compilation; a rerun or a resumed
    run then skips them), when ``LOOPJAX_COMPILE_CACHE`` names a folder (see `compile_cache_dir`: off by
    default). A cache the user configured in jax already is left alone."""
    where = compile_cache_dir()
    if where is None or jax.config.jax_compilation_cache_dir:
        return
    try:
        os.makedirs(where, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", where)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    except Exception:  # a cache is an optimisation only
        pass


# glibc malloc hands every allocation above its mmap threshold (128 KiB, adaptive up to 32 MiB) to the kernel
# and back: each of XLA's per-call buffers (a (d, k) tangent block, a stacked trajectory) was then a fresh
# mapping whose pages fault in zeroed, and freeing it unmapped them again. On the built-in report that was
# ~6 million page faults per model, a quarter of the CPU time (in the kernel). Raised thresholds keep freed
# memory in the heap for the next call (numbers unchanged: only where buffers live).
MALLOC_OPTIONS = {"M_MMAP_THRESHOLD": (-3, 512 << 20),   # serve blocks up to 512 MiB from the heap
                  "M_TRIM_THRESHOLD": (-1, 1 << 30),     # return free heap memory only beyond 1 GiB
                  "M_TOP_PAD": (-2, 64 << 20)}           # grow the heap 64 MiB at a time


def tune_malloc(environ=None) -> bool:
    """Apply MALLOC_OPTIONS through glibc's mallopt (Linux with glibc only; LOOPJAX_MALLOC=default leaves malloc
    alone). Returns whether every option was applied. Called by the CLI at start; a library user may call it."""
    env = os.environ if environ is None else environ
    if env.get("LOOPJAX_MALLOC", "") == "default" or not sys.platform.startswith("linux"):
        return False
    import ctypes
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all([mallopt(code, value) == 1 for code, value in MALLOC_OPTIONS.values()])


class Loaded:
    """A loaded model, its tokenizer and the JSON description of the model."""

    def __init__(self, source: str, revision: str | None, dtype: str | None):
        check_source_exists(source)
        self.model = loopjax.load(source, revision=revision, dtype=dtype)
        cfg = self.model.config
        self.source, self.revision, self.dtype = source, revision, dtype
        self.name = model_name(source, revision)
        self.source_dir = loopjax.source_dir(source, revision)
        self.tokenizer = get_tokenizer(self.source_dir, cfg.vocab_size)
        if self.source_dir is not None and not hasattr(self.tokenizer, "tok"):
            print(f"loopjax: warning: {source} has no tokenizer.json; prompts are tokenised with the simple "
                  f"hash tokenizer (meaningless for a trained model)", file=sys.stderr)
        leaves = jax.tree_util.tree_leaves(self.model.params)
        self.info = {
            "source": source, "revision": revision, "name": self.name, "model_type": cfg.model_type,
            "architecture": self.model.arch.name, "hidden_size": int(cfg.hidden_size),
            "vocab_size": int(cfg.vocab_size), "default_steps": int(cfg.default_steps),
            "sublayers": list(self.model.sublayer_names), "dtype_requested": dtype,
            "param_dtypes": sorted({str(x.dtype) for x in leaves}), "num_params": self.model.num_params(),
            "source_dir": str(self.source_dir) if self.source_dir else None, "tokenizer": self.tokenizer.name,
            # a hub id resolves to .../snapshots/<commit>: record it, so a sweep can be repeated exactly
            "resolved_commit": (self.source_dir.name if self.source_dir is not None
                                and self.source_dir.parent.name == "snapshots" else None),
        }

    def pieces(self, ids: list[int]) -> list[str]:
        """A readable label per token id (the tokenizer's own piece; the id for the hash tokenizer)."""
        tok = getattr(self.tokenizer, "tok", None)
        if tok is None:
            return [str(i) for i in ids]
        return [tok.decode([int(i)]) or f"<{int(i)}>" for i in ids]

    def tokenize(self, prompts: list[Prompt], token_ids: bool = False) -> list[list[int]]:
        out = []
        for i, p in enumerate(prompts):
            what = f"prompt {i} ({p.text[:40]!r})"
            if token_ids:
                try:
                    ids = [int(t) for t in p.text.replace(",", " ").split()]
                except ValueError:
                    raise CLIError(f"{what}: --token-ids expects whitespace-separated integers") from None
                cause = "given with --token-ids"
            else:
                ids = self.tokenizer.encode(p.text)
                cause = f"the tokenizer ({self.tokenizer.name}) does not match the model"
            if not ids:
                raise CLIError(f"{what} tokenises to zero tokens")
            try:
                check_ids(self.model, np.asarray(ids), ndim=(1,), what=what)
            except ValueError as e:
                raise CLIError(f"{e}; {cause}") from None
            out.append([int(t) for t in ids])
        return out
