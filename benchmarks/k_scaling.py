"""Cost of a Benettin step against the number of probes k (1 ... d), dense vs causal blocks, JVP vs QR.

On a small model (default builtin:ouro-tiny-random, L = 8 tokens, H = 64: d = 512), one process:
  * dense, k probes: the jitted JVP of k probes (jax.linearize + vmap) and the jitted (d, k) reduced QR, timed
    apart; peak memory = XLA's compiled temp + argument + output bytes of each program;
  * blocks, c blocks of H probes (c = 1 .. L): the same JVP with c*H probes (each confined to its block) and
    c (d, H) masked QRs (what the engine does through benettin's tangent_mask) -- plus, for reference, c (H, H)
    compact QRs (what an engine that QRs only the masked rows would do);
  * end to end: loopjax.engine.complete.complete_spectrum_of_map dense (k = d) vs blocks, per step, in this
    run: the blocks method's measured speed-up.
Then an EXTRAPOLATION (a model, not a measurement) of one step at Ouro-1.4B's shape (24 layers, H = 2048,
L = 8, d = 16,384) from FLOP counts at assumed sustained rates (--jvp-tflops, --qr-tflops).

    python benchmarks/k_scaling.py                        # ~3-5 min on 2 busy CPU cores
    python benchmarks/k_scaling.py --device               # on a GPU/TPU host (not run here; see --help)
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import loopjax
from loopjax.engine.complete import block_masks, block_probes, complete_spectrum_of_map

OURO_14B = dict(layers=24, H=2048, inter=5632, L=8, heads=16, head_dim=128)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="builtin:ouro-tiny-random")
    p.add_argument("--L", type=int, default=8, help="prompt length (tokens)")
    p.add_argument("--ks", default="1,8,64,256,d", help="dense probe counts ('d' = all)")
    p.add_argument("--blocks", default="1,8", help="numbers of blocks c measured together (c*H probes)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="steps of the end-to-end complete_spectrum runs")
    p.add_argument("--jvp-tflops", type=float, default=100.0,
                   help="ASSUMED sustained TFLOP/s of the JVP matmuls on the accelerator (extrapolation)")
    p.add_argument("--qr-tflops", type=float, default=10.0,
                   help="ASSUMED sustained TFLOP/s of a float32 Householder QR on the accelerator (extrapolation)")
    p.add_argument("--device", action="store_true",
                   help="accelerator mode: Ouro-1.4B shape (random weights, bf16) with float32 tangents, dense "
                        "probes sharded over all devices (benettin mesh=), k = 512, 2048, 16384 (probe_chunk 2048)")
    p.add_argument("--json", default="benchmarks/results/k_scaling.json")
    return p.parse_args(argv)


def timed(fn, *args, reps):
    """(median seconds of a steady call, first-call seconds incl. compile)."""
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), first


def peak_bytes(jitted, *args) -> int:
    m = jitted.lower(*args).compile().memory_analysis()
    if m is None:
        return -1
    return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)


def programs(f, shape):
    jvp = jax.jit(lambda f, z, Q: jax.vmap(lambda q: jax.linearize(f, z)[1](q.reshape(shape)).reshape(-1),
                                           in_axes=1, out_axes=1)(Q))
    qr = jax.jit(lambda W: jnp.linalg.qr(W, mode="reduced"))
    return jvp, qr


def measure_dense(f, z, ks, reps):
    jvp, qr = programs(f, z.shape)
    rows = []
    for k in ks:
        Q = jnp.linalg.qr(jax.random.normal(jax.random.key(k), (z.size, k)), mode="reduced")[0]
        tj, _ = timed(jvp, f, z, Q, reps=reps)
        tq, _ = timed(qr, Q, reps=reps)
        rows.append(dict(method="dense", k=k, jvp_s=tj, qr_s=tq, step_s=tj + tq,
                         jvp_peak_bytes=peak_bytes(jvp, f, z, Q), qr_peak_bytes=peak_bytes(qr, Q)))
    return rows


def measure_blocks(f, z, H, cs, reps):
    jvp, _ = programs(f, z.shape)
    qr_b = jax.jit(jax.vmap(lambda W: jnp.linalg.qr(W, mode="reduced")))
    d = z.size
    rows = []
    for c in cs:
        P = block_probes(jax.random.key(c), np.arange(c), d=d, block_size=H, dtype=z.dtype)  # (c, d, H)
        masks = block_masks(z.shape, np.arange(c), H, z.dtype).reshape(c, d, 1)
        Q = jnp.moveaxis(P, 0, 1).reshape(d, c * H)
        tj, _ = timed(jvp, f, z, Q, reps=reps)
        masked = P * masks
        tq, _ = timed(qr_b, masked, reps=reps)
        compact = P[:, :H] + jnp.eye(H)  # any (c, H, H) matrices: only the shape matters for the timing
        tc, _ = timed(qr_b, compact, reps=reps)
        rows.append(dict(method="blocks", blocks=c, k=c * H, jvp_s=tj, qr_s=tq, qr_compact_s=tc, step_s=tj + tq,
                         jvp_peak_bytes=peak_bytes(jvp, f, z, Q), qr_peak_bytes=peak_bytes(qr_b, masked)))
    return rows


def end_to_end(f, z, steps, reps):
    out = {}
    for method in ("dense", "blocks"):
        run = lambda: complete_spectrum_of_map(f, z, key=jax.random.key(0), steps=steps, method=method).exponents
        s, first = timed(lambda: run(), reps=reps)
        out[method] = dict(per_step_s=s / steps, first_call_s=first)
    out["blocks_speedup"] = out["dense"]["per_step_s"] / out["blocks"]["per_step_s"]
    return out


def extrapolate(jvp_tflops, qr_tflops, s=OURO_14B):
    """FLOPs of one Benettin step at Ouro-1.4B's shape, and seconds at the ASSUMED rates."""
    H, L, n = s["H"], s["L"], s["layers"]
    d = L * H
    per_token = n * 2 * (4 * H * H + 3 * H * s["inter"]) + n * 4 * L * H  # matmuls + attention, one tangent
    jvp_dense = d * L * per_token                      # d probes, each a full-prompt tangent pass
    jvp_prefix = H * per_token * L * (L + 1) // 2      # blocks with block i run on the prefix 0..i only
    qr = lambda m, k: 2 * (2 * m * k * k - 2 * k ** 3 / 3)  # geqrf + forming Q (orgqr)
    rows = {"dense": (jvp_dense, qr(d, d)), "blocks (masked d x H QR)": (jvp_dense, L * qr(d, H)),
            "blocks (compact H x H QR)": (jvp_dense, L * qr(H, H)),
            "blocks (compact QR + prefix JVP)": (jvp_prefix, L * qr(H, H))}
    return {name: dict(jvp_flop=float(j), qr_flop=float(q), jvp_s=j / jvp_tflops / 1e12, qr_s=q / qr_tflops / 1e12,
                       step_s=j / jvp_tflops / 1e12 + q / qr_tflops / 1e12, tangent_bytes=2 * d * d * 4)
            for name, (j, q) in rows.items()}


