"""`loopjax train`: train a small loop language model with optax (`loopjax.train.cli`).

Every argument is checked before anything is written (counts against int32, seeds, a finite learning rate
> 0); the first Ctrl-C stops after the current training step, saves a resumable training state and exits
130 (a second one stops at once)."""
from __future__ import annotations

import sys
from pathlib import Path

from loopjax.cli.budget import check_int_range, check_positive_float, check_seed
from loopjax.cli.commands.base import Command
from loopjax.cli.session import CLIError
from loopjax.train import cli as train_cli
from loopjax.train.trainer import TRAIN_STATE

SAFE_POINT = "after the current training step; a resumable checkpoint is saved"


def add_options(p) -> None:
    train_cli.add_arguments(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def check_args(args) -> None:
    """The train options JAX and optax cannot take, refused with the flag named (CLIError)."""
    for flag, field, typ, _ in train_cli.FIELDS:
        value = getattr(args, field)
        if typ is int and value is not None and field != "seed":
            check_int_range(flag, value, lo=0)  # >= 1 where it counts: TrainConfig
    check_positive_float("--lr", args.lr)
    check_positive_float("--clip", args.clip)
    try:
        check_seed(args.seed, "--seed")
        if args.ablation or args.preset:
            for seed in train_cli.parse_seeds(args.seeds):
                check_seed(seed, "--seeds")
            train_cli.parse_variants(args.variants)
            check_int_range("--regime-steps", args.regime_steps, lo=1)
    except ValueError as e:
        raise CLIError(str(e)) from None


def after_hard_stop(out: Path) -> str:
    """What a second Ctrl-C (mid-step) left in `out`, for its message."""
    if out.is_dir() and any(out.rglob(TRAIN_STATE)):
        return f"the last saved training state is in {out}, rerun with --resume to continue"
    return f"{out} holds a partial run, rerun with --overwrite" if out.exists() else "nothing was written"


def run(args, ctx) -> int:
    check_args(args)
    ctx.interrupts.safe_point = SAFE_POINT
    try:
        from loopjax.cli.plot_ablation import plot_all

        return train_cli.run(args, stop_requested=ctx.interrupts.stop_requested, draw=plot_all)
    except KeyboardInterrupt:
        print(f"loopjax: interrupted; {after_hard_stop(Path(args.out))}", file=sys.stderr)
        return 130


COMMAND = Command("train", help="train a small loop language model (optax), with lambda_1 through training; "
                                "--preset injection-ablation trains the injection variants over seeds",
                  description=train_cli.__doc__, add_options=add_options, run=run)
