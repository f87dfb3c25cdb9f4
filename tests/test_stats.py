"""Error bars and convergence checks against closed-form values and synthetic data of known law."""

import math

import numpy as np
import pytest

from loopjax.engine.stats import (DRIFT_ATOL, DRIFT_RTOL, batch_means_se, bootstrap_ci, classify_signs, converged,
                                  holm_sign_counts,
                           running_drift, standard_error)


# ---------------------------------------------------------------- standard_error

def test_standard_error_formula():
    # std([1, 2, 3, 4], ddof=1) = sqrt(5/3); / sqrt(4)
    assert standard_error([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5 / 3) / 2, rel=1e-12)
    x = np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 40.0], [4.0, 20.0]])
    np.testing.assert_allclose(standard_error(x), [math.sqrt(5 / 3) / 2, math.sqrt(200) / 2], rtol=1e-12)
    np.testing.assert_allclose(standard_error(x.T, axis=1), standard_error(x), rtol=1e-12)


def test_standard_error_needs_two_samples():
    assert math.isnan(standard_error([3.0]))
    assert np.isnan(standard_error(np.ones((1, 3)))).all() and standard_error(np.ones((1, 3))).shape == (3,)


# ---------------------------------------------------------------- bootstrap_ci

def test_bootstrap_coverage():
    # n = 20 normal samples, 1000 data sets: the percentile interval covers the true mean at its
    # nominal rate minus the small-n narrowing, P(|t_19| < 1.96 sqrt(19/20)) = 0.93; the binomial
    # std of the rate over 1000 data sets is 0.008, so [0.90, 0.98] is > 3.5 std either side.
    rng = np.random.default_rng(123)
    mu, hits, reps = 1.5, 0, 1000
    for i in range(reps):
        x = rng.normal(mu, 2.0, size=20)
        lo, hi = bootstrap_ci(x, level=0.95, n_boot=1000, seed=i)
        hits += lo <= mu <= hi
    assert 0.90 <= hits / reps <= 0.98


def test_bootstrap_width_large_n():
    # n = 400, sigma = 1: the 95% interval is mean +- 1.96 / sqrt(400) up to O(1/sqrt(n_boot)) noise
    x = np.random.default_rng(0).normal(0.0, 1.0, size=400)
    lo, hi = bootstrap_ci(x, n_boot=4000)
    s = x.std() / math.sqrt(400)
    assert hi - lo == pytest.approx(2 * 1.96 * s, rel=0.08)
    assert (lo + hi) / 2 == pytest.approx(x.mean(), abs=0.2 * s)


def test_bootstrap_columns_and_determinism():
    x = np.random.default_rng(1).normal(size=(30, 3))
    lo, hi = bootstrap_ci(x, seed=7)
    assert lo.shape == hi.shape == (3,) and np.all(lo < x.mean(0)) and np.all(x.mean(0) < hi)
    for j in range(3):  # same seed, same resamples: each column as if bootstrapped alone
        lo_j, hi_j = bootstrap_ci(x[:, j], seed=7)
        assert (lo_j, hi_j) == pytest.approx((lo[j], hi[j]), rel=1e-12)
    lo2, hi2 = bootstrap_ci(x.T, seed=7, axis=1)
    np.testing.assert_array_equal(lo2, lo)
    assert not np.array_equal(bootstrap_ci(x, seed=8)[0], lo)
    a, b = bootstrap_ci(x, level=0.5, seed=7)
    assert np.all(lo < a) and np.all(b < hi)  # a narrower level gives a nested interval


def test_bootstrap_constant_and_tiny_inputs():
    lo, hi = bootstrap_ci(np.full(10, 2.5))
    assert lo == pytest.approx(2.5) and hi == pytest.approx(2.5)
    lo, hi = bootstrap_ci([1.0])
    assert math.isnan(lo) and math.isnan(hi)


@pytest.mark.parametrize("kwargs", [dict(level=0.0), dict(level=1.0), dict(n_boot=0), dict(n_boot=2.5)])
def test_bootstrap_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        bootstrap_ci(np.ones(5), **kwargs)


