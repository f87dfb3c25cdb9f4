"""Files written whole or not at all: `atomic_write_text` / `atomic_write_json` (temporary file in the same
folder, fsync, `os.replace`), and `to_jsonable` (numpy/jax values as plain JSON, non-finite floats as null).
The one implementation every writer in loopjax uses (run store, report, trainer)."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

UMASK = os.umask(0)  # the process umask (read once: os.umask can only be read by setting it)
os.umask(UMASK)


def _plain_numbers(x) -> bool:
    """A list/tuple of Python ints and finite floats only (already plain JSON: no per-element conversion)."""
    return all(type(v) is int or (type(v) is float and math.isfinite(v)) for v in x)


def to_jsonable(x: Any) -> Any:
    """numpy/jax scalars and arrays -> plain Python; non-finite floats -> None."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return list(x) if _plain_numbers(x) else [to_jsonable(v) for v in x]
    if isinstance(x, (str, bool)) or x is None:
        return x
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        return f if math.isfinite(f) else None
    if hasattr(x, "__array__"):
        a = np.asarray(x)
        if a.dtype.kind in "iub":
            return a.astype(np.int64).tolist() if a.dtype.kind != "b" else a.tolist()
        a = a.astype(np.float64)
        if a.ndim == 0:
            return to_jsonable(float(a))
        if np.all(np.isfinite(a)):
            return a.tolist()
        return to_jsonable(a.tolist())
    return x


def dumps(obj: Any, indent: int = 1) -> str:
    """JSON text of a plain-JSON value (`to_jsonable`'s output), one member or container element per line
    but every list of scalars on one line (an array row stays a row): readable, and written by the json
    module's C encoder (its indenting encoder is pure Python, a second per megabyte)."""
    flat = json.JSONEncoder(allow_nan=False).encode

    def enc(x, level):
        nested = isinstance(x, dict) or (isinstance(x, list) and any(isinstance(v, (dict, list)) for v in x))
        if not nested or not x:
            return flat(x)
        pad, end = " " * (indent * (level + 1)), " " * (indent * level)
        if isinstance(x, dict):
            body = ",\n".join(f"{pad}{flat(str(k))}: {enc(v, level + 1)}" for k, v in x.items())
            return "{\n" + body + "\n" + end + "}"
        return "[\n" + ",\n".join(pad + enc(v, level + 1) for v in x) + "\n" + end + "]"
    return enc(obj, 0)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file in the same folder, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not str(path) in str(e):
            raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, dumps(to_jsonable(obj)) + "\n")


__all__ = ["atomic_write_text", "atomic_write_json", "dumps", "to_jsonable"]
