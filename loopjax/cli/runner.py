"""The one runner every per-prompt command goes through: the prompt loop, atomic saves, resume,
progress bars, safe interruption, summary and figures.

An analysis (see `loopjax.cli.analyses`) declares which library front-end computes one prompt, how its
result is stored as JSON and read back, and which figures it draws; `Runner.run` does the rest:

    results folder (RunStore) -> for each prompt: reuse the saved record (--resume) or compute, save
    -> restore every record to a library result -> loopjax.summarize -> figures -> results.json
"""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from loopjax import early_signals
from loopjax.cli.runstore import RunError, RunStore, utc_now

SWALLOWED: list[str] = []   # KeyboardInterrupts Python could not raise (inside a gc callback), see below


def _unraisable(hook):
    """sys.unraisablehook that keeps a Ctrl-C instead of losing it: a SIGINT whose KeyboardInterrupt is
    raised inside a garbage-collector callback (jax's `_xla_gc_callback` runs at every collection) cannot
    propagate; Python prints "Exception ignored in ..." and the run would go on. It is recorded here and
    `Interrupts` turns it into a stop at the next safe point."""

    def keep(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            SWALLOWED.append(getattr(unraisable.object, "__qualname__", repr(unraisable.object)))
            return
        hook(unraisable)

    keep.loopjax_original = hook
    return keep


def guard_swallowed_interrupts() -> None:
    """Install `_unraisable` once (idempotent; other unraisable exceptions go to the previous hook)."""
    if not hasattr(sys.unraisablehook, "loopjax_original"):
        sys.unraisablehook = _unraisable(sys.unraisablehook)


guard_swallowed_interrupts()


@dataclasses.dataclass
class Hooks:
    """Callbacks for tests and embedding applications: after a prompt's record is saved (unit key), and
    after each saved segment of a checkpointed scan (unit key, steps done). Raising KeyboardInterrupt
    from one simulates an interruption at that point."""
    after_unit: Callable[[str], None] = lambda unit: None
    after_segment: Callable[[str, int], None] = lambda unit, steps: None


class Interrupts:
    """Ctrl-C handling: the first SIGINT only sets a flag, checked at safe points (between compiled
    calls, after a save), where KeyboardInterrupt is raised; a second SIGINT interrupts at once. Stopping
    between compiled calls lets JAX's threads finish, so the process exits cleanly with status 130.

    A Ctrl-C that arrived before the handler was installed and was lost inside a gc callback (`SWALLOWED`)
    counts as a first Ctrl-C. Long loops that must stop at their own boundary (`train`: save a resumable
    checkpoint, then exit 130) poll `stop_requested()` instead of calling `check()`; `safe_point` names
    that boundary in the message printed at the first Ctrl-C."""

    def __init__(self, safe_point: str = "after the current prompt or segment"):
        self.requested = False
        self.safe_point = safe_point
        self.opened: Path | None = None   # the results folder of the run in progress, once it exists
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        self.stop_requested()
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame):
        if self.requested:
            if frame is not None and frame.f_code.co_name.endswith("gc_callback"):
                # raising here would be swallowed by the collector: deliver it again once outside
                import _thread

                threading.Timer(0.05, _thread.interrupt_main).start()
                return
            raise KeyboardInterrupt("interrupted twice")
        self.requested = True
        msg = (f"\nloopjax: stopping at the next safe point ({self.safe_point}); press Ctrl-C again to stop "
               f"at once\n")
        try:  # os.write, not print: a signal handler may run in the middle of another print
            os.write(sys.stderr.fileno(), msg.encode())
        except (OSError, ValueError, AttributeError):  # no usable stderr (captured, closed)
            pass

    def stop_requested(self) -> bool:
        """Whether a Ctrl-C asked to stop (a lost one included): for loops that stop on their own."""
        if SWALLOWED or early_signals.PENDING:  # a Ctrl-C lost in a gc callback / kept while loopjax imported
            SWALLOWED.clear()
            early_signals.PENDING.clear()
            self.requested = True
        return self.requested

    def check(self):
        if self.stop_requested():
            raise KeyboardInterrupt()


