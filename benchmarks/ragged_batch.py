"""Ragged batches vs one prompt at a time: `loopjax.spectrum(model, [ids_0, ..., ids_19], ...)` (padded to
length buckets of 8 tokens, one vmapped program per bucket) against 20 calls `loopjax.spectrum(model, ids_i,
key=fold_in(key, i))` (one program per distinct prompt length), on the 20 built-in prompts tokenised with
`loopjax.io.tokenizer.SimpleTokenizer(vocab)`, at the paper's spectrum settings k=50, T=64 and at k=1, T=32
(the single-probe regime of lambda1 / attribution).

Modes: one-by-one; batched (the default pad_multiple=8: buckets of 8 and 16 tokens here, 288 padded rows
for the prompts' 182 tokens, +58%); batched-exact (pad_multiple=1: one vmapped program per exact length, no
padding), which separates the cost of padding from that of vmapping.

cold: the first call of the mode after `jax.clear_caches()` (compilation included; no persistent compile
cache: the library never enables one). warm: the best of `--repeats` further calls. Also checks that the
two modes give the same exponents (max |diff|). Prints a table and writes JSON.

The max |diff| is float32 rounding, amplified by the loop's own dynamics: where an orbit is chaotic
(builtin:ouro-tiny-random on most of these prompts, lambda1 ~ +0.2 per loop) the padded and unpadded runs' states
separate like exp(lambda1 * t) from a 1e-7 difference at t=0 (log-growth differences 5e-7 at t=0, 2e-5 at
t=8, 3e-3 at t=32; 15% apart in state by t=64), so at T=64 the two are different float32 orbits and their
finite-time exponents differ by up to ~2e-2. Under x64 the same comparison (20 prompts, k=50, T=64) agrees
to 1e-11 (tests/test_ragged.py, slow).

    python benchmarks/ragged_batch.py [--models ouro-tiny-random,huginn-tiny-random] [--settings 50:64,1:32]
           [--repeats 2] [--json benchmarks/results/ragged_batch.json]
"""
import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

import loopjax
from loopjax.analysis.frontends import padded_length
from loopjax.io.prompts import BUILTIN_PROMPTS
from loopjax.io.tokenizer import SimpleTokenizer


def one_by_one(model, prompts, k, steps, key):
    return [loopjax.spectrum(model, ids, k=k, steps=steps, key=jax.random.fold_in(key, i))
            for i, ids in enumerate(prompts)]


def batched(model, prompts, k, steps, key):
    return loopjax.spectrum(model, prompts, k=k, steps=steps, key=key)


def batched_exact(model, prompts, k, steps, key):
    """One bucket per exact length (pad_multiple=1): vmapped, but no padding."""
    return loopjax.spectrum(model, prompts, k=k, steps=steps, key=key, pad_multiple=1)


def timed(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def bench(name: str, k: int, steps: int, repeats: int) -> list[dict]:
    model = loopjax.load(f"builtin:{name}")
    jax.block_until_ready(model.params)
    tok = SimpleTokenizer(model.config.vocab_size)
    prompts = [np.asarray(tok.encode(p.text), np.int32) for p in BUILTIN_PROMPTS]
    lengths = [len(p) for p in prompts]
    key = jax.random.key(0)
    rows, results = [], {}
    for mode, fn, programs in (("one-by-one", one_by_one, len(set(lengths))),
                               ("batched", batched, len({padded_length(n) for n in lengths})),
                               ("batched-exact", batched_exact, len(set(lengths)))):
        jax.clear_caches()
        res, cold = timed(fn, model, prompts, k, steps, key)
        warm = min(timed(fn, model, prompts, k, steps, key)[1] for _ in range(repeats))
        results[mode] = np.stack([np.asarray(r.exponents) for r in res])
        rows.append({"model": name, "mode": mode, "prompts": len(prompts), "k": k, "steps": steps,
                     "programs": programs, "prompt_lengths": lengths, "cold_s": cold, "warm_s": warm})
        print(f"  {name:<18} k={k:<3} T={steps:<3} {mode:<13} cold {cold:7.2f} s  warm {warm:7.2f} s", flush=True)
    for r in rows:
        r["max_abs_diff_exponents"] = float(np.abs(results[r["mode"]] - results["one-by-one"]).max())
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="ouro-tiny-random,huginn-tiny-random")
    p.add_argument("--settings", default="50:64,1:32", help="k:T pairs, comma-separated")
    p.add_argument("--repeats", type=int, default=2, help="warm calls per mode (the best is reported)")
    p.add_argument("--json", default="benchmarks/results/ragged_batch.json")
    args = p.parse_args(argv)
    load0 = os.getloadavg()[0]
    settings = [tuple(int(v) for v in s.split(":")) for s in args.settings.split(",")]
    rows = [r for name in args.models.split(",") for k, steps in settings
            for r in bench(name, k, steps, args.repeats)]
    print(f"\n{'model':<18} {'k':>3} {'T':>3} {'mode':<13} {'programs':>8} {'cold s':>8} {'warm s':>8} {'cold x':>7}"
          f" {'warm x':>7} {'max|diff|':>10}")
    for r in rows:
        base = next(b for b in rows if b["model"] == r["model"] and b["k"] == r["k"] and b["steps"] == r["steps"]
                    and b["mode"] == "one-by-one")
        r["cold_speedup"] = base["cold_s"] / r["cold_s"]
        r["warm_speedup"] = base["warm_s"] / r["warm_s"]
        print(f"{r['model']:<18} {r['k']:>3} {r['steps']:>3} {r['mode']:<13} {r['programs']:>8} {r['cold_s']:>8.2f} "
              f"{r['warm_s']:>8.2f} {r['cold_speedup']:>6.2f}x {r['warm_speedup']:>6.2f}x "
              f"{r['max_abs_diff_exponents']:>10.1e}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "loadavg_1min_before": load0, "loadavg_1min_after": os.getloadavg()[0]}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
