"""Per-token spectra (`loopjax.analysis.tokens.token_spectrum`) and `pad_probes_for_mesh`.

(a) exactness: the loop map's Jacobian at z0 is block lower-triangular over positions (upper blocks exactly
    0), and one masked Benettin step is exactly the QR of the diagonal block times the probes, J_pp @ Q_p.
(b) the union property: the sorted union of the per-position exponents converges to the full prompt's
    spectrum. Measured (x64, builtin:ouro-tiny-random and huginn-tiny-random, 3 tokens, top 3, seeds 0-3, from the
    running averages of one T=1000 run): the largest difference is 0.03-0.07 at t=100, 0.008-0.028 at
    t=250, 0.004-0.014 at t=500, 0.0013-0.0069 at t=1000, and t * difference stays between 1.3 and 6.9
    for every t >= 100. Both runs follow the same orbit z_t, so the orbit's own fluctuations cancel; what
    is left is the log of the initial probes' projection onto the Oseledets directions, divided by t: a
    C/t law. The test asserts that law with margin (t * diff <= 12 for t >= 100, diff(1000) <= 0.012,
    diff(1000) < diff(250) / 2).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import loopjax
from loopjax.engine.lyapunov import benettin
from loopjax.analysis.tokens import (first_probes, pad_probes_for_mesh, position_probes, spectrum_probes_for_mesh,
                               token_spectrum)

IDS = [5, 17, 300]




@jax.jit
def jvps(f, z0, tangents):
    return jax.vmap(lambda q: jax.jvp(f, (z0,), (q,))[1])(tangents)


def _union_running(ts, K):
    """(T, K): the sorted union of the per-position running averages at every step."""
    ru = np.asarray(ts.running)  # (n, T, k)
    T = ru.shape[1]
    return -np.sort(-np.moveaxis(ru, 1, 0).reshape(T, -1), axis=1)[:, :K]


@pytest.mark.parametrize("name", ["ouro-tiny", pytest.param("huginn-tiny", marks=pytest.mark.slow)])
def test_masked_step_is_the_diagonal_block_of_the_jacobian(models, name):
    model, k = models[name], 4
    with jax.enable_x64(True):
        ids = jnp.array(IDS)
        state_key, probe_key = loopjax.split_key(jax.random.key(0))
        f, z0 = loopjax.loop_map(model, ids, key=state_key)
        L, H = z0.shape
        assert z0.dtype == jnp.float64 and (L, H) == (3, 64)
        J = np.asarray(jax.jacfwd(lambda x: f(x.reshape(L, H)).reshape(-1))(z0.reshape(-1)))
        B = J.reshape(L, H, L, H)
        for p in range(L):
            for q in range(p + 1, L):  # causal: no position sees a later one
                assert np.all(B[p, :, q] == 0), (p, q)
            for q in range(p):  # ... but does see the earlier ones: the mask is not a no-op
                assert np.abs(B[p, :, q]).max() > 1e-3, (p, q)

        ts = token_spectrum(model, ids, k=k, steps=1, key=jax.random.key(0))
        Q = np.asarray(position_probes(probe_key, range(L), L=L, H=H, k=k))  # (L, d, k)
        for p in range(L):
            rows = slice(p * H, (p + 1) * H)
            mask = np.zeros((L, H)); mask[p] = 1
            Qp = Q[p, rows]
            assert np.all(np.delete(Q[p], np.arange(p * H, (p + 1) * H), axis=0) == 0)
            np.testing.assert_allclose(Qp.T @ Qp, np.eye(k), atol=1e-12)
            # W before the QR, reproduced with jax.jvp and the mask: J_pp Q_p on row p, zero elsewhere
            W = np.asarray(jvps(f, z0, jnp.asarray(Q[p].T.reshape(k, L, H)))) * mask  # (k, L, H)
            W = W.reshape(k, L * H).T
            np.testing.assert_allclose(W[rows], B[p, :, p] @ Qp, rtol=1e-11, atol=1e-11)
            assert np.all(np.delete(W, np.arange(p * H, (p + 1) * H), axis=0) == 0)
            # the step of token_spectrum: log|diag R| and the new probes of qr(J_pp Q_p)
            Qn, R = np.linalg.qr(B[p, :, p] @ Qp)
            np.testing.assert_allclose(np.asarray(ts.log_growth[p, 0]), np.log(np.abs(np.diag(R))),
                                       rtol=1e-11, atol=1e-11)
            np.testing.assert_allclose(np.asarray(ts.exponents[p]), np.log(np.abs(np.diag(R))), atol=1e-11)
            Fp = np.asarray(ts.result.final_probes[p])
            np.testing.assert_allclose(np.abs(Fp[rows]), np.abs(Qn), atol=1e-11)  # QR's column signs
            # Householder QR of a matrix with zero rows leaves rounding-level (~1e-17) entries there; the next
            # step's mask removes them again
            assert np.abs(np.delete(Fp, np.arange(p * H, (p + 1) * H), axis=0)).max() < 1e-15


def test_union_of_positions_converges_to_the_full_spectrum(models):
    model, K, T = models["ouro-tiny"], 3, 1000
    with jax.enable_x64(True):
        ids = jnp.array(IDS)
        ts = token_spectrum(model, ids, k=K, steps=T, key=0)
        full = loopjax.spectrum(model, ids, k=K, steps=T, key=0)
        u = _union_running(ts, K)
        fs = -np.sort(-np.asarray(full.running), axis=1)
        lambda1 = np.asarray(ts.lambda1)
        union = np.asarray(ts.union(K))
    diff = np.abs(u - fs).max(axis=1)  # (T,)
    t = np.arange(1, T + 1)
    assert (t * diff)[99:].max() <= 12, (t * diff)[99:].max()
    assert diff[-1] <= 0.012, diff[-1]
    assert diff[-1] < diff[249] / 2, (diff[249], diff[-1])
    np.testing.assert_allclose(union, u[-1], atol=0)
    # and the per-position spectra differ: the union is not one position's spectrum repeated
    assert np.ptp(lambda1) > 0.05


@pytest.mark.parametrize("name", ["ouro-tiny", pytest.param("huginn-tiny", marks=pytest.mark.slow)])
def test_vmapped_positions_equal_single_masked_runs(models, name):
    model, k, steps = models[name], 3, 12
    ids = jnp.array(IDS + [41])
    key = jax.random.key(7)
    ts = token_spectrum(model, ids, k=k, steps=steps, key=key, positions=[0, -1, 2])
    np.testing.assert_array_equal(ts.positions, [0, 3, 2])
    assert ts.exponents.shape == (3, k) and ts.log_growth.shape == (3, steps, k)
    assert ts.state_norms.shape == (3, steps + 1)
    state_key, probe_key = loopjax.split_key(key)
    f, z0 = loopjax.loop_map(model, ids, key=state_key)
    for i, p in enumerate(ts.positions):
        mask = np.zeros(z0.shape, bool)
        mask[p] = True
        r = benettin(f, z0, k=k, steps=steps, key=jax.random.fold_in(probe_key, int(p)), tangent_mask=mask)
        # float32; the vmapped program batches the same matmuls, so only rounding differs
        np.testing.assert_allclose(ts.exponents[i], r.exponents, atol=2e-5)
        np.testing.assert_allclose(ts.state_norms[i], r.state_norms, rtol=1e-5)
    js = ts.to_json()
    assert js["positions"] == [0, 3, 2] and len(js["exponents"]) == 3 and len(js["lambda1"]) == 3


@pytest.mark.slow
def test_position_chunks_equal_one_batch(models):
    model, ids = models["ouro-tiny"], jnp.array(IDS + [41, 9])
    whole = token_spectrum(model, ids, k=2, steps=6, key=3)
    chunked = token_spectrum(model, ids, k=2, steps=6, key=3, position_chunk=2)  # chunks of 2, 2, 1
    np.testing.assert_allclose(chunked.exponents, whole.exponents, atol=2e-5)
    np.testing.assert_allclose(chunked.log_growth, whole.log_growth, atol=2e-5)


def test_token_spectrum_input_errors(models):
    model = models["ouro-tiny"]
    with pytest.raises(ValueError, match="k=65 exceeds the hidden size H=64"):
        token_spectrum(model, IDS, k=65, steps=2)
    with pytest.raises(ValueError, match="out of range"):
        token_spectrum(model, IDS, k=2, steps=2, positions=[3])
    with pytest.raises(ValueError, match="duplicates"):
        token_spectrum(model, IDS, k=2, steps=2, positions=[1, -2])
    with pytest.raises(ValueError, match="must have 1 dims"):
        token_spectrum(model, [IDS], k=2, steps=2)


def test_pad_probes_for_mesh():
    rng = np.random.default_rng(0)
    probes = jnp.asarray(np.linalg.qr(rng.normal(size=(40, 5)))[0], jnp.float32)
    padded = pad_probes_for_mesh(probes, 8, jax.random.key(1))
    assert padded.shape == (40, 8)
    np.testing.assert_array_equal(padded[:, :5], probes)  # bit for bit
    np.testing.assert_allclose(padded.T @ padded, np.eye(8), atol=2e-6)
    assert pad_probes_for_mesh(probes, 5, 0) is probes or np.array_equal(pad_probes_for_mesh(probes, 5, 0), probes)
    assert pad_probes_for_mesh(probes, 3, 0).shape == (40, 6)
    with pytest.raises(ValueError, match="exceeds the state dimension d=40"):
        pad_probes_for_mesh(probes, 48, 0)


def test_spectrum_probes_for_mesh_are_spectrums_own_probes(models):
    model, ids = models["ouro-tiny"], jnp.array(IDS)
    q = spectrum_probes_for_mesh(model, ids, k=5, key=4, n_devices=8)
    assert q.shape == (3 * 64, 8)
    own = loopjax.spectrum(model, ids, k=5, steps=2, key=4)
    given = loopjax.spectrum(model, ids, k=5, steps=2, key=4, probes=q[:, :5])
    np.testing.assert_array_equal(given.exponents, own.exponents)
    padded = first_probes(loopjax.spectrum(model, ids, k=8, steps=2, key=4, probes=q), 5)
    np.testing.assert_allclose(padded.exponents, own.exponents, atol=1e-5)  # 1 device: QR column order
    assert padded.final_probes.shape == (192, 5) and padded.log_sum.shape == (5,)
    more = loopjax.benettin_continue(loopjax.loop_map(model, ids)[0], padded, steps=1)
    assert more.exponents.shape == (5,)
    with pytest.raises(ValueError, match="k must be an integer in"):
        first_probes(padded, 6)


def test_plot_token_lambda1(tmp_path):
    from loopjax.cli.plots import plot_token_lambda1

    one = plot_token_lambda1(tmp_path / "one.png", ["The", "old", "man"], np.array([0.1, np.nan, -0.2]), "m")
    runs = plot_token_lambda1(tmp_path / "runs.png", ["a", "b"], np.array([[0.1, -0.2], [0.12, -0.1]]), "m")
    assert one.stat().st_size > 1000 and runs.stat().st_size > 1000
    with pytest.raises(ValueError, match="2 tokens for lambda1 of 3 positions"):
        plot_token_lambda1(tmp_path / "bad.png", ["a", "b"], np.zeros(3), "m")
