"""Checkpoints the reference fixtures never show (GQA, head_dim != H/nh, tied / untied, bf16 sharded, other
layer counts) load through the same API and match an independent float64 NumPy implementation."""
import jax
import numpy as np
import pytest

import loopjax
from checkpoints import (HUGINN_UNTIED, OURO_GQA_TIED, huginn_tensors, ouro_tensors, write_checkpoint)
from numpy_reference import Huginn, Ouro, benettin_fd, read_checkpoint

L = 6


@pytest.fixture(scope="module")
def ouro_dir(tmp_path_factory):
    cfg = OURO_GQA_TIED
    return write_checkpoint(tmp_path_factory.mktemp("ouro-gqa"), cfg, ouro_tensors(cfg, np.random.default_rng(1)),
                            dtype="bfloat16", shards=3)


@pytest.fixture(scope="module")
def huginn_dir(tmp_path_factory):
    cfg = HUGINN_UNTIED
    return write_checkpoint(tmp_path_factory.mktemp("huginn-untied"), cfg,
                            huginn_tensors(cfg, np.random.default_rng(2)), dtype="float32")


def _ids(vocab, rows=2, seed=0):
    return np.random.default_rng(seed).integers(1, vocab, (rows, L)).astype(np.int32)


def _compare(got, want, precision):
    got, scale = np.asarray(got, np.float64), np.abs(want).max()
    tol = 1e-9 * max(scale, 1) if precision == "fp64" else 2e-5 * scale
    assert np.abs(got - want).max() <= tol, (np.abs(got - want).max(), tol)


def test_ouro_gqa_tied_bf16_sharded(ouro_dir, precision):
    ref = Ouro(*read_checkpoint(ouro_dir))
    model = loopjax.load(ouro_dir)
    assert jax.tree.leaves(model.params)[0].dtype == jax.numpy.bfloat16
    ids = _ids(OURO_GQA_TIED["vocab_size"])
    want = np.stack([ref.logits(row, OURO_GQA_TIED["total_ut_steps"]) for row in ids])
    _compare(loopjax.logits(model, ids), want, precision)


def test_huginn_untied_other_shapes(huginn_dir, precision):
    ref = Huginn(*read_checkpoint(huginn_dir))
    model = loopjax.load(huginn_dir)
    ids = _ids(HUGINN_UNTIED["vocab_size"])
    z0 = np.random.default_rng(3).normal(0, 1, (2, L, HUGINN_UNTIED["n_embd"]))
    want = np.stack([ref.logits(row, z, 4) for row, z in zip(ids, z0)])
    _compare(loopjax.logits(model, ids, steps=4, init_state=z0), want, precision)


@pytest.mark.parametrize("which", ["ouro", "huginn"])
def test_unseen_spectrum_matches_finite_difference_benettin(which, ouro_dir, huginn_dir):
    """Benettin exponents against the NumPy model's map with finite-difference JVPs (float64)."""
    ckpt, cfg = (ouro_dir, OURO_GQA_TIED) if which == "ouro" else (huginn_dir, HUGINN_UNTIED)
    hidden = cfg.get("hidden_size") or cfg["n_embd"]
    ids = _ids(cfg["vocab_size"], rows=1, seed=5)[0]
    rng = np.random.default_rng(4)
    Q0 = np.linalg.qr(rng.normal(size=(L * hidden, 3)))[0]
    with jax.enable_x64(True):
        model = loopjax.load(ckpt)
        if which == "ouro":
            ref = Ouro(*read_checkpoint(ckpt))
            f, z0 = ref.step, ref.embed(ids)
            init = None
        else:
            ref = Huginn(*read_checkpoint(ckpt))
            e = ref.injection(ids)
            f, z0 = (lambda z: ref.step(z, e)), rng.normal(size=(L, hidden))
            init = z0
        got = loopjax.spectrum(model, ids, k=3, steps=5, probes=Q0, init_state=init)
        attr = loopjax.attribution(model, ids, k=3, steps=5, probes=Q0, init_state=init)
    want = benettin_fd(f, z0, Q0, 5)
    np.testing.assert_allclose(np.asarray(got.log_growth), want, atol=1e-6)
    np.testing.assert_allclose(np.asarray(attr.exponents).sum(0), np.asarray(got.exponents), atol=1e-10)
