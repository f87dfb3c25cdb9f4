"""The regime summary: per prompt the verdict of `loopjax.regime` (kind, period, horizon, λ1 ± se, the
transient), and counts of verdicts over the prompt set. λ1 is averaged only within one kind of verdict."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from loopjax.engine.regime import Regime
from loopjax.engine.stats import standard_error
from loopjax.summary.base import Summary, as_float, register


def _label(kind: str, period) -> str:
    return f"periodic-{period}" if kind == "periodic" else kind


@dataclasses.dataclass(frozen=True)
class RegimeSummary(Summary):
    kind: ClassVar[str] = "regime"
    n_prompts: int
    kinds: list            # per prompt
    periods: list
    horizons: list         # Benettin steps each verdict used (adaptive, up to the cap)
    transients: list
    lambda1: list
    lambda1_se: list
    counts: dict           # label -> number of prompts (periodic-p labels carry the period)
    lambda1_by_kind: dict  # label -> {"mean", "sem", "n"}: λ1 averaged within one verdict only
    horizon_min: int
    horizon_max: int

    def rows(self):
        rows = [("prompts", str(self.n_prompts)),
                ("verdicts", ", ".join(f"{k} {n}" for k, n in self.counts.items())),
                ("horizon used (steps, adaptive)", f"{self.horizon_min} … {self.horizon_max}")]
        for label, s in self.lambda1_by_kind.items():
            sem = "" if s["sem"] is None else f" ± {s['sem']:.4f} s.e."
            rows.append((f"λ1 over the {s['n']} {label} prompts", f"{s['mean']:+.4f}{sem}"))
        for i, (k, p, h, lam, se) in enumerate(zip(self.kinds, self.periods, self.horizons, self.lambda1,
                                                    self.lambda1_se)):
            se_txt = "" if se is None else f" ± {se:.1e}"
            rows.append((f"prompt {i}", f"{_label(k, p)}, λ1 {lam:+.5f}{se_txt} at T={h}"))
        return rows


def _by_kind(labels, lam) -> dict:
    out = {}
    for label in dict.fromkeys(labels):
        v = np.asarray([x for x, l in zip(lam, labels) if l == label and x is not None], np.float64)
        out[label] = {"mean": as_float(v.mean()) if v.size else None,
                      "sem": as_float(standard_error(v)) if v.size > 1 else None, "n": int(v.size)}
    return out


@register("regime", RegimeSummary, Regime)
def summarize_regime(results) -> RegimeSummary:
    rs = [r if isinstance(r, Regime) else Regime.from_json(r) for r in results]
    labels = [_label(r.kind, r.period) for r in rs]
    lam = [None if not np.isfinite(r.lambda1) else float(r.lambda1) for r in rs]
    return RegimeSummary(
        n_prompts=len(rs), kinds=[r.kind for r in rs], periods=[r.period for r in rs],
        horizons=[int(r.horizon) for r in rs], transients=[r.transient for r in rs], lambda1=lam,
        lambda1_se=[None if not np.isfinite(r.lambda1_se) else float(r.lambda1_se) for r in rs],
        counts={k: labels.count(k) for k in dict.fromkeys(labels)}, lambda1_by_kind=_by_kind(labels, lam),
        horizon_min=min(int(r.horizon) for r in rs), horizon_max=max(int(r.horizon) for r in rs))
