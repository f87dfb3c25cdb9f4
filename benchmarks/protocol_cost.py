"""The paper's whole protocol at the real Ouro-1.4B and Huginn-0125 shapes (random weights), extrapolated
from a few measured Benettin steps.

Protocol: spectrum k=50, T=64 and attribution k=1, T=32 on each of 20 prompts.

Measured: `loopjax.benettin` on the real shapes (`preset("ouro-1.4b")`, `preset("huginn-0125")`,
`loopjax.random_model(config_from_hf(cfg), key, dtype)`), one prompt of L=8 tokens, for two probe counts
k1 < k2 (CPU default 2 and 16; on a GPU/TPU 1 and 50): the first call (compilation + `--steps` steps) and
the best of `--repeats` warm calls (default 2), per step; and one plain loop step f(z) (jitted, warm) for
comparison with benchmarks/real_scale.py.

Model: one Benettin step linearises the loop map once (the primal, L rows through every weight matrix)
and pushes k tangents through it (k*L more rows), then QRs a (L*H, k) matrix (negligible here). So

    t_step(k, L) = a + b * L * (1 + k)

with `a` what does not grow with the rows (streaming and, for bf16 weights on CPU, converting the
weights) and `b` the cost per row; a and b are solved from the two measured k at L=8. Attention's L^2
part is negligible at these lengths. The protocol is then

    spectrum    = T_s * sum_i t_step(50, L_i)          (T_s = 64)
    attribution = T_a * sum_i t_step(1, L_i)           (T_a = 32; one QR per sublayer instead of one per
                                                        step: same linearisation, QRs of (L*H, 1))
    compile     = n_lengths * 2 * (cold - warm) at L=8 (one compilation per prompt length and analysis)

over the prompt lengths L_i: by default those of the 20 built-in prompts under the word-level
`SimpleTokenizer` (4..13 tokens; the real tokenizers are not available offline), or `--lengths`.

Memory: the weights (Ouro-1.4B fp32 5.7 GB / bf16 2.9 GB, Huginn-0125 bf16 7.1 GB) plus the compiled
program's buffers; the peak RSS of each model's process is recorded. Each model runs in its own process.
Random weights are drawn with an `rbg` PRNG key (`--key-impl`): threefry makes the init of 3.5B numbers
take minutes on CPU; the weights' distribution is the architecture's own init either way.

    python benchmarks/protocol_cost.py [--models ouro-1.4b,huginn-0125] [--dtypes float32,bfloat16]
           [--ks 2,16] [--steps 1] [--repeats 2] [--length 8] [--json benchmarks/results/protocol_cost.json]
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

import loopjax
from loopjax.models import config_from_hf
from loopjax.models.presets import preset
from loopjax.io.prompts import BUILTIN_PROMPTS
from loopjax.io.tokenizer import SimpleTokenizer

PROTOCOL = {"prompts": 20, "spectrum": {"k": 50, "steps": 64}, "attribution": {"k": 1, "steps": 32}}
# CPU (24 GiB here): Ouro-1.4B fits in fp32 (faster on CPU: no bf16->f32 conversion at every use),
# Huginn-0125 only in bf16 (fp32 would be 14.3 GB of weights plus the program's buffers).
CPU_DTYPES = {"ouro-1.4b": "float32", "huginn-0125": "bfloat16"}
ACCEL_DTYPES = {"ouro-1.4b": "bfloat16", "huginn-0125": "bfloat16"}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(name: str, dtype: str, ks, steps: int, length: int, key_impl: str, repeats: int) -> dict:
    """In this process: build the model, time `benettin` for each k (cold, then the best of `repeats` warm)."""
    cfg = config_from_hf(preset(name))
    t0 = time.perf_counter()
    model = loopjax.random_model(cfg, jax.random.key(0, impl=key_impl), dtype=dtype)
    jax.block_until_ready(model.params)
    row = {"model": name, "weights_dtype": dtype, "params": model.num_params(), "L": length, "steps": steps,
           "init_s": time.perf_counter() - t0, "per_k": {}}
    print(f"  {name} ({dtype}): {row['params'] / 1e9:.2f}B params, init {row['init_s']:.0f} s", flush=True)
    tokens = jax.random.randint(jax.random.key(1), (length,), 1, cfg.vocab_size)
    f, z0 = loopjax.loop_map(model, tokens, key=jax.random.key(2))
    step = jax.jit(lambda f, z: f(z))
    z1 = jax.block_until_ready(step(f, z0))
    t0 = time.perf_counter()
    jax.block_until_ready(step(f, z1))
    row["loop_step_s"] = time.perf_counter() - t0
    print(f"    one loop step f(z): {row['loop_step_s']:.2f} s", flush=True)
    for k in ks:
        times = []
        for rep in range(1 + repeats):  # cold (compile + run), then warm calls with other probes
            t0 = time.perf_counter()
            r = loopjax.benettin(f, z0, k=k, steps=steps, key=jax.random.key(10 + rep))
            jax.block_until_ready(r.exponents)
            times.append(time.perf_counter() - t0)
        cold, warm = times[0], min(times[1:])
        row["per_k"][str(k)] = {"cold_s": cold, "warm_s": warm, "step_s": warm / steps,
                                "compile_s": max(cold - warm, 0.0),
                                "finite": bool(np.isfinite(np.asarray(r.exponents)).all())}
        print(f"    k={k}: cold {cold:.1f} s, warm {warm:.1f} s ({warm / steps:.2f} s/step)", flush=True)
    row["peak_rss_gib"] = peak_rss_gib()
    row["loadavg_1min"] = os.getloadavg()[0]  # the machine may be shared: the timings scale with it
    return row


def extrapolate(row: dict, lengths) -> dict:
    """Fit t_step(k, L) = a + b * L * (1 + k) to the measured k at L = row["L"] and sum the protocol."""
    ks = sorted(int(k) for k in row["per_k"])
    x = np.array([row["L"] * (1 + k) for k in ks], np.float64)
    y = np.array([row["per_k"][str(k)]["step_s"] for k in ks], np.float64)
    b, a = np.polyfit(x, y, 1) if len(ks) > 1 else (y[0] / x[0], 0.0)
    if b <= 0:  # noise (a busy machine) can invert two close points: fall back to proportional scaling
        a, b = 0.0, float(y.max() / x[np.argmax(y)])
    step = lambda k, L: a + b * L * (1 + k)  # noqa: E731
    sp, at = PROTOCOL["spectrum"], PROTOCOL["attribution"]
    spectrum = sp["steps"] * sum(step(sp["k"], L) for L in lengths)
    attribution = at["steps"] * sum(step(at["k"], L) for L in lengths)
    compile_s = np.mean([row["per_k"][str(k)]["compile_s"] for k in ks]) * len(set(lengths)) * 2
    return {"a_s": float(a), "b_s_per_row": float(b), "step_s_k50_L8": step(50, 8),
            "spectrum_s": float(spectrum), "attribution_s": float(attribution), "compile_s": float(compile_s),
            "total_s": float(spectrum + attribution + compile_s)}


def hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="ouro-1.4b,huginn-0125")
    p.add_argument("--dtypes", default=None, help="weight dtype per model, comma-separated (default: float32 "
                   "for Ouro and bfloat16 for Huginn on CPU, bfloat16 for both on an accelerator)")
    p.add_argument("--ks", default=None, help="the probe counts measured (default 2,16 on CPU, 1,50 else)")
    p.add_argument("--steps", type=int, default=None, help="Benettin steps per timed call (CPU 1, else 4)")
    p.add_argument("--length", type=int, default=8, help="prompt length of the measurement")
    p.add_argument("--lengths", default=None, help="the protocol's 20 prompt lengths, comma-separated "
                   "(default: the built-in prompts under SimpleTokenizer)")
    p.add_argument("--repeats", type=int, default=2, help="warm calls per k (the best is used)")
    p.add_argument("--key-impl", default="rbg", help="PRNG implementation of the weights' init key")
    p.add_argument("--json", default="benchmarks/results/protocol_cost.json")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one model, print JSON
    args = p.parse_args(argv)
    backend = jax.default_backend()
    accel = backend != "cpu"
    ks = [int(k) for k in (args.ks or ("1,50" if accel else "2,16")).split(",")]
    steps = args.steps or (4 if accel else 1)
    models = args.models.split(",")
    dtypes = args.dtypes.split(",") if args.dtypes else [(ACCEL_DTYPES if accel else CPU_DTYPES)[m] for m in models]

    if args.one:  # child process
        name, dtype = args.one.split(":")
        row = measure(name, dtype, ks, steps, args.length, args.key_impl, args.repeats)
        print("ROW " + json.dumps(row), flush=True)
        return row

    lengths = ([int(x) for x in args.lengths.split(",")] if args.lengths else
               [len(SimpleTokenizer(65536).encode(q.text)) for q in BUILTIN_PROMPTS])
    rows = []
    for name, dtype in zip(models, dtypes):
        cmd = [sys.executable, __file__, "--one", f"{name}:{dtype}", "--ks", ",".join(map(str, ks)),
               "--steps", str(steps), "--length", str(args.length), "--key-impl", args.key_impl,
               "--repeats", str(args.repeats)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sys.stdout.write("".join(line + "\n" for line in proc.stdout.splitlines() if not line.startswith("ROW ")))
        found = [line[4:] for line in proc.stdout.splitlines() if line.startswith("ROW ")]
        if proc.returncode != 0 or not found:
            print(f"  {name}: failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}", flush=True)
            rows.append({"model": name, "weights_dtype": dtype, "error": proc.stderr[-2000:]})
            continue
        row = json.loads(found[0])
        row["wall_s"] = time.perf_counter() - t0
        row["estimate"] = extrapolate(row, lengths)
        rows.append(row)

    print(f"\nprotocol: spectrum k=50 T=64 + attribution k=1 T=32, {len(lengths)} prompts of "
          f"{min(lengths)}-{max(lengths)} tokens (sum {sum(lengths)}); measured at L={args.length}, "
          f"k={ks}, backend {backend}")
    print(f"{'model':<12} {'weights':<9} {'step k=' + str(ks[0]):>10} {'step k=' + str(ks[-1]):>10} "
          f"{'step k=50':>10} {'spectrum':>10} {'attrib.':>9} {'compile':>8} {'total':>9} {'RSS GiB':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<12} {r['weights_dtype']:<9} failed")
            continue
        e = r["estimate"]
        print(f"{r['model']:<12} {r['weights_dtype']:<9} {r['per_k'][str(ks[0])]['step_s']:>9.2f}s "
              f"{r['per_k'][str(ks[-1])]['step_s']:>9.2f}s {e['step_s_k50_L8']:>9.2f}s {hms(e['spectrum_s']):>10} "
              f"{hms(e['attribution_s']):>9} {hms(e['compile_s']):>8} {hms(e['total_s']):>9} "
              f"{r['peak_rss_gib']:>8.1f}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"backend": backend, "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "loadavg_1min": os.getloadavg()[0], "protocol": PROTOCOL, "prompt_lengths": lengths,
            "formula": "t_step(k, L) = a + b*L*(1+k); spectrum = 64*sum_i t_step(50, L_i); "
                       "attribution = 32*sum_i t_step(1, L_i); compile = n_lengths*2*(cold-warm)",
            "measured_ks": ks, "steps_per_call": steps, "length": args.length}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
