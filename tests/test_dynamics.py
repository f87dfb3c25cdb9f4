"""Orbit classification, finite-perturbation lambda_1, Kaplan-Yorke dimension and Ruelle bound against
maps whose answers are known in closed form (or from the literature, for the Henon map)."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from loopjax.engine.dynamics import (Lambda1Perturbation, OrbitType, RuelleBound, kaplan_yorke_dimension,
                              lambda1_perturbation, orbit_type, ruelle_bound)
from loopjax.engine.lyapunov import benettin

LN2 = math.log(2.0)


def logistic(r, x):
    return r * x * (1 - x)


def linear(A, z):
    return jnp.matmul(A, z, precision=jax.lax.Precision.HIGHEST)


def henon(z, a=1.4, b=0.3):
    return jnp.stack([1 - a * z[0] ** 2 + z[1], b * z[0]])


def rotation(angle):
    c, s = math.cos(angle), math.sin(angle)
    return jnp.asarray([[c, -s], [s, c]])


def nan_once(z):  # NaN at step 1, then 0 for ever: a transient the finiteness flag must still catch
    return jnp.where(z == 1.0, jnp.nan, 0.0)


# ---------------------------------------------------------------- orbit_type

def two_cycle(r):
    """The logistic map's 2-cycle {x-, x+} (exists for r > 3; stable for r < 1 + sqrt(6))."""
    s = math.sqrt((r - 3) * (r + 1))
    return (r + 1 - s) / (2 * r), (r + 1 + s) / (2 * r)


@pytest.mark.parametrize("r, period", [(3.2, 2), (3.5, 4)])
def test_logistic_periodic(precision, r, period):
    o = orbit_type(Partial(logistic, r), jnp.asarray([0.3]), steps=400)
    assert (o.kind, o.period) == ("periodic", period)
    assert o.residual <= 1e-4
    r_p = np.array(o.return_distances)
    # a p-cycle returns after multiples of p, and only then
    assert np.all(r_p[period - 1::period] <= 1e-4)
    assert np.all(np.delete(r_p, np.s_[period - 1::period]) > 0.1)
    if r == 3.2:  # r_1 = |x+ - x-| / x- (the smaller denominator gives the max)
        lo, hi = two_cycle(r)
        assert r_p[0] == pytest.approx((hi - lo) / lo, rel=1e-4)
        assert o.step_norm_last == pytest.approx((hi - lo) / lo, rel=1e-4) or \
            o.step_norm_last == pytest.approx((hi - lo) / hi, rel=1e-4)


def test_logistic_chaotic_not_converged():
    with jax.enable_x64(True):
        o = orbit_type(Partial(logistic, 4.0), jnp.asarray([0.3]), steps=2000)
    assert o.kind == "not_converged" and o.period is None
    assert min(o.return_distances) > 0.1 and o.residual == min(o.return_distances)


@pytest.mark.parametrize("A", [np.diag([0.5, 0.5]), np.diag([0.5, -0.8])], ids=["0.5I", "diag(0.5,-0.8)"])
def test_linear_contraction_fixed_point(precision, A):
    # 0.8^200 ~ 4e-20 << atol = 1e-8: the orbit has reached the fixed point 0. The -0.8 direction
    # flips sign every step, yet the orbit is a fixed point, not a 2-cycle.
    o = orbit_type(Partial(linear, jnp.asarray(A)), jnp.asarray([1.0, -2.0]), steps=200)
    assert (o.kind, o.period) == ("fixed_point", 1)


def test_slow_contraction_is_not_converged():
    # 0.99^100 = 0.37: far from the fixed point, and each step still moves the state by 1%
    o = orbit_type(lambda z: 0.99 * z, jnp.ones(3), steps=100)
    assert o.kind == "not_converged"
    assert o.step_norm_last == pytest.approx(0.01, rel=1e-3)


def test_sign_flip_is_period_two_not_fixed_point(precision):
    o = orbit_type(lambda z: -z, jnp.asarray([[1.0, 2.0], [3.0, 4.0]]), steps=64)
    assert (o.kind, o.period) == ("periodic", 2)
    assert o.return_distances[0] == pytest.approx(2.0)  # ||-z - z|| / ||z||


def test_rotation_period_five(precision):
    o = orbit_type(Partial(linear, rotation(2 * math.pi / 5)), jnp.asarray([1.0, 0.5]), steps=100)
    assert (o.kind, o.period) == ("periodic", 5)
    # |e^{i 2 pi p / 5} - 1| = 2 sin(pi p / 5) for p = 1..4, and p = 6, 7, 8 repeat p = 1, 2, 3
    expect = [2 * abs(math.sin(math.pi * p / 5)) for p in range(1, 9)]
    np.testing.assert_allclose(o.return_distances, expect, atol=1e-4)


