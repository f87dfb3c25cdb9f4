"""Memory and time of jax.grad of λ1 (one probe, k=1) with respect to the weights, with and without
`remat=True` (jax.checkpoint on the Benettin scan body), at the medium benchmark shapes.

For every (model, T, remat) the jitted gradient program is lowered and compiled once; XLA's
`compiled.memory_analysis()` gives its temporary buffers (`temp`: everything the program allocates besides
its arguments and outputs, i.e. the residuals reverse mode keeps for the backward pass), argument and output
sizes; the gradient is then run (first call, then the median of --reps calls). Peak RSS of the process is
recorded after each row (monotonic, so only its growth means something). `--compile-only` adds rows for
other shapes (e.g. the real checkpoints' shapes) that are compiled from abstract weights (nothing is
allocated or run) to get their memory analysis.

    python benchmarks/grad_memory.py                          # ouro-medium, huginn-medium; T = 32, 64; L = 16
    python benchmarks/grad_memory.py --steps 32 --reps 1 --json /tmp/g.json
    python benchmarks/grad_memory.py --compile-only ouro-1.4b,huginn-0125 --real-length 8 --real-steps 32

Writes benchmarks/results/grad_memory.json (settings, rows, software) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp

import loopjax
from loopjax.models import architecture, config_from_hf
from loopjax.models.presets import preset

HERE = Path(__file__).resolve().parent
MIB = 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory(compiled) -> dict:
    m = compiled.memory_analysis()
    if m is None:
        return {}
    out = {name: int(getattr(m, name)) for name in ("temp_size_in_bytes", "argument_size_in_bytes",
                                                     "output_size_in_bytes", "alias_size_in_bytes",
                                                     "generated_code_size_in_bytes", "peak_memory_in_bytes")
           if hasattr(m, name)}
    return out


def grad_fn(model, ids, steps: int, remat: bool):
    key = loopjax.prompt_key(0, 0)

    def lam(params):
        return loopjax.lambda1(model.replace(params=params), ids, steps=steps, key=key, remat=remat)

    return jax.jit(jax.value_and_grad(lam))


def one_row(name, model, params, ids, steps, remat, reps, run=True) -> tuple[dict, object]:
    fn = grad_fn(model, ids, steps, remat)
    t0 = time.perf_counter()
    lowered = fn.lower(params)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    row = {"model": name, "L": int(ids.shape[0]), "steps": steps, "k": 1, "remat": remat,
           "lower_s": round(t1 - t0, 3), "compile_s": round(t2 - t1, 3), **memory(compiled)}
    grads = None
    if run:
        t3 = time.perf_counter()
        value, grads = jax.block_until_ready(compiled(params))
        row["first_call_s"] = round(time.perf_counter() - t3, 4)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            jax.block_until_ready(compiled(params))
            times.append(time.perf_counter() - t)
        row["time_s"] = round(statistics.median(times), 4) if times else row["first_call_s"]
        row["lambda1"] = float(value)
        row["grad_norm"] = float(jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32)))
                                              for g in jax.tree.leaves(grads))))
    row["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return row, grads


def max_rel_diff(a, b) -> float:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    scale = max(float(jnp.max(jnp.abs(x))) for x in lb)
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(la, lb)) / scale


def prompt(length: int, vocab: int):
    return jax.random.randint(jax.random.key(1), (length,), 1, vocab, dtype=jnp.int32)


def run_measured(names, steps_list, length, reps) -> list[dict]:
    rows = []
    for name in names:
        cfg = config_from_hf(preset(name))
        model = loopjax.random_model(cfg, jax.random.key(0))
        ids = prompt(length, cfg.vocab_size)
        for steps in steps_list:
            plain, g_plain = one_row(name, model, model.params, ids, steps, False, reps)
            rows.append(plain)
            print_row(plain)
            rem, g_rem = one_row(name, model, model.params, ids, steps, True, reps)
            rem["max_rel_diff_vs_no_remat"] = max_rel_diff(g_rem, g_plain)
            rows.append(rem)
            print_row(rem)
            del g_plain, g_rem
    return rows


def run_compile_only(names, steps_list, length, dtype) -> list[dict]:
    rows = []
    for name in names:
        cfg = config_from_hf(preset(name))
        init = partial(architecture(cfg).init_params, cfg, param_dtype=jnp.dtype(dtype))
        abstract = jax.eval_shape(init, jax.random.key(0))
        model = loopjax.LoopModel(abstract, cfg)
        ids = prompt(length, cfg.vocab_size)
        for steps in steps_list:
            for remat in (False, True):
                row, _ = one_row(name, model, abstract, ids, steps, remat, 0, run=False)
                row["weights"] = f"abstract {dtype} (compile only)"
                rows.append(row)
                print_row(row)
    return rows


def print_row(r: dict) -> None:
    t = r.get("time_s")
    print(f"{r['model']:14s} L={r['L']:<3d} T={r['steps']:<3d} remat={str(r['remat']):5s} "
          f"temp {r.get('temp_size_in_bytes', 0) / MIB:9.1f} MiB  "
          f"args {r.get('argument_size_in_bytes', 0) / MIB:8.1f} MiB  "
          f"compile {r['compile_s']:6.1f} s  " + (f"grad {t:7.3f} s  " if t is not None else "") +
          f"peak RSS {r['peak_rss_mib']:8.1f} MiB", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="ouro-medium,huginn-medium")
    ap.add_argument("--steps", default="32,64", help="Benettin steps T (comma-separated)")
    ap.add_argument("--length", type=int, default=16, help="prompt length L (tokens)")
    ap.add_argument("--reps", type=int, default=2, help="timed calls after the first (median)")
    ap.add_argument("--compile-only", default="", help="shapes compiled from abstract weights (memory only)")
    ap.add_argument("--real-length", type=int, default=8, help="L for the --compile-only shapes")
    ap.add_argument("--real-steps", default="32", help="T for the --compile-only shapes (comma-separated)")
    ap.add_argument("--real-dtype", default="bfloat16", help="weight dtype for the --compile-only shapes")
    ap.add_argument("--json", default=str(HERE / "results" / "grad_memory.json"))
    args = ap.parse_args()
    steps_list = [int(s) for s in args.steps.split(",") if s]
    t0 = time.perf_counter()
    rows = run_measured([m for m in args.models.split(",") if m], steps_list, args.length, args.reps)
    if args.compile_only:
        rows += run_compile_only([m for m in args.compile_only.split(",") if m],
                                 [int(s) for s in args.real_steps.split(",") if s], args.real_length, args.real_dtype)
    out = {"benchmark": "grad_memory", "what": "jax.value_and_grad of loopjax.lambda1 (k=1) w.r.t. the weights, "
                                               "jitted; memory from compiled.memory_analysis()",
           "settings": vars(args), "rows": rows, "seconds": round(time.perf_counter() - t0, 1),
           "software": {"python": platform.python_version(), "jax": jax.__version__, "loopjax": loopjax.__version__,
                        "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
                        "machine": platform.machine()}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json} ({out['seconds']} s)")


if __name__ == "__main__":
    main()