def table(rows, e2e, ext, assumed):
    lines = ["| method | k | JVP ms | QR ms | (compact QR ms) | step ms | JVP peak MiB | QR peak MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = r["method"] + (f" ({r['blocks']} blk)" if "blocks" in r else "")
        cq = f"{r['qr_compact_s'] * 1e3:.2f}" if "qr_compact_s" in r else ""
        lines.append(f"| {name} | {r['k']} | {r['jvp_s'] * 1e3:.2f} | {r['qr_s'] * 1e3:.2f} | {cq} | "
                     f"{r['step_s'] * 1e3:.2f} | {r['jvp_peak_bytes'] / 2**20:.1f} | {r['qr_peak_bytes'] / 2**20:.1f} |")
    lines += ["", f"end to end (complete_spectrum_of_map, k = d): dense {e2e['dense']['per_step_s'] * 1e3:.1f} ms/step, "
              f"blocks {e2e['blocks']['per_step_s'] * 1e3:.1f} ms/step: blocks speed-up x{e2e['blocks_speedup']:.2f}",
              "", f"EXTRAPOLATION (not measured) to Ouro-1.4B, d = 16,384, one accelerator at ASSUMED "
              f"{assumed[0]:g} TFLOP/s (JVP) and {assumed[1]:g} TFLOP/s (QR):",
              "| variant | JVP TFLOP | QR TFLOP | JVP s | QR s | step s | Q+W GiB |", "|---|---|---|---|---|---|---|"]
    for name, x in ext.items():
        lines.append(f"| {name} | {x['jvp_flop'] / 1e12:.1f} | {x['qr_flop'] / 1e12:.3f} | {x['jvp_s']:.2f} | "
                     f"{x['qr_s']:.3f} | {x['step_s']:.2f} | {x['tangent_bytes'] / 2**30:.1f} |")
    return "\n".join(lines)


def device_run(args):
    """Accelerator mode (prepared, not run on the CPU host): Ouro-1.4B shape, bf16 weights, float32 tangents,
    dense probes sharded over all local devices; one short benettin per k."""
    from jax.sharding import Mesh
    from loopjax.models import config_from_hf
    from loopjax.models.presets import preset
    model = loopjax.random_model(config_from_hf(preset("ouro-1.4b")), jax.random.key(0), dtype="bfloat16")
    f, z = loopjax.loop_map(model, jnp.arange(1, args.L + 1))
    mesh = Mesh(np.array(jax.devices()), ("p",))
    rows = []
    for k in (512, 2048, z.size):
        run = lambda: loopjax.benettin(f, z, k=k, steps=2, key=jax.random.key(0), probe_chunk=min(k, 2048),
                                       mesh=mesh).exponents
        s, first = timed(run, reps=1)
        rows.append(dict(k=k, per_step_s=s / 2, first_call_s=first, devices=len(jax.devices())))
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    args = parse_args(argv)
    if args.device:
        rec = {"device": jax.devices()[0].device_kind, "ouro-1.4b": device_run(args)}
    else:
        model = loopjax.load(args.model)
        f, z = loopjax.loop_map(model, jnp.arange(1, args.L + 1))
        H = int(model.config.hidden_size)
        ks = [z.size if k == "d" else int(k) for k in args.ks.split(",")]
        rows = measure_dense(f, z, ks, args.reps) + measure_blocks(f, z, H, [int(c) for c in args.blocks.split(",")],
                                                                   args.reps)
        e2e = end_to_end(f, z, args.steps, max(1, args.reps - 1))
        ext = extrapolate(args.jvp_tflops, args.qr_tflops)
        print(table(rows, e2e, ext, (args.jvp_tflops, args.qr_tflops)))
        rec = {"model": args.model, "L": args.L, "H": H, "d": int(z.size), "rows": rows, "end_to_end": e2e,
               "extrapolation_ouro_1.4b": dict(assumed_jvp_tflops=args.jvp_tflops, assumed_qr_tflops=args.qr_tflops,
                                               note="EXTRAPOLATED from FLOP counts, not measured", **ext),
               "machine": {"backend": jax.default_backend(), "cpu": platform.processor() or platform.machine()}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
