"""Ctrl-C during `import loopjax` (stdlib only: it runs before jax is imported).

Importing jax takes about a second; a SIGINT then raises KeyboardInterrupt inside jax's import (measured:
the process can die with SIGSEGV) or inside jax's garbage-collector callback `_xla_gc_callback`, where it
cannot propagate: Python prints "Exception ignored in ..." and the command runs to the end. So while
loopjax imports, SIGINT only records itself (`PENDING`). At the end of the import (`end_import`):

* in the command-line process (`python -m loopjax.cli ...` or the `loopjax` script) the recording handler
  stays: `loopjax.cli.runner.Interrupts` reads `PENDING` and stops at its first safe point (exit 130, no
  folder written);
* anywhere else the previous handler is restored and a recorded Ctrl-C is delivered again, so
  `import loopjax` raises KeyboardInterrupt as usual, after jax's import is complete.
"""
import os
import signal
import sys
import threading

PENDING: list[int] = []
_previous = None


def _record(signum, frame):
    PENDING.append(signum)


def is_cli_process() -> bool:
    """Whether this process is the loopjax command line (judged from sys.argv while it imports)."""
    argv0 = sys.argv[0] if sys.argv else ""
    return argv0 == "-m" and "loopjax.cli" in " ".join(getattr(sys, "orig_argv", [])) or \
        os.path.basename(argv0) in ("loopjax", "loopjax.exe")


def begin_import() -> None:
    global _previous
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        _previous = signal.signal(signal.SIGINT, _record)


def end_import() -> None:
    global _previous
    if _previous is None or is_cli_process():
        return
    signal.signal(signal.SIGINT, _previous)
    _previous = None
    if PENDING:
        PENDING.clear()
        signal.raise_signal(signal.SIGINT)