# ---------------------------------------------------------------- batch_means_se

def test_batch_means_known_values():
    assert batch_means_se([1.0, 1.0, 3.0, 3.0], n_batches=2) == pytest.approx(1.0)  # means 1, 3
    # T = 5, two batches of 2: the earliest step is dropped
    assert batch_means_se([100.0, 1.0, 1.0, 3.0, 3.0], n_batches=2) == pytest.approx(1.0)
    two = np.stack([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 0.0, 8.0]], axis=1)  # means (1, 3) and (0, 4)
    np.testing.assert_allclose(batch_means_se(two, n_batches=2), [1.0, 2.0])
    assert math.isnan(batch_means_se([1.0, 2.0, 3.0]))


def test_batch_means_iid():
    # iid noise: SE of the mean = sigma / sqrt(T); with 100 batches the estimate has ~7% relative
    # spread, so 30% is > 4 std
    T, sigma = 10000, 2.0
    x = np.random.default_rng(2).normal(0.0, sigma, size=T)
    assert batch_means_se(x) == pytest.approx(sigma / math.sqrt(T), rel=0.3)


def test_batch_means_ar1():
    # x_t = phi x_{t-1} + e_t, e ~ N(0, 1): var x = 1 / (1 - phi^2) and the SE of the time average is
    # sqrt(var x / T * (1 + phi) / (1 - phi)), 4.4x the naive std / sqrt(T) at phi = 0.9. Batches of
    # 141 steps >> correlation time (1 + phi) / (1 - phi) = 19.
    T, phi = 20000, 0.9
    rng = np.random.default_rng(3)
    e = rng.normal(size=T)
    x = np.empty(T)
    x[0] = e[0] / math.sqrt(1 - phi ** 2)
    for t in range(1, T):
        x[t] = phi * x[t - 1] + e[t]
    true = math.sqrt(1 / (1 - phi ** 2) / T * (1 + phi) / (1 - phi))
    naive = x.std(ddof=1) / math.sqrt(T)
    se = batch_means_se(x)
    assert se > 3 * naive
    assert se == pytest.approx(true, rel=0.3)
    # (T, k): columns independent of each other
    both = batch_means_se(np.stack([x, rng.normal(size=T)], axis=1))
    assert both[0] == pytest.approx(se, rel=1e-12)
    assert both[1] == pytest.approx(1 / math.sqrt(T), rel=0.3)


@pytest.mark.parametrize("n_batches", [1, 11, 2.0])
def test_batch_means_bad_n_batches(n_batches):
    with pytest.raises(ValueError, match="n_batches"):
        batch_means_se(np.arange(10.0), n_batches=n_batches)


# ---------------------------------------------------------------- running_drift / converged

def test_running_drift_known_value():
    t = np.arange(1, 101, dtype=float)
    assert running_drift(1 / t) == pytest.approx(1 / 75 - 1 / 100, rel=1e-12)  # m = 25
    assert running_drift(1 / t, fraction=0.5) == pytest.approx(1 / 50 - 1 / 100, rel=1e-12)
    assert running_drift(1 / t, fraction=1.0) == pytest.approx(1 - 1 / 100, rel=1e-12)  # m capped at T-1
    assert math.isnan(running_drift([1.0]))


def test_converged_vs_drifting():
    t = np.arange(1, 10001, dtype=float)
    settling = 0.3 + 2.0 / t  # drift over the last quarter: 2 / 7500 - 2 / 10000 = 6.7e-5
    trending = 0.5 + 1e-4 * t  # drift 0.25
    assert converged(settling) and not converged(trending)
    np.testing.assert_array_equal(converged(np.stack([settling, trending], axis=1)), [True, False])
    assert running_drift(trending) == pytest.approx(0.25, rel=1e-9)


