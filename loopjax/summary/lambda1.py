"""λ1 over prompts (one probe), and λ1 over checkpoints x prompts (a sweep)."""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import numpy as np

from loopjax.engine import stats
from loopjax.summary.base import Summary, as_float, as_list, plus_minus, register


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
        return [("prompts", str(self.n_prompts)), ("λ1 (mean ± std)", plus_minus(self.mean, self.std)),
                ("standard error of the mean", f"{self.sem:.4f}"),
                ("min / max", f"{self.min:+.4f} / {self.max:+.4f}")]


@register("lambda1", Lambda1Summary, float, int, np.floating, np.ndarray, jax.Array,
          accepts=lambda r: np.ndim(r) == 0)
def summarize_lambda1(values) -> Lambda1Summary:
    x = np.asarray([as_float(v) for v in values])
    return Lambda1Summary(n_prompts=int(x.size), mean=as_float(x.mean()), std=as_float(x.std()),
                          sem=as_float(stats.standard_error(x)),
                          min=as_float(x.min()), max=as_float(x.max()))


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
            (f"  checkpoint {i}", plus_minus(m, sd)) for i, (m, sd) in
            enumerate(zip(self.lambda1_mean_per_checkpoint, self.lambda1_std_per_checkpoint))]


@register("sweep", SweepSummary, list, tuple, np.ndarray, jax.Array, accepts=lambda r: np.ndim(r) == 1)
def summarize_sweep(lambda1_per_checkpoint) -> SweepSummary:
    """`lambda1_per_checkpoint`: C lists (one per checkpoint) of P per-prompt λ1 values."""
    lam = np.asarray([[as_float(v) for v in row] for row in lambda1_per_checkpoint])
    means, per_prompt_std = lam.mean(1), lam.std(1)
    return SweepSummary(
        n_checkpoints=int(lam.shape[0]), n_prompts=int(lam.shape[1]),
        lambda1_mean_per_checkpoint=as_list(means), lambda1_std_per_checkpoint=as_list(per_prompt_std),
        lambda1_sem_per_checkpoint=as_list(np.atleast_1d(stats.standard_error(lam, axis=1))),
        std_across_checkpoints=as_float(means.std()),
        mean_per_prompt_std=as_float(per_prompt_std.mean()),
        mean_over_prompts_of_std_across_checkpoints=as_float(lam.std(0).mean()),
        ratio_across_checkpoints_to_per_prompt=(as_float(means.std() / per_prompt_std.mean())
                                                if per_prompt_std.mean() > 0 else math.nan))
