"""Parcae: parity with the reference's float64 goldens (tests/fixtures/parcae-tiny, PARCAE.md), per sublayer, in
float32 and float64; the pytorch_model.bin route (load, convert, hub cache offline); configs the fixture does not
show against an independent NumPy Parcae (tests/numpy_parcae.py); the analyses on a Parcae model.

float32 tolerances are 10x how far the reference's own float32 run lands from the goldens
(parcae-manifest.json, fp32_vs_golden.fp32); float64 ones are PARCAE.md's 1e-9 (arrays) and 1e-10 (exponents).
"""
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import loopjax
from conftest import FIXTURES
from loopjax.models import config_from_hf
from loopjax.models.parcae import PARCAE, ParcaeConfig
from loopjax.models.parcae.modeling import initial_state
from loopjax.models.presets import parcae_config, preset
from numpy_parcae import NumpyParcae, write_parcae
from numpy_reference import benettin_fd, read_checkpoint

CASE = "parcae-tiny"
DIR = FIXTURES / CASE
MANIFEST = json.loads((FIXTURES / "parcae-manifest.json").read_text())["cases"][CASE]
FP32 = MANIFEST["fp32_vs_golden"]["fp32"]
# quantity -> the fp32 entry its float32 tolerance derives from (None: the fixed value below)
FP32_REFERENCE = {"embeds": "injection", "injection": "injection", "latents_per_step": "latents_per_step",
                  "coda_input": "coda_input", "logits": "logits", "logits_steps1": "logits_steps1",
                  "f_at_point": "f_at_point", "jvp_out": "jvp_out", "lyap_states": "lyap_states",
                  "lyap_exponents": "lyap_exponents", "attr_exponents": "attr_exponents",
                  "lyap_log_growth": None, "attr_log_growth": None}
FP32_FIXED = {"lyap_log_growth": 1e-4, "attr_log_growth": 1e-4}
EXPONENTS = {"lyap_exponents", "attr_exponents"}


@functools.lru_cache(maxsize=None)
def expected() -> dict:
    with np.load(DIR / "expected.npz") as npz:
        return {k: npz[k] for k in npz.files}


def tolerance(key, precision):
    if precision == "fp64":
        return 1e-10 if key in EXPONENTS else 1e-9
    ref = FP32_REFERENCE[key]
    return FP32_FIXED[key] if ref is None else 10 * FP32[ref]["max_abs"]


def check(key, got, precision, want=None):
    want = expected()[key] if want is None else want
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape, f"{key}: shape {got.shape} != {want.shape}"
    err, tol = np.abs(got - want).max(), tolerance(key, precision)
    assert err <= tol, f"{CASE} {key} [{precision}]: max abs error {err:.3e} > {tol:.1e}"


@functools.lru_cache(maxsize=None)
def model():
    return loopjax.load(DIR)


# ---- config ----

def test_config_is_recognised_by_class_name():
    cfg = json.loads((DIR / "config.json").read_text())
    assert "model_type" not in cfg
    config = config_from_hf(cfg)
    assert isinstance(config, ParcaeConfig) and model().arch is PARCAE
    assert config.value_embedding_layers() == (("prelude", 1), ("core_block", 1), ("coda", 1))
    assert config_from_hf(config.to_hf()) == config
    for field in ("_class_name", "model_class_name"):
        only = {k: v for k, v in cfg.items() if k not in ("_class_name", "model_class_name")} | {field: cfg[field]}
        assert config_from_hf(only) == config
    with pytest.raises(ValueError, match="unknown model_type None"):
        config_from_hf({k: v for k, v in cfg.items() if k not in ("_class_name", "model_class_name")})


