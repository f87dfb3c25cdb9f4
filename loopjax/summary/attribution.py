"""The attribution summary: each sublayer's contribution to λ1 over prompts."""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Sequence

import numpy as np

from loopjax.engine.lyapunov import LyapunovResult
from loopjax.summary.base import Summary, as_float, as_list, plus_minus, register


@dataclasses.dataclass(frozen=True)
class AttributionSummary(Summary):
    kind: ClassVar[str] = "attribution"
    names: list
    n_prompts: int
    k: int
    steps: int
    lambda1_contribution_mean: list      # per sublayer, direction 1
    lambda1_contribution_std: list
    lambda1_cumulative_mean: list        # cumulative λ1 through the loop
    lambda1_total_mean: float            # = sum of the contributions
    lambda1_total_std: float
    largest_expanding_sublayer: str
    largest_contracting_sublayer: str
    exponents_mean: list                 # (n_sub, k)
    total_exponents_mean: list           # (k,) the full-step spectrum (relative: contributions + net growth)
    relative: bool = False               # gauge-relative: each sublayer's own state growth subtracted
    net_state_growth_mean: float = 0.0   # relative: Σ_sublayers log(‖z_out‖/‖z_in‖) per step (≈ 0 when bounded)

    def rows(self):
        form = ("gauge-relative (each sublayer's state growth log‖z_out‖/‖z_in‖ subtracted: unchanged by a "
                "rescaling between sublayers that leaves f unchanged; still not coordinate-free)" if self.relative
                else "plain (coordinate-dependent: a rescaling between sublayers moves the contributions)")
        rows = [("form", form),
                ("λ1 total = sum of sublayer contributions (mean ± std)",
                 plus_minus(self.lambda1_total_mean, self.lambda1_total_std))]
        if self.relative:
            rows.append(("net state growth per step (contributions + it = the loop's λ1)",
                         f"{self.net_state_growth_mean:+.2e}"))
        rows += [
                ("largest expansion", self.largest_expanding_sublayer),
                ("largest contraction", self.largest_contracting_sublayer)]
        rows += [(f"  {n}", f"{plus_minus(m, sd)}  (cumulative {c:+.4f})") for n, m, sd, c in
                 zip(self.names, self.lambda1_contribution_mean, self.lambda1_contribution_std,
                     self.lambda1_cumulative_mean)]
        return rows


@register("attribution", AttributionSummary, LyapunovResult, accepts=lambda r: r.names is not None)
def summarize_attribution(results: Sequence[LyapunovResult]) -> AttributionSummary:
    names = list(results[0].names)
    ex = np.stack([np.asarray(r.exponents, dtype=np.float64) for r in results])  # (P, n_sub, k)
    c1 = ex[:, :, 0]
    cum = np.cumsum(c1, axis=1)
    return AttributionSummary(
        names=names, n_prompts=int(ex.shape[0]), k=int(ex.shape[2]), steps=int(results[0].log_growth.shape[0]),
        lambda1_contribution_mean=as_list(c1.mean(0)), lambda1_contribution_std=as_list(c1.std(0)),
        lambda1_cumulative_mean=as_list(cum.mean(0)), lambda1_total_mean=as_float(cum[:, -1].mean()),
        lambda1_total_std=as_float(cum[:, -1].std()),
        largest_expanding_sublayer=names[int(np.argmax(c1.mean(0)))],
        largest_contracting_sublayer=names[int(np.argmin(c1.mean(0)))],
        exponents_mean=as_list(ex.mean(0)),
        total_exponents_mean=as_list(np.mean([np.asarray(r.total(), dtype=np.float64) for r in results], axis=0)),
        relative=bool(results[0].relative),
        net_state_growth_mean=as_float(np.mean([np.asarray(r.net_state_growth(), dtype=np.float64)
                                                if r.relative else 0.0 for r in results])))
