"""Benettin engine against maps with known spectra, plus its invariances and error paths."""

import math

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from jax.tree_util import Partial

from loopjax.engine import lyapunov
from loopjax.engine.lyapunov import (LyapunovResult, benettin, benettin_sublayers, orthogonality_error,
                              running_average, spread)

KEY = jax.random.PRNGKey(0)
P_DIAG = np.array([3.0, 1.5, 0.5, 0.2])


def linear(A, z):
    return jnp.matmul(A, z, precision=jax.lax.Precision.HIGHEST)


def henon(z, a=1.4, b=0.3):
    return jnp.stack([1 - a * z[0] ** 2 + z[1], b * z[0]])


def standard_map(z, K=1.0):
    theta, p = z[0], z[1]
    p2 = jnp.mod(p + K * jnp.sin(theta), 2 * jnp.pi)
    return jnp.stack([jnp.mod(theta + p2, 2 * jnp.pi), p2])


def tanh_layer(W, b, u):
    return jnp.tanh(jnp.matmul(W, u.reshape(-1), precision=jax.lax.Precision.HIGHEST) + b).reshape(u.shape)


def tanh_net(seed=1, shape=(4, 5), gain=2.0):
    # numpy draws: jax.random costs a compilation per shape, which dominates this file's runtime
    d = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    return [Partial(tanh_layer, jnp.asarray(gain * rng.normal(size=(d, d)) / np.sqrt(d), jnp.float32),
                    jnp.asarray(0.1 * rng.normal(size=d), jnp.float32)) for _ in range(3)]


def compose(maps):
    def f(z):
        for g in maps:
            z = g(z)
        return z
    return f


NET = tanh_net()  # module-level so that tests sharing (maps, k, steps) share one compilation
F_NET = compose(NET)
Z_NET = jnp.asarray(np.random.default_rng(5).normal(size=(4, 5)), jnp.float32)


def numpy_benettin(step, jac, z, Q, steps):
    """Independent float64 reference: QR of J(z_t) Q every step."""
    out = []
    for _ in range(steps):
        Q, R = np.linalg.qr(jac(z) @ Q)
        out.append(np.log(np.abs(np.diag(R))))
        z = step(z)
    return np.array(out)


# ---------------------------------------------------------------- known spectra

def linear_matrices():
    rng = np.random.default_rng(0)
    O, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    S = np.eye(4) + 0.3 * rng.normal(size=(4, 4))
    assert np.linalg.cond(S) < 10
    return {"diagonal": np.diag(P_DIAG), "orthogonal": O @ np.diag(P_DIAG) @ O.T,
            "nonnormal": S @ np.diag(P_DIAG) @ np.linalg.inv(S)}


@pytest.mark.parametrize("conj", ["diagonal", "orthogonal", "nonnormal"])
def test_linear_maps(conj):
    A = linear_matrices()[conj]
    # z0 = 0 is a fixed point (the state stays finite); warmup aligns the probes with the Schur
    # vectors at rate max p_{i+1}/p_i = 0.5 per step, after which log|R_ii| = ln p_i exactly.
    r = benettin(Partial(linear, jnp.asarray(A, jnp.float32)), jnp.zeros(4), k=4, steps=200,
                 warmup=100, key=KEY)
    assert r.exponents.dtype == jnp.float32
    np.testing.assert_allclose(np.sort(r.exponents)[::-1], np.log(P_DIAG), atol=1e-5)
    np.testing.assert_allclose(r.sorted(), np.log(P_DIAG), atol=1e-5)
    assert r.log_growth.shape == r.running.shape == (200, 4)
    assert r.state_norms.shape == (201,) and r.final_probes.shape == (4, 4)
    assert float(r.orthogonality_error()) < 1e-5


def test_henon():
    r = benettin(henon, jnp.array([0.1, 0.1]), k=2, steps=100_000, warmup=1000, key=KEY)
    # Sprott's values; the 1e5-step finite-time estimate is within ~1e-3 of them.
    np.testing.assert_allclose(r.exponents, [0.41922, -1.62319], atol=2e-3)
    # log|R_11| + log|R_22| = log|det J| = ln 0.3 every step; Kahan-compensated sums keep float32 at ~1e-7.
    assert abs(float(r.exponents.sum()) - np.log(0.3)) < 1e-6
    with jax.enable_x64(True):
        r64 = benettin(henon, jnp.array([0.1, 0.1]), k=2, steps=20_000, warmup=1000, probes=np.eye(2))
        assert r64.exponents.dtype == jnp.float64
        assert abs(float(r64.exponents.sum()) - np.log(0.3)) < 1e-12