@pytest.mark.parametrize("change, error, match", [
    ({"nonlin_name": "GELU"}, NotImplementedError, "nonlin_name='GELU' is not supported"),
    ({"injection_type": "gated"}, NotImplementedError, "injection_type='gated'"),
    ({"state_init": "orthogonal"}, NotImplementedError, "state_init='orthogonal'"),
    ({"injection_type": "add", "recurrent_embedding_dimension": 32, "recurrent_num_attention_heads": 2},
     ValueError, "'add' needs recurrent_embedding_dimension 32 == n_embd 64"),
    ({"recurrent_embedding_dimension": 48}, ValueError, "must equal recurrent_num_attention_heads 4 x head_dim 16"),
    ({"recurrent_embedding_dimension": 32, "recurrent_num_attention_heads": 2}, ValueError,
     "core_block.1 has a value embedding of width 64"),
    ({"n_embd": "64"}, ValueError, r"n_embd='64' \(expected a positive integer\)"),
])
def test_config_errors_are_one_line(change, error, match):
    cfg = {**json.loads((DIR / "config.json").read_text()), **change}
    with pytest.raises(error, match=match) as e:
        config_from_hf(cfg)
    assert "\n" not in str(e.value)


# ---- parity with the goldens ----

def test_forward(precision):
    e, m = expected(), model()
    ids, z0, steps = e["input_ids"], e["init_state"], int(e["num_steps"])
    ctx = loopjax.context(m, ids)
    check("injection", ctx["injection"], precision)
    states = loopjax.trajectory(m, ids, steps=steps, init_state=z0)
    check("latents_per_step", states[1:], precision)
    kernel = jnp.asarray(m.params["C"]["kernel"], states.dtype)
    check("coda_input", jnp.einsum("...r,rh->...h", states[-1], kernel, precision="highest"), precision)
    check("logits", loopjax.logits(m, ids, steps=steps, init_state=z0), precision)
    check("logits_steps1", loopjax.logits(m, ids, steps=1, init_state=z0), precision)


def test_embeddings_are_unscaled(precision):
    wte = np.asarray(model().params["wte"]["embedding"], np.float64)
    check("embeds", wte[expected()["input_ids"]], precision)


def test_loop_map_and_jvp(precision):
    e = expected()
    f, _ = loopjax.loop_map(model(), e["input_ids"][0], init_state=e["lyap_states"][0])
    point = jnp.asarray(e["jvp_point"])
    check("f_at_point", f(point), precision)
    out = jax.jit(jax.vmap(lambda t: jax.jvp(f, (point,), (t,))[1]))(jnp.asarray(e["jvp_tangents"]))
    check("jvp_out", out, precision)


def _benettin_args():
    e = expected()
    return e["input_ids"][0], dict(k=e["lyap_Q0"].shape[1], steps=int(e["lyap_T"]), probes=e["lyap_Q0"],
                                   init_state=e["lyap_states"][0])


def test_benettin_spectrum(precision):
    tokens, kw = _benettin_args()
    r = loopjax.spectrum(model(), tokens, **kw)
    check("lyap_log_growth", r.log_growth, precision)
    check("lyap_exponents", r.exponents, precision)
    check("lyap_states", np.concatenate([expected()["lyap_states"][:-1], np.asarray(r.final_state)[None]]),
          precision)


def test_attribution(precision):
    tokens, kw = _benettin_args()
    a = loopjax.attribution(model(), tokens, **kw)
    assert tuple(a.names) == tuple(expected()["sublayer_names"]) == ("injection", "core_block.0", "core_block.1")
    check("attr_log_growth", a.log_growth, precision)
    check("attr_exponents", a.exponents, precision)
    full = loopjax.spectrum(model(), tokens, **kw).exponents
    gap = np.abs(np.asarray(a.exponents, np.float64).sum(0) - np.asarray(full, np.float64)).max()
    assert gap <= (2e-6 if precision == "fp32" else 1e-10), gap


@functools.lru_cache(maxsize=None)
def _attribution(x64: bool):
    with jax.enable_x64(x64):
        tokens, kw = _benettin_args()
        r = loopjax.attribution(loopjax.load(DIR), tokens, **kw)
        return r.names, np.asarray(r.log_growth, np.float64), np.asarray(r.exponents, np.float64)


SUBLAYERS = list(enumerate(["injection", "core_block.0", "core_block.1"]))


