"""`loopjax similarity` and `loopjax trajectory`: the loop's states across loops and over steps."""
from __future__ import annotations

import argparse
import dataclasses

from loopjax.cli.analyses import SIMILARITY, TRAJECTORY
from loopjax.cli.commands.base import AUTO_PAD, DEFAULT_MODEL, PAPER, Command, or_default, pad_multiple, run_command
from loopjax.cli.parser import add_common, whole_number


@dataclasses.dataclass(frozen=True)
class SimilaritySettings:
    loops: int
    pad_multiple: int | str | None = AUTO_PAD   # padded prompts share one compilation (resolve_pad)


@dataclasses.dataclass(frozen=True)
class TrajectorySettings:
    steps: int
    pad_multiple: int | str | None = AUTO_PAD   # padded prompts share one compilation (resolve_pad)


def add_similarity_options(p) -> None:
    add_common(p, model_default=DEFAULT_MODEL, steps_help="number of loops n (alias --loops)",
               steps_default=PAPER["similarity"]["loops"])
    p.add_argument("--loops", type=whole_number, dest="steps", help=argparse.SUPPRESS)  # --loops as an alias of --steps


def run_similarity(args, ctx) -> int:
    return run_command(args, ctx, SIMILARITY,
                       lambda a: SimilaritySettings(or_default(a.steps, PAPER["similarity"]["loops"]), pad_multiple(a)),
                       lambda r: "loop-output cosine (consecutive) = "
                                 f"{[round(x, 4) for x in r['loop_output_consecutive']]}")


def add_trajectory_options(p) -> None:
    add_common(p, model_default=DEFAULT_MODEL, steps_default=PAPER["trajectory"]["steps"])


def run_trajectory(args, ctx) -> int:
    return run_command(args, ctx, TRAJECTORY,
                       lambda a: TrajectorySettings(or_default(a.steps, PAPER["trajectory"]["steps"]), pad_multiple(a)),
                       lambda r: f"||z_(t+1) - z_t|| {r['step_norm_first_mean']:.3g} -> {r['step_norm_last_mean']:.3g}")


SIMILARITY_COMMAND = Command(
    "similarity", help="cosine similarity of the states after every sublayer across loops",
    description="Residual-stream cosine similarity between the states after every sublayer (Ouro: n_layers + "
                "final norm per loop; Huginn: adapter + n_core blocks per loop) over n loops, averaged over "
                "prompts.",
    add_options=add_similarity_options, run=run_similarity)
TRAJECTORY_COMMAND = Command(
    "trajectory", help="convergence: ||z_(t+1) - z_t|| and ||z_t|| over loop steps",
    description="||z_{t+1} - z_t|| and ||z_t|| over loop steps, per prompt.",
    add_options=add_trajectory_options, run=run_trajectory)