def test_irrational_rotation_not_converged():
    o = orbit_type(Partial(linear, rotation(2 * math.pi * (math.sqrt(5) - 1) / 2)), jnp.asarray([1.0, 0.0]),
                   steps=100)
    assert o.kind == "not_converged"


def test_period_beyond_max_period_is_not_converged():
    o = orbit_type(Partial(linear, rotation(2 * math.pi / 5)), jnp.asarray([1.0, 0.0]), steps=100,
                   max_period=4)
    assert o.kind == "not_converged" and len(o.return_distances) == 4


def test_diverged_nan():
    o = orbit_type(lambda z: jnp.sqrt(z - 2.0), jnp.ones(3), steps=50)
    assert (o.kind, o.period, o.diverged_at) == ("diverged", None, 1)
    assert math.isnan(o.residual)


def test_diverged_transient_nan():
    o = orbit_type(nan_once, jnp.ones(2), steps=50)  # NaN at step 1, then the fixed point 0
    assert (o.kind, o.diverged_at) == ("diverged", 1)


def test_diverged_overflow_float32():
    with jax.enable_x64(False):
        o = orbit_type(lambda z: 10.0 * z, jnp.ones(2), steps=60)
    assert (o.kind, o.diverged_at) == ("diverged", 39)  # 1e38 < float32 max = 3.4e38 < 1e39


def test_orbit_type_to_json():
    o = orbit_type(Partial(logistic, 3.2), jnp.asarray([0.3]), steps=100)
    d = json.loads(json.dumps(o.to_json()))
    assert d["kind"] == "periodic" and d["period"] == 2 and len(d["return_distances"]) == 8
    assert isinstance(o, OrbitType)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.kind = "fixed_point"


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"),
    (dict(steps=10, max_period=0), "max_period"),
    (dict(steps=15, max_period=8), "max_period"),
    (dict(steps=50, rtol=0.0), "rtol"),
    (dict(steps=50, atol=-1.0), "atol"),
])
def test_orbit_type_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        orbit_type(lambda z: 0.5 * z, jnp.ones(2), **kwargs)


@pytest.mark.parametrize("z0, f, match", [
    (jnp.asarray([1.0, jnp.nan]), lambda z: z, "NaN"),
    (jnp.zeros((0,)), lambda z: z, "empty"),
    (jnp.ones(3), lambda z: z[:2], "shape"),
])
def test_orbit_type_bad_inputs(z0, f, match):
    with pytest.raises(ValueError, match=match):
        orbit_type(f, z0, steps=50)


# ---------------------------------------------------------------- lambda1_perturbation

def test_lambda1_logistic_r4():
    # x = sin^2(theta) conjugates r = 4 to the doubling map: lambda_1 = ln 2. log|f'| telescopes along
    # orbits, so the time average converges like 1/T (the measured error is ~1e-5 at T = 20000).
    with jax.enable_x64(True):
        res = lambda1_perturbation(Partial(logistic, 4.0), jnp.asarray([0.3]), steps=20000, warmup=100)
    assert isinstance(res, Lambda1Perturbation)
    assert res.lambda1 == pytest.approx(LN2, abs=0.005)
    assert res.log_growth.shape == res.running.shape == (20000,)
    assert res.running[-1] == pytest.approx(res.lambda1, rel=1e-12)
    assert res.log_growth.mean() == pytest.approx(res.lambda1, rel=1e-9)


def test_lambda1_linear(precision):
    # z0 = 0 is the fixed point, so the separation evolves exactly as A^t u: after the warmup it lies
    # along the expanding axis and every step multiplies it by 2.
    A = jnp.diag(jnp.asarray([2.0, 0.5]))
    res = lambda1_perturbation(Partial(linear, A), jnp.zeros(2), steps=50, warmup=30)
    assert res.lambda1 == pytest.approx(LN2, abs=1e-5 if precision == "fp32" else 1e-12)
    np.testing.assert_allclose(res.log_growth, LN2, atol=1e-5 if precision == "fp32" else 1e-12)


def test_lambda1_henon_matches_benettin():
    # both estimate the same lambda_1 along the same orbit; the finite d0 = 1e-6 costs O(d0)
    with jax.enable_x64(True):
        z0 = jnp.asarray([0.1, 0.1])
        res = lambda1_perturbation(henon, z0, steps=20000, warmup=500, key=jax.random.PRNGKey(3))
        ref = benettin(henon, z0, k=1, steps=20000, warmup=500, key=jax.random.PRNGKey(3))
    assert res.lambda1 == pytest.approx(float(ref.exponents[0]), abs=2e-3)
    assert res.lambda1 == pytest.approx(0.4192, abs=0.01)
    assert json.loads(json.dumps(res.to_json()))["steps"] == 20000


