"""The summary base class, small float helpers and the registry: each result type is registered with the
summariser of its analysis, so `summarize` looks a result's kind up instead of guessing it.

A registration says: results of Python type T (optionally only those a predicate accepts, e.g. a
`LyapunovResult` with sublayer names is an attribution) are summarised by function F into Summary class
S under the name `kind`. Plain dicts (similarity, convergence and per-token results as read back from
JSON) carry no type of their own: `summarize(dicts, kind=...)` names their kind explicitly.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from loopjax.engine.lyapunov import LyapunovResult
from loopjax.engine.dynamics import OrbitType


def as_float(x) -> float:
    return float(np.asarray(x, dtype=np.float64))


def as_list(x) -> list:
    return np.asarray(x, dtype=np.float64).tolist()


def plus_minus(mean: float, std: float) -> str:
    return f"{mean:+.4f} ± {std:.4f}"


class Summary:
    kind: ClassVar[str] = ""

    def to_json(self) -> dict:
        out = {"kind": self.kind}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = None if isinstance(v, float) and not math.isfinite(v) else v
        return out

    @classmethod
    def from_json(cls, d: dict):
        """Inverse of to_json: a null in a float field is NaN again; other nulls stay None."""
        floats = {f.name for f in dataclasses.fields(cls) if f.type in ("float", float)}
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (math.nan if v is None and k in floats else v) for k, v in d.items() if k in names})

    def rows(self) -> list[tuple[str, str]]:
        raise NotImplementedError


# ---- orbit types ------------------------------------------------------------------------------------------

def orbit_json(o: OrbitType | dict) -> dict:
    return o if isinstance(o, dict) else o.to_json()


def orbit_label(o: OrbitType | dict) -> str:
    """'fixed', 'periodic-2', 'chaotic', ... (the period is part of a periodic orbit's label)."""
    o = orbit_json(o)
    return o["kind"] + (f"-{o['period']}" if o["kind"] == "periodic" else "")


def orbit_counts(orbits: Sequence[OrbitType | dict]) -> dict[str, int]:
    """{label: number of prompts} in order of first appearance."""
    labels = [orbit_label(o) for o in orbits]
    return {k: labels.count(k) for k in dict.fromkeys(labels)}


# ---- the registry -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Registration:
    kind: str
    summary_class: type
    summarise: Callable[..., Summary]
    result_types: tuple[type, ...]
    accepts: Callable[[Any], bool] = lambda result: True


REGISTRY: dict[str, Registration] = {}


def register(kind: str, summary_class: type, *result_types: type, accepts: Callable[[Any], bool] | None = None):
    """Decorator: the summariser of `kind`, for results of `result_types` (that `accepts` takes)."""
    def wrap(fn):
        if kind in REGISTRY:
            raise ValueError(f"summary kind {kind!r} is registered twice")
        REGISTRY[kind] = Registration(kind, summary_class, fn, tuple(result_types), accepts or (lambda r: True))
        return fn
    return wrap


def kind_of(result) -> str:
    """The registered kind of one per-prompt result (by its type); ValueError for unregistered types."""
    for reg in REGISTRY.values():
        if isinstance(result, reg.result_types) and reg.accepts(result):
            return reg.kind
    if isinstance(result, dict):
        raise ValueError(f"a plain dict result (keys {sorted(result)[:6]}) does not say its analysis: pass kind= "
                         f"(one of {sorted(REGISTRY)})")
    raise ValueError(f"cannot summarize results of type {type(result).__name__}; pass kind= (one of "
                     f"{sorted(REGISTRY)})")


def unbatch(results) -> list:
    """A batched LyapunovResult (leading prompt axis) -> one result per prompt; a list stays a list."""
    if isinstance(results, LyapunovResult):
        per_prompt_ndim = 1 if results.names is None else 2
        if results.exponents.ndim == per_prompt_ndim:
            return [results]
        import jax

        return [jax.tree.map(lambda x, i=i: x[i], results) for i in range(results.exponents.shape[0])]
    return list(results)


def summarize(results, kind: str | None = None, **extra) -> Summary:
    """The summary of one analysis over prompts: `results` is the list of per-prompt results of one
    analysis (a batched LyapunovResult counts as its rows; an AblationResult is summarised whole). The kind
    is looked up from the results' type (see the module docstring); plain dicts need `kind=`. Spectrum
    summaries also take `orbits=` and `probe_seed_results=` (per prompt)."""
    whole = [reg for reg in REGISTRY.values() if reg.kind == "ablation" and isinstance(results, reg.result_types)]
    if whole and kind in (None, "ablation"):
        return whole[0].summarise(results, **extra)
    results = unbatch(results)
    if not results:
        raise ValueError("summarize needs at least one per-prompt result")
    kind = kind or kind_of(results[0])
    if kind not in REGISTRY:
        raise ValueError(f"unknown analysis {kind!r}; one of {sorted(REGISTRY)}")
    return REGISTRY[kind].summarise(results, **extra)


def summary_from_json(d: dict) -> Summary:
    """Read back a summary written by `Summary.to_json()` (results.json["summary"])."""
    if d.get("kind") not in REGISTRY:
        raise ValueError(f"unknown summary kind {d.get('kind')!r}; one of {sorted(REGISTRY)}")
    return REGISTRY[d["kind"]].summary_class.from_json(d)
