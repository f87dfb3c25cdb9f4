"""Results folders that survive interruption: atomic saves, a RUNNING marker, resume.

Layout of one analysis folder ``OUT/<analysis>/``::

    RUNNING                 JSON marker {"status": "incomplete", ...}; present while a run is unfinished
    LOCK                    {"pid", "host", "started"} of the live run using the folder (created with O_EXCL)
    prompts/NNN.json        one finished unit of work (a prompt; for sweeps ``cCC-pNNN``), written atomically
    checkpoints/NNN/        orbax checkpoints of a long Benettin scan (``--checkpoint-every``), per prompt
    results.json            written last, atomically, with ``"status": "complete"``; RUNNING is then removed
    *.png                   figures

A folder with ``RUNNING`` and no ``results.json`` is an unfinished run. ``--resume`` reuses every saved
unit whose recorded settings and inputs equal the current ones (any difference is an error naming the
field); without ``--resume`` a non-empty folder is an error unless ``--overwrite`` is given (which
deletes that analysis folder first). While a run is live its ``LOCK`` makes every other run on the folder
(``--overwrite`` and ``--resume`` included) refuse, naming the owner; a lock left by a process that is gone
is reported and taken over. A run records the fingerprint of its inputs (`loopjax.cli.fingerprint`:
weights, tokenizer, prompts) in ``RUNNING``, every prompt record and ``results.json``; ``--resume`` refuses
when one differs, naming it. A saved record is checked against its digest and its exponents against its
stored log growth before it is reused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from loopjax.io.checkpoint import read_json  # noqa: F401  (the one JSON reader; re-exported for the CLI)
from loopjax.io.files import UMASK, atomic_write_json, atomic_write_text, to_jsonable  # noqa: F401  (re-exported)


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


LOCK_FILE = "LOCK"
_HELD: "weakref.WeakValueDictionary[str, RunStore]" = weakref.WeakValueDictionary()  # lock path -> live holder


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (a zombie counts as gone)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except (OverflowError, ValueError):
        return False
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def lock_owner(lock: Path) -> tuple[dict | None, bool]:
    """(the lock's record, whether its owner is live). An unreadable lock counts as live (it may be being
    written); one of this process counts as live only while the RunStore that took it exists."""
    try:
        owner = json.loads(lock.read_text(encoding="utf-8"))
        pid, host = int(owner["pid"]), str(owner["host"])
    except FileNotFoundError:
        return None, False
    except (OSError, ValueError, KeyError, TypeError):
        return None, True
    if host != socket.gethostname():
        return owner, True  # another machine's process: it cannot be checked from here
    if pid == os.getpid():
        import gc

        gc.collect()  # a store abandoned by an earlier in-process run (tests, notebooks) holds nothing
        holder = _HELD.get(str(lock))
        return owner, holder is not None and holder._lock_token == owner.get("token")
    return owner, pid_alive(pid)


def all_null(obj: Any) -> bool:
    """True when `obj` (JSON) holds non-finite numbers (null) and no finite float: a result that is all NaN.
    Integers (counts such as steps, k) are not results and are not looked at."""
    floats = nulls = 0
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
        elif x is None:
            nulls += 1
        elif isinstance(x, float):
            floats += 1
    return nulls > 0 and floats == 0


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys): what a saved record is checked against."""
    return "sha256:" + hashlib.sha256(json.dumps(canonical(obj), sort_keys=True).encode()).hexdigest()