def test_lambda1_d0_below_roundoff_raises():
    with jax.enable_x64(False):
        # 1e-6 / 1e3 = 1e-9 relative: below 10 * eps(float32) = 1.2e-6
        with pytest.raises(ValueError, match="round-off"):
            lambda1_perturbation(lambda z: 0.5 * z, jnp.full((4,), 500.0), steps=10)


def test_lambda1_warns_when_state_outgrows_d0():
    with jax.enable_x64(True), pytest.warns(RuntimeWarning, match="round-off"):
        # ||z|| reaches 2^30 sqrt(2) = 1.5e9: 10 eps ||z|| = 3.4e-6 > d0 = 1e-6, while d0 is still a few
        # ulps of z (at 2^35 it would be below one ulp and the separation would round to 0)
        lambda1_perturbation(lambda z: 2.0 * z, jnp.ones(2), steps=30)


def test_lambda1_collapse_raises():
    with jax.enable_x64(True), pytest.raises(FloatingPointError, match="collapsed"):
        lambda1_perturbation(lambda z: 0.0 * z + 1.0, jnp.ones(3), steps=10)


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"),
    (dict(steps=10, d0=0.0), "d0"),
    (dict(steps=10, d0=float("nan")), "d0"),
    (dict(steps=10, warmup=-1), "warmup"),
])
def test_lambda1_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lambda1_perturbation(lambda z: 0.5 * z, jnp.ones(2), **kwargs)


# ---------------------------------------------------------------- Kaplan-Yorke and Ruelle

HENON_LAMBDA1 = 0.41922  # literature value (e.g. Sprott, Chaos and Time-Series Analysis, 2003)
HENON_LN_B = math.log(0.3)  # lambda_1 + lambda_2 = ln|det J| = ln b exactly


@pytest.fixture(scope="module")
def henon_spectrum():
    # 50000 steps: across 8 starting points lambda_1 spread with std 0.0014 around 0.4194, so the
    # tolerances below (0.005 on lambda_1, 0.01 on D_KY, with dD/dlambda_1 = 0.78) are > 3 std.
    with jax.enable_x64(True):
        res = benettin(henon, jnp.asarray([0.1, 0.1]), k=2, steps=50000, warmup=1000,
                       key=jax.random.PRNGKey(0))
        return np.asarray(res.exponents, dtype=np.float64)


def test_henon_spectrum_kaplan_yorke_and_ruelle(henon_spectrum):
    lam = henon_spectrum
    assert lam.sum() == pytest.approx(HENON_LN_B, abs=1e-9)
    assert kaplan_yorke_dimension(lam) == pytest.approx(1.2583, abs=0.01)
    assert kaplan_yorke_dimension(lam[::-1]) == kaplan_yorke_dimension(lam)  # column order irrelevant
    p = ruelle_bound(lam)
    assert p.value == pytest.approx(HENON_LAMBDA1, abs=0.005)
    assert p.lower_bound is False


def test_kaplan_yorke_known_values():
    assert kaplan_yorke_dimension([0.42, -1.62]) == pytest.approx(1 + 0.42 / 1.62, rel=1e-12)
    assert kaplan_yorke_dimension(np.array([-1.62, 0.42])) == pytest.approx(1 + 0.42 / 1.62, rel=1e-12)
    # Lorenz-like (0.9, 0, -14.5): D = 2 + 0.9 / 14.5
    assert kaplan_yorke_dimension(jnp.asarray([0.0, -14.5, 0.9])) == pytest.approx(2 + 0.9 / 14.5, rel=1e-6)
    # j = 2 (S_2 = 0.5 >= 0, S_3 = -0.5): D = 2 + 0.5 / 1
    assert kaplan_yorke_dimension([1.0, -0.5, -1.0, -2.0]) == pytest.approx(2.5)
    assert kaplan_yorke_dimension([-0.1, -0.5]) == 0.0
    assert kaplan_yorke_dimension([0.0, -1.0]) == 1.0  # S_1 = 0 >= 0
    assert math.isnan(kaplan_yorke_dimension([0.5, -0.2]))  # sum >= 0: needs more exponents
    assert math.isnan(kaplan_yorke_dimension([0.5, -0.5]))
    assert math.isnan(kaplan_yorke_dimension([0.3]))
    assert isinstance(kaplan_yorke_dimension([0.42, -1.62]), float)


def test_ruelle_known_values():
    mixed = ruelle_bound([0.5, -0.1, 0.2, -3.0])
    assert isinstance(mixed, RuelleBound)
    assert mixed.value == pytest.approx(0.7) and mixed.lower_bound is False
    all_pos = ruelle_bound(np.array([0.3, 0.1]))
    assert all_pos.value == pytest.approx(0.4) and all_pos.lower_bound is True
    none_pos = ruelle_bound([-0.3, -0.1])
    assert none_pos.value == 0.0 and none_pos.lower_bound is False
    assert json.loads(json.dumps(all_pos.to_json())) == {"value": pytest.approx(0.4), "lower_bound": True}


