"""The PyTorch loop-map baseline (benchmarks/torch_loop.py) against the float64 reference goldens.

torch is imported plainly: the project's test setup installs the ``bench`` extra, and this test must
fail (not skip) when torch is missing.
"""

import json
import os
import sys

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIX = os.path.join(HERE, "fixtures")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import torch_loop as tl  # noqa: E402

# tiny tensors: intra-op threads only add overhead (and spin badly on a loaded machine)
torch.set_num_threads(1)

CASES = ["ouro-tiny", "huginn-tiny", "ouro-tiny-bf16-sharded"]
MODES = ["per_probe", "vmap"]

with open(os.path.join(FIX, "manifest.json")) as _fh:
    MANIFEST = json.load(_fh)


def _expected(case):
    return np.load(os.path.join(FIX, case, "expected.npz"))


def _load(case, dtype, linear="native"):
    exp = _expected(case)
    z0 = torch.from_numpy(exp["init_state"][0]) if "init_state" in exp.files else None
    f, z = tl.load_loop_map(os.path.join(FIX, case), exp["input_ids"][0], dtype, z0=z0, linear=linear)
    return exp, f, z


def _fp32_tol(case, key, factor=5.0):
    return factor * MANIFEST["cases"][case]["fp32_vs_golden"]["fp32"][key]["max_abs"]


