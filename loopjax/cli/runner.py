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

from loopjax.cli.runstore import RunStore, utc_now


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
    between compiled calls lets JAX's threads finish, so the process exits cleanly with status 130."""

    def __init__(self):
        self.requested = False
        self.opened: Path | None = None   # the results folder of the run in progress, once it exists
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt("interrupted twice")
        self.requested = True
        try:  # os.write, not print: a signal handler may run in the middle of another print
            os.write(sys.stderr.fileno(), b"\nloopjax: stopping at the next safe point (after the current "
                                          b"prompt or segment); press Ctrl-C again to stop at once\n")
        except (OSError, ValueError, AttributeError):  # no usable stderr (captured, closed)
            pass

    def check(self):
        if self.requested:
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

    def units(self, units: list[tuple[str, dict]], compute: Callable[[str, dict], dict], *, desc: str,
              cached: Callable[[str, dict], dict | None] | None = None) -> list[dict]:
        """The record of every unit: saved ones (with --resume) are reused, the rest computed and saved
        atomically as each finishes. `compute(key, inputs)` returns the unit's JSON-able result."""
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
        return self.store.finish(results)


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
