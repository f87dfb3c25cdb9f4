"""`loopjax dynamics`: where the dynamics live — covariant Lyapunov vectors (angles, localisation),
finite-time λ1, the logit lens per loop and attention similarity across loops, per prompt."""
from __future__ import annotations

import dataclasses

from loopjax.cli.analyses import DYNAMICS
from loopjax.cli.commands.base import AUTO_PAD, DEFAULT_MODEL, Command, run_command
from loopjax.cli.parser import add_common


@dataclasses.dataclass(frozen=True, kw_only=True)
class DynamicsSettings:
    """CLVs: k vectors over a window of `window` loops after `warmup` (Ginelli's backward pass also runs
    `window` loops past it); the logit lens over `lens_steps` loops; attention over `attention_loops`."""
    clv_k: int = 8
    window: int = 64
    warmup: int = 64
    taus: tuple = (4, 16)
    lens_steps: int = 16
    attention_loops: int = 8
    pad_multiple: int | str | None = AUTO_PAD   # padded prompts share compilations (resolve_pad)

    @classmethod
    def from_args(cls, args) -> "DynamicsSettings":
        return cls(clv_k=args.k or cls.clv_k, window=args.steps or cls.window,
                   warmup=cls.warmup if args.warmup is None else args.warmup,
                   lens_steps=args.lens_steps, attention_loops=args.attention_loops)


def add_options(p) -> None:
    add_common(p, model_default=DEFAULT_MODEL, k_default=DynamicsSettings.clv_k,
               steps_help="CLV window (loop steps)", steps_default=DynamicsSettings.window)
    p.add_argument("--warmup", type=int, default=None, help=f"loops before the window "
                                                            f"(default {DynamicsSettings.warmup})")
    p.add_argument("--lens-steps", type=int, default=DynamicsSettings.lens_steps, help="logit-lens loops")
    p.add_argument("--attention-loops", type=int, default=DynamicsSettings.attention_loops,
                   help="loops compared by the attention similarity")


def summary_line(r: dict) -> str:
    med = r["angle_median_deg"]
    return (f"median CLV angle {min(med):.1f}-{max(med):.1f} deg over prompts; logit-lens agreement at loop 1 "
            f"{r['lens_agreement_mean'][0]:.2f}")


def run(args, ctx) -> int:
    return run_command(args, ctx, DYNAMICS, DynamicsSettings.from_args, summary_line)


COMMAND = Command(
    "dynamics", help="covariant Lyapunov vectors, finite-time exponents, logit lens and attention across loops",
    description="Per prompt: Ginelli CLVs (minimal angle between the unstable and stable spans, localisation of v1 "
                "over token positions, CLV vs Gram-Schmidt exponents), finite-time lambda_1 distributions, the "
                "logit lens per loop (and Ouro's exit gate) and attention-pattern similarity across loops. "
                "Writes OUT/dynamics/results.json and figures.",
    add_options=add_options, run=run)
