"""Results folders that survive interruption: atomic saves, a RUNNING marker, resume.

Layout of one analysis folder ``OUT/<analysis>/``::

    RUNNING                 JSON marker {"status": "incomplete", ...}; present while a run is unfinished
    prompts/NNN.json        one finished unit of work (a prompt; for sweeps ``cCC-pNNN``), written atomically
    checkpoints/NNN/        orbax checkpoints of a long Benettin scan (``--checkpoint-every``), per prompt
    results.json            written last, atomically, with ``"status": "complete"``; RUNNING is then removed
    *.png                   figures

A folder with ``RUNNING`` and no ``results.json`` is an unfinished run. ``--resume`` reuses every saved
unit whose recorded settings and inputs equal the current ones (any difference is an error naming the
field); without ``--resume`` a non-empty folder is an error unless ``--overwrite`` is given (which
deletes that analysis folder first).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from loopjax.io.checkpoint import read_json  # noqa: F401  (the one JSON reader; re-exported for the CLI)
from loopjax.io.files import atomic_write_json, atomic_write_text, to_jsonable  # noqa: F401  (re-exported)


class RunError(Exception):
    """An error the CLI reports as one line (no traceback)."""


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def canonical(obj: Any) -> Any:
    """The JSON round-trip of ``obj`` (what a saved file gives back)."""
    return json.loads(json.dumps(to_jsonable(obj), allow_nan=False))


def _first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{prefix}{key}"
            d = _first_difference(a[key], b[key], f"{prefix}{key}.")
            if d:
                return d
        return None
    return None if a == b else prefix.rstrip(".") or "<value>"


class RunStore:
    """One analysis folder (see module docstring)."""

    def __init__(self, root: str | Path, analysis: str, settings: dict, *, resume: bool = False,
                 overwrite: bool = False):
        self.root = Path(root)
        self.analysis = analysis
        self.settings = canonical(settings)
        self.resume = resume
        self.overwrite = overwrite
        self.prompts_dir = self.root / "prompts"
        self.ckpt_dir = self.root / "checkpoints"
        self.marker = self.root / "RUNNING"
        self.results_path = self.root / "results.json"
        self.started = utc_now()

    # -- lifecycle ---------------------------------------------------------------------------------
    def begin(self, unit_keys: list[str] | None = None) -> None:
        """Create the folder, or reopen it with --resume. Everything is checked before anything is
        written: a rejected resume leaves the folder as it was. `unit_keys` are the units of this run; a
        saved unit outside them is an error (the run would otherwise end with orphan records)."""
        if self.resume and self.overwrite:
            raise RunError("--resume and --overwrite exclude each other")
        for where in (self.root, *self.root.parents):
            if where.exists() and not where.is_dir():
                raise RunError(f"cannot use results folder {self.root}: {where} exists and is not a folder")
        nonempty = self.root.is_dir() and any(self.root.iterdir())
        if nonempty and not self.resume and not self.overwrite:
            raise RunError(f"results folder {self.root} is not empty; pass --resume to continue it or "
                           f"--overwrite to replace it")
        if nonempty and self.resume:
            self._check_resumable(unit_keys)
        if nonempty and self.overwrite:
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.prompts_dir.mkdir(exist_ok=True)
        if self.results_path.exists():  # resuming a finished run: unfinished again until rewritten
            self.results_path.unlink()
        atomic_write_json(self.marker, {"status": "incomplete", "analysis": self.analysis,
                                        "started": self.started, "pid": os.getpid(),
                                        "settings": self.settings})

    def _check_resumable(self, unit_keys) -> None:
        for path in (self.results_path, self.marker):
            if path.is_file():
                try:
                    old = read_json(path).get("settings")
                except (OSError, ValueError) as e:
                    raise RunError(f"--resume: cannot read {path}: {e}") from None
                diff = _first_difference(old, self.settings)
                if diff:
                    raise RunError(f"--resume: {path} was made with different settings (first difference: "
                                   f"settings.{diff}); rerun with the original settings, another --out, "
                                   f"or --overwrite")
        if unit_keys is not None and self.prompts_dir.is_dir():
            extra = sorted(p.stem for p in self.prompts_dir.glob("*.json") if p.stem not in set(unit_keys))
            if extra:
                raise RunError(f"--resume: {self.prompts_dir} holds results for units this run does not have "
                               f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}); rerun with the "
                               f"original prompts, another --out, or --overwrite")

    def finish(self, results: dict) -> dict:
        results = dict(results)
        results["status"] = "complete"
        atomic_write_json(self.results_path, results)
        try:
            self.marker.unlink()
        except FileNotFoundError:
            pass
        if self.ckpt_dir.is_dir() and not any(self.ckpt_dir.iterdir()):
            self.ckpt_dir.rmdir()
        return results

    # -- per-unit records --------------------------------------------------------------------------
    def unit_path(self, key: str) -> Path:
        return self.prompts_dir / f"{key}.json"

    def load_unit(self, key: str, inputs: dict) -> dict | None:
        """The saved record for ``key`` if ``--resume`` and it exists; checks settings and inputs."""
        path = self.unit_path(key)
        if not self.resume or not path.is_file():
            return None
        try:
            rec = read_json(path)
        except (OSError, ValueError) as e:
            raise RunError(f"--resume: cannot read {path}: {e}") from None
        diff = _first_difference(rec.get("settings"), self.settings)
        if diff:
            raise RunError(
                f"--resume: {path} was computed with different settings (first difference: "
                f"settings.{diff}); rerun with the original settings, another --out, or --overwrite"
            )
        diff = _first_difference(rec.get("inputs"), canonical(inputs))
        if diff:
            raise RunError(
                f"--resume: {path} was computed for a different input (first difference: "
                f"inputs.{diff}); rerun with the original prompts, another --out, or --overwrite"
            )
        return rec

    def save_unit(self, key: str, inputs: dict, result: dict, timing: dict | None = None) -> dict:
        rec = {"key": key, "settings": self.settings, "inputs": canonical(inputs),
               "result": canonical(result), "timing": timing or {}}
        atomic_write_json(self.unit_path(key), rec)
        return rec

    def scan_checkpointer(self, key: str) -> "ScanCheckpointer":
        return ScanCheckpointer(self.ckpt_dir / key, self.settings, resume=self.resume)


class ScanCheckpointer:
    """Orbax checkpoints of a segmented Benettin scan: the arrays of the result so far (state, probes,
    the compensated log-growth sum, per-step log growth, ...), saved after each segment.

    Each save is atomic (orbax writes into a temporary folder and renames it when complete); the two
    most recent are kept. ``latest()`` returns the newest (after checking it was made with the same
    settings) or None.
    """

    def __init__(self, directory: Path, settings: dict, resume: bool):
        import orbax.checkpoint as ocp

        logging.getLogger("absl").setLevel(logging.ERROR)
        self._ocp = ocp
        self.directory = Path(directory).absolute()
        self.settings = settings
        if not resume and self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        opts = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=opts)

    def latest(self) -> tuple[int, dict] | None:
        step = self.manager.latest_step()
        if step is None:
            return None
        from loopjax.io.weights import orbax_drained

        ocp = self._ocp
        try:
            with orbax_drained():
                r = self.manager.restore(step, args=ocp.args.Composite(scan=ocp.args.StandardRestore(),
                                                                        meta=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001 - orbax raises anything; the CLI reports one line
            from loopjax.io.checkpoint import _short

            raise RunError(f"--resume: scan checkpoint {self.directory / str(step)} is unreadable ({_short(e)}); "
                           f"delete that folder (the prompt then continues from an earlier checkpoint or starts "
                           f"over) or rerun with --overwrite") from None
        diff = _first_difference(r.meta.get("settings"), self.settings)
        if diff:
            raise RunError(f"--resume: scan checkpoint {self.directory} was made with different "
                           f"settings (first difference: settings.{diff})")
        return int(step), {k: np.asarray(v) for k, v in r.scan.items()}

    def save(self, step: int, arrays: dict) -> None:
        ocp = self._ocp
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        meta = {"settings": self.settings, "step": int(step), "saved": utc_now()}
        from loopjax.io.weights import orbax_drained

        try:
            with orbax_drained():
                self.manager.save(int(step), args=ocp.args.Composite(scan=ocp.args.StandardSave(arrays),
                                                                     meta=ocp.args.JsonSave(meta)), force=True)
                self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - disk full etc.: orbax raises OSError, ValueError, ...
            self._abandon()
            reason = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
            msg = f"cannot save the scan checkpoint in {self.directory}: {reason}"
            errno = getattr(e, "errno", None)
            raise (OSError(errno, msg) if errno is not None else OSError(msg)) from None

    def _abandon(self) -> None:
        """After a failed save: let orbax's background writes finish (so nothing writes into the folder
        afterwards or reports at exit), close the manager and remove the half-written step folder(s)."""
        absl = logging.getLogger("absl")
        level = absl.level
        absl.setLevel(logging.CRITICAL)  # orbax's writer threads log their own failure with a traceback
        try:
            for op in (self.manager.wait_until_finished, self.manager.close):
                try:
                    op()
                except Exception:  # noqa: BLE001 - the save already failed; that error is the one reported
                    pass
            # the commit threads of the failed save are not awaited by the manager: wait for them (briefly)
            deadline = time.monotonic() + 30
            for t in threading.enumerate():
                if t is not threading.current_thread() and type(t).__module__.startswith("orbax."):
                    t.join(timeout=max(0.0, deadline - time.monotonic()))
        finally:
            absl.setLevel(level)
        for tmp in self.directory.glob("*.orbax-checkpoint-tmp*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def close(self, remove: bool = False) -> None:
        self.manager.close()
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)
