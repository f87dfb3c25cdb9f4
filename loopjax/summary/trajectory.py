"""Summaries of the loop's states: cosine similarity across loops and sublayers, and convergence."""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Sequence

import numpy as np

from loopjax.summary.base import Summary, as_float, as_list, register


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


@register("similarity", SimilaritySummary)
def summarize_similarity(results: Sequence[dict]) -> SimilaritySummary:
    names = list(results[0]["names"])
    loops = len(dict.fromkeys(n.split("/")[0] for n in names))
    mean = np.stack([np.asarray(r["matrix"], dtype=np.float64) for r in results]).mean(0)
    per = mean.shape[0] // loops
    ends = [(t + 1) * per - 1 for t in range(loops)]
    return SimilaritySummary(
        n_prompts=len(results), states_names=names, states_per_loop=per, loops=loops, mean_matrix=as_list(mean),
        loop_output_consecutive=[as_float(mean[ends[t], ends[t + 1]]) for t in range(loops - 1)],
        same_sublayer_consecutive_loops=[as_float(np.mean([mean[t * per + j, (t + 1) * per + j] for j in range(per)]))
                                         for t in range(loops - 1)],
        adjacent_sublayers_within_loop=[as_float(np.mean([mean[t * per + j, t * per + j + 1] for j in range(per - 1)]))
                                        if per > 1 else None for t in range(loops)],
        min_similarity=as_float(mean.min()))


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


@register("convergence", ConvergenceSummary)
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
        slope = as_float(np.mean([np.polyfit(t, logs[p, half:], 1)[0] for p in range(d.shape[0])]))
    return ConvergenceSummary(
        n_prompts=int(d.shape[0]), steps=int(T), step_norm_first_mean=as_float(d[:, 0].mean()),
        step_norm_last_mean=as_float(d[:, -1].mean()), relative_step_first_mean=as_float(rel[:, 0].mean()),
        relative_step_last_mean=as_float(rel[:, -1].mean()), state_norm_last_mean=as_float(s[:, -1].mean()),
        log_step_norm_slope_second_half=slope, converged_fraction=as_float((rel[:, -1] < 1e-3).mean()))