@pytest.mark.parametrize("fn", [kaplan_yorke_dimension, ruelle_bound])
@pytest.mark.parametrize("bad, match", [([], "empty"), ([0.1, float("nan")], "NaN"),
                                        ([[0.1, -0.2]], "1-D"), ([0.1, float("inf")], "inf")])
def test_spectrum_summaries_bad_inputs(fn, bad, match):
    with pytest.raises(ValueError, match=match):
        fn(bad)


def test_pesin_entropy_is_a_deprecated_alias():
    from loopjax.engine.dynamics import pesin_entropy
    with pytest.warns(DeprecationWarning, match="ruelle_bound"):
        p = pesin_entropy([0.5, -0.1, 0.2])
    assert p == ruelle_bound([0.5, -0.1, 0.2])


def test_orbit_type_window():
    # z -> 0.9 z from 1: r_1 = 0.1 at every step (relative), until ||z|| < floor = 1e-4 where it turns absolute
    f = lambda z: 0.9 * z
    short = orbit_type(f, jnp.ones(2), steps=64)
    assert short.kind == "not_converged"
    with pytest.raises(ValueError, match="window=60 exceeds"):
        orbit_type(f, jnp.ones(2), steps=64, window=60)
    with pytest.raises(ValueError, match="window must be an integer >= 9"):
        orbit_type(f, jnp.ones(2), steps=64, window=8)
    # over 300 steps the last 40 are within atol (||z|| ~ 0.9^260 ~ 1e-12): fixed; a window of 200 sees
    # steps where ||z_t - z_{t-1}|| = 0.1 * 0.9^100 ~ 3e-6 > 1e-8 still: not converged
    assert orbit_type(f, jnp.ones(2), steps=300, window=40).kind == "fixed_point"
    assert orbit_type(f, jnp.ones(2), steps=300, window=200).kind == "not_converged"


def numpy_return_distances(f, z0, steps, window, max_period, floor=1e-4):
    """Reference (float64 NumPy): r_p = max over the last `window` steps t of ||z_t - z_{t-p}|| / max(||z_{t-p}||, floor)."""
    zs = [np.asarray(z0, np.float64)]
    for _ in range(steps):
        zs.append(f(zs[-1]))
    return [max(np.linalg.norm(zs[t] - zs[t - p]) / max(np.linalg.norm(zs[t - p]), floor)
                for t in range(steps - window + 1, steps + 1)) for p in range(1, max_period + 1)]


@pytest.mark.parametrize("steps,max_period,window", [(100, 8, None), (257, 5, 120), (300, 70, 200)])
def test_orbit_type_return_distances_equal_numpy(steps, max_period, window):
    """The chunked tail (chunks of max(max_period, 64) steps, a remainder chunk) gives every r_p."""
    A = np.asarray(rotation(2 * math.pi * 0.1234)) * 0.999
    with jax.enable_x64(True):
        o = orbit_type(Partial(linear, jnp.asarray(A)), jnp.asarray([1.0, 0.5]), steps=steps,
                       max_period=max_period, window=window)
    w = window or min(max(2 * max_period, steps // 4), steps - max_period + 1)
    np.testing.assert_allclose(o.return_distances, numpy_return_distances(lambda z: A @ z, [1.0, 0.5], steps, w,
                                                                          max_period), rtol=1e-10)
    assert o.steps_run == steps


def test_orbit_type_stop_early_same_kind_fewer_steps():
    """stop_early ends once every r_p > rtol: same kind, maxima over the steps run (<= the full ones); a
    closing orbit runs every step and gives the same result."""
    golden = Partial(linear, rotation(2 * math.pi * (math.sqrt(5) - 1) / 2))
    full = orbit_type(golden, jnp.asarray([1.0, 0.0]), steps=512, max_period=128, window=385)
    early = orbit_type(golden, jnp.asarray([1.0, 0.0]), steps=512, max_period=128, window=385, stop_early=True)
    assert full.kind == early.kind == "not_converged"
    assert (full.steps_run, early.steps_run) == (512, 128)
    assert all(e <= f_ for e, f_ in zip(early.return_distances, full.return_distances))
    five = Partial(linear, rotation(2 * math.pi / 5))
    a = orbit_type(five, jnp.asarray([1.0, 0.5]), steps=512, max_period=128, window=385)
    b = orbit_type(five, jnp.asarray([1.0, 0.5]), steps=512, max_period=128, window=385, stop_early=True)
    assert a == b and (a.kind, a.period, a.steps_run) == ("periodic", 5, 512)
