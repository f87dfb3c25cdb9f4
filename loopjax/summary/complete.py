"""The complete-spectrum summary: per prompt only (the state size d = L·H differs between prompts, so a
Kaplan–Yorke dimension or an entropy bound is never averaged over prompts)."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from loopjax.engine.complete import CompleteSpectrum
from loopjax.summary.base import Summary, register


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


@dataclasses.dataclass(frozen=True)
class CompleteSummary(Summary):
    """All d exponents per prompt (`loopjax.complete_spectrum`). Lists are per prompt, in prompt order; the
    sum, Kaplan–Yorke dimension and Ruelle bound (sum of positive exponents, h_KS <= Σλ⁺) are over the finite
    exponents, the structural ones (-inf) are counted apart."""
    kind: ClassVar[str] = "complete"
    n_prompts: int
    method: str
    steps: int
    warmup: int
    d: list
    lambda1: list
    n_positive: list
    n_structural: list
    declared_structural: list
    structural_reason: str | None
    sum_finite: list
    kaplan_yorke: list
    ruelle_bound: list

    def rows(self):
        rows = [("prompts", str(self.n_prompts)),
                ("method, horizon", f"{self.method}, T={self.steps} after {self.warmup} warm-up steps"),
                ("structural exponents (-inf)", f"{self.n_structural} (declared {self.declared_structural}: "
                                                f"{self.structural_reason or 'none declared'})")]
        for i in range(self.n_prompts):
            ky = self.kaplan_yorke[i]
            rows.append((f"prompt {i} (d = {self.d[i]})",
                         f"λ1 {_fmt(self.lambda1[i])}, {self.n_positive[i]} positive, sum of finite "
                         f"{_fmt(self.sum_finite[i])}, Kaplan–Yorke {'n/a' if ky is None else f'{ky:.2f}'}, "
                         f"Ruelle bound {self.ruelle_bound[i]:.4f}"))
        return rows


@register("complete", CompleteSummary, CompleteSpectrum)
def summarize_complete(results) -> CompleteSummary:
    rs = [r if isinstance(r, CompleteSpectrum) else CompleteSpectrum.from_json(r) for r in results]
    ky = [r.to_json()["kaplan_yorke"] for r in rs]
    return CompleteSummary(
        n_prompts=len(rs), method=rs[0].method, steps=int(rs[0].steps), warmup=int(rs[0].warmup),
        d=[int(r.d) for r in rs], lambda1=[float(r.finite[0]) if r.finite.size else None for r in rs],
        n_positive=[int((r.finite > 0).sum()) for r in rs], n_structural=[int(r.n_structural) for r in rs],
        declared_structural=[r.declared_structural for r in rs], structural_reason=rs[0].structural_reason,
        sum_finite=[float(r.sum) for r in rs], kaplan_yorke=ky, ruelle_bound=[float(r.entropy_bound) for r in rs])
