"""The ``loopjax`` command line: convert, spectrum, attribute, sweep, similarity, trajectory, report.

Defaults are the paper's settings (spectrum k=50, T=64; attribution k=1, T=32; sweep λ1 with one probe,
T=32; similarity over 4 loops; trajectory over 64 steps) on the 20 built-in prompts. Every analysis writes
``OUT/<analysis>/results.json`` (all numbers, settings, versions, timestamps) and PNG figures; each
finished prompt is saved atomically first, so an interrupted run continues with ``--resume``. Errors are
reported without a traceback (``--debug`` shows it) with exit status 2; Ctrl-C stops at the next safe
point with exit status 130.

Layout: `parser` (the shared options), `commands/` (one short declaration per command: options, typed
settings, run; `commands/base.py` the one per-prompt runner), `analyses` (what each per-prompt analysis
computes, stores and draws), `runner` (the prompt loop, saving, resume, progress, Ctrl-C), `runstore`,
`session` (model, tokenizer, names, versions), `plots`, `report`.
"""
from __future__ import annotations

import sys

import jax

from loopjax.cli import commands
from loopjax.cli.commands import Context, build_parser
from loopjax.cli.parser import check_counts
from loopjax.cli.runner import Hooks
from loopjax.cli.session import CLIError, enable_compile_cache, tune_malloc
from loopjax.cli.runstore import RunError


def _message(e: BaseException) -> str:
    return str(e).strip() or type(e).__name__


def main(argv: list[str] | None = None, *, hooks: Hooks | None = None) -> int:
    """Run one command; returns the exit status. `hooks` (tests, embedding apps) see every saved unit."""
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    tune_malloc()
    ctx = Context(hooks=hooks or Hooks())
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        args._argv = argv
        check_counts(args)
        if getattr(args, "token_ids", False) and not args.prompts:
            raise CLIError("--token-ids needs --prompts FILE")
        if getattr(args, "x64", False):
            jax.config.update("jax_enable_x64", True)
        enable_compile_cache()
        with ctx.interrupts:
            return int(args.func(args, ctx) or 0)
    except KeyboardInterrupt:
        where = ctx.interrupts.opened
        saved = (f"; finished prompts are saved in {where}, rerun with --resume to continue" if where
                 else "; nothing was written")
        print(f"loopjax: interrupted{saved}", file=sys.stderr)
        return 130
    except (RunError, FloatingPointError, ValueError, FileNotFoundError, FileExistsError, NotImplementedError,
            OSError, TypeError) as e:
        if debug:
            raise
        print(f"loopjax: error: {_message(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # anything else: still no traceback, unless --debug
        if debug:
            raise
        print(f"loopjax: error: {type(e).__name__}: {_message(e)} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


__all__ = ["main", "build_parser", "Hooks", "commands"]
