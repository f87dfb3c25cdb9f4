"""`loopjax convert`: an HF checkpoint (dir or hub id) to a loopjax orbax checkpoint."""
from __future__ import annotations

from pathlib import Path

import loopjax
from loopjax.cli.commands.base import Command, say
from loopjax.cli.parser import add_quiet_debug
from loopjax.cli.session import CLIError, check_source_exists


def add_options(p) -> None:
    p.add_argument("src", metavar="SRC", help="HF checkpoint dir or hub id ORG/NAME")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--revision", default=None, help="hub revision of SRC")
    p.add_argument("--dtype", default=None, help="store the weights in this dtype (default: as stored)")
    add_quiet_debug(p)


def run(args, ctx) -> int:
    if Path(args.out).exists():
        raise CLIError(f"{args.out} already exists; choose a new output directory")
    check_source_exists(args.src)
    loopjax.convert(args.src, args.out, revision=args.revision, dtype=args.dtype)
    say(args.quiet, f"converted {args.src} -> {args.out}")
    return 0


COMMAND = Command("convert", help="convert an HF checkpoint (dir or hub id) to a loopjax orbax checkpoint",
                  description="Convert an HF checkpoint (local dir or hub id) into an orbax checkpoint that "
                              "`loopjax.load` reads.", add_options=add_options, run=run)
