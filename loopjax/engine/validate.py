"""Argument checks shared by every layer: one message format, raised before any work is done."""
from __future__ import annotations

import numpy as np

__all__ = ["check_int", "check_positive"]


def check_int(name: str, value, lo: int = 0, *, hi: int | None = None, error: type[Exception] = ValueError) -> int:
    """`value` as an int after checking it is an integer (not a bool) in [lo, hi]; otherwise raises
    `error("<name> must be an integer >= lo, got value")` (or "... in [lo, hi]" when hi is given)."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= lo
          and (hi is None or value <= hi))
    if not ok:
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise error(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def check_positive(name: str, value, *, error: type[Exception] = ValueError) -> int:
    """`check_int(name, value, 1)`: a count (steps, k, batch size, ...)."""
    return check_int(name, value, 1, error=error)
