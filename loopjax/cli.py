"""The ``loopjax`` command line: convert, spectrum, attribute, sweep, similarity, trajectory, report.

Defaults are the paper's settings (spectrum k=50, T=64; attribution k=1, T=32; sweep lambda_1 with one
probe, T=32; similarity over 4 loops; trajectory over 64 steps) on the 20 built-in prompts.
Every analysis writes ``OUT/<analysis>/results.json`` (all numbers, settings, versions, timestamps) and
PNG figures; each finished prompt is saved atomically first, so an interrupted run can be continued
with ``--resume`` (see ``loopjax.runstore``). Errors are reported as one line (``--debug`` shows the
traceback) with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from loopjax.prompts import Prompt, get_prompts, prompt_set_digest
from loopjax.runstore import RunError, RunStore, canonical, utc_now

DEFAULT_MODEL = "builtin:ouro-tiny"
BUILTIN_MODELS = ("builtin:ouro-tiny", "builtin:huginn-tiny")
PAPER = {
    "spectrum": {"k": 50, "steps": 64},
    "attribute": {"k": 1, "steps": 32},
    "sweep": {"steps": 32},
    "similarity": {"loops": 4},
    "trajectory": {"steps": 64},
}
REPORT_ATTR_K = 8  # report: attribution with k directions (column 1 = the k=1 lambda_1 contributions)
HUGINN_PRETRAINING_STEPS = (6144, 10752, 11904, 17920, 23808, 29824, 35840, 41728)
PRESETS = {
    "huginn-pretraining": [f"tomg-group-umd/step-{s:08d}-recurrence_full_512_0"
                           for s in HUGINN_PRETRAINING_STEPS] + ["tomg-group-umd/huginn-0125"],
}
SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
KEY_SCHEME = ("prompt key = jax.random.fold_in(jax.random.key(seed), prompt_index); start state "
              "z0 = loopjax.init_state(model, tokens, key=jax.random.split(prompt key)[0]) (Huginn's random "
              "state; Ouro: the embeddings), the same z0 for every analysis of the prompt; probes: the "
              "engine's, from the prompt key")
ESTIMATOR = "exponent = mean over the T steps of log|R_ii| (QR every step), summed in float64"


class CLIError(RunError):
    pass


# ----------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------

def _lj():
    import loopjax

    return loopjax


def _test_hook(name: str) -> str | None:
    """Test-only hooks (environment variables), e.g. to simulate an interruption."""
    return os.environ.get(f"LOOPJAX_TEST_{name}")


def software_versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("loopjax", "jax", "jaxlib", "flax", "numpy", "orbax-checkpoint", "tokenizers",
                "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        import jax

        out["jax_backend"] = jax.default_backend()
        out["jax_x64"] = bool(jax.config.jax_enable_x64)
    except Exception:  # pragma: no cover
        pass
    return out


def model_name(source: str, revision: str | None = None) -> str:
    """A short, filesystem-safe name: builtin:ouro-tiny -> ouro-tiny, org/name -> name, dir -> basename."""
    s = str(source)
    if s.startswith("builtin:"):
        name = s[len("builtin:"):]
    else:
        name = Path(s.rstrip("/\\")).name or s
    if revision:
        name = f"{name}@{revision}"
    return re.sub(r"[^A-Za-z0-9._@+-]+", "_", name)


def parse_checkpoint_spec(spec: str) -> tuple[str, str | None]:
    """``path``, ``org/name`` or ``org/name@revision`` -> (source, revision)."""
    if os.path.exists(spec) or "@" not in spec:
        return spec, None
    src, rev = spec.rsplit("@", 1)
    if not src or not rev:
        raise CLIError(f"bad checkpoint spec {spec!r}: use PATH, ORG/NAME or ORG/NAME@REVISION")
    return src, rev


def _looks_local(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.count("/") != 1


def _check_source_exists(source: str) -> None:
    if source.startswith("builtin:"):
        return
    if _looks_local(source) and not os.path.exists(os.path.expanduser(source)):
        raise CLIError(f"model path {source!r} does not exist (and it is not a hub id ORG/NAME)")


def _first_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return msg[0] if msg else type(e).__name__


def _progress(iterable=None, **kw):
    from tqdm.auto import tqdm

    quiet = kw.pop("quiet", False)
    disable = quiet or not sys.stderr.isatty()
    return tqdm(iterable, disable=disable, dynamic_ncols=True, file=sys.stderr, **kw)


def _say(args, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, flush=True)


def _enable_compile_cache() -> None:
    """Persistent XLA compilation cache (every prompt length is a new compilation; a rerun or a resumed
    run then skips them). ``LOOPJAX_COMPILE_CACHE``: a folder, or ``0`` to disable; default
    ``~/.cache/loopjax/xla``. A cache the user configured in jax already is left alone."""
    import jax

    where = os.environ.get("LOOPJAX_COMPILE_CACHE", "")
    if where == "0" or jax.config.jax_compilation_cache_dir:
        return
    where = where or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                  "loopjax", "xla")
    try:
        os.makedirs(where, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", where)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    except Exception:  # a cache is an optimisation only
        pass


def _set_x64(flag: bool) -> None:
    if flag:
        import jax

        jax.config.update("jax_enable_x64", True)


# ----------------------------------------------------------------------------------------------------
# model + prompts
# ----------------------------------------------------------------------------------------------------

class Loaded:
    """A loaded model, its tokenizer, the tokenised prompts and the JSON description of the model."""

    def __init__(self, source: str, revision: str | None, dtype: str | None):
        lj = _lj()
        _check_source_exists(source)
        try:
            self.model = lj.load(source, revision=revision, dtype=dtype)
        except Exception as e:  # loading problems of every kind: one clear line
            raise CLIError(f"cannot load model {source!r}"
                           f"{'@' + revision if revision else ''}: {_first_line(e)}") from None
        cfg = self.model.config
        self.source, self.revision, self.dtype = source, revision, dtype
        self.name = model_name(source, revision)
        try:
            self.source_dir = lj.source_dir(source, revision)
        except Exception:
            self.source_dir = None
        from loopjax.tokenizer import get_tokenizer

        self.tokenizer = get_tokenizer(self.source_dir, cfg.vocab_size)
        if self.source_dir is not None and not hasattr(self.tokenizer, "tok"):
            print(f"loopjax: warning: {source} has no tokenizer.json; prompts are tokenised with the simple "
                  f"hash tokenizer (meaningless for a trained model)", file=sys.stderr)
        import jax

        leaves = jax.tree_util.tree_leaves(getattr(self.model, "params", None))
        self.info = {
            "source": source,
            "revision": revision,
            "name": self.name,
            "model_type": cfg.model_type,
            "hidden_size": int(cfg.hidden_size),
            "vocab_size": int(cfg.vocab_size),
            "default_steps": int(cfg.default_steps),
            "dtype_requested": dtype,
            "param_dtypes": sorted({str(x.dtype) for x in leaves}),
            "num_params": int(sum(int(np.prod(x.shape)) for x in leaves)),
            "source_dir": str(self.source_dir) if self.source_dir else None,
            "tokenizer": self.tokenizer.name,
        }

    def tokenize(self, prompts: list[Prompt], token_ids: bool = False) -> list[list[int]]:
        from loopjax.tokenizer import check_ids

        out = []
        V = int(self.model.config.vocab_size)
        for i, p in enumerate(prompts):
            what = f"prompt {i} ({p.text[:40]!r})"
            if token_ids:
                try:
                    ids = [int(t) for t in p.text.replace(",", " ").split()]
                except ValueError:
                    raise CLIError(f"{what}: --token-ids expects whitespace-separated integers") from None
            else:
                ids = self.tokenizer.encode(p.text)
            try:
                check_ids(ids, V, what)
            except ValueError as e:
                raise CLIError(str(e)) from None
            out.append([int(t) for t in ids])
        return out


def spectrum_k(args, source: str) -> int:
    """--k if given, else 50 (the paper's), for every model."""
    return PAPER["spectrum"]["k"] if args.k is None else args.k


def _check_k(k: int, tokens: list[list[int]], H: int, prompts: list[Prompt]) -> None:
    if k < 1:
        raise CLIError(f"--k must be >= 1, got {k}")
    for i, ids in enumerate(tokens):
        d = len(ids) * H
        if k > d:
            raise CLIError(f"--k {k} exceeds the state dimension d = L*H = {len(ids)}*{H} = {d} of "
                           f"prompt {i} ({prompts[i].text[:40]!r}); use --k <= {d}")


def _check_pos(name: str, v: int | None, lo: int = 1) -> None:
    if v is not None and v < lo:
        raise CLIError(f"{name} must be >= {lo}, got {v}")


def _prompt_key(seed: int, index: int):
    import jax

    return jax.random.fold_in(jax.random.key(seed), index)


def _start(model, seed: int, index: int, token_ids: list[int]):
    """(prompt key, ids, z0): the shared start of every analysis of prompt ``index`` (see KEY_SCHEME).
    ``loopjax.spectrum(model, ids, key=prompt key)`` draws its state from split(key)[0] as well, so
    passing z0 explicitly reproduces it, and similarity/trajectory start from the very same state."""
    import jax
    import jax.numpy as jnp

    key = _prompt_key(seed, index)
    ids = jnp.asarray(token_ids, dtype=jnp.int32)
    z0 = _lj().init_state(model, ids, key=jax.random.split(key)[0])
    return key, ids, z0


def _inputs(i: int, p: Prompt, ids: list[int]) -> dict:
    return {"index": i, "text": p.text, "register": p.register, "token_ids": ids}


# ----------------------------------------------------------------------------------------------------
# the per-prompt loop shared by all analyses
# ----------------------------------------------------------------------------------------------------

def _run_units(store: RunStore, units: list[tuple[str, dict]], compute: Callable[[str, dict], dict],
               *, desc: str, quiet: bool) -> list[dict]:
    """Compute (or, with --resume, reload) every unit; each is saved atomically as it finishes."""
    interrupt_after = _test_hook("INTERRUPT_AFTER")
    sleep_after = _test_hook("SLEEP_AFTER_UNIT")
    records, computed = [], 0
    with _progress(total=len(units), desc=desc, unit="prompt", quiet=quiet) as bar:
        for key, inputs in units:
            rec = store.load_unit(key, inputs)
            if rec is None:
                t0 = time.perf_counter()
                result = compute(key, inputs)
                rec = store.save_unit(key, inputs, result,
                                      {"seconds": round(time.perf_counter() - t0, 3), "finished": utc_now()})
                computed += 1
                if sleep_after:
                    time.sleep(float(sleep_after))
                if interrupt_after and computed >= int(interrupt_after):
                    raise KeyboardInterrupt(f"test hook: interrupted after {computed} units")
            records.append(rec)
            bar.update(1)
    return records


def _header(analysis: str, loaded: Loaded | None, settings: dict, store: RunStore) -> dict:
    return {
        "analysis": analysis,
        "status": "incomplete",
        "model": loaded.info if loaded is not None else None,
        "settings": store.settings,
        "seed": settings.get("seed"),
        "software": software_versions(),
        "timestamps": {"started": store.started, "finished": None},
        "results_dir": str(store.root),
    }


def _open_run(args, loaded: Loaded, analysis: str, prompts, tokens, out: Path, **settings):
    """The results folder of a per-prompt analysis (created, or reopened with --resume) and its work units."""
    settings = {**_common_settings(args, loaded, analysis, prompts), **settings}
    store = RunStore(out / analysis, analysis, settings, resume=args.resume, overwrite=args.overwrite)
    store.begin()
    units = [(f"{i:03d}", _inputs(i, p, ids)) for i, (p, ids) in enumerate(zip(prompts, tokens))]
    return store, settings, units


def _finish(store: RunStore, results: dict) -> dict:
    results["timestamps"]["finished"] = utc_now()
    return store.finish(results)


def _prompt_entries(records: list[dict]) -> list[dict]:
    out = []
    for rec in records:
        inp = rec["inputs"]
        out.append({"index": inp["index"], "text": inp["text"], "register": inp["register"],
                    "n_tokens": len(inp["token_ids"]), "token_ids": inp["token_ids"], **rec["result"],
                    "seconds": rec.get("timing", {}).get("seconds")})
    return out


def _common_settings(args, loaded: Loaded, analysis: str, prompts: list[Prompt]) -> dict:
    return {
        "analysis": analysis,
        "model": loaded.source,
        "revision": loaded.revision,
        "dtype": loaded.dtype,
        "x64": bool(args.x64),
        "seed": int(args.seed),
        "key_scheme": KEY_SCHEME,
        "tokenizer": loaded.tokenizer.name if not args.token_ids else "token ids given (--token-ids)",
        "prompts_file": str(args.prompts) if args.prompts else None,
        "prompt_set": "custom" if args.prompts else "builtin-20",
        "xla_flags": os.environ.get("XLA_FLAGS") or None,
    }


def _resolve_out(args, loaded_name: str) -> Path:
    return Path(args.out) if args.out else Path("results") / loaded_name


# ----------------------------------------------------------------------------------------------------
# spectrum
# ----------------------------------------------------------------------------------------------------

def _spectrum_one(lj, model, tokens, start, seed: int, index: int, *, k: int, steps: int,
                  every: int | None, store: RunStore, unit: str, quiet: bool) -> np.ndarray:
    """log growth (steps, k) for one prompt; in segments of ``every`` steps with orbax checkpoints."""
    import jax.numpy as jnp

    key, ids, z0 = start(model, seed, index, tokens)
    if not every or every >= steps:
        r = lj.spectrum(model, ids, k=k, steps=steps, key=key, init_state=z0)
        return np.asarray(r.log_growth, dtype=np.float64)
    ck = store.scan_checkpointer(unit, every)
    done, state, probes, parts = 0, z0, None, []
    latest = ck.latest() if store.resume else None
    if latest is not None:
        done, arrays = latest
        state, probes = jnp.asarray(arrays["state"]), jnp.asarray(arrays["probes"])
        parts = [np.asarray(arrays["log_growth"], dtype=np.float64)]
    stop_after = _test_hook("INTERRUPT_AFTER_SEGMENTS")
    segs = 0
    with _progress(total=steps, initial=done, desc=f"  steps ({unit})", unit="step", leave=False,
                   quiet=quiet) as bar:
        while done < steps:
            n = min(every, steps - done)
            r = lj.spectrum(model, ids, k=k, steps=n, key=key, probes=probes, init_state=state)
            state, probes = r.final_state, r.final_probes
            parts.append(np.asarray(r.log_growth, dtype=np.float64))
            done += n
            ck.save(done, state, probes, np.concatenate(parts, axis=0))
            bar.update(n)
            segs += 1
            if stop_after and segs >= int(stop_after):
                ck.close()
                raise KeyboardInterrupt(f"test hook: interrupted after {segs} segments")
    ck.close(remove=True)
    return np.concatenate(parts, axis=0)


def spectrum_summary(exps: np.ndarray, top: int = 5) -> dict:
    """The paper's summary numbers for per-prompt spectra ``exps`` (P, k)."""
    ex = -np.sort(-np.asarray(exps, dtype=np.float64), axis=1)
    mean = ex.mean(0)
    return {
        "n_prompts": int(ex.shape[0]),
        "k": int(ex.shape[1]),
        "lambda1_mean": float(ex[:, 0].mean()),
        "lambda1_std": float(ex[:, 0].std()),
        "lambda1_min": float(ex[:, 0].min()),
        "lambda1_max": float(ex[:, 0].max()),
        "fraction_positive": float((ex > 0).mean()),
        "fraction_positive_mean_spectrum": float((mean > 0).mean()),
        "range_max": float(ex.max()),
        "range_min": float(ex.min()),
        "mean_spectrum_max": float(mean.max()),
        "mean_spectrum_min": float(mean.min()),
        "mean_spectrum_sorted": mean.tolist(),
        "std_spectrum_sorted": ex.std(0).tolist(),
        "sum_of_exponents_mean": float(ex.sum(1).mean()),
        "top5_mean": mean[:top].tolist(),
    }


def run_spectrum(args, loaded: Loaded, prompts, tokens, out: Path, *, k: int, steps: int,
                 every: int | None = None) -> dict:
    from loopjax import plots

    lj = _lj()
    H = int(loaded.model.config.hidden_size)
    _check_k(k, tokens, H, prompts)
    _check_pos("--steps", steps)
    _check_pos("--checkpoint-every", every)
    store, settings, units = _open_run(args, loaded, "spectrum", prompts, tokens, out, k=k, steps=steps,
                                       checkpoint_every=every, estimator=ESTIMATOR)

    def compute(unit, inp):
        lg = _spectrum_one(lj, loaded.model, inp["token_ids"], _start, args.seed, inp["index"], k=k,
                           steps=steps, every=every, store=store, unit=unit, quiet=args.quiet)
        ex = lg.sum(axis=0) / steps
        return {"exponents": ex, "exponents_sorted": -np.sort(-ex), "log_growth": lg}

    records = _run_units(store, units, compute, desc=f"{loaded.name} spectrum", quiet=args.quiet)
    entries = _prompt_entries(records)
    exps = np.array([e["exponents"] for e in entries], dtype=np.float64)
    lgs = [np.array(e["log_growth"], dtype=np.float64) for e in entries]
    res = _header("spectrum", loaded, settings, store)
    res["summary"] = spectrum_summary(exps)
    res["prompts"] = entries
    f1 = plots.plot_spectrum_running(store.root / "spectrum_running_top5.png", lgs, loaded.name)
    f2 = plots.plot_spectrum_full(store.root / "spectrum_full.png", exps, loaded.name)
    res["figures"] = [f1.name, f2.name]
    return _finish(store, res)


# ----------------------------------------------------------------------------------------------------
# attribution
# ----------------------------------------------------------------------------------------------------

def run_attribution(args, loaded: Loaded, prompts, tokens, out: Path, *, k: int, steps: int) -> dict:
    from loopjax import plots

    lj = _lj()
    H = int(loaded.model.config.hidden_size)
    _check_k(k, tokens, H, prompts)
    _check_pos("--steps", steps)
    store, settings, units = _open_run(args, loaded, "attribution", prompts, tokens, out, k=k, steps=steps,
                                       estimator=ESTIMATOR + " (QR after every sublayer)")

    def compute(unit, inp):
        key, ids, z0 = _start(loaded.model, args.seed, inp["index"], inp["token_ids"])
        r = lj.attribution(loaded.model, ids, k=k, steps=steps, key=key, init_state=z0)
        lg = np.asarray(r.log_growth, dtype=np.float64)  # (steps, n_sub, k)
        ex = lg.sum(axis=0) / steps
        return {"names": list(r.names), "exponents": ex, "total": ex.sum(axis=0), "log_growth": lg}

    records = _run_units(store, units, compute, desc=f"{loaded.name} attribution", quiet=args.quiet)
    entries = _prompt_entries(records)
    names = entries[0]["names"]
    ex = np.array([e["exponents"] for e in entries], dtype=np.float64)  # (P, n_sub, k)
    c1 = ex[:, :, 0]
    cum = np.cumsum(c1, axis=1)
    res = _header("attribution", loaded, settings, store)
    res["summary"] = {
        "names": names,
        "n_prompts": int(ex.shape[0]),
        "k": k,
        "lambda1_contribution_mean": c1.mean(0).tolist(),
        "lambda1_contribution_std": c1.std(0).tolist(),
        "lambda1_cumulative_mean": cum.mean(0).tolist(),
        "lambda1_total_mean": float(cum[:, -1].mean()),
        "lambda1_total_std": float(cum[:, -1].std()),
        "largest_expanding_sublayer": names[int(np.argmax(c1.mean(0)))],
        "largest_contracting_sublayer": names[int(np.argmin(c1.mean(0)))],
        "exponents_mean": ex.mean(0).tolist(),
        "total_exponents_mean": ex.sum(1).mean(0).tolist(),
    }
    res["prompts"] = entries
    figs = [plots.plot_attribution(store.root / "attribution_lambda1.png", names, c1, loaded.name)]
    if k > 1:
        figs.append(plots.plot_attribution_heatmap(store.root / "attribution_heatmap.png", names,
                                                   ex.mean(0), loaded.name))
    res["figures"] = [f.name for f in figs]
    return _finish(store, res)


# ----------------------------------------------------------------------------------------------------
# similarity
# ----------------------------------------------------------------------------------------------------

def run_similarity(args, loaded: Loaded, prompts, tokens, out: Path, *, loops: int) -> dict:
    from loopjax import plots

    lj = _lj()
    _check_pos("--loops", loops)
    store, settings, units = _open_run(args, loaded, "similarity", prompts, tokens, out, loops=loops)

    def compute(unit, inp):
        key, ids, z0 = _start(loaded.model, args.seed, inp["index"], inp["token_ids"])
        r = lj.similarity(loaded.model, ids, loops=loops, key=key, init_state=z0)
        return {"states_names": list(r["names"]),
                "matrix": np.asarray(r["matrix"], dtype=np.float64)}

    records = _run_units(store, units, compute, desc=f"{loaded.name} similarity", quiet=args.quiet)
    entries = _prompt_entries(records)
    names = entries[0]["states_names"]
    mats = np.array([e["matrix"] for e in entries], dtype=np.float64)
    mean = mats.mean(0)
    n = mean.shape[0]
    per = n // loops
    ends = [(t + 1) * per - 1 for t in range(loops)]
    consecutive = [float(mean[ends[t], ends[t + 1]]) for t in range(loops - 1)]
    same_pos = [float(np.mean([mean[t * per + j, (t + 1) * per + j] for j in range(per)]))
                for t in range(loops - 1)]
    within = [float(np.mean([mean[t * per + j, t * per + j + 1] for j in range(per - 1)]))
              if per > 1 else None for t in range(loops)]
    res = _header("similarity", loaded, settings, store)
    res["summary"] = {
        "states_names": names,
        "states_per_loop": per,
        "loops": loops,
        "mean_matrix": mean.tolist(),
        "loop_output_consecutive": consecutive,
        "same_sublayer_consecutive_loops": same_pos,
        "adjacent_sublayers_within_loop": within,
        "min_similarity": float(mean.min()),
    }
    res["prompts"] = entries
    f = plots.plot_similarity(store.root / "similarity.png", names, mean, loops, loaded.name)
    res["figures"] = [f.name]
    return _finish(store, res)


# ----------------------------------------------------------------------------------------------------
# trajectory
# ----------------------------------------------------------------------------------------------------

def run_trajectory(args, loaded: Loaded, prompts, tokens, out: Path, *, steps: int) -> dict:
    from loopjax import plots

    lj = _lj()
    _check_pos("--steps", steps)
    store, settings, units = _open_run(args, loaded, "trajectory", prompts, tokens, out, steps=steps)

    def compute(unit, inp):
        key, ids, z0 = _start(loaded.model, args.seed, inp["index"], inp["token_ids"])
        r = lj.convergence(loaded.model, ids, steps=steps, key=key, init_state=z0)
        d = np.asarray(r["step_norm"], dtype=np.float64)
        s = np.asarray(r["state_norm"], dtype=np.float64)
        return {"step_norm": d, "state_norm": s, "relative_step": d / np.maximum(s[:-1], 1e-300)}

    records = _run_units(store, units, compute, desc=f"{loaded.name} trajectory", quiet=args.quiet)
    entries = _prompt_entries(records)
    d = np.array([e["step_norm"] for e in entries], dtype=np.float64)
    s = np.array([e["state_norm"] for e in entries], dtype=np.float64)
    rel = d / np.maximum(s[:, :-1], 1e-300)
    T = d.shape[1]
    half = max(1, T // 2)
    logs = np.log(np.maximum(d, 1e-300))
    slope = None
    if T - half >= 2:
        t = np.arange(half, T)
        slope = float(np.mean([np.polyfit(t, logs[p, half:], 1)[0] for p in range(d.shape[0])]))
    res = _header("trajectory", loaded, settings, store)
    res["summary"] = {
        "steps": T,
        "step_norm_first_mean": float(d[:, 0].mean()),
        "step_norm_last_mean": float(d[:, -1].mean()),
        "relative_step_first_mean": float(rel[:, 0].mean()),
        "relative_step_last_mean": float(rel[:, -1].mean()),
        "state_norm_last_mean": float(s[:, -1].mean()),
        "log_step_norm_slope_second_half": slope,
        "converged_fraction_rel_1e-3": float((rel[:, -1] < 1e-3).mean()),
    }
    res["prompts"] = entries
    f = plots.plot_convergence(store.root / "convergence.png", d, s, loaded.name)
    res["figures"] = [f.name]
    return _finish(store, res)


# ----------------------------------------------------------------------------------------------------
# sweep
# ----------------------------------------------------------------------------------------------------

def sweep_summary(lam: np.ndarray) -> dict:
    """``lam`` (C, P): lambda_1 per checkpoint and prompt."""
    lam = np.asarray(lam, dtype=np.float64)
    means = lam.mean(1)
    return {
        "lambda1_mean_per_checkpoint": means.tolist(),
        "lambda1_std_per_checkpoint": lam.std(1).tolist(),
        "std_across_checkpoints": float(means.std()),
        "mean_per_prompt_std": float(lam.std(1).mean()),
        "mean_over_prompts_of_std_across_checkpoints": float(lam.std(0).mean()),
        "ratio_across_checkpoints_to_per_prompt": (float(means.std() / lam.std(1).mean())
                                                   if lam.std(1).mean() > 0 else None),
    }


def run_sweep(args, checkpoints: list[tuple[str, str | None]], prompts: list[Prompt], out: Path,
              *, steps: int, title: str) -> dict:
    from loopjax import plots

    lj = _lj()
    _check_pos("--steps", steps)
    if not checkpoints:
        raise CLIError("sweep needs --checkpoints or --preset")
    for src, _rev in checkpoints:
        _check_source_exists(src)
    settings = {
        "analysis": "sweep", "checkpoints": [[s, r] for s, r in checkpoints], "dtype": args.dtype,
        "x64": bool(args.x64), "seed": int(args.seed), "key_scheme": KEY_SCHEME, "steps": steps,
        "k": 1, "prompts_file": str(args.prompts) if args.prompts else None,
        "prompt_set": "custom" if args.prompts else "builtin-20", "prompt_digest": prompt_set_digest(prompts),
        "estimator": ESTIMATOR + " (one probe)", "xla_flags": os.environ.get("XLA_FLAGS") or None,
    }
    store = RunStore(out / "sweep", "sweep", settings, resume=args.resume, overwrite=args.overwrite)
    store.begin()
    lam = np.full((len(checkpoints), len(prompts)), np.nan)
    per_ckpt = []
    for c, (src, rev) in enumerate(checkpoints):
        keys = [f"c{c:02d}-p{i:03d}" for i in range(len(prompts))]
        # with --resume, reuse saved units without loading the checkpoint when all of them are there
        cached = _cached_sweep_units(store, keys, prompts, [src, rev]) if args.resume else None
        if cached is not None:
            records, info = cached, cached[0]["result"].get("model")
        else:
            loaded = Loaded(src, rev, args.dtype)
            tokens = loaded.tokenize(prompts, args.token_ids)
            units = [(keys[i], {**_inputs(i, p, ids), "checkpoint": [src, rev]})
                     for i, (p, ids) in enumerate(zip(prompts, tokens))]

            def compute(unit, inp, loaded=loaded):
                key, ids, z0 = _start(loaded.model, args.seed, inp["index"], inp["token_ids"])
                v = lj.lambda1(loaded.model, ids, steps=steps, key=key, init_state=z0)
                return {"lambda1": float(np.asarray(v)), "model": loaded.info}

            records = _run_units(store, units, compute,
                                 desc=f"sweep {c + 1}/{len(checkpoints)} {loaded.name}", quiet=args.quiet)
            info = loaded.info
            del loaded
        lam[c] = [r["result"]["lambda1"] for r in records]
        per_ckpt.append({"source": src, "revision": rev, "label": model_name(src, rev), "model": info,
                         "prompts": _prompt_entries(records)})
    res = _header("sweep", None, settings, store)
    res["title"] = title
    res["checkpoints"] = per_ckpt
    res["lambda1"] = lam.tolist()
    res["summary"] = sweep_summary(lam)
    f = plots.plot_sweep(store.root / "sweep_lambda1.png", [p["label"] for p in per_ckpt], lam, title)
    res["figures"] = [f.name]
    return _finish(store, res)


def _cached_sweep_units(store: RunStore, keys: list[str], prompts: list[Prompt],
                        ckpt: list) -> list[dict] | None:
    """All saved units of one checkpoint (settings and prompt texts checked), or None if any is missing.
    The token ids are checked only when the checkpoint is loaded (i.e. when some unit is missing)."""
    from loopjax.runstore import read_json

    if not all(store.unit_path(k).is_file() for k in keys):
        return None
    out = []
    for i, (k, p) in enumerate(zip(keys, prompts)):
        saved = read_json(store.unit_path(k)).get("inputs", {})
        want = {"index": i, "text": p.text, "register": p.register, "checkpoint": ckpt,
                "token_ids": saved.get("token_ids")}
        out.append(store.load_unit(k, want))
    return out


# ----------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------

def run_report_one(args, source: str, out: Path | None) -> tuple[Path, dict]:
    from loopjax import report

    loaded = Loaded(source, args.revision, args.dtype)
    prompts = get_prompts(args.prompts, args.max_prompts)
    tokens = loaded.tokenize(prompts, args.token_ids)
    out = out or _resolve_out(args, loaded.name)
    sp_steps = args.spectrum_steps or args.steps or PAPER["spectrum"]["steps"]
    at_steps = args.attr_steps or args.steps or PAPER["attribute"]["steps"]
    tr_steps = args.traj_steps or args.steps or PAPER["trajectory"]["steps"]
    k = spectrum_k(args, source)
    # validate everything before the first folder is made
    H = int(loaded.model.config.hidden_size)
    _check_k(k, tokens, H, prompts)
    _check_k(args.attr_k, tokens, H, prompts)
    for name, v in (("--steps", sp_steps), ("--attr-steps", at_steps), ("--traj-steps", tr_steps),
                    ("--loops", args.loops), ("--checkpoint-every", args.checkpoint_every)):
        _check_pos(name, v)
    results = {}
    _say(args, f"[{loaded.name}] {len(prompts)} prompts -> {out}")
    t0 = time.perf_counter()
    results["spectrum"] = run_spectrum(args, loaded, prompts, tokens, out, k=k, steps=sp_steps,
                                       every=args.checkpoint_every)
    results["attribution"] = run_attribution(args, loaded, prompts, tokens, out, k=args.attr_k,
                                             steps=at_steps)
    results["similarity"] = run_similarity(args, loaded, prompts, tokens, out, loops=args.loops)
    results["trajectory"] = run_trajectory(args, loaded, prompts, tokens, out, steps=tr_steps)
    ckpts = _sweep_list(args)
    if ckpts:
        results["sweep"] = run_sweep(args, ckpts, prompts, out, steps=args.sweep_steps,
                                     title=args.preset or "checkpoints")
    seconds = time.perf_counter() - t0
    report.write_index(out, loaded.info, results, seconds=seconds, settings_note=_report_note(args, k))
    _say(args, f"[{loaded.name}] done in {seconds:.1f} s: {out / 'index.html'}")
    return out, results


def _report_note(args, k: int) -> str:
    return ("report settings: spectrum k={k}, T={ts}; attribution k={ak}, T={at} (bars = direction 1, "
            "i.e. the k=1 lambda_1 contributions); similarity {l} loops; trajectory {tt} steps").format(
        k=k,
        ts=args.spectrum_steps or args.steps or PAPER["spectrum"]["steps"], ak=args.attr_k,
        at=args.attr_steps or args.steps or PAPER["attribute"]["steps"], l=args.loops,
        tt=args.traj_steps or args.steps or PAPER["trajectory"]["steps"])


def _sweep_list(args) -> list[tuple[str, str | None]]:
    specs = list(getattr(args, "checkpoints", None) or [])
    preset = getattr(args, "preset", None)
    if preset:
        specs = PRESETS[preset] + specs
    return [parse_checkpoint_spec(s) for s in specs]


# ----------------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------------

def _setup(args) -> tuple[Loaded, list[Prompt], list[list[int]], Path]:
    _check_pos("--max-prompts", args.max_prompts)
    loaded = Loaded(args.model, args.revision, args.dtype)
    try:
        prompts = get_prompts(args.prompts, args.max_prompts)
    except (OSError, ValueError) as e:
        raise CLIError(str(e)) from None
    tokens = loaded.tokenize(prompts, args.token_ids)
    return loaded, prompts, tokens, _resolve_out(args, loaded.name)


def cmd_spectrum(args) -> int:
    loaded, prompts, tokens, out = _setup(args)
    k = spectrum_k(args, loaded.source)
    steps = args.steps or PAPER["spectrum"]["steps"]
    r = run_spectrum(args, loaded, prompts, tokens, out, k=k, steps=steps, every=args.checkpoint_every)
    s = r["summary"]
    _say(args, f"spectrum: lambda1 = {s['lambda1_mean']:+.4f} +/- {s['lambda1_std']:.4f}, "
               f"{100 * s['fraction_positive']:.1f}% positive, range [{s['range_min']:+.3f}, "
               f"{s['range_max']:+.3f}] -> {out / 'spectrum' / 'results.json'}")
    return 0


def cmd_attribute(args) -> int:
    loaded, prompts, tokens, out = _setup(args)
    k = args.k if args.k is not None else PAPER["attribute"]["k"]
    steps = args.steps or PAPER["attribute"]["steps"]
    r = run_attribution(args, loaded, prompts, tokens, out, k=k, steps=steps)
    s = r["summary"]
    _say(args, f"attribution: lambda1 total = {s['lambda1_total_mean']:+.4f}; largest expansion in "
               f"{s['largest_expanding_sublayer']} -> {out / 'attribution' / 'results.json'}")
    return 0


def cmd_similarity(args) -> int:
    loaded, prompts, tokens, out = _setup(args)
    loops = args.steps or PAPER["similarity"]["loops"]
    r = run_similarity(args, loaded, prompts, tokens, out, loops=loops)
    _say(args, f"similarity: loop-output cosine (consecutive) = "
               f"{[round(x, 4) for x in r['summary']['loop_output_consecutive']]} -> "
               f"{out / 'similarity' / 'results.json'}")
    return 0


def cmd_trajectory(args) -> int:
    loaded, prompts, tokens, out = _setup(args)
    steps = args.steps or PAPER["trajectory"]["steps"]
    r = run_trajectory(args, loaded, prompts, tokens, out, steps=steps)
    s = r["summary"]
    _say(args, f"trajectory: ||z_(t+1) - z_t|| {s['step_norm_first_mean']:.3g} -> "
               f"{s['step_norm_last_mean']:.3g} -> {out / 'trajectory' / 'results.json'}")
    return 0


def cmd_sweep(args) -> int:
    _check_pos("--max-prompts", args.max_prompts)
    ckpts = _sweep_list(args)
    if not ckpts:
        raise CLIError("sweep needs --checkpoints A B@REV ... or --preset NAME")
    try:
        prompts = get_prompts(args.prompts, args.max_prompts)
    except (OSError, ValueError) as e:
        raise CLIError(str(e)) from None
    out = Path(args.out) if args.out else Path("results") / (args.preset or "sweep")
    steps = args.steps or PAPER["sweep"]["steps"]
    r = run_sweep(args, ckpts, prompts, out, steps=steps, title=args.preset or "checkpoints")
    s = r["summary"]
    _say(args, f"sweep: std across checkpoints {s['std_across_checkpoints']:.4f} vs mean per-prompt std "
               f"{s['mean_per_prompt_std']:.4f} -> {out / 'sweep' / 'results.json'}")
    return 0


def cmd_report(args) -> int:
    from loopjax import report

    if args.model:
        run_report_one(args, args.model, None)
        return 0
    root = Path(args.out) if args.out else Path("results")
    _check_pos("--jobs", args.jobs)
    if args.jobs > 1:
        outs = _report_parallel(args, root)
    else:
        outs = [run_report_one(args, src, root / model_name(src))[0] for src in BUILTIN_MODELS]
    done = []
    for src, out in zip(BUILTIN_MODELS, outs):
        results = {}
        for analysis in ("spectrum", "attribution", "similarity", "trajectory", "sweep"):
            f = out / analysis / "results.json"
            if f.is_file():
                from loopjax.runstore import read_json

                results[analysis] = read_json(f)
        done.append((model_name(src), out, results))
    report.write_top_index(root, done)
    _say(args, f"wrote {root / 'index.md'} and {root / 'index.html'}")
    return 0


def _report_parallel(args, root: Path) -> list[Path]:
    """One ``loopjax report --model M`` child process per built-in model (XLA compilation, the bulk of
    a built-in run, is single-threaded); the parent shows one progress bar per model by counting the
    saved prompt files, and reports the first error line of a failed child.

    The children run XLA single-threaded (``SINGLE_THREAD_XLA`` appended to ``XLA_FLAGS``): the tiny
    models gain nothing from intra-op threads, and two multi-threaded processes on two cores can be
    many times slower (thread-pool contention). The flags change the last bits of the numbers, so they
    are part of the recorded settings (``xla_flags``) that ``--resume`` checks."""
    import subprocess
    import tempfile

    try:
        n_prompts = len(get_prompts(args.prompts, args.max_prompts))
    except (OSError, ValueError) as e:
        raise CLIError(str(e)) from None
    analyses = 4 + (1 if _sweep_list(args) else 0) * max(1, len(_sweep_list(args)))
    total = n_prompts * analyses
    argv = list(getattr(args, "_argv", []))
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        env["XLA_FLAGS"] = (flags + " " + SINGLE_THREAD_XLA).strip()
    jobs, outs, t0 = [], [], time.perf_counter()
    for src in BUILTIN_MODELS:
        out = root / model_name(src)
        outs.append(out)
        err = tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, "-m", "loopjax.cli", *argv, "--model", src, "--out", str(out), "--quiet"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env)
        jobs.append((src, out, proc, err))
    _say(args, f"report: {len(jobs)} models in parallel ({n_prompts} prompts each) -> {root}")
    bars = [_progress(total=total, desc=model_name(src), unit="prompt", position=i, quiet=args.quiet)
            for i, (src, *_rest) in enumerate(jobs)]
    try:
        while True:
            running = False
            for bar, (src, out, proc, err) in zip(bars, jobs):
                n = sum(1 for _ in out.glob("*/prompts/*.json")) if out.is_dir() else 0
                bar.update(min(n, total) - bar.n)
                running |= proc.poll() is None
            if not running:
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        for _src, _out, proc, _err in jobs:
            proc.wait()
        raise
    finally:
        for bar in bars:
            bar.close()
    failed = []
    for src, out, proc, err in jobs:
        err.seek(0)
        lines = [ln for ln in err.read().splitlines() if ln.strip()]
        err.close()
        if proc.returncode != 0:
            msg = next((ln for ln in reversed(lines) if ln.startswith("loopjax:")),
                       lines[-1] if lines else f"exit status {proc.returncode}")
            failed.append(f"[{model_name(src)}] {msg.replace('loopjax: error: ', '')}")
        else:
            _say(args, f"[{model_name(src)}] {out / 'index.html'}")
    if failed:
        raise CLIError("; ".join(failed))
    _say(args, f"report: both models done in {time.perf_counter() - t0:.1f} s")
    return outs


def cmd_convert(args) -> int:
    try:
        import loopjax_convert
    except ImportError as e:
        raise CLIError(f"the converter (loopjax_convert) is not available: {e}") from None
    _check_source_exists(args.src)
    loopjax_convert.convert(args.src, args.out, revision=args.revision, dtype=args.dtype)
    _say(args, f"converted {args.src} -> {args.out}")
    return 0


# ----------------------------------------------------------------------------------------------------
# parser
# ----------------------------------------------------------------------------------------------------

class _Fmt(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _add_common(p: argparse.ArgumentParser, *, model: bool = True, report: bool = False,
                k_default: int | None = None,
                steps_help: str = "loop steps T", steps_default: int | None = None) -> None:
    g = p.add_argument_group("common options")
    if model:
        g.add_argument("--model", default=None if report else DEFAULT_MODEL,
                       help="what loopjax.load takes: HF checkpoint dir, hub id ORG/NAME, orbax dir "
                            "from `loopjax convert`, or builtin:ouro-tiny / builtin:huginn-tiny"
                            + (" (default: both built-in models)" if report else ""))
        g.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of --model")
    if k_default is not None:
        g.add_argument("--k", type=int, default=None,
                       help=f"number of Lyapunov exponents (probe directions); default {k_default}")
    g.add_argument("--steps", type=int, default=None,
                   help=f"{steps_help}; default {steps_default}" if steps_default else steps_help)
    g.add_argument("--prompts", default=None, metavar="FILE",
                   help="text file, one prompt per line (replaces the 20 built-in prompts)")
    g.add_argument("--token-ids", action="store_true",
                   help="the lines of --prompts are whitespace-separated token ids, not text")
    g.add_argument("--max-prompts", type=int, default=None, metavar="N",
                   help="use only the first N prompts (quick runs)")
    g.add_argument("--seed", type=int, default=0,
                   help="PRNG seed; prompt i uses fold_in(key(seed), i) for probes and Huginn's state")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="results folder (default results/<model-name>; the analysis writes DIR/<analysis>/)")
    g.add_argument("--dtype", default=None, help="cast the weights (float32, bfloat16, float16, float64); "
                                                 "default: as stored")
    g.add_argument("--x64", action="store_true", help="enable jax x64: float64 activations and QR")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in DIR (saved prompts are reused if the settings match)")
    g.add_argument("--overwrite", action="store_true", help="delete an existing DIR/<analysis> first")
    g.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    g.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="loopjax", formatter_class=_Fmt,
        description="Lyapunov spectral analysis of looped transformers (Ouro, Huginn) in JAX.",
        epilog="Run `loopjax COMMAND --help` for each command's options. `loopjax report` with no --model "
               "analyses both built-in models into results/<model-name>/.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("convert", formatter_class=_Fmt,
                       help="convert an HF checkpoint (dir or hub id) to a loopjax orbax checkpoint",
                       description="Convert an HF checkpoint (local dir or hub id) into an orbax "
                                   "checkpoint that `loopjax.load` reads.")
    p.add_argument("src", metavar="SRC", help="HF checkpoint dir or hub id ORG/NAME")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--revision", default=None, help="hub revision of SRC")
    p.add_argument("--dtype", default=None, help="store the weights in this dtype (default: as stored)")
    p.add_argument("--quiet", action="store_true", help="no messages")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("spectrum", formatter_class=_Fmt,
                       help="top-k Lyapunov exponents of the loop map, per prompt",
                       description="Top-k Lyapunov exponents (Benettin/QR) of the loop map z -> f(z) "
                                   "for each prompt (the state is the prompt's whole (L, H) residual "
                                   "stream). Writes OUT/spectrum/results.json and figures.")
    _add_common(p, k_default=PAPER["spectrum"]["k"], steps_default=PAPER["spectrum"]["steps"])
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="run the scan in segments of N steps and save (state, probes, log growth, step) "
                        "with orbax after each; --resume continues from the latest")
    p.set_defaults(func=cmd_spectrum)

    p = sub.add_parser("attribute", formatter_class=_Fmt,
                       help="per-sublayer Lyapunov exponents (QR after every sublayer)",
                       description="Per-sublayer exponents: QR after each named sublayer, so the "
                                   "sublayer exponents sum to the loop's. k=1 gives each sublayer's "
                                   "contribution to lambda_1; k>1 adds a sublayer x direction heatmap.")
    _add_common(p, k_default=PAPER["attribute"]["k"], steps_default=PAPER["attribute"]["steps"])
    p.set_defaults(func=cmd_attribute)

    p = sub.add_parser("sweep", formatter_class=_Fmt,
                       help="lambda_1 (one probe) across a list of checkpoints",
                       description="lambda_1 (single probe) per prompt for each checkpoint; the same "
                                   "per-prompt keys for every checkpoint.\nPresets:\n  huginn-pretraining: "
                                   + ", ".join(PRESETS["huginn-pretraining"]))
    p.add_argument("--checkpoints", nargs="+", default=None, metavar="CKPT",
                   help="checkpoint dirs or hub ids, optionally ORG/NAME@REVISION")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a named checkpoint list (prepended to --checkpoints)")
    _add_common(p, model=False, steps_default=PAPER["sweep"]["steps"])
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("similarity", formatter_class=_Fmt,
                       help="cosine similarity of the states after every sublayer across loops",
                       description="Residual-stream cosine similarity between the states after every "
                                   "sublayer (Ouro: n_layers + final norm per loop; Huginn: adapter + "
                                   "n_core blocks per loop) over n loops, averaged over prompts.")
    _add_common(p, steps_help="number of loops n (alias --loops)",
                steps_default=PAPER["similarity"]["loops"])
    # --loops as an alias of --steps
    p.add_argument("--loops", type=int, dest="steps", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_similarity)

    p = sub.add_parser("trajectory", formatter_class=_Fmt,
                       help="convergence: ||z_(t+1) - z_t|| and ||z_t|| over loop steps",
                       description="||z_{t+1} - z_t|| and ||z_t|| over loop steps, per prompt.")
    _add_common(p, steps_default=PAPER["trajectory"]["steps"])
    p.set_defaults(func=cmd_trajectory)

    p = sub.add_parser("report", formatter_class=_Fmt,
                       help="all analyses for one model (or both built-ins) with index.md/index.html",
                       description="Spectrum, attribution (+ heatmap), similarity, trajectory (and a "
                                   "sweep if --checkpoints/--preset) into one folder with index.md and "
                                   "index.html. Without --model: both built-in models into "
                                   "OUT/<model-name>/ (OUT default: results).")
    _add_common(p, report=True, k_default=PAPER["spectrum"]["k"],
                steps_help="if given, the step count of every analysis (overrides the per-analysis "
                           "defaults below)")
    p.add_argument("--spectrum-steps", type=int, default=None,
                   help=f"spectrum T (default {PAPER['spectrum']['steps']})")
    p.add_argument("--attr-k", type=int, default=REPORT_ATTR_K,
                   help="attribution directions (column 1 gives the k=1 lambda_1 contributions)")
    p.add_argument("--attr-steps", type=int, default=None,
                   help=f"attribution T (default {PAPER['attribute']['steps']})")
    p.add_argument("--loops", type=int, default=PAPER["similarity"]["loops"], help="similarity loops")
    p.add_argument("--traj-steps", type=int, default=None,
                   help=f"trajectory steps (default {PAPER['trajectory']['steps']})")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="segment the spectrum scan with orbax checkpoints every N steps")
    p.add_argument("--checkpoints", nargs="+", default=None, metavar="CKPT",
                   help="also run a lambda_1 sweep over these checkpoints")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="sweep preset")
    p.add_argument("--sweep-steps", type=int, default=PAPER["sweep"]["steps"], help="sweep T")
    p.add_argument("--jobs", type=int, default=2 if (os.cpu_count() or 1) >= 2 else 1,
                   help="without --model: run the built-in models in this many parallel processes")
    p.set_defaults(func=cmd_report)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args._argv = argv
    debug = getattr(args, "debug", False) or os.environ.get("LOOPJAX_DEBUG")
    try:
        if hasattr(args, "token_ids") and args.token_ids and not args.prompts:
            raise CLIError("--token-ids needs --prompts FILE")
        _set_x64(getattr(args, "x64", False))
        _enable_compile_cache()
        return int(args.func(args) or 0)
    except KeyboardInterrupt as e:
        print(f"loopjax: interrupted{': ' + str(e) if str(e) else ''}; finished prompts are saved, "
              f"rerun with --resume to continue", file=sys.stderr)
        return 130
    except (RunError, FloatingPointError, ValueError, FileNotFoundError, NotImplementedError,
            OSError) as e:
        if debug:
            raise
        print(f"loopjax: error: {_first_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # anything else: still one line, unless --debug
        if debug:
            raise
        print(f"loopjax: error: {type(e).__name__}: {_first_line(e)} (rerun with --debug for the "
              f"traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
