"""Loop-wise readouts (logit lens, exit gate, attention similarity) and the CLV front-end's key convention on
the random built-ins."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import loopjax
from loopjax.analysis.clv import clv, localisation
from loopjax.analysis.readouts import attention_similarity, js_similarity, logit_lens
from loopjax.models.layers import attention_probs, causal_attention

IDS = np.array([5, 17, 3, 99, 42])


@pytest.mark.parametrize("name", ["ouro-tiny", "huginn-tiny"])
def test_logit_lens_last_loop_is_logits(models, name):
    model = models[name]
    lens = logit_lens(model, IDS, steps=3, key=7)
    z0 = loopjax.init_state(model, IDS, key=loopjax.split_key(7)[0])
    ref = np.asarray(loopjax.logits(model, IDS[None], steps=3, init_state=z0[None])[0])
    assert lens.logits.shape == (3, len(IDS), model.config.vocab_size)
    np.testing.assert_allclose(lens.logits[-1], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    p = jax.nn.softmax(jnp.asarray(ref, jnp.float64 if ref.dtype == np.float64 else jnp.float32), -1)
    np.testing.assert_allclose(lens.entropy[-1], -(p * jnp.log(p)).sum(-1), rtol=1e-4)
    assert float(lens.agreement[-1]) == 1.0 and abs(float(lens.kl_to_final[-1])) < 1e-5
    if name == "ouro-tiny":  # the exit gate per loop, as loopjax.early_exit gives it
        ee = loopjax.early_exit(model, IDS[None], steps=3)
        np.testing.assert_allclose(lens.exit_gate, jax.nn.sigmoid(ee["gate_logits"][:, 0]), rtol=1e-5)
        np.testing.assert_allclose(lens.exit_pdf, ee["exit_pdf"][0], rtol=1e-5)
    else:
        assert lens.exit_gate is None


def test_attention_probs_are_the_attention():
    q, k, v = (jax.random.normal(jax.random.key(i), (6, 4, 8)) for i in range(3))
    kv, vv = k[:, :2], v[:, :2]  # GQA: 2 kv heads for 4 query heads
    P = attention_probs(q, kv)
    np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-6)
    assert float(jnp.abs(jnp.triu(P, 1)).max()) == 0.0  # causal
    out = jnp.einsum("hqk,khd->qhd", P, jnp.repeat(vv, 2, axis=1))
    np.testing.assert_allclose(causal_attention(q, kv, vv), out, atol=1e-6)


def test_js_similarity_exact():
    p = jnp.array([0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(js_similarity(p, p), 1.0, atol=1e-7)
    np.testing.assert_allclose(js_similarity(p, jnp.array([0.0, 0.0, 0.5, 0.5])), 0.0, atol=1e-7)
    np.testing.assert_allclose(js_similarity(jnp.array([1.0, 0.0]), jnp.array([0.5, 0.5])),
                               1 - 0.5 * (1 * np.log2(1 / 0.75) + 0.5 * np.log2(0.5 / 0.75) + 0.5 * np.log2(2)),
                               atol=1e-6)


def test_attention_similarity_matrix(models):
    model = models["huginn-tiny"]
    a = attention_similarity(model, IDS, loops=3, key=7)
    n = model.config.n_layers_in_recurrent_block
    assert a.names == tuple(f"core_block.{i}" for i in range(n))
    assert a.probs.shape == (3, n, model.config.n_heads, len(IDS), len(IDS))
    np.testing.assert_allclose(a.probs.sum(-1), 1.0, rtol=1e-5)
    M = np.asarray(a.matrix)
    np.testing.assert_allclose(np.diagonal(M, axis1=-2, axis2=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(M, np.swapaxes(M, -1, -2), atol=1e-6)
    manual = np.asarray(js_similarity(a.probs[0, 1, 2, 1:], a.probs[2, 1, 2, 1:])).mean()
    np.testing.assert_allclose(M[1, 2, 0, 2], manual, rtol=1e-6)
    np.testing.assert_allclose(a.consecutive[..., 1], M[..., 1, 2])


def test_clv_front_end_follows_the_spectrum_key_convention(models):
    model = models["ouro-tiny"]
    r = clv(model, IDS, k=3, steps=4, warmup=0, key=11)
    s = loopjax.spectrum(model, IDS, k=3, steps=4, key=11)  # the same start and probes
    np.testing.assert_allclose(r.gs_log_growth, s.log_growth, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r.log_growth[:, 0], s.log_growth[:, 0], rtol=1e-4, atol=1e-5)  # v1 = q1
    loc = localisation(r)
    assert loc["positions"].shape == (4, 3) and loc["weights"].shape == (3, 4, len(IDS))
    np.testing.assert_allclose(loc["weights"].sum(-1), 1.0, rtol=1e-5)
    assert float(loc["positions"].min()) >= 1 / len(IDS) - 1e-6
