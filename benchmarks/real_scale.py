"""Real-scale check: random bf16 weights with the real Ouro-1.4B and Huginn-0125 config.json shapes; one
jitted loop step and one JVP (k probes, vmapped) on one prompt. Prints a table and writes JSON.

    python benchmarks/real_scale.py [--models ouro-1.4b,huginn-0125] [--length 8] [--k 1] [--json OUT]
"""
import argparse
import json
import platform
import resource
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import loopjax
from loopjax.models import config_from_hf
from loopjax.models.presets import preset

REAL_CONFIGS = {name: preset(name) for name in ("ouro-1.4b", "huginn-0125")}  # the real config.json shapes


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


@jax.jit
def one_step(f, z):
    return f(z)


@jax.jit
def jvp_probes(f, z, tangents):
    primal, f_lin = jax.linearize(f, z)
    return primal, jax.vmap(f_lin)(tangents)


def check(name: str, length: int, k: int) -> dict:
    cfg = config_from_hf(REAL_CONFIGS[name])
    model, t_init = timed(lambda: loopjax.random_model(cfg, jax.random.key(0), dtype="bfloat16"))
    tokens = jax.random.randint(jax.random.key(1), (length,), 1, cfg.vocab_size)
    f, z0 = loopjax.loop_map(model, tokens, key=jax.random.key(2))
    tangents = jax.random.normal(jax.random.key(3), (k,) + z0.shape, z0.dtype)
    row = {"model": name, "params": model.num_params(), "weights_dtype": "bfloat16", "L": length, "k": k,
           "init_s": t_init}
    z1, row["step_first_s"] = timed(one_step, f, z0)
    _, row["step_s"] = timed(one_step, f, z1)
    _, row["jvp_first_s"] = timed(jvp_probes, f, z0, tangents)
    (_, out), row["jvp_s"] = timed(jvp_probes, f, z1, tangents)
    row["finite"] = bool(jnp.isfinite(out).all() and jnp.isfinite(z1).all())
    row["peak_rss_gib"] = peak_rss_gib()
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="ouro-1.4b,huginn-0125")
    p.add_argument("--length", type=int, default=8, help="prompt length L")
    p.add_argument("--k", type=int, default=1, help="probes per JVP batch")
    p.add_argument("--json", default="benchmarks/results/real_scale.json")
    args = p.parse_args(argv)
    rows = [check(name, args.length, args.k) for name in args.models.split(",")]
    print(f"{'model':<12} {'params':>8} {'init s':>7} {'step(1st) s':>11} {'step s':>7} {'jvp(1st) s':>10} "
          f"{'jvp s':>7} {'peak RSS GiB':>12}")
    for r in rows:
        print(f"{r['model']:<12} {r['params'] / 1e9:>7.2f}B {r['init_s']:>7.1f} {r['step_first_s']:>11.1f} "
              f"{r['step_s']:>7.2f} {r['jvp_first_s']:>10.1f} {r['jvp_s']:>7.2f} {r['peak_rss_gib']:>12.1f}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
            "cpu": platform.processor() or platform.machine()}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
