"""Error bars and convergence checks for per-prompt and per-step results (numpy, float64).

Everything is deterministic given `seed`. NaN in the data propagates into the results (a diverged
prompt shows up as NaN rather than being dropped silently); bad parameters raise ValueError.

  * `standard_error`, `bootstrap_ci`: spread of a mean over independent samples (e.g. prompts).
  * `batch_means_se`: standard error of a time average of a correlated per-step series.
  * `running_drift`, `converged`: has a running average settled?
  * `classify_signs`: how many exponents are confidently positive / negative / compatible with 0.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "standard_error",
    "bootstrap_ci",
    "batch_means_se",
    "running_drift",
    "converged",
    "classify_signs",
    "DRIFT_FRACTION",
    "DRIFT_ATOL",
    "DRIFT_RTOL",
]

DRIFT_FRACTION = 0.25  # the drift is measured over the last quarter of the steps
DRIFT_ATOL = 1e-3      # converged: drift <= max(DRIFT_ATOL, DRIFT_RTOL * |r_T|)  (nats per step)
DRIFT_RTOL = 0.05


def _scalar(x):
    x = np.asarray(x, dtype=np.float64)
    return x[()] if x.ndim == 0 else x


def _data(x, axis):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("x must have at least one axis (the samples)")
    return np.moveaxis(x, axis, 0)


def standard_error(x, axis=0):
    """Standard error of the mean along `axis`: std(x, ddof=1) / sqrt(n); NaN where n < 2."""
    x = _data(x, axis)
    n = x.shape[0]
    if n < 2:
        return _scalar(np.full(x.shape[1:], np.nan))
    return _scalar(x.std(axis=0, ddof=1) / math.sqrt(n))


def bootstrap_ci(x, *, level=0.95, n_boot=2000, seed=0, axis=0):
    """Percentile bootstrap confidence interval of the mean along `axis`: (lo, hi).

    n_boot resamples of the n samples with replacement (drawn as multinomial counts, so the same seed
    gives the same resamples for every column of x); lo, hi are the (1 - level)/2 and (1 + level)/2
    quantiles of the resampled means. Shapes: x (n,) -> scalars, (n, k) -> (k,). NaN where n < 2.
    For small n the percentile interval is slightly narrow (its width uses the ddof=0 spread and
    normal rather than t quantiles): at n = 20 a 95% interval covers the mean ~93% of the time.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be an integer >= 1, got {n_boot!r}")
    x = _data(x, axis)
    n, rest = x.shape[0], x.shape[1:]
    if n < 2:
        nan = _scalar(np.full(rest, np.nan))
        return nan, nan
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n  # (n_boot, n)
    means = weights @ x.reshape(n, -1)  # (n_boot, prod(rest))
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return _scalar(lo.reshape(rest)), _scalar(hi.reshape(rest))


def batch_means_se(series, *, n_batches=None):
    """Standard error of the time average of a per-step series (T,) or (T, k), by batch means.

    The series is cut into b non-overlapping batches of length L = T // b (the first T - b L steps,
    the earliest, are dropped); with batch means m_1..m_b, SE = std(m, ddof=1) / sqrt(b). When L is
    much longer than the correlation time the batch means are nearly independent, so this accounts
    for autocorrelation that the naive std / sqrt(T) ignores. Default b = max(2, floor(sqrt(T)));
    NaN if T < 4. n_batches, if given, must be in [2, T].
    """
    x = np.asarray(series, dtype=np.float64)
    if x.ndim not in (1, 2):
        raise ValueError(f"series must be (T,) or (T, k), got shape {x.shape}")
    T = x.shape[0]
    if n_batches is not None:
        if isinstance(n_batches, bool) or not isinstance(n_batches, (int, np.integer)) \
                or not 2 <= n_batches <= max(T, 2):
            raise ValueError(f"n_batches must be an integer in [2, T={T}], got {n_batches!r}")
    if T < 4:
        return _scalar(np.full(x.shape[1:], np.nan))
    b = int(n_batches) if n_batches is not None else max(2, math.isqrt(T))
    L = T // b
    m = x[T - b * L:].reshape((b, L) + x.shape[1:]).mean(axis=1)
    return _scalar(m.std(axis=0, ddof=1) / math.sqrt(b))


def _check_fraction(fraction):
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")


def running_drift(running, *, fraction=DRIFT_FRACTION):
    """|r_T - r_{T-m}| with m = ceil(fraction * T) (capped at T - 1): how much a running average
    (T,) or (T, k) still moved over its last `fraction` of steps. NaN if T < 2."""
    _check_fraction(fraction)
    r = np.asarray(running, dtype=np.float64)
    if r.ndim not in (1, 2):
        raise ValueError(f"running must be (T,) or (T, k), got shape {r.shape}")
    T = r.shape[0]
    if T < 2:
        return _scalar(np.full(r.shape[1:], np.nan))
    m = min(math.ceil(fraction * T), T - 1)
    return _scalar(np.abs(r[-1] - r[-1 - m]))


def converged(running, *, fraction=DRIFT_FRACTION, atol=DRIFT_ATOL, rtol=DRIFT_RTOL):
    """running_drift(running, fraction) <= max(atol, rtol * |r_T|), elementwise (bool or bool array).

    Defaults: the last 25% of the steps, atol = 1e-3, rtol = 0.05. NaN (T < 2 or NaN data) -> False.
    """
    if not (atol >= 0 and rtol >= 0):
        raise ValueError(f"atol and rtol must be >= 0, got atol={atol!r}, rtol={rtol!r}")
    drift = running_drift(running, fraction=fraction)
    last = np.asarray(running, dtype=np.float64)[-1]
    ok = np.asarray(drift) <= np.maximum(atol, rtol * np.abs(last))
    return ok[()] if ok.ndim == 0 else ok


def classify_signs(lo, hi) -> dict:
    """Counts of exponents by confidence interval [lo, hi]: positive (lo > 0), negative (hi < 0),
    zero (the interval contains 0), undetermined (lo or hi NaN). Raises ValueError if lo > hi."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if lo.shape != hi.shape:
        raise ValueError(f"lo and hi have different shapes {lo.shape} and {hi.shape}")
    nan = np.isnan(lo) | np.isnan(hi)
    if np.any(lo[~nan] > hi[~nan]):
        raise ValueError("lo > hi for some interval")
    pos = ~nan & (lo > 0)
    neg = ~nan & (hi < 0)
    return {"positive": int(pos.sum()), "negative": int(neg.sum()),
            "zero": int((~nan & ~pos & ~neg).sum()), "undetermined": int(nan.sum())}
