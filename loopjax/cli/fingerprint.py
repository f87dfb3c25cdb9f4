"""Fingerprints of what a run reads: the weights, the tokenizer and the prompts.

A fingerprint is ``"sha256:<hex>"`` over file contents, streamed in 1 MiB blocks (so replaced weights are
detected whatever their size, date or name):

* weights: for an HF checkpoint, config.json, model.safetensors.index.json (if any) and every safetensors file
  the loader reads (`loopjax.io.checkpoint.tensor_index`), each as (file name, size, sha256 of its bytes);
  for an orbax checkpoint, config.json, loopjax.json and every file under params/; for a random built-in,
  its name (the weights are a function of it).
* tokenizer: the bytes of tokenizer.json / tokenizer_config.json / special_tokens_map.json that exist, or the
  name of the simple hash tokenizer (a function of the vocabulary size, which the name includes).
* prompts: the canonical JSON of the units (text, register, token ids of every prompt).

`RunStore(fingerprint=run_fingerprint(...))` records them; ``--resume`` compares and names the one that differs.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from loopjax.io import checkpoint
from loopjax.io.tokenizer import TOKENIZER_FILES

BLOCK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(BLOCK):
                h.update(block)
    except OSError as e:
        raise OSError(f"cannot read {path} to fingerprint it: {e.strerror or e}") from None
    return h.hexdigest()


def _combine(ckpt_dir: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(set(files), key=lambda p: str(p)):
        name = str(f.relative_to(ckpt_dir)) if f.is_relative_to(ckpt_dir) else f.name
        h.update(f"{name}\0{f.stat().st_size}\0{file_sha256(f)}\n".encode())
    return "sha256:" + h.hexdigest()


def weight_files(ckpt_dir: str | Path) -> list[Path]:
    """The files the loader reads weights and config from (see the module docstring)."""
    ckpt_dir = Path(ckpt_dir)
    files = [ckpt_dir / "config.json"]
    if (ckpt_dir / checkpoint.ORBAX_MARKER).is_file():
        files.append(ckpt_dir / checkpoint.ORBAX_MARKER)
        files += [p for p in (ckpt_dir / checkpoint.ORBAX_PARAMS).rglob("*") if p.is_file()]
        return files
    if (ckpt_dir / checkpoint.INDEX_FILE).is_file():
        files.append(ckpt_dir / checkpoint.INDEX_FILE)
    files += sorted({info.file for info in checkpoint.tensor_index(ckpt_dir).values()})
    return files


def weights_fingerprint(source_dir: str | Path | None, source: str | None = None) -> str:
    """The weights' fingerprint: over `weight_files(source_dir)`; for a source without files (a random
    built-in, source_dir None) its name."""
    if source_dir is None:
        return f"builtin:{source}"
    return _combine(Path(source_dir), weight_files(source_dir))


def tokenizer_fingerprint(source_dir: str | Path | None, tokenizer) -> str:
    """The tokenizer's fingerprint: its files in source_dir when it was loaded from one, else its name."""
    if source_dir is not None and getattr(tokenizer, "path", None) is not None:
        files = [Path(source_dir) / n for n in TOKENIZER_FILES if (Path(source_dir) / n).is_file()]
        return _combine(Path(source_dir), files)
    return f"name:{tokenizer.name}"


def prompts_fingerprint(units: list[tuple[str, dict]] | list[dict] | Any) -> str:
    """sha256 of the canonical JSON of the prompts (or units) given."""
    from loopjax.cli.runstore import canonical

    text = json.dumps(canonical(units), sort_keys=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def run_fingerprint(source_dir, tokenizer, units, source: str | None = None) -> dict:
    """{"weights", "tokenizer", "prompts"}: what RunStore records and --resume compares."""
    return {"weights": weights_fingerprint(source_dir, source), "tokenizer": tokenizer_fingerprint(source_dir,
            tokenizer), "prompts": prompts_fingerprint(units)}