def _maxabs(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


# ------------------------------------------------------------------------------------------- float64


@pytest.mark.parametrize("case", CASES)
def test_f64_initial_state(case):
    exp, f, z0 = _load(case, torch.float64)
    assert z0.dtype == torch.float64 and tuple(z0.shape) == exp["jvp_point"].shape
    ref = exp["embeds"][0] if "embeds" in exp.files else exp["init_state"][0]
    assert _maxabs(z0, ref) == 0.0
    if "injection" in exp.files:  # Huginn: the prelude output e
        assert _maxabs(f.injection, exp["injection"][0]) < 1e-9


@pytest.mark.parametrize("case", CASES)
def test_f64_loop_map(case):
    exp, f, _ = _load(case, torch.float64)
    out = f(torch.from_numpy(exp["jvp_point"]))
    assert out.dtype == torch.float64
    assert _maxabs(out, exp["f_at_point"]) < 1e-9
    # f(z0) = z1 as well
    assert _maxabs(f(torch.from_numpy(exp["lyap_states"][0])), exp["lyap_states"][1]) < 1e-9


@pytest.mark.parametrize("linear", ["native", "jvp_rule"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_f64_jvp(case, mode, linear):
    exp, f, _ = _load(case, torch.float64, linear)
    p = torch.from_numpy(exp["jvp_point"])
    T = torch.from_numpy(exp["jvp_tangents"])  # (k, L, H)
    Q = T.reshape(T.shape[0], -1).t()  # (L*H, k)
    fz, W = tl.JVP_MODES[mode](f, p, Q)
    assert W.shape == Q.shape and W.dtype == torch.float64
    assert _maxabs(fz, exp["f_at_point"]) < 1e-9
    assert _maxabs(W.t().reshape(T.shape), exp["jvp_out"]) < 1e-9


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_f64_benettin(case, mode):
    exp, f, z0 = _load(case, torch.float64)
    T = int(exp["lyap_T"])
    assert T == 16
    growth, expo, states = tl.benettin(f, z0, torch.from_numpy(exp["lyap_Q0"]), T, mode)
    assert tuple(growth.shape) == exp["lyap_log_growth"].shape
    assert _maxabs(growth, exp["lyap_log_growth"]) < 1e-8
    assert _maxabs(expo, exp["lyap_exponents"]) < 1e-9
    assert _maxabs(states, exp["lyap_states"]) < 1e-8


def test_benettin_step_shapes():
    exp, f, z0 = _load("ouro-tiny", torch.float64)
    Q0 = torch.from_numpy(exp["lyap_Q0"])
    z1, Q1, lg = tl.benettin_step(f, z0, Q0, "vmap")
    assert z1.shape == z0.shape and Q1.shape == Q0.shape and lg.shape == (Q0.shape[1],)
    # Q1 has orthonormal columns
    assert _maxabs(Q1.t() @ Q1, np.eye(Q0.shape[1])) < 1e-12
    with pytest.raises(ValueError):
        tl.jvp_vmap(f, z0, Q0[:-1])


def test_huginn_embed_scale_from_config(tmp_path):
    """embed_scale / init std come from config.init_values (as the reference reads them), defaulting to
    sqrt(n_embd) / sqrt(2/(5 n_embd)) when absent."""
    import shutil

    exp = _expected("huginn-tiny")
    src = os.path.join(FIX, "huginn-tiny")
    cfg = json.load(open(os.path.join(src, "config.json")))
    H = cfg["n_embd"]
    assert cfg["init_values"]["embed_scale"] == np.sqrt(H)
    for variant, scale in (("absent", np.sqrt(H)), ("doubled", 2 * np.sqrt(H))):
        d = tmp_path / variant
        d.mkdir()
        shutil.copy(os.path.join(src, "model.safetensors"), d / "model.safetensors")
        c = dict(cfg)
        if variant == "absent":
            c.pop("init_values")
        else:
            c["init_values"] = dict(cfg["init_values"], embed_scale=scale)
        (d / "config.json").write_text(json.dumps(c))
        f, _ = tl.load_loop_map(str(d), exp["input_ids"][0], torch.float64,
                                z0=torch.from_numpy(exp["init_state"][0]))
        err = _maxabs(f.injection, exp["injection"][0])
        assert (err < 1e-9) if variant == "absent" else (err > 1e-3)


def test_huginn_default_z0_and_shape_check():
    exp = _expected("huginn-tiny")
    d = os.path.join(FIX, "huginn-tiny")
    ids = exp["input_ids"][0]
    _, za = tl.load_loop_map(d, ids, torch.float64, seed=3)
    _, zb = tl.load_loop_map(d, ids, torch.float64, seed=3)
    assert za.shape == exp["init_state"][0].shape
    assert torch.equal(za, zb)
    # truncated at 3 std, times sqrt(n_embd)
    H = za.shape[1]
    assert float(za.abs().max()) <= 3 * np.sqrt(2 / (5 * H)) * np.sqrt(H) + 1e-12
    with pytest.raises(ValueError):
        tl.load_loop_map(d, ids, torch.float64, z0=torch.zeros(3, H))


# ------------------------------------------------------------------------------------------- float32


@pytest.mark.parametrize("case", CASES)
def test_f32_within_reference_fp32(case):
    """float32 lands within ~5x of the reference's own float32 error (README 'Tolerances observed')."""
    exp, f, z0 = _load(case, torch.float32)
    assert z0.dtype == torch.float32
    per_step = "hidden_per_step" if "hidden_per_step" in exp.files else "latents_per_step"
    p = torch.from_numpy(exp["jvp_point"]).float()
    assert _maxabs(f(p), exp["f_at_point"]) < _fp32_tol(case, per_step)
    T = torch.from_numpy(exp["jvp_tangents"]).float()
    Q = T.reshape(T.shape[0], -1).t()
    for mode in MODES:
        _, W = tl.JVP_MODES[mode](f, p, Q)
        assert W.dtype == torch.float32
        assert _maxabs(W.t().reshape(T.shape), exp["jvp_out"]) < _fp32_tol(case, "jvp_out")
        _, expo, states = tl.benettin(f, z0, torch.from_numpy(exp["lyap_Q0"]).float(), int(exp["lyap_T"]), mode)
        # exponents: fp32 QR noise is ~1e-6 whatever the op order (README), hence the floor
        assert _maxabs(expo, exp["lyap_exponents"]) < max(_fp32_tol(case, "lyap_exponents"), 2e-6)
        assert _maxabs(states, exp["lyap_states"]) < _fp32_tol(case, "lyap_states")


def test_bf16_weights_kept_stored():
    """weight_dtype='stored' keeps bf16 weights and upcasts per use: same numbers as casting at load."""
    exp = _expected("ouro-tiny-bf16-sharded")
    d = os.path.join(FIX, "ouro-tiny-bf16-sharded")
    f1, z = tl.load_loop_map(d, exp["input_ids"][0], torch.float64)
    f2, _ = tl.load_loop_map(d, exp["input_ids"][0], torch.float64, weight_dtype="stored")
    assert _maxabs(f1(z), f2(z)) == 0.0


# ------------------------------------------------------------------------------ benchmark harness


@pytest.mark.parametrize("case", ["ouro-tiny", "huginn-tiny"])
def test_benchmark_checkpoint_layout(case, tmp_path):
    """The throughput benchmark's random checkpoints use the HF tensor names/shapes of the fixtures,
    and the torch loop map loads them."""
    import jvp_throughput as jt

    cfg = json.load(open(os.path.join(FIX, case, "config.json")))
    d = jt.write_random_checkpoint(str(tmp_path / case), cfg, seed=1)
    want = {n: tuple(t["shape"]) for n, t in MANIFEST["cases"][case]["tensors"].items()}
    with tl.safe_open(os.path.join(d, "model.safetensors"), framework="pt") as fh:
        got = {n: tuple(fh.get_slice(n).get_shape()) for n in fh.keys()}
    assert got == want
    f, z0 = tl.load_loop_map(d, [1, 2, 3, 4, 5], torch.float32)
    out = f(z0)
    assert out.shape == z0.shape and bool(torch.isfinite(out).all())
    F, p_mm = jt.loop_flops(cfg, 5)
    H = jt.hidden_of(cfg)
    # matmul parameter count of the loop map, counted from the tensors it uses
    if case.startswith("ouro"):
        used = [n for n in want if n.startswith("model.layers.") and "proj" in n]
    else:
        used = [n for n in want if n == "transformer.adapter.weight"
                or (n.startswith("transformer.core_block.") and n.endswith("weight") and "norm" not in n)]
    assert p_mm == sum(int(np.prod(want[n])) for n in used)
    assert F > 2 * 5 * p_mm and H == z0.shape[1]
