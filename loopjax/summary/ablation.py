"""The input-injection ablation summary: per injection scale alpha, λ1 over prompts, the adapter's and
core_block.0's contributions, orbit counts, and alpha* (`loopjax.analysis.ablation.crossing_alpha`)."""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np

from loopjax.analysis.ablation import NO_CROSSING, AblationResult, crossing_alpha, injection_sublayer
from loopjax.engine import stats
from loopjax.summary.attribution import summarize_attribution
from loopjax.summary.base import Summary, orbit_counts, register
from loopjax.summary.lambda1 import summarize_lambda1
from loopjax.summary.spectrum import summarize_spectrum


@dataclasses.dataclass(frozen=True)
class AblationSummary(Summary):
    """Per alpha (lists in increasing alpha): λ1 over prompts (`lambda1_mean/std/sem/min/max`, from
    `loopjax.summarize(kind="lambda1")`, kept whole in `lambda1_summaries`); the k=1 attribution
    (`loopjax.summarize(kind="attribution")`): per-sublayer mean contributions `contribution_mean`
    (n_alphas, n_sublayers) named by `names`, `adapter_mean/sem`, `core_block0_mean/sem` (standard error over
    prompts, ddof=1) and `attribution_total_mean` (= the sum over sublayers: λ1 of the attribution run);
    `orbit_counts` (per alpha {kind: count}); with a spectrum, `spectrum_summaries` (per alpha
    `loopjax.summarize(kind="spectrum").to_json()`). `crossing`: `crossing_alpha(alphas, lambda1_mean, lambda1_sem)`."""
    kind: ClassVar[str] = "ablation"
    alphas: list
    mode: str | None
    n_prompts: int
    lambda1_mean: list
    lambda1_std: list
    lambda1_sem: list
    lambda1_min: list
    lambda1_max: list
    names: list
    contribution_mean: list
    adapter_mean: list
    adapter_sem: list
    core_block0_mean: list
    core_block0_sem: list
    attribution_total_mean: list
    orbit_counts: list
    crossing: dict
    lambda1_summaries: list = dataclasses.field(default_factory=list)
    spectrum_summaries: list | None = None

    @property
    def alpha_star(self) -> float | None:
        return self.crossing.get("alpha_star")

    def to_json(self) -> dict:
        out = super().to_json()
        nan_free = lambda v: [None if isinstance(x, float) and not math.isfinite(x) else x for x in v]  # noqa: E731
        for name in ("lambda1_mean", "lambda1_std", "lambda1_sem", "lambda1_min", "lambda1_max", "adapter_mean",
                     "adapter_sem", "core_block0_mean", "core_block0_sem", "attribution_total_mean"):
            out[name] = nan_free(out[name])
        return out

    @classmethod
    def from_json(cls, d: dict) -> "AblationSummary":
        nan = lambda v: [math.nan if x is None else x for x in v]  # noqa: E731
        d = dict(d)
        for name in ("lambda1_mean", "lambda1_std", "lambda1_sem", "lambda1_min", "lambda1_max", "adapter_mean",
                     "adapter_sem", "core_block0_mean", "core_block0_sem", "attribution_total_mean"):
            if name in d:
                d[name] = nan(d[name])
        return super().from_json(d)

    def rows(self) -> list[tuple[str, str]]:
        rows = [("prompts", str(self.n_prompts)), ("mode", self.mode or "scale (alpha * e)"),
                ("alpha* (mean λ1 = 0)", "none: " + NO_CROSSING if self.alpha_star is None
                 else f"{self.alpha_star:.4f}" + ("" if self.crossing["note"] == "one crossing"
                                                  else f" ({self.crossing['note']})"))]
        for j, a in enumerate(self.alphas):
            sem = self.lambda1_sem[j]
            rows.append((f"  alpha = {a:g}",
                         f"λ1 {self.lambda1_mean[j]:+.4f} ± {sem:.4f} (s.e.); adapter {self.adapter_mean[j]:+.4f}, "
                         f"core_block.0 {self.core_block0_mean[j]:+.4f}; orbits "
                         + ", ".join(f"{k} {n}" for k, n in self.orbit_counts[j].items())))
        return rows


@register("ablation", AblationSummary, AblationResult)
def summarize_ablation(result: AblationResult) -> AblationSummary:
    """The per-alpha statistics of an ablation, from its units directly (alphas sorted with their data):
    per alpha `summarize_lambda1` of the prompts' λ1, `summarize_attribution` of their k=1 attributions,
    the standard errors of the adapter's and core_block.0's contributions, the orbit counts, with spectra
    `summarize_spectrum`, and `crossing_alpha` of the mean λ1."""
    order = sorted(range(len(result.alphas)), key=lambda j: result.alphas[j])
    alphas, rows = [result.alphas[j] for j in order], [result.units[j] for j in order]
    lam_s = [summarize_lambda1([u.lambda1 for u in row]) for row in rows]
    attr_s = [summarize_attribution([u.attribution for u in row]) for row in rows]
    names = list(attr_s[0].names)
    ia, ic = names.index(injection_sublayer(names)), names.index("core_block.0")
    contrib = [np.asarray([np.asarray(u.attribution.exponents, np.float64)[:, 0] for u in row]) for row in rows]
    means = [s.mean for s in lam_s]
    spec_s = None
    if rows[0][0].spectrum is not None:
        spec_s = [summarize_spectrum([u.spectrum for u in row], orbits=[u.orbit for u in row]).to_json()
                  for row in rows]
    return AblationSummary(
        alphas=alphas, mode=result.settings.get("mode"), n_prompts=int(lam_s[0].n_prompts),
        lambda1_mean=means, lambda1_std=[s.std for s in lam_s], lambda1_sem=[s.sem for s in lam_s],
        lambda1_min=[s.min for s in lam_s], lambda1_max=[s.max for s in lam_s], names=names,
        contribution_mean=[list(s.lambda1_contribution_mean) for s in attr_s],
        adapter_mean=[float(s.lambda1_contribution_mean[ia]) for s in attr_s],
        adapter_sem=[float(stats.standard_error(c[:, ia])) for c in contrib],
        core_block0_mean=[float(s.lambda1_contribution_mean[ic]) for s in attr_s],
        core_block0_sem=[float(stats.standard_error(c[:, ic])) for c in contrib],
        attribution_total_mean=[float(s.lambda1_total_mean) for s in attr_s],
        orbit_counts=[orbit_counts([u.orbit for u in row]) for row in rows],
        crossing=crossing_alpha(alphas, means, [s.sem for s in lam_s]).to_json(),
        lambda1_summaries=[s.to_json() for s in lam_s], spectrum_summaries=spec_s)
