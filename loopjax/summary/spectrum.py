"""The spectrum summary (the paper's fixed protocol): the exponents over prompts with their uncertainty, whether
the horizon converged, Holm-corrected sign counts, per-prompt Kaplan–Yorke dimensions and Ruelle bounds, orbits."""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Sequence

import numpy as np

from loopjax.engine import stats
from loopjax.engine.lyapunov import LyapunovResult
from loopjax.engine.dynamics import kaplan_yorke_dimension, ruelle_bound
from loopjax.summary.base import Summary, as_float, as_list, orbit_counts, orbit_json, plus_minus, register


@dataclasses.dataclass(frozen=True)
class SpectrumSummary(Summary):
    """Per exponent lists are over the sorted spectrum (index 0 = λ1). Uncertainty: `*_sem` over prompts
    (ddof=1), `ci95_*` a percentile bootstrap of the mean over prompts (2000 resamples, seed 0),
    `batch_se_sorted` the mean over prompts of each prompt's batch-means standard error of its time
    average, `drift_sorted` |change| of the prompt-mean running average over the last quarter of the steps
    and `converged_sorted` drift <= max(1e-3, 0.05 |value|) (loopjax.engine.stats.converged). `*_second_half`: the
    same exponents from the log growth of steps T/2..T only (is the transient driving the result?)."""
    kind: ClassVar[str] = "spectrum"
    n_prompts: int
    k: int
    steps: int
    lambda1_mean: float
    lambda1_std: float
    lambda1_min: float
    lambda1_max: float
    fraction_positive: float                 # over all prompts x k exponents
    fraction_positive_mean_spectrum: float   # of the mean (over prompts) sorted spectrum
    range_max: float
    range_min: float
    mean_spectrum_max: float
    mean_spectrum_min: float
    mean_spectrum_sorted: list
    std_spectrum_sorted: list
    sum_of_exponents_mean: float
    top5_mean: list
    lambda1_sem: float = math.nan
    lambda1_ci95: list = dataclasses.field(default_factory=list)
    sem_sorted: list = dataclasses.field(default_factory=list)
    ci95_lo_sorted: list = dataclasses.field(default_factory=list)
    ci95_hi_sorted: list = dataclasses.field(default_factory=list)
    batch_se_sorted: list = dataclasses.field(default_factory=list)
    drift_sorted: list = dataclasses.field(default_factory=list)
    converged_sorted: list = dataclasses.field(default_factory=list)
    n_positive_holm: int = 0                 # mean exponent > 0, Holm–Bonferroni over the k (t, P-1 df, 95%)
    n_negative_holm: int = 0                 # ... < 0
    n_zero_holm: int = 0                     # consistent with 0 after the correction (or undetermined)
    sign_test: str = "Holm–Bonferroni over the k exponents: two-sided t-tests of the mean over prompts, 95%"
    n_positive_mean: int = 0                 # positive entries of the mean sorted spectrum
    lambda1_second_half_mean: float = math.nan
    n_positive_second_half: int = 0
    mean_spectrum_second_half: list = dataclasses.field(default_factory=list)
    max_orthogonality_error: float = math.nan
    kaplan_yorke_per_prompt: list = dataclasses.field(default_factory=list)  # each prompt's own top-k spectrum
    ruelle_bound_per_prompt: list = dataclasses.field(default_factory=list)  # Σ positive λ per prompt (h_KS <=)
    ruelle_lower_estimate: list = dataclasses.field(default_factory=list)    # λ_k > 0: more positive beyond k
    n_probe_seeds: int = 0
    probe_seed_std_sorted: list = dataclasses.field(default_factory=list)  # mean over prompts of the std over seeds
    orbits: list = dataclasses.field(default_factory=list)                  # per prompt {kind, period}
    orbit_counts: dict = dataclasses.field(default_factory=dict)

    def rows(self):
        ci = self.lambda1_ci95 or [math.nan, math.nan]
        lam1_ok = bool(self.converged_sorted and self.converged_sorted[0])
        rows = [
            ("prompts", str(self.n_prompts)),
            (f"horizon T = {self.steps} converged?", ("yes for λ1" if lam1_ok else "no: λ1 still drifts (a transient; "
                                                      "see the regime section for the verdicts at a converged "
                                                      "horizon)") + f"; {sum(bool(c) for c in self.converged_sorted)}"
                                                     f" of {self.k} running averages within the drift tolerance"),
            ("λ1 (mean ± std over prompts)", plus_minus(self.lambda1_mean, self.lambda1_std)),
            ("λ1 standard error; bootstrap 95% CI", f"{self.lambda1_sem:.4f}; [{ci[0]:+.4f}, {ci[1]:+.4f}]"),
            ("λ1 from the second half of the steps only", f"{self.lambda1_second_half_mean:+.4f}"),
            ("λ1 min / max over prompts", f"{self.lambda1_min:+.4f} / {self.lambda1_max:+.4f}"),
            ("positive / negative / consistent with 0 (Holm–Bonferroni over the k, 95%)",
             f"{self.n_positive_holm} / {self.n_negative_holm} / {self.n_zero_holm} of {self.k}"),
            ("positive mean exponents: all steps → second half",
             f"{self.n_positive_mean} → {self.n_positive_second_half}"),
            ("running averages converged (last-quarter drift)",
             f"{sum(bool(c) for c in self.converged_sorted)} of {self.k}"),
            ("fraction of positive exponents (all prompts × k)", f"{100 * self.fraction_positive:.1f}%"),
            ("spectrum range (max, min), all prompts", f"({self.range_max:+.4f}, {self.range_min:+.4f})"),
            ("top-5 (mean)", "[" + ", ".join(f"{v:+.4f}" for v in self.top5_mean) + "]"),
            ("sum of the k exponents (mean)", f"{self.sum_of_exponents_mean:+.4f}"),
            ("Kaplan–Yorke dimension per prompt (top-k; not averaged: d differs)", _ky_text(self.kaplan_yorke_per_prompt)),
            ("Ruelle bound Σλ⁺ per prompt (h_KS ≤ it)", _bound_text(self.ruelle_bound_per_prompt,
                                                                     self.ruelle_lower_estimate)),
            ("final probes: max abs(QᵀQ − I)", f"{self.max_orthogonality_error:.2e}"),
        ]
        if self.n_probe_seeds:
            rows.append((f"λ1 spread over {self.n_probe_seeds} probe seeds (std, mean over prompts)",
                         f"{self.probe_seed_std_sorted[0]:.4f}"))
        if self.orbit_counts:
            rows.append(("orbit type (prompts)", ", ".join(f"{k}: {v}" for k, v in sorted(self.orbit_counts.items()))))
        return rows