@pytest.mark.parametrize("j, name", SUBLAYERS, ids=[n for _, n in SUBLAYERS])
@pytest.mark.parametrize("precision", ["fp32", "fp64"])
def test_sublayer_against_reference(j, name, precision):
    names, log_growth, exponents = _attribution(precision == "fp64")
    assert names[j] == name == str(expected()["sublayer_names"][j])
    check("attr_log_growth", log_growth[:, j], precision, expected()["attr_log_growth"][:, j])
    check("attr_exponents", exponents[j], precision, expected()["attr_exponents"][j])


def test_injection_jacobian_is_the_diagonal_decay():
    """PARCAE.md 5: the diagonal injection's Jacobian is diag(exp(-softplus(dt_bias) exp(A_log))) on every token."""
    with jax.enable_x64(True):
        m = loopjax.load(DIR)
        names, maps, z0 = loopjax.sublayer_maps(m, expected()["input_ids"][0], init_state=expected()["init_state"][0])
        t = jnp.asarray(np.random.default_rng(0).normal(size=z0.shape))
        out = jax.jvp(maps[0], (z0,), (t,))[1]
        a = m.params["adapter"]
        dt_bias, a_log = np.asarray(a["dt_bias"], np.float64), np.asarray(a["A_log"], np.float64)
        decay = np.exp(-np.log1p(np.exp(dt_bias)) * np.exp(a_log))
    assert names[0] == "injection" and decay.max() < 1
    np.testing.assert_allclose(np.asarray(out), np.asarray(t) * decay, rtol=1e-12, atol=1e-14)


def test_declared_sublayers_compose_to_the_loop_map():
    tokens, _ = _benettin_args()
    names, maps, z0 = loopjax.sublayer_maps(model(), tokens, key=jax.random.key(3))
    f, z0_f = loopjax.loop_map(model(), tokens, key=jax.random.key(3))
    z = z0
    for g in maps:
        z = g(z)
    np.testing.assert_array_equal(np.asarray(z), np.asarray(f(z0_f)))


# ---- the pytorch_model.bin route ----

@pytest.fixture(scope="module")
def bin_only(tmp_path_factory):
    d = tmp_path_factory.mktemp("parcae-bin")
    for name in ("config.json", "pytorch_model.bin"):
        shutil.copy(DIR / name, d / name)
    return d


def _same_params(a, b):
    fa, fb = jax.tree_util.tree_flatten_with_path(a.params)[0], jax.tree_util.tree_flatten_with_path(b.params)[0]
    assert [p for p, _ in fa] == [p for p, _ in fb]
    for (path, x), (_, y) in zip(fa, fb):
        assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y)), path


def test_pytorch_model_bin_loads_identically(bin_only):
    a = loopjax.load(bin_only)
    _same_params(a, model())
    e = expected()
    np.testing.assert_array_equal(np.asarray(loopjax.logits(a, e["input_ids"], init_state=e["init_state"])),
                                  np.asarray(loopjax.logits(model(), e["input_ids"], init_state=e["init_state"])))


def test_convert_pytorch_model_bin(bin_only, tmp_path):
    loopjax.convert(bin_only, tmp_path / "orbax")
    _same_params(loopjax.load(tmp_path / "orbax"), model())
    r = subprocess.run([sys.executable, "-m", "convert", "--to-hf", str(bin_only), str(tmp_path / "hf")],
                       capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "hf" / "model.safetensors").is_file() and not (tmp_path / "hf" / "pytorch_model.bin").exists()
    again = loopjax.load(tmp_path / "hf")
    _same_params(again, model())
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["_class_name"] == "ParcaeConfig"


