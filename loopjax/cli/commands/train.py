"""`loopjax train`: train a small loop language model with optax (`loopjax.train.cli`)."""
from __future__ import annotations

from loopjax.cli.commands.base import Command
from loopjax.train import cli as train_cli


def add_options(p) -> None:
    train_cli.add_arguments(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def run(args, ctx) -> int:
    return train_cli.run(args)


COMMAND = Command("train", help="train a small loop language model (optax), with lambda_1 through training; "
                                "--preset injection-ablation trains the matched pair",
                  description=train_cli.__doc__, add_options=add_options, run=run)