def _or_none(x):
    """A float, or None where it is not finite (JSON null; e.g. a Kaplan–Yorke dimension the k exponents do
    not determine)."""
    x = as_float(x)
    return x if math.isfinite(x) else None


def _ky_text(values) -> str:
    v = ["n/a" if x is None or not math.isfinite(x) else f"{x:.2f}" for x in values]
    return ", ".join(v) + (" (n/a: the k exponents sum to ≥ 0, more are needed)" if "n/a" in v else "")


def _bound_text(values, lower) -> str:
    return ", ".join(f"{x:.3f}" + ("+" if lo else "") for x, lo in zip(values, lower)) + (
        " (+: λ_k > 0, a lower estimate)" if any(lower) else "")


def exponent_table(summary: SpectrumSummary, n: int = 10) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the first n sorted exponents with their uncertainty (the report's second table)."""
    header = ["i", "mean", "s.e.", "95% CI", "batch s.e.", "drift (last ¼)", "converged", "second half"]
    rows = []
    for i in range(min(n, summary.k)):
        get = lambda xs: xs[i] if len(xs) > i and xs[i] is not None else math.nan  # noqa: E731
        rows.append([f"λ{i + 1}", f"{get(summary.mean_spectrum_sorted):+.4f}", f"{get(summary.sem_sorted):.4f}",
                     f"[{get(summary.ci95_lo_sorted):+.4f}, {get(summary.ci95_hi_sorted):+.4f}]",
                     f"{get(summary.batch_se_sorted):.4f}", f"{get(summary.drift_sorted):.4f}",
                     "yes" if len(summary.converged_sorted) > i and summary.converged_sorted[i] else "no",
                     f"{get(summary.mean_spectrum_second_half):+.4f}"])
    return header, rows


def _sorted_running(r: LyapunovResult) -> np.ndarray:
    order = np.argsort(-np.asarray(r.exponents, dtype=np.float64), kind="stable")
    return np.asarray(r.running, dtype=np.float64)[:, order]


@register("spectrum", SpectrumSummary, LyapunovResult, accepts=lambda r: r.names is None)
def summarize_spectrum(results: Sequence[LyapunovResult], top: int = 5, *, orbits=None,
                       probe_seed_results=None) -> SpectrumSummary:
    """`orbits`: per prompt an OrbitType (or its to_json dict; `loopjax.orbit`); `probe_seed_results`: per
    prompt a list of results (or exponent arrays) from the same start with other probe keys
    (`loopjax.spectrum_probe_seeds`)."""
    ex = np.stack([np.asarray(r.sorted(), dtype=np.float64) for r in results])  # (P, k), descending
    mean = ex.mean(0)
    lo, hi = stats.bootstrap_ci(ex, level=0.95)
    half = [np.asarray(r.log_growth, dtype=np.float64) for r in results]
    late = np.stack([-np.sort(-lg[lg.shape[0] // 2:].mean(0)) for lg in half]).mean(0)
    running = np.stack([_sorted_running(r) for r in results]).mean(0)  # (T, k) prompt-mean running averages
    batch_se = np.stack([stats.batch_means_se(np.asarray(r.log_growth, dtype=np.float64)[:, np.argsort(
        -np.asarray(r.exponents, dtype=np.float64), kind="stable")]) for r in results]).mean(0)
    signs = stats.holm_sign_counts(mean, stats.standard_error(ex), level=0.95,
                                   df=ex.shape[0] - 1 if ex.shape[0] > 1 else None)
    orth = [np.max(np.asarray(o)) for o in (r.orthogonality_error() for r in results) if o is not None]
    bounds = [ruelle_bound(row) for row in ex]
    extra = {}
    if probe_seed_results:
        srt = lambda q: (np.asarray(q.sorted(), dtype=np.float64) if isinstance(q, LyapunovResult)  # noqa: E731
                         else -np.sort(-np.asarray(q, dtype=np.float64)))
        seeds = np.stack([np.stack([srt(q) for q in per]) for per in probe_seed_results])  # (P, S, k)
        extra = dict(n_probe_seeds=int(seeds.shape[1]), probe_seed_std_sorted=as_list(seeds.std(1).mean(0)))
    if orbits:
        js = [orbit_json(o) for o in orbits]
        extra.update(orbits=[{"kind": o["kind"], "period": o.get("period")} for o in js],
                     orbit_counts=orbit_counts(orbits))
    return SpectrumSummary(
        n_prompts=int(ex.shape[0]), k=int(ex.shape[1]), steps=int(results[0].log_growth.shape[0]),
        lambda1_mean=as_float(ex[:, 0].mean()), lambda1_std=as_float(ex[:, 0].std()),
        lambda1_min=as_float(ex[:, 0].min()), lambda1_max=as_float(ex[:, 0].max()),
        fraction_positive=as_float((ex > 0).mean()), fraction_positive_mean_spectrum=as_float((mean > 0).mean()),
        range_max=as_float(ex.max()), range_min=as_float(ex.min()),
        mean_spectrum_max=as_float(mean.max()), mean_spectrum_min=as_float(mean.min()),
        mean_spectrum_sorted=as_list(mean), std_spectrum_sorted=as_list(ex.std(0)),
        sum_of_exponents_mean=as_float(ex.sum(1).mean()), top5_mean=as_list(mean[:top]),
        lambda1_sem=as_float(stats.standard_error(ex[:, 0])), lambda1_ci95=[as_float(lo[0]), as_float(hi[0])],
        sem_sorted=as_list(stats.standard_error(ex)), ci95_lo_sorted=as_list(lo), ci95_hi_sorted=as_list(hi),
        batch_se_sorted=as_list(batch_se), drift_sorted=as_list(stats.running_drift(running)),
        converged_sorted=[bool(c) for c in np.atleast_1d(stats.converged(running))],
        n_positive_holm=int(signs["positive"]), n_negative_holm=int(signs["negative"]),
        n_zero_holm=int(signs["zero"] + signs["undetermined"]), n_positive_mean=int((mean > 0).sum()),
        lambda1_second_half_mean=as_float(late[0]), n_positive_second_half=int((late > 0).sum()),
        mean_spectrum_second_half=as_list(late), max_orthogonality_error=as_float(np.max(orth)) if orth else math.nan,
        kaplan_yorke_per_prompt=[_or_none(kaplan_yorke_dimension(row)) for row in ex],
        ruelle_bound_per_prompt=[as_float(b.value) for b in bounds],
        ruelle_lower_estimate=[bool(b.lower_bound) for b in bounds],
        **extra)