def test_henon_matches_numpy_reference():
    # per-step agreement while the two float64 orbits agree (chaos separates them after ~40 steps)
    z0 = np.array([0.1, 0.1])
    ref = numpy_benettin(lambda z: np.array([1 - 1.4 * z[0] ** 2 + z[1], 0.3 * z[0]]),
                         lambda z: np.array([[-2.8 * z[0], 1.0], [0.3, 0.0]]), z0, np.eye(2), 30)
    with jax.enable_x64(True):
        r = benettin(henon, jnp.asarray(z0), k=2, steps=30, probes=np.eye(2))
        np.testing.assert_allclose(r.log_growth, ref, atol=1e-9)


def test_logistic_map_vmapped():
    # r = 4 is conjugate to the tent map (|T'| = 2), so each orbit's finite-time exponent is ln 2 up to
    # an O(1/steps) boundary term. float64: in float32 orbits hit x = 1/2 -> 1 -> 0 (exponent ln 4).
    # The 64 scalar-state orbits go through jax.vmap of the engine.
    f = lambda x: 4.0 * x * (1.0 - x)
    with jax.enable_x64(True):
        x0 = jnp.asarray(np.random.default_rng(3).uniform(0.05, 0.95, size=64))
        r = jax.vmap(lambda x: benettin(f, x, k=1, steps=5000, warmup=10, probes=jnp.ones((1, 1))))(x0)
    assert r.exponents.shape == (64, 1) and r.final_state.shape == (64,)
    assert r.final_probes.shape == (64, 1, 1) and r.log_growth.shape == (64, 5000, 1)
    lam = np.asarray(r.exponents)
    assert lam.dtype == np.float64
    assert np.max(np.abs(lam - np.log(2.0))) < 5e-3
    assert abs(lam.mean() - np.log(2.0)) < 1e-3


def test_arnold_cat_map():
    cat = lambda z: jnp.mod(jnp.stack([2 * z[0] + z[1], z[0] + z[1]]), 1.0)
    r = benettin(cat, jnp.array([0.1, 0.2]), k=2, steps=2000, warmup=50, key=KEY)
    np.testing.assert_allclose(r.exponents, [0.962424, -0.962424], atol=1e-5)


def test_standard_map():
    # Per-step log-growth against an independent float64 reference (the orbits stay together for
    # ~100 steps before the chaos separates the two implementations' roundings).
    z0 = np.array([0.5, 0.3])

    def step(z):
        p = np.mod(z[1] + np.sin(z[0]), 2 * np.pi)
        return np.array([np.mod(z[0] + p, 2 * np.pi), p])

    def jac(z):
        c = np.cos(z[0])
        return np.array([[1 + c, 1.0], [c, 1.0]])

    ref = numpy_benettin(step, jac, z0, np.eye(2), 100)
    with jax.enable_x64(True):
        r = benettin(standard_map, jnp.asarray(z0), k=2, steps=100, probes=np.eye(2))
        np.testing.assert_allclose(r.log_growth, ref, atol=1e-9)

    # one chaotic-sea orbit and one regular orbit (in the island around the elliptic point (pi, 0))
    lam = jax.vmap(lambda z: benettin(standard_map, z, k=2, steps=200_000, warmup=100, key=KEY).exponents)(
        jnp.array([z0, [np.pi, 0.3]]))
    lam = np.asarray(lam, np.float64)
    # Area preserving: det J = 1, so l1 + l2 = 0 (float32, Kahan-compensated sums).
    assert np.all(np.abs(lam.sum(1)) < 1e-6)
    # Chaotic sea: the literature value 0.10497 is a finite-time estimate too. Stickiness to the
    # islands makes finite-time exponents converge very slowly: over 1e6 steps, 16 orbits in the
    # sea spread with std ~0.026 (min 0.04), and single orbits of 1e7 steps still sit at 0.118-0.124.
    # A 5e-3 band is therefore not reachable in a unit test; the band below is ~1 such std.
    assert abs(lam[0, 0] - 0.10497) < 0.03
    # the regular orbit: l1 -> 0 like log(t)/t
    assert 0 <= lam[1, 0] < 2e-3


