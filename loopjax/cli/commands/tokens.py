"""`loopjax tokens`: per-token spectra, the exponents of each position's own block of the Jacobian."""
from __future__ import annotations

import dataclasses

from loopjax.cli.analyses import TOKENS
from loopjax.cli.commands.base import (DEFAULT_MODEL, PAPER, Command, Transient, or_default, pad_multiple,
                                       run_command)
from loopjax.cli.parser import add_common, add_engine_steps
from loopjax.cli.session import CLIError


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokensSettings(Transient):
    k: int
    steps: int
    pad_multiple: int | str | None = None   # the state padded to a multiple of N tokens (one program per bucket)

    @classmethod
    def from_args(cls, args, *, k=None, steps=None) -> "TokensSettings":
        return cls(k=or_default(k if k is not None else args.k, PAPER["tokens"]["k"]),
                   steps=or_default(steps if steps is not None else args.steps, PAPER["tokens"]["steps"]),
                   pad_multiple=pad_multiple(args), **dataclasses.asdict(Transient.from_args(args)))


def add_options(p) -> None:
    add_common(p, model_default=DEFAULT_MODEL, k_default=PAPER["tokens"]["k"], steps_default=PAPER["tokens"]["steps"])
    add_engine_steps(p)


def check_block(settings: TokensSettings, s) -> None:
    hidden = s.loaded.model.config.hidden_size
    if settings.k > hidden:
        raise CLIError(f"--k {settings.k} exceeds the hidden size {hidden} (one position's block)")


def summary_line(r: dict) -> str:
    return (f"prompt lambda1 (max over positions) {r['union_lambda1_mean']:+.4f}; "
            f"{100 * r['fraction_expanding_positions']:.1f}% of positions expand")


def run(args, ctx) -> int:
    return run_command(args, ctx, TOKENS, TokensSettings.from_args, summary_line, check_block)


COMMAND = Command(
    "tokens", help="per-token spectra: the exponents of each position's own block of the Jacobian",
    description="The loop map is causal, so its Jacobian is block lower-triangular over positions and the prompt's "
                "spectrum is the union of the per-position blocks' spectra "
                "(loopjax.analysis.tokens.token_spectrum). Writes OUT/tokens/results.json and a figure of "
                "lambda_1 per token of prompt 0.",
    add_options=add_options, run=run)
