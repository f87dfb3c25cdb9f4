"""The numbers a paper reports, from per-prompt results: `summarize(results)`.

`results` is the list of what one analysis returned for each prompt (or its JSON form as saved by the
CLI, read back with `LyapunovResult.from_json`):

  spectrum      list of `spectrum(...)` results (exponents (k,))           -> SpectrumSummary
  attribution   list of `attribution(...)` results (exponents (n_sub, k))  -> AttributionSummary
  lambda1       list of `lambda1(...)` values (one per prompt)             -> Lambda1Summary
  sweep         list over checkpoints of lists of λ1 values (C x P)        -> SweepSummary
  similarity    list of `similarity(...)` dicts                            -> SimilaritySummary
  convergence   list of `convergence(...)` dicts                           -> ConvergenceSummary

A batched result (tokens (B, L)) counts as B prompts. Every summary is a frozen dataclass whose fields are
plain floats / lists (`to_json()` is the dict `loopjax <analysis>` writes as results.json["summary"],
`from_json` reads it back) and whose `rows()` are the (label, value) lines the report prints. All
statistics are over prompts, in float64; "std" is the population std (ddof=0) as in the paper.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Sequence

import numpy as np

from loopjax.engine import stats
from loopjax.engine.dynamics import kaplan_yorke_dimension, pesin_entropy
from loopjax.engine.lyapunov import LyapunovResult


def _f(x) -> float:
    return float(np.asarray(x, dtype=np.float64))


def _list(x) -> list:
    return np.asarray(x, dtype=np.float64).tolist()


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


def _pm(mean: float, std: float) -> str:
    return f"{mean:+.4f} ± {std:.4f}"


# ---- spectrum ------------------------------------------------------------------------------------------

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
    n_positive_95: int = 0                   # exponents whose 95% CI lies above 0
    n_negative_95: int = 0                   # ... below 0
    n_zero_95: int = 0                       # ... straddles 0 (consistent with zero)
    n_positive_mean: int = 0                 # positive entries of the mean sorted spectrum
    lambda1_second_half_mean: float = math.nan
    n_positive_second_half: int = 0
    mean_spectrum_second_half: list = dataclasses.field(default_factory=list)
    max_orthogonality_error: float = math.nan
    kaplan_yorke_dimension: float = math.nan  # of the mean spectrum; NaN: the k exponents sum to >= 0
    pesin_sum: float = math.nan               # sum of the positive mean exponents (Pesin bound on KS entropy)
    pesin_lower_bound: bool = False           # True when λ_k > 0: more positive exponents may lie beyond k
    n_probe_seeds: int = 0
    probe_seed_std_sorted: list = dataclasses.field(default_factory=list)  # mean over prompts of the std over seeds
    orbits: list = dataclasses.field(default_factory=list)                  # per prompt {kind, period}
    orbit_counts: dict = dataclasses.field(default_factory=dict)

    def rows(self):
        ci = self.lambda1_ci95 or [math.nan, math.nan]
        rows = [
            ("prompts", str(self.n_prompts)),
            ("λ1 (mean ± std over prompts)", _pm(self.lambda1_mean, self.lambda1_std)),
            ("λ1 standard error; bootstrap 95% CI", f"{self.lambda1_sem:.4f}; [{ci[0]:+.4f}, {ci[1]:+.4f}]"),
            ("λ1 from the second half of the steps only", f"{self.lambda1_second_half_mean:+.4f}"),
            ("λ1 min / max over prompts", f"{self.lambda1_min:+.4f} / {self.lambda1_max:+.4f}"),
            ("positive / negative / consistent with 0 (95% CI)",
             f"{self.n_positive_95} / {self.n_negative_95} / {self.n_zero_95} of {self.k}"),
            ("positive mean exponents: all steps → second half",
             f"{self.n_positive_mean} → {self.n_positive_second_half}"),
            ("running averages converged (last-quarter drift)",
             f"{sum(bool(c) for c in self.converged_sorted)} of {self.k}"),
            ("fraction of positive exponents (all prompts × k)", f"{100 * self.fraction_positive:.1f}%"),
            ("spectrum range (max, min), all prompts", f"({self.range_max:+.4f}, {self.range_min:+.4f})"),
            ("top-5 (mean)", "[" + ", ".join(f"{v:+.4f}" for v in self.top5_mean) + "]"),
            ("sum of the k exponents (mean)", f"{self.sum_of_exponents_mean:+.4f}"),
            ("Kaplan–Yorke dimension", "not determined (the k exponents sum to ≥ 0)"
             if not math.isfinite(self.kaplan_yorke_dimension) else f"{self.kaplan_yorke_dimension:.3f}"),
            ("Pesin sum (Σ positive λ)", f"{self.pesin_sum:.4f}" + (" (lower estimate: λ_k > 0)"
                                                                   if self.pesin_lower_bound else "")),
            ("final probes: max abs(QᵀQ − I)", f"{self.max_orthogonality_error:.2e}"),
        ]
        if self.n_probe_seeds:
            rows.append((f"λ1 spread over {self.n_probe_seeds} probe seeds (std, mean over prompts)",
                         f"{self.probe_seed_std_sorted[0]:.4f}"))
        if self.orbit_counts:
            rows.append(("orbit type (prompts)", ", ".join(f"{k}: {v}" for k, v in sorted(self.orbit_counts.items()))))
        return rows


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
    signs = stats.classify_signs(lo, hi)
    orth = [np.max(np.asarray(o)) for o in (r.orthogonality_error() for r in results) if o is not None]
    pesin = pesin_entropy(mean)
    extra = {}
    if probe_seed_results:
        srt = lambda q: (np.asarray(q.sorted(), dtype=np.float64) if isinstance(q, LyapunovResult)  # noqa: E731
                         else -np.sort(-np.asarray(q, dtype=np.float64)))
        seeds = np.stack([np.stack([srt(q) for q in per]) for per in probe_seed_results])  # (P, S, k)
        extra = dict(n_probe_seeds=int(seeds.shape[1]), probe_seed_std_sorted=_list(seeds.std(1).mean(0)))
    if orbits:
        orbits = [o if isinstance(o, dict) else o.to_json() for o in orbits]
        kinds = [o["kind"] + (f"-{o['period']}" if o["kind"] == "periodic" else "") for o in orbits]
        extra.update(orbits=[{"kind": o["kind"], "period": o.get("period")} for o in orbits],
                     orbit_counts={k: kinds.count(k) for k in dict.fromkeys(kinds)})
    return SpectrumSummary(
        n_prompts=int(ex.shape[0]), k=int(ex.shape[1]), steps=int(results[0].log_growth.shape[0]),
        lambda1_mean=_f(ex[:, 0].mean()), lambda1_std=_f(ex[:, 0].std()),
        lambda1_min=_f(ex[:, 0].min()), lambda1_max=_f(ex[:, 0].max()),
        fraction_positive=_f((ex > 0).mean()), fraction_positive_mean_spectrum=_f((mean > 0).mean()),
        range_max=_f(ex.max()), range_min=_f(ex.min()),
        mean_spectrum_max=_f(mean.max()), mean_spectrum_min=_f(mean.min()),
        mean_spectrum_sorted=_list(mean), std_spectrum_sorted=_list(ex.std(0)),
        sum_of_exponents_mean=_f(ex.sum(1).mean()), top5_mean=_list(mean[:top]),
        lambda1_sem=_f(stats.standard_error(ex[:, 0])), lambda1_ci95=[_f(lo[0]), _f(hi[0])],
        sem_sorted=_list(stats.standard_error(ex)), ci95_lo_sorted=_list(lo), ci95_hi_sorted=_list(hi),
        batch_se_sorted=_list(batch_se), drift_sorted=_list(stats.running_drift(running)),
        converged_sorted=[bool(c) for c in np.atleast_1d(stats.converged(running))],
        n_positive_95=int(signs["positive"]), n_negative_95=int(signs["negative"]),
        n_zero_95=int(signs["zero"] + signs.get("undetermined", 0)), n_positive_mean=int((mean > 0).sum()),
        lambda1_second_half_mean=_f(late[0]), n_positive_second_half=int((late > 0).sum()),
        mean_spectrum_second_half=_list(late), max_orthogonality_error=_f(np.max(orth)) if orth else math.nan,
        kaplan_yorke_dimension=_f(kaplan_yorke_dimension(mean)), pesin_sum=_f(pesin.value),
        pesin_lower_bound=bool(pesin.lower_bound), **extra)


# ---- attribution ---------------------------------------------------------------------------------------

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
    total_exponents_mean: list           # (k,)

    def rows(self):
        rows = [("λ1 total = sum of sublayer contributions (mean ± std)",
                 _pm(self.lambda1_total_mean, self.lambda1_total_std)),
                ("largest expansion", self.largest_expanding_sublayer),
                ("largest contraction", self.largest_contracting_sublayer)]
        rows += [(f"  {n}", f"{_pm(m, sd)}  (cumulative {c:+.4f})") for n, m, sd, c in
                 zip(self.names, self.lambda1_contribution_mean, self.lambda1_contribution_std,
                     self.lambda1_cumulative_mean)]
        return rows


def summarize_attribution(results: Sequence[LyapunovResult]) -> AttributionSummary:
    names = list(results[0].names)
    ex = np.stack([np.asarray(r.exponents, dtype=np.float64) for r in results])  # (P, n_sub, k)
    c1 = ex[:, :, 0]
    cum = np.cumsum(c1, axis=1)
    return AttributionSummary(
        names=names, n_prompts=int(ex.shape[0]), k=int(ex.shape[2]), steps=int(results[0].log_growth.shape[0]),
        lambda1_contribution_mean=_list(c1.mean(0)), lambda1_contribution_std=_list(c1.std(0)),
        lambda1_cumulative_mean=_list(cum.mean(0)), lambda1_total_mean=_f(cum[:, -1].mean()),
        lambda1_total_std=_f(cum[:, -1].std()),
        largest_expanding_sublayer=names[int(np.argmax(c1.mean(0)))],
        largest_contracting_sublayer=names[int(np.argmin(c1.mean(0)))],
        exponents_mean=_list(ex.mean(0)), total_exponents_mean=_list(ex.sum(1).mean(0)))


# ---- lambda1 and sweeps --------------------------------------------------------------------------------

def _sem(x: np.ndarray, axis=0):
    n = x.shape[axis]
    return x.std(axis, ddof=1) / np.sqrt(n) if n > 1 else np.full(np.delete(x.shape, axis), np.nan)


@dataclasses.dataclass(frozen=True)
class Lambda1Summary(Summary):
    kind: ClassVar[str] = "lambda1"
    n_prompts: int
    mean: float
    std: float
    sem: float          # standard error of the mean (ddof=1); NaN for one prompt
    min: float
    max: float

    def rows(self):
        return [("prompts", str(self.n_prompts)), ("λ1 (mean ± std)", _pm(self.mean, self.std)),
                ("standard error of the mean", f"{self.sem:.4f}"),
                ("min / max", f"{self.min:+.4f} / {self.max:+.4f}")]


def summarize_lambda1(values) -> Lambda1Summary:
    x = np.asarray([_f(v) for v in values])
    return Lambda1Summary(n_prompts=int(x.size), mean=_f(x.mean()), std=_f(x.std()), sem=_f(_sem(x)),
                          min=_f(x.min()), max=_f(x.max()))


@dataclasses.dataclass(frozen=True)
class SweepSummary(Summary):
    kind: ClassVar[str] = "sweep"
    n_checkpoints: int
    n_prompts: int
    lambda1_mean_per_checkpoint: list
    lambda1_std_per_checkpoint: list
    lambda1_sem_per_checkpoint: list
    std_across_checkpoints: float                       # std of the per-checkpoint means
    mean_per_prompt_std: float                          # mean over checkpoints of the std over prompts
    mean_over_prompts_of_std_across_checkpoints: float
    ratio_across_checkpoints_to_per_prompt: float       # NaN when the per-prompt std is 0

    def rows(self):
        return [("std of mean λ1 across checkpoints", f"{self.std_across_checkpoints:.4f}"),
                ("mean per-prompt std (within a checkpoint)", f"{self.mean_per_prompt_std:.4f}")] + [
            (f"  checkpoint {i}", _pm(m, sd)) for i, (m, sd) in
            enumerate(zip(self.lambda1_mean_per_checkpoint, self.lambda1_std_per_checkpoint))]


def summarize_sweep(lambda1_per_checkpoint) -> SweepSummary:
    """`lambda1_per_checkpoint`: C lists (one per checkpoint) of P per-prompt λ1 values."""
    lam = np.asarray([[_f(v) for v in row] for row in lambda1_per_checkpoint])
    means, per_prompt_std = lam.mean(1), lam.std(1)
    return SweepSummary(
        n_checkpoints=int(lam.shape[0]), n_prompts=int(lam.shape[1]),
        lambda1_mean_per_checkpoint=_list(means), lambda1_std_per_checkpoint=_list(per_prompt_std),
        lambda1_sem_per_checkpoint=_list(_sem(lam, axis=1)), std_across_checkpoints=_f(means.std()),
        mean_per_prompt_std=_f(per_prompt_std.mean()),
        mean_over_prompts_of_std_across_checkpoints=_f(lam.std(0).mean()),
        ratio_across_checkpoints_to_per_prompt=(_f(means.std() / per_prompt_std.mean())
                                                if per_prompt_std.mean() > 0 else math.nan))


# ---- similarity and convergence ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SimilaritySummary(Summary):
    kind: ClassVar[str] = "similarity"
    n_prompts: int
    states_names: list
    states_per_loop: int
    loops: int
    mean_matrix: list
    loop_output_consecutive: list            # cos(loop output t, loop output t+1)
    same_sublayer_consecutive_loops: list    # mean over sublayers of cos(state j in loop t, in loop t+1)
    adjacent_sublayers_within_loop: list     # mean over j of cos(state j, state j+1) within loop t
    min_similarity: float

    def rows(self):
        fmt = lambda xs: "[" + ", ".join("n/a" if x is None else f"{x:+.4f}" for x in xs) + "]"  # noqa: E731
        return [("loop output t vs t+1", fmt(self.loop_output_consecutive)),
                ("same sublayer, consecutive loops (mean)", fmt(self.same_sublayer_consecutive_loops)),
                ("adjacent sublayers within a loop (mean)", fmt(self.adjacent_sublayers_within_loop)),
                ("smallest similarity", f"{self.min_similarity:+.4f}")]


def summarize_similarity(results: Sequence[dict]) -> SimilaritySummary:
    names = list(results[0]["names"])
    loops = len(dict.fromkeys(n.split("/")[0] for n in names))
    mean = np.stack([np.asarray(r["matrix"], dtype=np.float64) for r in results]).mean(0)
    per = mean.shape[0] // loops
    ends = [(t + 1) * per - 1 for t in range(loops)]
    return SimilaritySummary(
        n_prompts=len(results), states_names=names, states_per_loop=per, loops=loops, mean_matrix=_list(mean),
        loop_output_consecutive=[_f(mean[ends[t], ends[t + 1]]) for t in range(loops - 1)],
        same_sublayer_consecutive_loops=[_f(np.mean([mean[t * per + j, (t + 1) * per + j] for j in range(per)]))
                                         for t in range(loops - 1)],
        adjacent_sublayers_within_loop=[_f(np.mean([mean[t * per + j, t * per + j + 1] for j in range(per - 1)]))
                                        if per > 1 else None for t in range(loops)],
        min_similarity=_f(mean.min()))


@dataclasses.dataclass(frozen=True)
class ConvergenceSummary(Summary):
    kind: ClassVar[str] = "convergence"
    n_prompts: int
    steps: int
    step_norm_first_mean: float
    step_norm_last_mean: float
    relative_step_first_mean: float
    relative_step_last_mean: float
    state_norm_last_mean: float
    log_step_norm_slope_second_half: float   # mean over prompts of the fitted slope of log‖Δz_t‖; NaN if T < 4
    converged_fraction: float                # prompts whose last relative step ‖Δz‖/‖z‖ is below 1e-3

    def rows(self):
        return [("‖z_1 − z_0‖ (mean)", f"{self.step_norm_first_mean:.4g}"),
                (f"‖z_{self.steps} − z_{self.steps - 1}‖ (mean)", f"{self.step_norm_last_mean:.4g}"),
                ("relative step, first → last",
                 f"{self.relative_step_first_mean:.4g} → {self.relative_step_last_mean:.4g}"),
                ("slope of log‖Δz‖ per step, second half", f"{self.log_step_norm_slope_second_half:+.4f}"),
                ("‖z_T‖ (mean)", f"{self.state_norm_last_mean:.4g}")]


def summarize_convergence(results: Sequence[dict]) -> ConvergenceSummary:
    d = np.stack([np.asarray(r["step_norm"], dtype=np.float64) for r in results])
    s = np.stack([np.asarray(r["state_norm"], dtype=np.float64) for r in results])
    rel = d / np.maximum(s[:, :-1], 1e-300)
    T = d.shape[1]
    half = max(1, T // 2)
    logs = np.log(np.maximum(d, 1e-300))
    slope = math.nan
    if T - half >= 2:
        t = np.arange(half, T)
        slope = _f(np.mean([np.polyfit(t, logs[p, half:], 1)[0] for p in range(d.shape[0])]))
    return ConvergenceSummary(
        n_prompts=int(d.shape[0]), steps=int(T), step_norm_first_mean=_f(d[:, 0].mean()),
        step_norm_last_mean=_f(d[:, -1].mean()), relative_step_first_mean=_f(rel[:, 0].mean()),
        relative_step_last_mean=_f(rel[:, -1].mean()), state_norm_last_mean=_f(s[:, -1].mean()),
        log_step_norm_slope_second_half=slope, converged_fraction=_f((rel[:, -1] < 1e-3).mean()))


# ---- per-token spectra ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TokenSummary(Summary):
    """Per-token spectra (`loopjax.analysis.tokens.token_spectrum`): λ1 of each position's own diagonal block of
    the loop Jacobian. `lambda1_by_position` lists per prompt the λ1 of every position (prompt order)."""
    kind: ClassVar[str] = "tokens"
    n_prompts: int
    k: int
    steps: int
    lambda1_by_position: list
    union_lambda1_mean: float             # mean over prompts of the largest position λ1 (= the prompt's λ1)
    fraction_expanding_positions: float   # positions with λ1 > 0, over all prompts
    argmax_position_fraction_last: float  # prompts whose most expanding position is the last token

    def rows(self):
        return [("prompts", str(self.n_prompts)),
                ("λ1 of the prompt = max over positions (mean)", f"{self.union_lambda1_mean:+.4f}"),
                ("positions with λ1 > 0", f"{100 * self.fraction_expanding_positions:.1f}%"),
                ("prompts whose most expanding position is the last token",
                 f"{100 * self.argmax_position_fraction_last:.1f}%")]


def summarize_tokens(results) -> TokenSummary:
    lam = [np.asarray(r.lambda1 if hasattr(r, "lambda1") and not isinstance(r, dict) else r["lambda1"],
                      dtype=np.float64) for r in results]
    first = results[0]
    k = int(np.shape(first.exponents if not isinstance(first, dict) else first["exponents"])[-1])
    steps = int(first.log_growth.shape[-2]) if not isinstance(first, dict) else int(first["steps"])
    return TokenSummary(
        n_prompts=len(lam), k=k, steps=steps, lambda1_by_position=[_list(v) for v in lam],
        union_lambda1_mean=_f(np.mean([v.max() for v in lam])),
        fraction_expanding_positions=_f(np.mean(np.concatenate(lam) > 0)),
        argmax_position_fraction_last=_f(np.mean([int(np.argmax(v)) == v.size - 1 for v in lam])))


# ---- dispatch ------------------------------------------------------------------------------------------

def _unbatch(results) -> list:
    """A batched LyapunovResult (leading prompt axis) -> one result per prompt."""
    if isinstance(results, LyapunovResult):
        per_prompt_ndim = 1 if results.names is None else 2
        if results.exponents.ndim == per_prompt_ndim:
            return [results]
        n = results.exponents.shape[0]
        import jax
        return [jax.tree.map(lambda x, i=i: x[i], results) for i in range(n)]
    return list(results)


SUMMARIZERS = {"spectrum": summarize_spectrum, "attribution": summarize_attribution,
               "lambda1": summarize_lambda1, "sweep": summarize_sweep, "similarity": summarize_similarity,
               "convergence": summarize_convergence, "tokens": summarize_tokens}
SUMMARY_TYPES = {cls.kind: cls for cls in (SpectrumSummary, AttributionSummary, Lambda1Summary, SweepSummary,
                                           SimilaritySummary, ConvergenceSummary, TokenSummary)}


def kind_of(results: Sequence[Any]) -> str:
    first = results[0]
    if isinstance(first, LyapunovResult):
        return "spectrum" if first.names is None else "attribution"
    if isinstance(first, dict):
        if "matrix" in first:
            return "similarity"
        if "step_norm" in first:
            return "convergence"
        raise ValueError(f"cannot tell the analysis of a result dict with keys {sorted(first)}")
    if np.ndim(first) == 0:
        return "lambda1"
    if np.ndim(first) == 1:
        return "sweep"
    raise ValueError(f"cannot summarize results of type {type(first).__name__}")


def summarize(results, kind: str | None = None, **extra) -> Summary:
    """The summary of one analysis over prompts (see the module docstring for what `results` may be).
    Spectrum summaries also take `orbits=` and `probe_seed_results=` (per prompt)."""
    results = _unbatch(results)
    if not results:
        raise ValueError("summarize needs at least one per-prompt result")
    kind = kind or kind_of(results)
    if kind not in SUMMARIZERS:
        raise ValueError(f"unknown analysis {kind!r}; one of {sorted(SUMMARIZERS)}")
    return SUMMARIZERS[kind](results, **extra)


def summary_from_json(d: dict) -> Summary:
    """Read back a summary written by `Summary.to_json()` (results.json["summary"])."""
    return SUMMARY_TYPES[d["kind"]].from_json(d)