# ---------------------------------------------------------------- sublayers

def _sublayer_pair(dtype):
    Q0 = jnp.asarray(np.linalg.qr(np.random.default_rng(6).normal(size=(20, 6)))[0], dtype)
    z0 = jnp.asarray(Z_NET, dtype)
    return (benettin(F_NET, z0, k=6, steps=300, probes=Q0),
            benettin_sublayers(NET, z0, k=6, steps=300, probes=Q0, names=("a", "b", "c")))


def test_sublayers_sum_to_full_step():
    full, sub = _sublayer_pair(jnp.float32)
    assert sub.exponents.shape == (3, 6) and sub.log_growth.shape == (300, 3, 6)
    assert sub.names == ("a", "b", "c") and full.names is None
    np.testing.assert_allclose(sub.total(), full.exponents, atol=2e-6)
    np.testing.assert_allclose(sub.final_state, full.final_state, atol=1e-6)
    np.testing.assert_allclose(sub.running[-1], sub.exponents, atol=1e-6)
    # the full-step spectrum is not trivial (the check above would be vacuous otherwise)
    assert float(full.exponents.max() - full.exponents.min()) > 0.1
    with jax.enable_x64(True):
        full, sub = _sublayer_pair(jnp.float64)
        assert sub.exponents.dtype == jnp.float64
        np.testing.assert_allclose(sub.total(), full.exponents, atol=1e-10)
        np.testing.assert_allclose(sub.final_state, full.final_state, atol=1e-12)
    unnamed = benettin_sublayers(NET, Z_NET, k=6, steps=300, key=KEY)
    assert unnamed.names == ("map0", "map1", "map2")


# ---------------------------------------------------------------- invariances

def test_probe_chunk_matches_unchunked():
    # float64: in float32 the last column's log|R_66| differs by ~1e-3 between any two summation
    # orders (its residual after Gram-Schmidt is ~1e-3 of the column), so exact-agreement needs x64.
    with jax.enable_x64(True):
        Q0 = jnp.asarray(np.linalg.qr(np.random.default_rng(6).normal(size=(20, 6)))[0])
        z0 = jnp.asarray(Z_NET, jnp.float64)
        ref = benettin(F_NET, z0, k=6, steps=300, probes=Q0)
        r = benettin(F_NET, z0, k=6, steps=300, probes=Q0, probe_chunk=4)  # 4 does not divide 6
        np.testing.assert_array_equal(r.final_state, ref.final_state)
        np.testing.assert_allclose(r.log_growth, ref.log_growth, atol=1e-10)
        np.testing.assert_allclose(r.final_probes, ref.final_probes, atol=1e-10)


def test_outer_jit_matches_eager():
    eager = benettin(F_NET, Z_NET, k=6, steps=300, key=KEY).exponents
    jitted = jax.jit(lambda z: benettin(F_NET, z, k=6, steps=300, key=KEY).exponents)(Z_NET)
    np.testing.assert_allclose(jitted, eager, atol=1e-6)


def test_split_run_continues_exactly():
    z0 = jnp.array([0.1, 0.1])
    one = benettin(henon, z0, k=2, steps=4000, key=KEY)
    a = benettin(henon, z0, k=2, steps=2000, key=KEY)
    b = benettin(henon, a.final_state, k=2, steps=2000, probes=a.final_probes)
    np.testing.assert_allclose((a.exponents + b.exponents) / 2, one.exponents, atol=1e-6)
    np.testing.assert_allclose(jnp.concatenate([a.log_growth, b.log_growth]), one.log_growth, atol=1e-6)
    np.testing.assert_allclose(b.final_state, one.final_state, atol=1e-6)


