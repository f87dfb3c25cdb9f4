"""JVP / Benettin-step throughput: loopjax (JAX) against PyTorch baselines on the same weights.

For each model shape, random weights are written as an HF-format checkpoint (config.json +
model.safetensors, the HF tensor names) into a temporary folder and loaded by both sides:

* JAX: ``loopjax.load`` -> ``loopjax.loop_map`` -> a jitted one-step function (``jax.linearize`` +
  ``vmap`` over the k probes + QR) and the public ``loopjax.benettin``;
* PyTorch (``benchmarks/torch_loop.py``): a Python loop of ``torch.func.jvp`` (one per probe, as the
  paper did) and ``torch.func.vmap`` over ``torch.func.jvp``.

Everything runs in ONE process. Measured per (shape, implementation, k): first-call time (JAX: trace
+ compile + run) and steady-state time, probe-steps/s, achieved GFLOP/s against the fp32 matmul peak
measured in this process, and the peak resident memory of the process during that measurement.
See benchmarks/README.md for the columns and the FLOP formula.

    python benchmarks/jvp_throughput.py                      # small,medium; k = 1,8,32,64
    python benchmarks/jvp_throughput.py --shapes ouro-1.4b   # real shape, bf16 weights, k in {1, 8}
"""
from __future__ import annotations

import argparse
import os
import sys

SHAPE_GROUPS = {
    "small": ["small-ouro", "small-huginn"],
    "medium": ["medium-ouro", "medium-huginn"],
    "ouro-1.4b": ["ouro-1.4b"],
    "huginn-0125": ["huginn-0125"],
}
REAL = ("ouro-1.4b", "huginn-0125")
REAL_KS = (1, 8)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Benettin-step / JVP throughput of loopjax vs PyTorch (per-probe jvp loop and vmap(jvp)) "
                    "on the same random HF-format checkpoints. One process; prints a table, writes JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shapes", default="small,medium",
                   help="comma list of: small, medium (each = an Ouro- and a Huginn-style model), ouro-1.4b, "
                        "huginn-0125, all; or single models small-ouro, small-huginn, medium-ouro, medium-huginn")
    p.add_argument("--ks", default="1,8,32,64", help="numbers of probes k per Benettin step (e.g. 1,8,32,64,128)")
    p.add_argument("--reps", type=int, default=3, help="steady-state repetitions per measurement (median reported)")
    p.add_argument("--max-rep-s", type=float, default=8.0,
                   help="stop repeating a measurement once its steady-state calls took this many seconds "
                        "(at least one steady call is always made)")
    p.add_argument("--bsteps", type=int, default=4,
                   help="steps per loopjax.benettin call (its per-step time = call time / bsteps)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
    p.add_argument("--no-benettin", action="store_true", help="skip the end-to-end loopjax.benettin rows")
    p.add_argument("--torch-weights", choices=("cast", "stored"), default="cast",
                   help="PyTorch loop weights: cast once to float32 at load, or keep the stored dtype (bf16 "
                        "for the real shapes) and upcast at each use (less memory, slower)")
    p.add_argument("--torch-linear", choices=("native", "jvp_rule"), default="native",
                   help="PyTorch linear layers: plain x @ W.T (what torch.func users get; its forward-AD rule "
                        "materialises a zero tangent for every weight) or an autograd.Function with an explicit "
                        "forward-mode rule that skips it (rows then say '+rule')")
    p.add_argument("--jax-weights", choices=("stored", "float32"), default="stored",
                   help="JAX weights: the stored dtype (bf16 for the real shapes; loopjax's default) or "
                        "loopjax.load(..., dtype=float32)")
    p.add_argument("--full", action="store_true",
                   help="real shapes (ouro-1.4b, huginn-0125) with all --ks and --reps; otherwise they run "
                        "only k in {1, 8} with 1 rep")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for both JAX and PyTorch (pins the process to that many cores); "
                        "default: all cores available to the process")
    p.add_argument("--raw-env", action="store_true",
                   help="do not set OPENBLAS_NUM_THREADS=1 and OMP_WAIT_POLICY=PASSIVE (see README: JAX's CPU QR "
                        "calls multithreaded OpenBLAS, and PyTorch's OpenMP threads spin; both collapse on a "
                        "loaded machine)")
    p.add_argument("--peak-n", type=int, default=2048, help="matrix size of the fp32 matmul peak measurement")
    p.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "jvp_throughput.json"), help="where to write the JSON results")
    p.add_argument("--tmpdir", default=None, help="where the temporary checkpoints are written (default: system temp)")
    args = p.parse_args(argv)
    names = []
    for s in [s.strip() for s in args.shapes.split(",") if s.strip()]:
        if s == "all":
            names += [n for g in SHAPE_GROUPS.values() for n in g]
        elif s in SHAPE_GROUPS:
            names += SHAPE_GROUPS[s]
        elif any(s in g for g in SHAPE_GROUPS.values()):
            names.append(s)
        else:
            p.error(f"unknown shape {s!r}")
    args.shape_names = list(dict.fromkeys(names))
    try:
        args.k_list = [int(k) for k in args.ks.split(",") if k.strip()]
    except ValueError:
        p.error(f"--ks must be a comma list of integers, got {args.ks!r}")
    if not args.k_list or min(args.k_list) < 1:
        p.error("--ks needs positive integers")
    if args.reps < 1 or args.bsteps < 1:
        p.error("--reps and --bsteps must be >= 1")
    return args


