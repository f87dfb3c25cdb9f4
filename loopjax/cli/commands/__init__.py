"""The `loopjax` commands, one short declaration each (`Command`: help, options, settings, run):

    convert      cli/commands/convert.py      spectrum    cli/commands/spectrum.py
    attribute    cli/commands/attribute.py    tokens      cli/commands/tokens.py
    sweep        cli/commands/sweep.py        similarity, trajectory   cli/commands/similarity.py
    report       cli/commands/report.py       ablate      cli/commands/ablate.py
    train        cli/commands/train.py        regime      cli/commands/regime.py
    dynamics     cli/commands/dynamics.py

What they share (typed common options, the recorded settings, the per-prompt runner) is in `base`."""
from __future__ import annotations

import argparse

from loopjax.cli.commands import (ablate, attribute, convert, dynamics, regime, report, similarity, spectrum, sweep,
                                  tokens, train)
from loopjax.cli.commands.base import (BUILTIN_MODELS, DEFAULT_MODEL, PAPER, PRESETS, Command, Context)
from loopjax.cli.commands.sweep import training_step
from loopjax.cli.parser import HelpFormatter, Parser

COMMANDS: tuple[Command, ...] = (convert.COMMAND, spectrum.COMMAND, attribute.COMMAND, tokens.COMMAND, sweep.COMMAND,
                                 similarity.SIMILARITY_COMMAND, similarity.TRAJECTORY_COMMAND, report.COMMAND,
                                 ablate.COMMAND, train.COMMAND, regime.COMMAND, dynamics.COMMAND)


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="loopjax", formatter_class=HelpFormatter,
        description="Lyapunov spectral analysis of looped transformers (Ouro, Huginn, Parcae) in JAX.",
        epilog="Run `loopjax COMMAND --help` for each command's options. `loopjax report` with no --model "
               "analyses the trained built-in models into results/<model-name>/.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for c in COMMANDS:
        p = sub.add_parser(c.name, formatter_class=HelpFormatter, help=c.help, description=c.description)
        c.add_options(p)
        p.set_defaults(func=c.run)
    return ap


__all__ = ["COMMANDS", "Command", "Context", "build_parser", "PRESETS", "PAPER", "DEFAULT_MODEL", "BUILTIN_MODELS",
           "training_step"]