def test_renorm_every_matches_for_linear_map():
    f = Partial(linear, jnp.asarray(linear_matrices()["nonnormal"], jnp.float32))
    run = lambda **kw: benettin(f, jnp.zeros(4), k=4, warmup=100, key=KEY, **kw)
    r1, r2, r3 = run(steps=200), run(steps=200, renorm_every=2), run(steps=201, renorm_every=2)
    np.testing.assert_allclose(r2.exponents, r1.exponents, atol=1e-6)
    np.testing.assert_allclose(r3.exponents, np.log(P_DIAG), atol=1e-5)  # the last step renormalises
    # J J Q = Q'' R'' R' with triangular R's: the QR every 2nd step sees the product of the two diagonals
    assert np.all(np.asarray(r2.log_growth[0::2]) == 0)
    np.testing.assert_allclose(r2.log_growth[1::2], r1.log_growth[0::2] + r1.log_growth[1::2], atol=1e-5)
    assert float(r2.orthogonality_error()) < 1e-5 and float(r3.orthogonality_error()) < 1e-5


def test_new_weights_do_not_recompile():
    r1 = benettin(NET[0], Z_NET, k=6, steps=300, key=KEY)
    size = lyapunov._core._cache_size()
    r2 = benettin(tanh_net(seed=2)[0], Z_NET, k=6, steps=300, key=KEY)
    assert lyapunov._core._cache_size() == size
    assert not np.allclose(r1.exponents, r2.exponents)  # the new weights were used


def test_result_helpers_and_json():
    import json
    r = benettin_sublayers(NET, Z_NET, k=6, steps=300, key=KEY)
    assert isinstance(r, LyapunovResult)
    d = json.loads(json.dumps(r.to_json()))
    assert d["names"] == ["map0", "map1", "map2"] and d["steps"] == 300 and d["k"] == 6
    assert np.allclose(d["total"], r.total(), atol=1e-6)
    assert d["sorted"] == sorted(d["total"], reverse=True)
    assert np.array(d["log_growth"]).shape == (300, 3, 6)
    np.testing.assert_allclose(running_average(r.log_growth), r.running, atol=1e-6)
    np.testing.assert_allclose(r.state_norms[0], jnp.linalg.norm(Z_NET), rtol=1e-6)
    assert r.state_norms.shape == (301,)
    assert float(orthogonality_error(jnp.eye(3) * 2)) == 3.0
    s = spread(jnp.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_allclose(s["mean"], [2.0, 3.0])
    np.testing.assert_allclose(s["std"], [1.0, 1.0])
    np.testing.assert_allclose(s["min"], [1.0, 2.0])
    np.testing.assert_allclose(s["max"], [3.0, 4.0])


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(k=0), "k must be an integer >= 1"),
    (dict(k=7), r"k=7 probes exceed the state dimension d=6"),
    (dict(warmup=-1), "warmup must be an integer >= 0"),
    (dict(renorm_every=0), "renorm_every must be an integer >= 1"),
    (dict(probe_chunk=0), "probe_chunk must be an integer >= 1"),
    (dict(key=None), "give either key"),
    (dict(probes=np.eye(6)[:, :3]), r"probes must have shape \(d, k\) = \(6, 2\)"),
    (dict(probes=2 * np.eye(6)[:, :2]), "probes are not orthonormal"),
    (dict(z0=jnp.array([0.0, 1.0, np.nan, 0.0, 0.0, 0.0])), "z0 contains NaN or inf"),
    (dict(f=lambda z: z[:3]), r"f must return an array of the state's shape \(6,\)"),
])
def test_bad_inputs(kwargs, match):
    args = dict(f=jnp.tanh, z0=jnp.ones(6), k=2, steps=5, key=KEY)
    args.update(kwargs)
    f, z0 = args.pop("f"), args.pop("z0")
    with pytest.raises(ValueError, match=match):
        benettin(f, z0, **args)


def test_bad_sublayer_inputs():
    with pytest.raises(ValueError, match="maps is empty"):
        benettin_sublayers([], jnp.ones(3), k=1, steps=1, key=KEY)
    with pytest.raises(ValueError, match="got 1 names for 2 maps"):
        benettin_sublayers([jnp.tanh, jnp.tanh], jnp.ones(3), k=1, steps=1, key=KEY, names=("a",))
    with pytest.raises(ValueError, match=r"map 1 must return"):
        benettin_sublayers([jnp.tanh, lambda z: z[:2]], jnp.ones(3), k=1, steps=1, key=KEY)