def progress(iterable=None, *, quiet=False, **kw):
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True, file=sys.stderr, **kw)


@dataclasses.dataclass
class Runner:
    """Runs units of work (prompts) into one results folder."""
    store: RunStore
    quiet: bool = False
    hooks: Hooks = dataclasses.field(default_factory=Hooks)
    interrupts: Interrupts = dataclasses.field(default_factory=Interrupts)

    def begin(self, unit_keys: list[str]) -> None:
        self.interrupts.check()  # Ctrl-C while loading or compiling: stop before any folder is written
        self.store.begin(unit_keys)
        self.interrupts.opened = self.store.root

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        """Wrap begin ... finish: an error after the folder was made removes it (nothing finished) or
        keeps it for --resume, and the message says which; Ctrl-C keeps it and frees the lock."""
        if error is not None:
            raised = self.fail(error)
            if raised is not error:
                raise raised from error
        return False

    def fail(self, error: BaseException) -> BaseException:
        """What to raise for `error` once the store is cleaned up (see `RunStore.abandon`): the same
        KeyboardInterrupt (the folder stays resumable), else a RunError whose message ends with what
        happened to the folder. Idempotent: an error already reported this way passes through."""
        if isinstance(error, KeyboardInterrupt) or not isinstance(error, Exception):
            self.store.release()
            return error
        if (getattr(error, "loopjax_cleaned", False) or not self.store.began
                or str(error).startswith("--resume:")):  # a refused saved record: the folder is left for it
            self.store.began = False
            self.store.release()
            return error
        what = self.store.abandon()
        text = str(error).strip() or type(error).__name__
        if not isinstance(error, (RunError, ValueError, OSError, FloatingPointError, NotImplementedError,
                                  TypeError)):
            text = f"{type(error).__name__}: {text}"
        raised = RunError(f"{text}; {what}")
        raised.loopjax_cleaned = True
        return raised

    def units(self, units: list[tuple[str, dict]], compute: Callable[[str, dict], dict], *, desc: str,
              cached: Callable[[str, dict], dict | None] | None = None) -> list[dict]:
        """The record of every unit: saved ones (with --resume) are reused, the rest computed and saved
        atomically as each finishes. `compute(key, inputs)` returns the unit's JSON-able result. An error
        cleans up as `fail` says."""
        try:
            return self._units(units, compute, desc=desc, cached=cached)
        except BaseException as e:
            raised = self.fail(e)
            if raised is e:
                raise
            raise raised from e

    def _units(self, units, compute, *, desc, cached):
        records = []
        with progress(total=len(units), desc=desc, unit="prompt", quiet=self.quiet) as bar:
            for key, inputs in units:
                rec = (cached or self.store.load_unit)(key, inputs)
                if rec is None:
                    self.interrupts.check()
                    t0 = time.perf_counter()
                    result = compute(key, inputs)
                    rec = self.store.save_unit(key, inputs, result, {"seconds": round(time.perf_counter() - t0, 3),
                                                                     "finished": utc_now()})
                    self.hooks.after_unit(key)
                    self.interrupts.check()
                records.append(rec)
                bar.update(1)
        return records

    def finish(self, results: dict) -> dict:
        results["timestamps"]["finished"] = utc_now()
        try:
            return self.store.finish(results)
        except BaseException as e:
            raised = self.fail(e)
            if raised is e:
                raise
            raise raised from e


def prompt_entries(records: list[dict]) -> list[dict]:
    """The per-prompt section of results.json: inputs, the stored result and the time it took."""
    out = []
    for rec in records:
        inp = rec["inputs"]
        out.append({**{k: v for k, v in inp.items()}, "n_tokens": len(inp["token_ids"]), **rec["result"],
                    "seconds": rec.get("timing", {}).get("seconds")})
    return out


def header(analysis: str, model_info: dict | None, store: RunStore, software: dict) -> dict[str, Any]:
    return {"analysis": analysis, "status": "incomplete", "model": model_info, "settings": store.settings,
            "seed": store.settings.get("seed"), "software": software,
            "timestamps": {"started": store.started, "finished": None}, "results_dir": str(store.root)}