ARGS = parse_args() if __name__ == "__main__" else None

# Thread settings must happen before jax / torch (and scipy's OpenBLAS) create their thread pools.
ENV_KNOBS = ("OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
if ARGS is not None:
    if ARGS.threads:
        _cpus = sorted(os.sched_getaffinity(0))
        if ARGS.threads > len(_cpus):
            sys.exit(f"--threads {ARGS.threads} > {len(_cpus)} available cores")
        os.sched_setaffinity(0, set(_cpus[:ARGS.threads]))
        for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[_v] = str(ARGS.threads)
    if not ARGS.raw_env:
        # JAX's CPU QR runs LAPACK from scipy's OpenBLAS: multithreaded it takes ~200 ms instead of ~0.4 ms
        # for a (448, 32) QR on a busy 2-core machine. PyTorch's OpenMP workers spin-wait, which makes a
        # tiny eager forward ~1 s instead of ~2 ms when other processes hold the cores.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

# ------------------------------------------------------------------------------------------------
# model shapes
# ------------------------------------------------------------------------------------------------


def shape_spec(name):
    """(HF config dict, sequence length L): the shapes come from loopjax.models.presets."""
    from loopjax.models.presets import huginn_config, ouro_config, preset

    if name == "small-ouro":  # the fixtures' tiny shapes
        return ouro_config(hidden=64, layers=4, heads=4, kv_heads=4, head_dim=16, inter=160, vocab=320), 7
    if name == "small-huginn":
        return huginn_config(n_embd=64, heads=4, prelude=2, core=4, coda=2, inter=160, vocab=320, block_size=64), 7
    if name in ("medium-ouro", "medium-huginn"):
        return preset(name.split("-")[1] + "-medium"), 16
    if name in ("ouro-1.4b", "huginn-0125"):  # ByteDance/Ouro-1.4B, tomg-group-umd/huginn-0125 (bf16)
        return preset(name), 8
    raise KeyError(name)


def arch_of(cfg):
    return "ouro" if cfg["model_type"] == "ouro" else "huginn"


def hidden_of(cfg):
    return cfg["hidden_size"] if arch_of(cfg) == "ouro" else cfg["n_embd"]


# ------------------------------------------------------------------------------------------------
# FLOP model (see README.md)
# ------------------------------------------------------------------------------------------------


def loop_flops(cfg, L):
    """Matmul FLOPs of ONE application of the loop map f on an (L, H) state.

    F = 2 * L * P_mm + n_attn * 4 * L^2 * n_heads * head_dim, where P_mm counts the weights of the
    matmuls inside f (Ouro: q,k,v,o + gate,up,down of every layer; Huginn: the adapter (2H -> H) +
    Wqkv, proj, fc, mlp.proj of every core block) and the attention term is QK^T and PV over the full
    (unmasked) L x L score matrix per attention layer. Norms, softmax, rope, SiLU are not counted.
    """
    if arch_of(cfg) == "ouro":
        H, I = cfg["hidden_size"], cfg["intermediate_size"]
        nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
        per_layer = H * nh * hd + 2 * H * nkv * hd + nh * hd * H + 3 * H * I
        n_attn = cfg["num_hidden_layers"]
        p_mm = n_attn * per_layer
    else:
        H, I, nh = cfg["n_embd"], cfg["intermediate_size"], cfg["n_heads"]
        hd = H // nh
        n_attn = cfg["n_layers_in_recurrent_block"]
        p_mm = 2 * H * H + n_attn * (3 * H * H + H * H + 2 * I * H + I * H)
    return 2 * L * p_mm + n_attn * 4 * L * L * nh * hd, p_mm


def step_flops(F, d, k):
    """One Benettin step with k probes: one primal forward + one tangent forward per probe, plus a
    reduced Householder QR of the (d, k) matrix with Q formed explicitly (~4 d k^2 - 4/3 k^3)."""
    return (1 + k) * F + max(4 * d * k * k - (4 * k ** 3) // 3, 0)


# ------------------------------------------------------------------------------------------------
# random HF checkpoints (streamed safetensors writer: never holds the whole model in memory)
# ------------------------------------------------------------------------------------------------


def ouro_tensor_specs(cfg):
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    lin = lambda o, i: ((o, i), ("normal", 1 / math.sqrt(i)))  # noqa: E731
    norm = ((H,), ("uniform", 0.6, 1.4))
    specs = {"model.embed_tokens.weight": ((V, H), ("normal", 1.0)), "model.norm.weight": norm,
             "model.early_exit_gate.weight": ((1, H), ("normal", 2 / math.sqrt(H))),
             "model.early_exit_gate.bias": ((1,), ("normal", 1.0))}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        specs.update({p + "self_attn.q_proj.weight": lin(nh * hd, H), p + "self_attn.k_proj.weight": lin(nkv * hd, H),
                      p + "self_attn.v_proj.weight": lin(nkv * hd, H),
                      p + "self_attn.o_proj.weight": lin(H, nh * hd),
                      p + "mlp.gate_proj.weight": lin(I, H), p + "mlp.up_proj.weight": lin(I, H),
                      p + "mlp.down_proj.weight": lin(H, I)})
        for n in ("input_layernorm", "input_layernorm_2", "post_attention_layernorm", "post_attention_layernorm_2"):
            specs[p + n + ".weight"] = norm
    if not cfg.get("tie_word_embeddings", False):
        specs["lm_head.weight"] = lin(V, H)
    return specs


def huginn_tensor_specs(cfg):
    H, I, V, nh = cfg["n_embd"], cfg["intermediate_size"], cfg["vocab_size"], cfg["n_heads"]
    hd = H // nh
    lin = lambda o, i: ((o, i), ("normal", 1 / math.sqrt(i)))  # noqa: E731
    norm = ((H,), ("uniform", 0.6, 1.4))
    specs = {"freqs_cis": ((1, cfg["block_size"], 1, hd // 2, 2), ("rope", cfg["rope_base"], hd)),
             "transformer.wte.weight": ((V, H), ("normal", math.sqrt(2 / (5 * H)))),
             "transformer.adapter.weight": lin(H, 2 * H), "transformer.ln_f.weight": norm}
    for part, n in (("prelude", cfg["n_layers_in_prelude"]), ("core_block", cfg["n_layers_in_recurrent_block"]),
                    ("coda", cfg["n_layers_in_coda"])):
        for i in range(n):
            p = f"transformer.{part}.{i}."
            specs.update({p + "attn.Wqkv.weight": lin(3 * H, H), p + "attn.proj.weight": lin(H, H),
                          p + "attn.qk_bias": ((2, 1, nh, hd), ("normal", 0.5)),
                          p + "mlp.fc.weight": lin(2 * I, H), p + "mlp.proj.weight": lin(H, I)})
            for j in range(1, 5):
                specs[p + f"norm_{j}.weight"] = norm
    return specs


def tensor_specs(cfg):
    return ouro_tensor_specs(cfg) if arch_of(cfg) == "ouro" else huginn_tensor_specs(cfg)


def _fill(shape, init, gen, torch):
    n = math.prod(shape)
    kind = init[0]
    if kind == "normal":
        return torch.randn(n, generator=gen) * init[1]
    if kind == "uniform":
        return torch.rand(n, generator=gen) * (init[2] - init[1]) + init[1]
    if kind == "rope":  # (1, T, 1, hd/2, 2) = (cos, sin) of pos * base^(-2i/hd)
        base, hd = init[1], init[2]
        T = shape[1]
        inv = 1.0 / base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None]
        return torch.stack([ang.cos(), ang.sin()], -1).reshape(-1).float()
    raise ValueError(kind)


def write_random_checkpoint(out_dir, cfg, seed=0, chunk=1 << 24):
    """config.json + model.safetensors with random weights, streamed tensor by tensor (row chunks)."""
    import torch

    os.makedirs(out_dir, exist_ok=True)
    dtype = cfg.get("torch_dtype", "float32")
    tdt, st_name, itemsize = {"float32": (torch.float32, "F32", 4), "bfloat16": (torch.bfloat16, "BF16", 2)}[dtype]
    specs = tensor_specs(cfg)
    header, offset = {}, 0
    for name in sorted(specs):
        shape = specs[name][0]
        nbytes = math.prod(shape) * itemsize
        header[name] = {"dtype": st_name, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(os.path.join(out_dir, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    gen = torch.Generator().manual_seed(seed)
    with open(os.path.join(out_dir, "model.safetensors"), "wb") as fh:
        fh.write(len(hb).to_bytes(8, "little"))
        fh.write(hb)
        for name in sorted(specs):
            shape, init = specs[name]
            if init[0] == "rope":
                parts = [_fill(shape, init, gen, torch)]
            else:
                n, parts = math.prod(shape), None
                for start in range(0, n, chunk):
                    m = min(chunk, n - start)
                    t = _fill((m,), init, gen, torch).to(tdt)
                    fh.write(t.view(torch.int16 if itemsize == 2 else torch.int32).numpy().tobytes())
            if parts is not None:
                for t in parts:
                    t = t.to(tdt)
                    fh.write(t.view(torch.int16 if itemsize == 2 else torch.int32).numpy().tobytes())
    return out_dir


# ------------------------------------------------------------------------------------------------
# measurement helpers
# ------------------------------------------------------------------------------------------------


_LIFETIME_PEAK = [0.0]  # max of the high-water marks seen before each reset (the resets clear ru_maxrss too)


def lifetime_peak_rss_gib():
    return max(_LIFETIME_PEAK[0], peak_rss_gib())


def reset_peak_rss():
    """Reset the kernel's RSS high-water mark of this process (Linux); False if not possible."""
    _LIFETIME_PEAK[0] = max(_LIFETIME_PEAK[0], peak_rss_gib())
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_gib():
    try:
        with open("/proc/self/status") as fh:
            m = re.search(r"VmHWM:\s+(\d+)\s+kB", fh.read())
        if m:
            return int(m.group(1)) / 2 ** 20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def device_peak_bytes(jax):
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001
        return None
    if not stats:
        return None
    return stats.get("peak_bytes_in_use", stats.get("bytes_in_use"))


def measure(fn, reps, block=lambda x: x, max_s=float("inf")):
    """(first-call seconds, [steady-state seconds], peak RSS GiB during the measurement, last output).

    Up to ``reps`` steady-state calls, fewer once they add up to ``max_s`` seconds (always at least one)."""
    reset_peak_rss()
    t0 = time.perf_counter()
    out = block(fn())
    first = time.perf_counter() - t0
    times = []
    while len(times) < max(reps, 1) and (not times or sum(times) < max_s):
        t0 = time.perf_counter()
        out = block(fn())
        times.append(time.perf_counter() - t0)
    return first, times, peak_rss_gib(), out


# ------------------------------------------------------------------------------------------------
# main benchmark
# ------------------------------------------------------------------------------------------------


def machine_info(jax, torch):
    n_cpu = len(os.sched_getaffinity(0))
    machine = {
        "cpu_count_available": n_cpu, "cpu_count_total": os.cpu_count(), "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
        "jax": jax.__version__, "jax_backend": jax.default_backend(), "jax_devices": [str(d) for d in jax.devices()],
        "torch": getattr(torch, "__version__", None), "torch_threads": torch.get_num_threads() if torch else None,
        "loadavg_start": os.getloadavg(), "rss_reset_supported": reset_peak_rss(),
        "env": {v: os.environ.get(v) for v in ENV_KNOBS},
    }
    if machine["loadavg_start"][0] > n_cpu:
        print(f"warning: load average {machine['loadavg_start'][0]:.1f} > {n_cpu} cores: other processes compete "
              "for the CPUs, timings will be noisy", file=sys.stderr)
    return machine


def matmul_peak(jax, jnp, torch, N):
    """The fp32 matmul GFLOP/s of this process (jnp.dot, and torch.mm with torch), best of 5."""
    a = jax.random.normal(jax.random.key(0), (N, N), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (N, N), jnp.float32)
    dot = jax.jit(lambda a, b: jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST))
    _, times, _, _ = measure(lambda: dot(a, b), 5, jax.block_until_ready)
    peak = 2 * N ** 3 / min(times) / 1e9
    peak_info = {"jax_dot_n": N, "jax_dot_gflops": peak, "jax_dot_s": times}
    del a, b
    if torch is not None:
        ta, tb = torch.randn(N, N), torch.randn(N, N)
        _, times, _, _ = measure(lambda: ta @ tb, 5)
        peak_info["torch_mm_gflops"] = 2 * N ** 3 / min(times) / 1e9
        del ta, tb
    print(f"fp32 matmul peak (jnp.dot {N}x{N}, best of 5): {peak:.1f} GFLOP/s"
          + (f"; torch.mm: {peak_info['torch_mm_gflops']:.1f} GFLOP/s" if torch else ""), flush=True)
    return peak, peak_info


def jax_kernels(jax, jnp):
    """(forward, one Benettin step) of a loop map, jitted."""
    @jax.jit
    def jax_fwd(f, z):
        return f(z)

    @jax.jit
    def jax_step(f, z, Q):
        with jax.default_matmul_precision("highest"):
            fz, lin = jax.linearize(f, z)
            W = jax.vmap(lambda q: lin(q.reshape(z.shape)).reshape(-1), in_axes=1, out_axes=1)(Q)
            Qn, R = jnp.linalg.qr(W, mode="reduced")
        return fz, Qn, jnp.log(jnp.abs(jnp.diagonal(R)))

    return jax_fwd, jax_step


class Shape:
    """One benchmark shape: its config, prompt, checkpoint and sizes; `add` records a timing row."""

    def __init__(self, name, args, rows, peak, tmp_root):
        self.name, self.rows, self.peak = name, rows, peak
        self.cfg, self.L = shape_spec(name)
        real = name in REAL
        ks = list(args.k_list) if (args.full or not real) else [k for k in REAL_KS]
        self.reps = args.reps if (args.full or not real) else 1
        self.bsteps = args.bsteps if (args.full or not real) else 2
        self.H = hidden_of(self.cfg)
        self.d = self.L * self.H
        self.ks = [k for k in ks if k <= self.d]
        self.F, p_mm = loop_flops(self.cfg, self.L)
        self.settings = {"config": {k: v for k, v in self.cfg.items() if k not in ("auto_map", "init_values")},
                         "L": self.L, "d": self.d, "ks": self.ks, "reps": self.reps, "bsteps": self.bsteps,
                         "loop_flops": self.F, "matmul_params": p_mm}
        self.ckpt = os.path.join(tmp_root, name)
        t0 = time.perf_counter()
        write_random_checkpoint(self.ckpt, self.cfg, seed=0)
        self.settings["write_checkpoint_s"] = time.perf_counter() - t0
        print(f"\n== {name}: {arch_of(self.cfg)}, H={self.H}, L={self.L}, d={self.d}, weights "
              f"{self.cfg['torch_dtype']}, loop-map matmul params {p_mm / 1e6:.1f}M, F = {self.F / 1e9:.3f} "
              f"GFLOP/step (checkpoint written in {self.settings['write_checkpoint_s']:.1f}s)", flush=True)
        self.tokens = np.random.default_rng(0).integers(1, self.cfg["vocab_size"], size=self.L).astype(np.int32)

    def add(self, impl, k, first, times, rss, dev_peak=None, steps_per_call=1):
        step_s = statistics.median(times) / steps_per_call
        flops = self.F if k == 0 else step_flops(self.F, self.d, k)
        row = {"shape": self.name, "arch": arch_of(self.cfg), "impl": impl, "k": k, "L": self.L, "H": self.H,
               "first_call_s": first, "compile_s": max(first - statistics.median(times), 0.0),
               "steady_s": times, "steps_per_call": steps_per_call, "step_ms": 1e3 * step_s,
               "step_ms_min": 1e3 * min(times) / steps_per_call,
               "probe_steps_per_s": (k / step_s) if k else None, "flops": flops,
               "gflops": flops / step_s / 1e9, "pct_peak": 100 * flops / step_s / 1e9 / self.peak,
               "peak_rss_gib": rss, "jax_peak_bytes": dev_peak}
        self.rows.append(row)
        print(fmt_row(row), flush=True)


def bench_jax(sh: Shape, args, kernels):
    """The JAX loop map of one shape: forward, one Benettin step per k, loopjax.benettin; returns
    (z0, f(z0), probes per k, log growth per k) for the PyTorch parity check."""
    import jax
    import jax.numpy as jnp

    import loopjax

    jax_fwd, jax_step = kernels
    reset_peak_rss()
    t0 = time.perf_counter()
    model = loopjax.load(sh.ckpt, dtype=None if args.jax_weights == "stored" else jnp.float32)
    f, z0 = loopjax.loop_map(model, sh.tokens, key=jax.random.key(0))
    z0 = jax.block_until_ready(jnp.asarray(z0, jnp.float32))
    sh.settings["jax_load_s"] = time.perf_counter() - t0
    sh.settings["jax_load_peak_rss_gib"] = peak_rss_gib()
    first, times, rss, fz = measure(lambda: jax_fwd(f, z0), sh.reps, jax.block_until_ready, args.max_rep_s)
    sh.add("jax fwd", 0, first, times, rss, device_peak_bytes(jax))
    z0_np, fz_np = np.asarray(z0), np.asarray(fz, dtype=np.float32)
    probes, jax_lg, out = {}, {}, None
    for k in sh.ks:
        Q0 = jnp.linalg.qr(jax.random.normal(jax.random.key(k), (sh.d, k), jnp.float32), mode="reduced")[0]
        probes[k] = np.array(Q0)
        first, times, rss, out = measure(lambda: jax_step(f, z0, Q0), sh.reps, jax.block_until_ready,
                                         args.max_rep_s)
        jax_lg[k] = np.asarray(out[2])
        sh.add("jax step", k, first, times, rss, device_peak_bytes(jax))
        if not args.no_benettin:
            first, times, rss, _ = measure(
                lambda: loopjax.benettin(f, z0, k=k, steps=sh.bsteps, probes=Q0).exponents, sh.reps,
                jax.block_until_ready, args.max_rep_s)
            sh.add("loopjax.benettin", k, first, times, rss, device_peak_bytes(jax), steps_per_call=sh.bsteps)
    del model, f, fz, out
    jax.clear_caches()
    gc.collect()
    return z0_np, fz_np, probes, jax_lg


def bench_torch(sh: Shape, args, torch, tl, z0_np, fz_np, probes, jax_lg) -> dict:
    """The PyTorch loop map of one shape (same z0 and probes) and its parity with the JAX one."""
    with torch.no_grad():
        reset_peak_rss()
        t0 = time.perf_counter()
        tf, tz0 = tl.load_loop_map(sh.ckpt, sh.tokens, torch.float32, z0=torch.from_numpy(z0_np.copy()),
                                   weight_dtype="stored" if args.torch_weights == "stored" else None,
                                   linear=args.torch_linear)
        sh.settings["torch_load_s"] = time.perf_counter() - t0
        sh.settings["torch_load_peak_rss_gib"] = peak_rss_gib()
        first, times, rss, tfz = measure(lambda: tf(tz0), sh.reps, max_s=args.max_rep_s)
        sh.add("torch fwd", 0, first, times, rss)
        par = {"f_z0_max_abs_diff": float(np.max(np.abs(tfz.numpy() - fz_np))),
               "f_z0_max_abs": float(np.max(np.abs(fz_np)))}
        sfx, out = ("+rule" if args.torch_linear == "jvp_rule" else ""), None
        for mode, impl in (("per_probe", "torch per-probe" + sfx), ("vmap", "torch vmap" + sfx)):
            for k in sh.ks:
                tQ = torch.from_numpy(probes[k])
                first, times, rss, out = measure(lambda: tl.benettin_step(tf, tz0, tQ, mode), sh.reps,
                                                 max_s=args.max_rep_s)
                sh.add(impl, k, first, times, rss)
                par[f"log_growth_max_abs_diff_{mode}_k{k}"] = float(np.max(np.abs(out[2].numpy() - jax_lg[k])))
        del tf, tz0, tfz, out
        gc.collect()
    # float32 rounding gives ~1e-6 relative; anything near 1e-3 means the two sides differ
    par["ok"] = bool(par["f_z0_max_abs_diff"] <= 1e-3 * max(par["f_z0_max_abs"], 1.0))
    if not par["ok"]:
        print(f"   WARNING: JAX and PyTorch loop maps DISAGREE on {sh.name}: the timings compare "
              "different computations", file=sys.stderr, flush=True)
    print(f"   parity jax vs torch: |f(z0)| diff {par['f_z0_max_abs_diff']:.2e} "
          f"(max|f(z0)| {par['f_z0_max_abs']:.2f}); log-growth diff "
          f"{max([v for kk, v in par.items() if kk.startswith('log_growth')] or [0.0]):.2e}", flush=True)
    return par


def load_torch(args):
    """(torch, torch_loop) unless --no-torch."""
    if args.no_torch:
        return None, None
    import torch

    sys.path.insert(0, HERE)
    import torch_loop as tl

    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    return torch, tl


def write_result(args, result: dict) -> None:
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2, default=float)
        print(f"\nwrote {args.json}")


def main(args):
    import jax
    import jax.numpy as jnp

    torch, tl = load_torch(args)
    machine = machine_info(jax, torch)
    peak, peak_info = matmul_peak(jax, jnp, torch, args.peak_n)
    kernels = jax_kernels(jax, jnp)
    rows, parity, settings = [], {}, {}
    tmp_root = tempfile.mkdtemp(prefix="loopjax-bench-", dir=args.tmpdir)
    try:
        for name in args.shape_names:
            sh = Shape(name, args, rows, peak, tmp_root)
            settings[name] = sh.settings
            z0_np, fz_np, probes, jax_lg = bench_jax(sh, args, kernels)
            if torch is not None:
                parity[name] = bench_torch(sh, args, torch, tl, z0_np, fz_np, probes, jax_lg)
            shutil.rmtree(sh.ckpt, ignore_errors=True)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    machine["loadavg_end"] = os.getloadavg()
    machine["peak_rss_process_lifetime_gib"] = lifetime_peak_rss_gib()
    print("\n" + fmt_table(rows, peak))
    result = {"machine": machine, "peak": peak_info,
              "args": {k: v for k, v in vars(args).items() if k not in ("shape_names", "k_list")},
              "flop_model": {"loop_step": "2*L*P_mm + n_attn*4*L^2*n_heads*head_dim",
                             "benettin_step": "(1+k)*F + 4*d*k^2 - 4/3*k^3 (QR)"},
              "settings": settings, "parity": parity, "rows": rows}
    write_result(args, result)
    return result


COLS = [("shape", 14, "{}"), ("impl", 20, "{}"), ("k", 4, "{}"), ("compile s", 9, "{:.2f}"),
        ("step ms", 10, "{:.2f}"), ("probe-steps/s", 13, "{:.1f}"), ("GFLOP/s", 8, "{:.2f}"),
        ("% peak", 7, "{:.1f}"), ("peak mem GiB", 12, "{:.2f}")]


def _cells(row):
    vals = [row["shape"], row["impl"], row["k"] if row["k"] else "fwd", row["compile_s"], row["step_ms"],
            row["probe_steps_per_s"], row["gflops"], row["pct_peak"], row["peak_rss_gib"]]
    out = []
    for (_, w, f), v in zip(COLS, vals):
        s = "-" if v is None else (f.format(v) if not isinstance(v, str) else v)
        out.append(s.rjust(w) if not isinstance(v, str) or v == "fwd" else s.ljust(w))
    return out


def fmt_row(row):
    return "  ".join(_cells(row))


def fmt_table(rows, peak):
    head = "  ".join(n.ljust(w) if i < 2 else n.rjust(w) for i, (n, w, _) in enumerate(COLS))
    lines = [f"fp32 matmul peak: {peak:.1f} GFLOP/s", head, "-" * len(head)]
    lines += [fmt_row(r) for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main(ARGS)