def check_derived(result: Any, where: str, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """Every Lyapunov record inside `result` (a dict with `log_growth` (steps, ..., k) and `exponents`; a
    per-token record, with `positions`, has (positions, steps, k)): the exponents and the running averages
    must be what the stored log growth gives (its mean over the steps, its cumulative means); RunError
    naming the record otherwise (a hand-edited or corrupt file)."""
    stack = [("result", result)]
    while stack:
        name, x = stack.pop()
        if isinstance(x, list):
            stack.extend((f"{name}[{i}]", v) for i, v in enumerate(x) if isinstance(v, (dict, list)))
            continue
        if not isinstance(x, dict):
            continue
        stack.extend((f"{name}.{k}", v) for k, v in x.items() if isinstance(v, (dict, list)))
        if "log_growth" not in x or "exponents" not in x:
            continue
        try:
            lg = np.asarray(x["log_growth"], dtype=np.float64)
            axis = 1 if "positions" in x else 0   # the steps axis
            t = np.arange(1, lg.shape[axis] + 1, dtype=np.float64).reshape(
                (1,) * axis + (-1,) + (1,) * (lg.ndim - 1 - axis))
            want = {"exponents": lg.mean(axis=axis), "running": np.cumsum(lg, axis=axis) / t}
            for field, value in want.items():
                if field in x and not np.allclose(np.asarray(x[field], np.float64), value, rtol=rtol, atol=atol,
                                                  equal_nan=True):
                    raise RunError(f"--resume: {where}: {name}.{field} is not what its stored log_growth gives "
                                   f"(edited by hand or corrupt); delete that file to recompute the prompt, or "
                                   f"rerun with --overwrite")
        except (TypeError, ValueError) as e:
            raise RunError(f"--resume: {where}: {name} is not a valid record ({e}); delete that file to "
                           f"recompute the prompt, or rerun with --overwrite") from None


class RunStore:
    """One analysis folder (see module docstring). `fingerprint` (see `loopjax.cli.fingerprint`) is
    recorded and compared on --resume."""

    def __init__(self, root: str | Path, analysis: str, settings: dict, *, resume: bool = False,
                 overwrite: bool = False, fingerprint: dict | None = None):
        self.root = Path(root)
        self.analysis = analysis
        self.settings = canonical(settings)
        self.fingerprint = canonical(fingerprint) if fingerprint is not None else None
        self.resume = resume
        self.overwrite = overwrite
        self.prompts_dir = self.root / "prompts"
        self.ckpt_dir = self.root / "checkpoints"
        self.marker = self.root / "RUNNING"
        self.results_path = self.root / "results.json"
        self.lock_path = self.root / LOCK_FILE
        self.started = utc_now()
        self.began = False        # begin() succeeded: the folder is this run's
        self.fresh = False        # the folder held nothing to keep when this run began
        self.saved = 0            # units saved by this run
        self._lock_token: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def begin(self, unit_keys: list[str] | None = None) -> None:
        """Create the folder, or reopen it with --resume. Everything is checked before anything is
        written: a rejected resume leaves the folder as it was. `unit_keys` are the units of this run; a
        saved unit outside them is an error (the run would otherwise end with orphan records). The folder
        is locked until `finish` / `release`."""
        if self.resume and self.overwrite:
            raise RunError("--resume and --overwrite exclude each other")
        for where in (self.root, *self.root.parents):
            if where.exists() and not where.is_dir():
                raise RunError(f"cannot use results folder {self.root}: {where} exists and is not a folder")
        self._check_lock()
        nonempty = self.root.is_dir() and any(p.name != LOCK_FILE for p in self.root.iterdir())
        if nonempty and not self.resume and not self.overwrite:
            raise RunError(f"results folder {self.root} is not empty; pass --resume to continue it or "
                           f"--overwrite to replace it")
        if nonempty and self.resume:
            self._check_resumable(unit_keys)
        existed = self.root.is_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._take_lock()
        except BaseException:
            if not existed:
                shutil.rmtree(self.root, ignore_errors=True)
            raise
        try:
            if nonempty and self.overwrite:
                for p in self.root.iterdir():
                    if p.name != LOCK_FILE:
                        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            self.fresh = not nonempty or self.overwrite or not any(self.prompts_dir.glob("*.json"))
            self.prompts_dir.mkdir(exist_ok=True)
            if self.results_path.exists():  # resuming a finished run: unfinished again until rewritten
                self.results_path.unlink()
            atomic_write_json(self.marker, {"status": "incomplete", "analysis": self.analysis,
                                            "started": self.started, "pid": os.getpid(),
                                            "settings": self.settings, "fingerprint": self.fingerprint})
        except BaseException:
            self.release()
            if not existed or (self.fresh and nonempty and self.overwrite):
                shutil.rmtree(self.root, ignore_errors=True)
            raise
        self.began = True

    def _check_lock(self) -> None:
        owner, live = lock_owner(self.lock_path)
        if live:
            who = (f"process {owner['pid']} on {owner['host']} (started {owner.get('started')})" if owner
                   else "another run (its lock file is unreadable)")
            raise RunError(f"results folder {self.root} is in use by {who}; wait for it to finish or stop it "
                           f"(if no run uses the folder, delete {self.lock_path})")
        if owner is not None:
            print(f"loopjax: warning: {self.lock_path} was left by process {owner['pid']} (started "
                  f"{owner.get('started')}), which is no longer running; taking the folder over", file=sys.stderr)
            try:
                self.lock_path.unlink()
            except FileNotFoundError:
                pass

    def _take_lock(self) -> None:
        token = os.urandom(8).hex()
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": self.started,
                             "token": token})
        try:
            fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        except FileExistsError:  # another run took it between the check and now
            self._check_lock()
            raise RunError(f"results folder {self.root} was locked by another run just now; retry") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(record)   # not fsynced: after a crash its process is gone, so the lock is stale anyway
        self._lock_token = token
        _HELD[str(self.lock_path)] = self

    def release(self) -> None:
        """Remove this run's lock (a no-op when it holds none)."""
        if self._lock_token is None:
            return
        try:
            owner = json.loads(self.lock_path.read_text(encoding="utf-8"))
            if owner.get("token") == self._lock_token:
                self.lock_path.unlink()
        except (OSError, ValueError):
            pass
        _HELD.pop(str(self.lock_path), None)
        self._lock_token = None

    def abandon(self) -> str:
        """After an error: remove the folder when this run made it and finished nothing in it, else keep it
        for --resume; release the lock. Returns what was done, for the error message."""
        if not self.began:
            return "nothing was written"
        self.began = False
        if self.fresh and self.saved == 0:
            self.release()
            shutil.rmtree(self.root, ignore_errors=True)
            return f"nothing was finished, so {self.root} was removed"
        self.release()
        return f"the finished prompts are kept in {self.root}; rerun with --resume to continue"

    def _read_with_settings(self, path: Path, made: str) -> dict:
        """A saved JSON of this folder, refused (naming the first difference) unless its settings are ours."""
        try:
            saved = read_json(path)
        except (OSError, ValueError) as e:
            raise RunError(f"--resume: cannot read {path}: {e}") from None
        diff = _first_difference(saved.get("settings"), self.settings)
        if diff:
            raise RunError(f"--resume: {path} was {made} with different settings (first difference: "
                           f"settings.{diff}); rerun with the original settings, another --out, or --overwrite")
        return saved

    def _check_resumable(self, unit_keys) -> None:
        for path in (self.results_path, self.marker):
            if path.is_file():
                saved = self._read_with_settings(path, "made")
                self._check_fingerprint(saved.get("fingerprint"), path)
        if unit_keys is not None and self.prompts_dir.is_dir():
            extra = sorted(p.stem for p in self.prompts_dir.glob("*.json") if p.stem not in set(unit_keys))
            if extra:
                raise RunError(f"--resume: {self.prompts_dir} holds results for units this run does not have "
                               f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}); rerun with the "
                               f"original prompts, another --out, or --overwrite")

    def _check_fingerprint(self, saved: dict | None, path: Path) -> None:
        """RunError naming the first input (weights, tokenizer, prompts) whose fingerprint differs from the
        one `path` was made with. A record without fingerprints (an older loopjax) is not compared."""
        if not isinstance(saved, dict) or self.fingerprint is None:
            return
        for name in sorted(set(saved) & set(self.fingerprint)):
            if saved[name] != self.fingerprint[name]:
                raise RunError(f"--resume: the {name} differ from those {path} was made with (fingerprint "
                               f"{str(saved[name])[:23]} then, {str(self.fingerprint[name])[:23]} now); rerun "
                               f"with the original {name}, another --out, or --overwrite")

    def finish(self, results: dict) -> dict:
        """Write results.json marked complete (refused when every number in its summary / prompts is NaN),
        remove RUNNING and the lock."""
        results = dict(results)
        body = {k: results[k] for k in ("summary", "prompts") if k in results}
        if body and all_null(canonical(body)):
            raise RunError(f"every number of the {self.analysis} results is NaN or inf (the state became "
                           f"non-finite); results.json was not written")
        results["status"] = "complete"
        if self.fingerprint is not None:
            results["fingerprint"] = self.fingerprint
        atomic_write_json(self.results_path, results)
        try:
            self.marker.unlink()
        except FileNotFoundError:
            pass
        if self.ckpt_dir.is_dir() and not any(self.ckpt_dir.iterdir()):
            self.ckpt_dir.rmdir()
        self.began = False
        self.release()
        return results

    # -- per-unit records --------------------------------------------------------------------------
    def unit_path(self, key: str) -> Path:
        return self.prompts_dir / f"{key}.json"

    def load_unit(self, key: str, inputs: dict) -> dict | None:
        """The saved record for ``key`` if ``--resume`` and it exists; checks settings and inputs."""
        path = self.unit_path(key)
        if not self.resume or not path.is_file():
            return None
        rec = self._read_with_settings(path, "computed")
        diff = _first_difference(rec.get("inputs"), canonical(inputs))
        if diff:
            raise RunError(
                f"--resume: {path} was computed for a different input (first difference: "
                f"inputs.{diff}); rerun with the original prompts, another --out, or --overwrite"
            )
        self._check_fingerprint(rec.get("fingerprint"), path)
        if "digest" in rec and rec["digest"] != digest(rec.get("result")):
            raise RunError(f"--resume: {path}: its result does not match its digest (edited by hand or corrupt); "
                           f"delete that file to recompute the prompt, or rerun with --overwrite")
        check_derived(rec.get("result"), str(path))
        return rec

    def save_unit(self, key: str, inputs: dict, result: dict, timing: dict | None = None) -> dict:
        """Save one unit's record atomically; a result whose numbers are all NaN/inf is refused."""
        result = canonical(result)
        if all_null(result):
            raise RunError(f"{self.analysis} of unit {key}: every number of the result is NaN or inf (the state "
                           f"became non-finite); not saved")
        rec = {"key": key, "settings": self.settings, "inputs": canonical(inputs), "result": result,
               "digest": digest(result), "timing": timing or {}}
        if self.fingerprint is not None:
            rec["fingerprint"] = self.fingerprint
        atomic_write_json(self.unit_path(key), rec)
        self.saved += 1
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
            from loopjax.io.checkpoint import short_error as _short

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
