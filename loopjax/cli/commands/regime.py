"""`loopjax regime`: the regime of each prompt's orbit (fixed point, periodic, quasi-periodic, chaotic,
undetermined, diverged), decided at an adaptive, converged horizon with its evidence."""
from __future__ import annotations

import dataclasses

from loopjax.cli.analyses import REGIME
from loopjax.cli.commands.base import AUTO_PAD, DEFAULT_MODEL, Command, run_command
from loopjax.cli.parser import add_common


@dataclasses.dataclass(frozen=True, kw_only=True)
class RegimeSettings:
    """`loopjax.classify_regime`'s horizon: Benettin with k probes from min_steps, doubled until λ1 converges,
    up to max_steps (then "undetermined"); closed orbits of period <= max_period."""
    k: int = 2
    min_steps: int = 64
    max_steps: int = 8192
    max_period: int = 128
    pad_multiple: int | str | None = AUTO_PAD   # padded prompts share compilations (loopjax.regime; resolve_pad)

    @classmethod
    def from_args(cls, args) -> "RegimeSettings":
        pad = getattr(args, "pad_multiple", None)
        return cls(k=args.k or cls.k, min_steps=args.min_steps, max_steps=args.steps or cls.max_steps,
                   max_period=args.max_period, pad_multiple=cls.pad_multiple if pad is None else pad)


def add_options(p) -> None:
    add_common(p, model_default=DEFAULT_MODEL, k_default=RegimeSettings.k,
               steps_help="the horizon cap (steps); a verdict that has not converged by then is 'undetermined'",
               steps_default=RegimeSettings.max_steps)
    p.add_argument("--min-steps", type=int, default=RegimeSettings.min_steps, help="the first horizon")
    p.add_argument("--max-period", type=int, default=RegimeSettings.max_period, help="longest period looked for")


def summary_line(r: dict) -> str:
    return ", ".join(f"{k} {n}" for k, n in r["counts"].items()) + f" (horizons {r['horizon_min']}-{r['horizon_max']})"


def run(args, ctx) -> int:
    return run_command(args, ctx, REGIME, RegimeSettings.from_args, summary_line)


COMMAND = Command(
    "regime", help="the regime of each prompt's orbit, decided at a converged horizon, with its evidence",
    description="Per prompt: loopjax.regime (fixed point: exponents = log|eig J(z*)|; periodic: Floquet exponents; "
                "quasi-periodic: no closing orbit and lambda_1 = 0 within error; chaotic: lambda_1 > 0 beyond its "
                "error at a converged horizon, confirmed by a finite perturbation, no period; otherwise "
                "undetermined). The horizon grows until lambda_1 converges, up to --steps. Writes "
                "OUT/regime/results.json (the verdicts with their evidence).",
    add_options=add_options, run=run)
