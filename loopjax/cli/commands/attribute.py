"""`loopjax attribute`: per-sublayer Lyapunov exponents (QR after every sublayer)."""
from __future__ import annotations

import dataclasses

from loopjax.cli.analyses import ATTRIBUTION
from loopjax.cli.commands.base import (DEFAULT_MODEL, PAPER, Command, Transient, check_k_fits, or_default,
                                       pad_multiple, run_command)
from loopjax.cli.parser import add_common, add_transient


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttributionSettings(Transient):
    k: int
    steps: int
    pad_multiple: int | str | None = None
    relative: bool = True  # gauge-relative (each sublayer's state growth subtracted); --plain: the raw form

    @classmethod
    def from_args(cls, args, *, k=None, steps=None) -> "AttributionSettings":
        return cls(k=or_default(k if k is not None else args.k, PAPER["attribution"]["k"]),
                   steps=or_default(steps if steps is not None else args.steps, PAPER["attribution"]["steps"]),
                   **dataclasses.asdict(Transient.from_args(args)), pad_multiple=pad_multiple(args),
                   relative=not getattr(args, "plain", False))


def add_options(p) -> None:
    add_common(p, model_default=DEFAULT_MODEL, k_default=PAPER["attribution"]["k"],
               steps_default=PAPER["attribution"]["steps"])
    add_transient(p, probe_seeds=False)
    add_plain(p)


def add_plain(p) -> None:
    p.add_argument("--plain", action="store_true",
                   help="the plain (coordinate-dependent) attribution instead of the gauge-relative one, which "
                        "subtracts each sublayer's own state growth log(|z_out|/|z_in|)")


def summary_line(r: dict) -> str:
    return (f"lambda1 total = {r['lambda1_total_mean']:+.4f}; largest expansion in "
            f"{r['largest_expanding_sublayer']}")


def run(args, ctx) -> int:
    return run_command(args, ctx, ATTRIBUTION, AttributionSettings.from_args, summary_line, check_k_fits)


COMMAND = Command(
    "attribute", help="per-sublayer Lyapunov exponents (QR after every sublayer)",
    description="Per-sublayer exponents: QR after each named sublayer, so the sublayer exponents sum to the loop's. "
                "k=1 gives each sublayer's contribution to lambda_1; k>1 adds a sublayer x direction heatmap.",
    add_options=add_options, run=run)