def test_hub_id_through_the_local_cache_offline(tmp_path):
    """A hub repo that holds only config.json + pytorch_model.bin, read from an HF cache layout with
    HF_HUB_OFFLINE=1 (nothing is fetched)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--loopjax-test--parcae-tiny"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "pytorch_model.bin"):
        shutil.copy(DIR / name, snap / name)
    code = ("import loopjax, numpy as np; m = loopjax.load('loopjax-test/parcae-tiny'); "
            "print(m.arch.name, loopjax.source_dir('loopjax-test/parcae-tiny').name, m.num_params(), "
            "float(np.asarray(m.params['wte']['embedding'], np.float64).sum()))")
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(Path(loopjax.__file__).parent.parent)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    arch, folder, n, total = r.stdout.split()
    assert (arch, folder, int(n)) == ("parcae", commit, model().num_params())
    assert float(total) == float(np.asarray(model().params["wte"]["embedding"], np.float64).sum())


# ---- configs the fixture does not show, against the NumPy Parcae ----

UNSEEN = {
    # GQA 8/4, R 32 != H 64, linear injection, no prelude norm / qk-norm, untied, softcap 30, vocab 200 -> 256
    "unseen": preset("parcae-unseen"),
    # diagonal injection with R != H (B is (R, H)), GQA 4/2, tied, softcap, padded vocab, no prelude norm
    "diagonal-r32": parcae_config(n_embd=64, heads=4, kv_heads=2, prelude=2, core=2, coda=1, inter=96, vocab=100,
                                  recurrent_dim=32, recurrent_heads=2, recurrent_inter=48, mean_recurrence=4,
                                  prelude_norm=False, logit_softcap=5.0, padding_multiple=32),
    # additive injection (R = H), qk-norm, untied, rope condensed
    "add": {**parcae_config(n_embd=64, heads=2, prelude=1, core=2, coda=2, inter=64, vocab=64, mean_recurrence=3,
                            injection_type="add", tied=False),
            "rope_settings": {"use_rope": True, "rope_condense_ratio": 2, "rope_base": 1000}},
}
L = 6


@pytest.fixture(scope="module")
def unseen_dirs(tmp_path_factory):
    return {name: write_parcae(tmp_path_factory.mktemp(name), cfg, seed=i)
            for i, (name, cfg) in enumerate(UNSEEN.items())}


def _compare(got, want, precision):
    got, scale = np.asarray(got, np.float64), np.abs(want).max()
    tol = 1e-9 * max(scale, 1) if precision == "fp64" else 2e-5 * max(scale, 1)
    assert np.abs(got - want).max() <= tol, (np.abs(got - want).max(), tol)


@pytest.mark.parametrize("name", list(UNSEEN))
def test_unseen_config_matches_numpy(name, unseen_dirs, precision):
    cfg = UNSEEN[name]
    d = unseen_dirs[name]
    ref = NumpyParcae(*read_checkpoint(d))   # the float32 values as written, in float64
    m = loopjax.load(d)
    c = m.config
    assert (c.hidden_size, c.embedding_rows) == (cfg["recurrent_embedding_dimension"], cfg["padded_vocab_size"])
    ids = np.random.default_rng(7).integers(1, cfg["vocab_size"], (2, L)).astype(np.int32)
    z0 = np.random.default_rng(8).normal(0, 1, (2, L, c.hidden_size))
    got = loopjax.logits(m, ids, steps=3, init_state=z0)
    assert got.shape == (2, L, cfg["padded_vocab_size"])
    want = np.stack([ref.logits(row, z, 3) for row, z in zip(ids, z0)])
    _compare(got, want, precision)
    _compare(loopjax.context(m, ids)["injection"], np.stack([ref.injection(row) for row in ids]), precision)
    if cfg["logit_softcap"] is not None:
        assert np.abs(np.asarray(got)).max() <= cfg["logit_softcap"]
    if cfg["tie_embeddings"]:
        assert "lm_head" not in m.params


def test_unseen_spectrum_matches_finite_difference_benettin(unseen_dirs):
    d = unseen_dirs["unseen"]
    cfg = UNSEEN["unseen"]
    ref = NumpyParcae(*read_checkpoint(d))
    ids = np.random.default_rng(5).integers(1, cfg["vocab_size"], L).astype(np.int32)
    R = cfg["recurrent_embedding_dimension"]
    rng = np.random.default_rng(4)
    Q0, z0 = np.linalg.qr(rng.normal(size=(L * R, 3)))[0], rng.normal(size=(L, R))
    with jax.enable_x64(True):
        m = loopjax.load(d)
        got = loopjax.spectrum(m, ids, k=3, steps=5, probes=Q0, init_state=z0)
        attr = loopjax.attribution(m, ids, k=3, steps=5, probes=Q0, init_state=z0)
    e = ref.injection(ids)
    want = benettin_fd(lambda z: ref.step(z, e, ids), z0, Q0, 5)
    np.testing.assert_allclose(np.asarray(got.log_growth), want, atol=1e-6)
    np.testing.assert_allclose(np.asarray(attr.exponents).sum(0), np.asarray(got.exponents), atol=1e-10)
    assert attr.names == ("injection", "core_block.0", "core_block.1", "core_block.2")


@pytest.mark.parametrize("kind", ["like-init", "zero", "normal", "embed", "unit"])
def test_state_initialisations(kind):
    cfg = config_from_hf({**preset("parcae-tiny"), "state_init": kind})
    z = np.asarray(initial_state(cfg, (64, cfg.hidden_size), jax.random.key(1)), np.float64)
    assert z.shape == (64, cfg.hidden_size)
    std = np.sqrt(2 / (5 * cfg.n_embd))
    if kind == "zero":
        assert not z.any()
    elif kind == "like-init":
        assert np.abs(z).max() <= 3 * std + 1e-7 and abs(z.std() / std - 1) < 0.1
    elif kind == "unit":
        np.testing.assert_allclose(z.mean(-1), 0, atol=1e-5)
        np.testing.assert_allclose(z.std(-1), 1, atol=1e-4)
    else:
        assert abs(z.std() - (1 if kind == "normal" else 1 / np.sqrt(cfg.n_embd))) < 0.1 * z.std()


def test_random_start_needs_a_key():
    m = loopjax.load("builtin:parcae-tiny-random")
    with pytest.raises(ValueError, match="starts its loop from a random state"):
        PARCAE.initial_state(m.params, m.config, np.array([1, 2]), {}, None)
    z = loopjax.init_state(m, np.array([1, 2, 3]), key=jax.random.key(1))
    assert z.shape == (3, m.config.hidden_size) and np.abs(np.asarray(z)).max() <= 3 * m.config.init_std + 1e-7


# ---- the analyses on a Parcae model ----

def test_analyses_run_on_parcae():
    from loopjax.analysis.tokens import token_spectrum

    m, ids = model(), np.array([5, 17, 33, 2, 99, 101, 7], np.int32)
    r = loopjax.spectrum(m, ids, k=3, steps=6, key=0)
    assert r.exponents.shape == (3,) and np.isfinite(np.asarray(r.exponents)).all()
    assert loopjax.attribution(m, ids, k=2, steps=4, key=0).names == m.sublayer_names
    assert np.isfinite(float(loopjax.lambda1(m, ids, steps=6, key=0)))
    assert loopjax.similarity(m, ids, loops=2, key=0) and loopjax.convergence(m, ids, steps=6, key=0)
    assert np.asarray(token_spectrum(m, ids, k=1, steps=4, key=0).lambda1).shape == (len(ids),)
    ragged = loopjax.spectrum(m, [ids, ids[:4]], k=2, steps=4, key=0)
    single = loopjax.spectrum(m, ids[:4], k=2, steps=4, key=loopjax.prompt_key(0, 1))
    np.testing.assert_allclose(np.asarray(ragged[1].exponents), np.asarray(single.exponents), atol=2e-5)


def test_scale_injection_on_parcae():
    m, ids = model(), expected()["input_ids"]
    z0 = expected()["init_state"]
    same = loopjax.scale_injection(m, 1.0)
    np.testing.assert_array_equal(np.asarray(loopjax.logits(same, ids, init_state=z0)),
                                  np.asarray(loopjax.logits(m, ids, init_state=z0)))
    off = loopjax.scale_injection(m, 0.0)
    assert not np.asarray(loopjax.context(off, ids)["injection"]).any()
    # without the injection the diagonal map's first sublayer is x * decay alone
    names, maps, z = loopjax.sublayer_maps(off, ids[0], init_state=z0[0])
    a = m.params["adapter"]
    decay = np.exp(-np.log1p(np.exp(np.asarray(a["dt_bias"]))) * np.exp(np.asarray(a["A_log"])))
    np.testing.assert_allclose(np.asarray(maps[0](z)), z0[0] * decay, rtol=1e-5, atol=1e-7)