def test_converged_thresholds():
    assert (DRIFT_ATOL, DRIFT_RTOL) == (1e-3, 0.05)
    # T = 5, m = ceil(0.25 * 5) = 2: the drift is |r_5 - r_3| = drift
    ramp = lambda last, drift: np.r_[0.0, 0.0, last - drift, last - drift / 2, last]
    assert converged(ramp(1.0, 0.04)) and not converged(ramp(1.0, 0.06))          # rtol * |r_T| = 0.05
    assert converged(ramp(0.0, 9e-4)) and not converged(ramp(0.0, 1.1e-3))        # atol = 1e-3
    assert converged(ramp(-1.0, 0.04)) and not converged(ramp(-1.0, 0.06))        # |r_T| for negatives
    assert not converged(np.array([1.0, 1.0, 1.0, np.nan]))
    assert converged(ramp(0.0, 1.1e-3), atol=2e-3)


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1])
def test_running_drift_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        running_drift(np.ones(10), fraction=fraction)


# ---------------------------------------------------------------- classify_signs

def test_classify_signs():
    lo = np.array([0.1, -0.5, -0.2, np.nan, 0.0, -1.0])
    hi = np.array([0.3, -0.1, 0.2, np.nan, 0.5, 0.0])
    assert classify_signs(lo, hi) == {"positive": 1, "negative": 1, "zero": 3, "undetermined": 1}


def test_classify_signs_bad_inputs():
    with pytest.raises(ValueError, match="lo > hi"):
        classify_signs([0.2], [0.1])
    with pytest.raises(ValueError, match="shapes"):
        classify_signs([0.1, 0.2], [0.3])


# ---------------------------------------------------------------- holm_sign_counts

def test_holm_sign_counts_step_down():
    # z = 3.0, -2.5, 2.2, 2.0, 0.5: two-sided p = 0.0027, 0.0124, 0.0278, 0.0455, 0.617. Holm at 0.05 over
    # m = 5: 0.0027 <= 0.05/5, 0.0124 <= 0.05/4 = 0.0125, 0.0278 > 0.05/3: stop (uncorrected: 4 significant)
    z = np.array([3.0, -2.5, 2.2, 2.0, 0.5])
    out = holm_sign_counts(z * 0.01, np.full(5, 0.01))
    assert (out["positive"], out["negative"], out["zero"], out["undetermined"]) == (1, 1, 3, 0)
    assert out["signs"] == ["+", "-", "0", "0", "0"]
    assert out["correction"] == "holm-bonferroni" and out["family_size"] == 5
    np.testing.assert_allclose(out["p_values"], [math.erfc(abs(v) / math.sqrt(2)) for v in z], rtol=1e-12)
    # the uncorrected intervals count 4 of them
    lo, hi = z * 0.01 - 1.959964 * 0.01, z * 0.01 + 1.959964 * 0.01
    assert classify_signs(lo, hi)["positive"] + classify_signs(lo, hi)["negative"] == 4


def test_holm_sign_counts_student_t_nan_and_zero_se():
    # t = 2.5 with df = 4: p = 0.0668 > 0.05 (normal: 0.0124): not significant even alone
    assert holm_sign_counts([2.5], [1.0], df=4)["zero"] == 1
    assert holm_sign_counts([2.5], [1.0])["positive"] == 1
    out = holm_sign_counts([np.nan, 0.3, 0.0, -0.2], [0.1, 0.0, 0.0, 0.0])
    assert out["signs"] == ["?", "+", "?", "-"] and out["family_size"] == 2


def test_holm_family_wise_error_rate():
    # all 50 exponents truly 0: the chance of any false sign over the family stays <= 5%
    rng = np.random.default_rng(0)
    hits = sum(holm_sign_counts(rng.normal(size=50), np.ones(50))["zero"] < 50 for _ in range(2000))
    assert hits / 2000 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 2000)


def test_holm_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        holm_sign_counts([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="level"):
        holm_sign_counts([0.1], [0.1], level=1.0)
    with pytest.raises(ValueError, match="se must be >= 0"):
        holm_sign_counts([0.1], [-0.1])
