"""The summary of the per-prompt dynamics readouts: covariant Lyapunov vectors (angles, localisation,
CLV vs Gram–Schmidt exponents), finite-time λ1, the logit lens and attention similarity across loops."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from loopjax.summary.base import Summary, as_float, as_list, register


def _mean_rows(records, key) -> list:
    """The mean over prompts of per-loop series (they all have one length)."""
    return as_list(np.mean([np.asarray(r[key], np.float64) for r in records], axis=0))


@dataclasses.dataclass(frozen=True)
class DynamicsSummary(Summary):
    kind: ClassVar[str] = "dynamics"
    n_prompts: int
    clv_k: int
    clv_window: int
    clv_warmup: int
    angle_median_deg: list          # per prompt: median over the window of the minimal unstable/stable angle
    angle_min_deg: list             # per prompt: minimum over the window
    near_tangency_fraction: float   # window steps (all prompts) with that angle below 5 degrees
    pr_positions_v1: list           # per prompt: mean participation ratio of v_1 over positions (1/L .. 1)
    clv_exponents_mean: list        # (k,) mean over prompts, from the CLVs' growth
    gs_exponents_mean: list         # (k,) Benettin on the same window
    finite_time_taus: list
    finite_time_var_clv: list       # variance of the window-τ λ1 (CLV path), pooled over prompts, per τ
    finite_time_var_gs: list        # the same on the Benettin path
    lens_steps: int
    lens_agreement_mean: list       # per loop: top-1 agreement with the last loop, mean over prompts
    lens_entropy_mean: list         # per loop: mean readout entropy (nats)
    exit_gate_mean: list | None     # Ouro: per loop mean exit-gate probability
    attention_loops: int
    attention_consecutive_mean: list | None  # per loop pair (t, t+1): attention similarity, mean over layers/heads

    def rows(self):
        def series(v):
            return ", ".join(f"{x:.2f}" for x in v)
        rows = [("prompts", str(self.n_prompts)),
                ("CLVs", f"k = {self.clv_k} over a window of {self.clv_window} loops after {self.clv_warmup}"),
                ("minimal unstable/stable CLV angle, median per prompt (degrees)", series(self.angle_median_deg)),
                ("window steps with that angle below 5°", f"{100 * self.near_tangency_fraction:.1f}%"),
                ("participation ratio of v1 over positions, per prompt", series(self.pr_positions_v1)),
                ("CLV exponents (mean over prompts)", series(self.clv_exponents_mean)),
                ("Gram–Schmidt exponents, same window", series(self.gs_exponents_mean)),
                ("finite-time λ1 variance per τ " + str(self.finite_time_taus) + ", CLV / Benettin",
                 f"{series(self.finite_time_var_clv)} / {series(self.finite_time_var_gs)}"),
                (f"logit lens: top-1 agreement with loop {self.lens_steps}, per loop",
                 series(self.lens_agreement_mean)),
                ("logit lens: readout entropy per loop (nats)", series(self.lens_entropy_mean))]
        if self.exit_gate_mean is not None:
            rows.append(("Ouro exit-gate probability per loop", series(self.exit_gate_mean)))
        rows.append((f"attention similarity of consecutive loops (1 − JS), {self.attention_loops} loops",
                     "not available for this architecture" if self.attention_consecutive_mean is None
                     else series(self.attention_consecutive_mean)))
        return rows


def _pooled_var(records, key, taus) -> list:
    out = []
    for j in range(len(taus)):
        samples = np.concatenate([np.asarray(r[key]["samples"][j], np.float64) for r in records])
        out.append(as_float(samples.var()) if samples.size > 1 else float("nan"))
    return out


@register("dynamics", DynamicsSummary)
def summarize_dynamics(records) -> DynamicsSummary:
    """records: the per-prompt dicts of the report's dynamics analysis (`loopjax.cli.analyses.DYNAMICS`)."""
    angles = [np.degrees(np.asarray(r["clv"]["angles"], np.float64)) for r in records]
    lens = [r["logit_lens"] for r in records]
    taus = records[0]["finite_time_clv"]["taus"]
    return DynamicsSummary(
        n_prompts=len(records), clv_k=int(records[0]["clv"]["k"]), clv_window=int(records[0]["clv"]["steps"]),
        clv_warmup=int(records[0]["clv"]["warmup"]),
        angle_median_deg=[as_float(np.median(a)) for a in angles], angle_min_deg=[as_float(a.min()) for a in angles],
        near_tangency_fraction=as_float(np.mean(np.concatenate(angles) < 5.0)),
        pr_positions_v1=[as_float(r["pr_positions_v1"]) for r in records],
        clv_exponents_mean=_mean_rows([r["clv"] for r in records], "exponents"),
        gs_exponents_mean=_mean_rows([r["clv"] for r in records], "gs_exponents"),
        finite_time_taus=list(taus), finite_time_var_clv=_pooled_var(records, "finite_time_clv", taus),
        finite_time_var_gs=_pooled_var(records, "finite_time_gs", taus),
        lens_steps=int(lens[0]["steps"]), lens_agreement_mean=_mean_rows(lens, "agreement"),
        lens_entropy_mean=_mean_rows(lens, "entropy_mean"),
        exit_gate_mean=None if lens[0]["exit_gate_mean"] is None else _mean_rows(lens, "exit_gate_mean"),
        attention_loops=0 if records[0]["attention"] is None else len(records[0]["attention"]["consecutive_mean"]) + 1,
        attention_consecutive_mean=None if records[0]["attention"] is None else
        _mean_rows([r["attention"] for r in records], "consecutive_mean"))