def test_nonfinite_is_reported_with_step():
    square = lambda z: z * z + 1.0  # 2, 5, 26, 677, ..., 4e22, then inf: z_7 overflows at step 6
    with pytest.raises(FloatingPointError, match=r"non-finite state at step 6: the map diverged"):
        benettin(square, jnp.array([2.0]), k=1, steps=20, key=KEY)
    with pytest.raises(FloatingPointError, match=r"non-finite state at warmup step 6"):
        benettin(square, jnp.array([2.0]), k=1, steps=20, warmup=10, key=KEY)
    with pytest.raises(FloatingPointError, match=r"non-finite state at step 6 \(sublayer 1 'sq'\)"):
        benettin_sublayers([jnp.abs, square], jnp.array([2.0]), k=1, steps=20, key=KEY,
                           names=("abs", "sq"))
    # an infinite derivative at a finite state: z = 2 -> 1 -> 0, where sqrt'(0) = inf
    kink = lambda z: jnp.where(z > 0.5, z - 1.0, jnp.sqrt(jnp.abs(z)))
    with pytest.raises(FloatingPointError, match=r"non-finite log-growth at step 2: the map diverged"):
        benettin(kink, jnp.array([2.0]), k=1, steps=20, key=KEY)
    with pytest.raises(FloatingPointError, match="tangent map is singular"):
        benettin(lambda z: 0.0 * z, jnp.array([2.0]), k=1, steps=20, key=KEY)


@pytest.mark.parametrize("renorm_every", [1, 16])
def test_strong_contraction_does_not_underflow(renorm_every):
    # 0.001^16 = 1e-48 is below float32's smallest normal: un-normalised tangents would underflow to 0 and
    # read as a singular tangent map; the columns are normalised every step instead
    z0 = jnp.linspace(0.5, 1.5, 6).astype(jnp.float32)
    for c in (0.01, 0.001):
        r = benettin(lambda z, c=c: c * z, z0, k=3, steps=64, renorm_every=renorm_every, key=KEY)
        np.testing.assert_allclose(r.exponents, np.full(3, math.log(c)), rtol=1e-6)
        np.testing.assert_allclose(float(r.exponents.sum()), 3 * math.log(c), rtol=1e-6)
        assert float(r.orthogonality_error()) < 1e-5


def test_singular_step_is_named_between_qrs():
    # the tangent map becomes singular (zero) at step 5, a non-QR step of renorm_every=16
    f = lambda z: jnp.where(z[0] > 0.04, 0.5 * z, 0.0 * z)  # z_0..z_5 = 1, .5, ..., .03125: J = 0 at step 5
    with pytest.raises(FloatingPointError, match=r"non-finite log-growth at step 5: .*tangent map is singular"):
        benettin(f, jnp.ones(2), k=1, steps=32, renorm_every=16, key=KEY)


def test_nan_state_is_reported_as_a_state():
    nan_at_3 = lambda z: jnp.where(z[0] > 0.2, 0.5 * z, jnp.nan * z)  # z_0=1, .5, .25, .125 -> NaN at step 3
    for r in (1, 16):
        with pytest.raises(FloatingPointError, match=r"non-finite state at step 3: the map diverged"):
            benettin(nan_at_3, jnp.ones(2), k=2, steps=32, renorm_every=r, key=KEY)


def test_engine_options_equal_the_keywords():
    from loopjax.engine.lyapunov import EngineOptions, benettin_continue
    f = Partial(linear, jnp.asarray(linear_matrices()["nonnormal"], jnp.float32))
    opts = EngineOptions(warmup=10, renorm_every=2, probe_chunk=2)
    a = benettin(f, jnp.zeros(4), k=4, steps=40, key=KEY, options=opts)
    b = benettin(f, jnp.zeros(4), k=4, steps=40, key=KEY, warmup=10, renorm_every=2, probe_chunk=2)
    np.testing.assert_array_equal(a.exponents, b.exponents)
    c = benettin_continue(f, a, steps=20, options=opts)
    d = benettin_continue(f, b, steps=20, renorm_every=2, probe_chunk=2)
    np.testing.assert_array_equal(c.exponents, d.exponents)
    with pytest.raises(ValueError, match="either options= or the keywords, not both: warmup"):
        benettin(f, jnp.zeros(4), k=4, steps=40, key=KEY, options=opts, warmup=3)
    with pytest.raises(TypeError, match="options must be an EngineOptions"):
        benettin(f, jnp.zeros(4), k=4, steps=40, key=KEY, options={"warmup": 3})
