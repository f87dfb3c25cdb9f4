"""Covariant Lyapunov vectors on maps with exact answers, against an independent NumPy Ginelli, and the
localisation / finite-time / per-sublayer helpers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from loopjax.engine.lyapunov import benettin_sublayers
from loopjax.engine.clv import (covariant_vectors, finite_time_exponents, finite_time_statistics, pairwise_angles,
                                participation_ratio, position_weights, subspace_angle, sublayer_growth)
from numpy_clv import ginelli, min_angle

KEY = jax.random.key(3)
# upper triangular, distinct |eigenvalues| in decreasing order along the diagonal, strongly non-normal
A = np.array([[2.0, 3.0, 1.0], [0.0, 0.5, 2.0], [0.0, 0.0, 0.25]])


def linear(A, z):
    return jnp.matmul(A, z, precision=jax.lax.Precision.HIGHEST)


def henon(z, a=1.4, b=0.3):
    return jnp.stack([1 - a * z[0] ** 2 + z[1], b * z[0]])


def henon_np(z, a=1.4, b=0.3):
    return np.array([1 - a * z[0] ** 2 + z[1], b * z[0]])


def henon_jac(z, a=1.4, b=0.3):
    return np.array([[-2 * a * z[0], 1.0], [b, 0.0]])


Z_HENON = np.array([0.1, 0.05])


def test_linear_nonnormal_clvs_are_eigenvectors_not_schur_vectors(precision):
    dt = jnp.float64 if precision == "fp64" else jnp.float32
    r = covariant_vectors(Partial(linear, jnp.asarray(A, dt)), jnp.ones(3, dt), k=3, steps=8, warmup=40, key=KEY)
    w, E = np.linalg.eig(A)
    E = E[:, np.argsort(-np.abs(w))] / np.linalg.norm(E, axis=0)
    tol = 1e-10 if precision == "fp64" else 1e-5
    cos = np.abs(np.einsum("di,tdi->ti", E, np.asarray(r.vectors, np.float64)))
    np.testing.assert_allclose(cos, 1.0, atol=tol)
    np.testing.assert_allclose(r.exponents, np.log(np.sort(np.abs(w))[::-1]), atol=10 * tol)
    # Gram–Schmidt converges to the Schur vectors, here ±e_i, which are far from the eigenvectors 2 and 3
    gs = np.abs(np.asarray(r.window_probes, np.float64))
    np.testing.assert_allclose(gs, np.eye(3), atol=tol)
    assert np.all(np.abs(np.einsum("di,di->i", E, gs))[1:] < 0.9)
    np.testing.assert_allclose(r.gs_exponents, r.exponents, atol=10 * tol)  # same exponents, other vectors
    # the angles: the minimal angle between span(v1) and span(v2, v3) is fixed, as are the pairwise ones
    ref = min_angle(E[None], int(r.split))[0]
    np.testing.assert_allclose(r.angles, ref, atol=100 * tol)
    np.testing.assert_allclose(r.pairwise[0, 0, 1], np.arccos(abs(E[:, 0] @ E[:, 1])), atol=100 * tol)


def test_henon_covariance_and_numpy_reference():
    with jax.enable_x64(True):
        r = covariant_vectors(henon, Z_HENON, k=2, steps=12, warmup=20, backward=20, key=KEY)
        V, states = np.asarray(r.vectors), np.asarray(r.states)
        # covariance: Df(z_t) v_i(t) is parallel to v_i(t+1)
        JV = np.stack([henon_jac(z) @ v for z, v in zip(states[:-1], V[:-1])])
        cos = np.abs(np.einsum("tdi,tdi->ti", JV, V[1:])) / np.linalg.norm(JV, axis=1)
        sin = np.sqrt(np.clip(1 - cos ** 2, 0, None))
        assert sin.max() < 1e-6, sin.max()
        # the growth is ‖J v‖
        np.testing.assert_allclose(r.log_growth[:-1], np.log(np.linalg.norm(JV, axis=1)), atol=1e-10)
        # the same orbit (50 steps: chaos amplifies 1e-16 to ~1e-7) through the NumPy reference, other probes
        Vn, gn, zn = ginelli(henon_np, henon_jac, Z_HENON, k=2, warmup=20, window=12, backward=20)
        np.testing.assert_allclose(states, zn, atol=1e-6)
        np.testing.assert_allclose(np.abs(np.einsum("tdi,tdi->ti", V, Vn)), 1.0, atol=1e-9)
        np.testing.assert_allclose(r.angles, min_angle(Vn, 1), atol=1e-6)
        np.testing.assert_allclose(r.log_growth, gn, atol=1e-8)
        # the first CLV is the first GS vector
        np.testing.assert_allclose(r.log_growth[:, 0], r.gs_log_growth[:, 0], atol=1e-12)


def test_henon_angle_distribution_matches_numpy():
    """Long windows: the orbits differ (chaos), the invariant distribution of the angle must not."""
    with jax.enable_x64(True):
        r = covariant_vectors(henon, Z_HENON, k=2, steps=3000, warmup=50, backward=50, key=KEY)
    Vn, gn, _ = ginelli(henon_np, henon_jac, np.array([0.3, -0.1]), k=2, warmup=50, window=3000, backward=50)
    a, b = np.asarray(r.angles), min_angle(Vn, 1)
    np.testing.assert_allclose(np.quantile(a, [0.1, 0.25, 0.5, 0.75, 0.9]),
                               np.quantile(b, [0.1, 0.25, 0.5, 0.75, 0.9]), atol=0.04)
    np.testing.assert_allclose(r.exponents, gn.mean(0), atol=0.03)
    np.testing.assert_allclose(r.exponents, [0.419, -1.623], atol=0.03)  # Hénon's known exponents
    assert a.min() < 0.05  # Hénon is not hyperbolic: near-tangencies occur


def test_host_chunks_equal_device_run():
    f = Partial(linear, jnp.asarray(A, jnp.float32))
    a = covariant_vectors(f, jnp.ones(3), k=2, steps=6, warmup=5, backward=5, key=KEY)
    b = covariant_vectors(f, jnp.ones(3), k=2, steps=6, warmup=5, backward=5, key=KEY, host_chunk=3)
    assert isinstance(b.vectors, np.ndarray) and b.vectors.shape == (6, 3, 2) and b.states.shape == (6, 3)
    np.testing.assert_allclose(b.vectors, a.vectors, atol=1e-6)
    np.testing.assert_allclose(b.angles, a.angles, atol=1e-6)


def test_bad_inputs_are_named():
    f = Partial(linear, jnp.asarray(A, jnp.float32))
    with pytest.raises(ValueError, match="k=4 vectors exceed the state dimension d=3"):
        covariant_vectors(f, jnp.ones(3), k=4, steps=2, key=KEY)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        covariant_vectors(f, jnp.ones(3), k=2, steps=0, key=KEY)
    with pytest.raises(ValueError, match="split must be in"):
        subspace_angle(jnp.eye(3), 3)
    with pytest.raises(FloatingPointError, match="singular"):  # the zero map collapses every direction
        covariant_vectors(Partial(linear, jnp.zeros((3, 3), jnp.float32)), jnp.ones(3), k=2, steps=6, warmup=5,
                          backward=5, key=KEY)
    with pytest.raises(ValueError, match="not orthonormal"):
        covariant_vectors(f, jnp.ones(3), k=2, steps=6, probes=jnp.ones((3, 2)))


def test_angles_on_known_vectors():
    t = 1e-4
    V = jnp.asarray([[1.0, np.cos(t), 0.0], [0.0, np.sin(t), 0.0], [0.0, 0.0, 1.0]], jnp.float32)
    assert abs(float(subspace_angle(V, 1)) - t) < 1e-8  # arccos alone would give ~3e-4 in float32
    P = np.asarray(pairwise_angles(V))
    np.testing.assert_allclose(P[0, 2], np.pi / 2, atol=1e-6)
    assert P[0, 0] == 0.0


def test_participation_ratio_exact_cases():
    L, H = 4, 3
    uniform = jnp.ones(L * H)
    one_coord = jnp.zeros(L * H).at[5].set(2.0)
    one_position = jnp.zeros((L, H)).at[2].set(jnp.array([1.0, -2.0, 0.5])).reshape(-1)
    two_positions = jnp.zeros((L, H)).at[0, 0].set(1.0).at[3, 1].set(1.0).reshape(-1)
    V = jnp.stack([uniform, one_coord, one_position, two_positions], axis=1)  # (d, 4)
    np.testing.assert_allclose(participation_ratio(V, axis=0), [1, 1 / 12, 5.25 ** 2 / (12 * 17.0625), 2 / 12],
                               rtol=1e-6)
    np.testing.assert_allclose(participation_ratio(V, positions=L, axis=0), [1, 1 / 4, 1 / 4, 2 / 4], rtol=1e-6)
    np.testing.assert_allclose(position_weights(V, L, axis=0)[3], [0.5, 0, 0, 0.5])  # (k, L)
    with pytest.raises(ValueError, match="does not divide"):
        participation_ratio(V, positions=5, axis=0)


def test_finite_time_exponents_exact():
    lg = np.tile([[1.0], [-1.0]], (8, 1))  # alternating +1, -1: every even window averages 0
    np.testing.assert_allclose(finite_time_exponents(lg, 2), np.zeros((8, 1)))
    np.testing.assert_allclose(finite_time_exponents(lg, 3, overlapping=True)[:2, 0], [1 / 3, -1 / 3])
    s = finite_time_statistics(lg, [1, 2, 4])
    np.testing.assert_allclose(s.var, [16 / 15, 0, 0])
    assert s.n_windows == (16, 8, 4)
    rng = np.random.default_rng(0)  # iid steps: var(mean over tau) = sigma^2 / tau
    s = finite_time_statistics(rng.normal(0.3, 1.0, size=(40000, 1)), [1, 10, 100])
    np.testing.assert_allclose(s.var * np.array([1, 10, 100]), 1.0, rtol=0.15)
    np.testing.assert_allclose(s.mean, 0.3, atol=0.02)
    with pytest.raises(ValueError, match="tau must be"):
        finite_time_exponents(lg, 17)


def _tanh(W, u):
    return jnp.tanh(jnp.matmul(W, u, precision=jax.lax.Precision.HIGHEST))


def _scale(c, u):
    return c * u


def test_sublayer_growth_sums_and_first_column_equals_gram_schmidt():
    rng = np.random.default_rng(1)
    d = 6
    maps = [Partial(_tanh, jnp.asarray(2.5 * rng.normal(size=(d, d)) / np.sqrt(d), jnp.float32)),
            Partial(_scale, jnp.asarray(1.7, jnp.float32)),
            Partial(_tanh, jnp.asarray(2.5 * rng.normal(size=(d, d)) / np.sqrt(d), jnp.float32))]

    def f(z):
        for g in maps:
            z = g(z)
        return z

    r = covariant_vectors(f, jnp.asarray(rng.normal(size=d), jnp.float32), k=3, steps=16, warmup=16, key=KEY)
    g = sublayer_growth(maps, r.states, r.vectors, names=["a", "scale", "b"])
    np.testing.assert_allclose(g.plain.sum(1), r.log_growth, atol=1e-4)   # the sublayers compose to the step
    np.testing.assert_allclose(g.plain[:, 1], np.log(1.7), atol=1e-5)     # a scaling grows every vector alike
    np.testing.assert_allclose(g.relative[:, 1], 0.0, atol=1e-5)          # ... and nothing relative to the state
    gs = benettin_sublayers(maps, r.states[0], k=3, steps=16, probes=r.window_probes)
    np.testing.assert_allclose(g.plain[:, :, 0], gs.log_growth[:, :, 0], atol=1e-4)  # v1 = q1 through sublayers
    assert np.abs(np.asarray(g.plain[:, :, 1:] - gs.log_growth[:, :, 1:])).max() > 1e-2  # the others differ
