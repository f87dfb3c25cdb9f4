"""classify_regime on maps whose regime and exponents are known exactly, and loopjax.regime on a shipped model
(checked against a fixed point and a Jacobian computed here, independently of the code under test)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import loopjax
from loopjax.engine.regime import REGIME_KINDS, Regime, RegimeCriteria, classify_regime

KEY = jax.random.PRNGKey(0)
PHI = (math.sqrt(5) - 1) / 2


def affine(z):  # z -> c + A (z - c), A upper triangular: fixed point c, exponents ln 0.5 and ln 0.2 exactly
    A = jnp.asarray([[0.5, 0.3], [0.0, 0.2]], z.dtype)
    c = jnp.asarray([1.0, 2.0], z.dtype)
    return c + A @ (z - c)


def logistic(x, r=3.2):
    return r * x * (1 - x)


def attracting_circle(z):
    """Polar (r, θ) -> (sqrt(r), θ + 2π φ): the unit circle attracts with radial multiplier d sqrt(r)/dr = 1/2
    at r = 1, and on it the golden-mean rotation is an isometry: exponents 0 and ln 0.5, no period."""
    r = jnp.sqrt(z[0] ** 2 + z[1] ** 2)
    th = jnp.arctan2(z[1], z[0]) + 2 * math.pi * PHI
    return jnp.stack([jnp.sqrt(r) * jnp.cos(th), jnp.sqrt(r) * jnp.sin(th)])


def henon(z):
    return jnp.stack([1 - 1.4 * z[0] ** 2 + z[1], 0.3 * z[0]])


def slow(z):  # fixed point (1, 0), J there = diag(0.999, 0.5); triangular everywhere: exponents ln .999, ln .5
    return jnp.stack([1 + 0.999 * (z[0] - 1) + z[1] ** 2, 0.5 * z[1]])


def numpy_transient(f, z0, n, rtol=1e-4, floor=1e-4):
    """Reference (float64 NumPy): first t after which ||z_{t+1} - z_t|| <= rtol max(||z_t||, floor) holds."""
    z, bad = np.asarray(z0, np.float64), -1
    for t in range(n):
        z_next = f(z)
        if not np.linalg.norm(z_next - z) <= rtol * max(np.linalg.norm(z), floor):
            bad = t
        z = z_next
    return bad + 1


def test_affine_contraction_fixed_point(precision):
    r = classify_regime(affine, jnp.asarray([3.0, -1.0]), key=KEY)
    assert (r.kind, r.period) == ("fixed_point", 1)
    np.testing.assert_allclose(r.exponents, [math.log(0.5), math.log(0.2)], rtol=1e-6)
    assert r.lambda1 == pytest.approx(math.log(0.5), abs=1e-5)
    fp = r.evidence["fixed_point"]
    assert fp["residual"] <= (1e-6 if precision == "fp32" else 1e-13)
    assert fp["agreement"]["difference"] <= fp["agreement"]["tolerance"]
    ref = numpy_transient(lambda z: np.array([1.0, 2.0]) + np.array([[0.5, 0.3], [0, 0.2]]) @ (z - [1.0, 2.0]),
                          [3.0, -1.0], r.horizon + 512)
    assert abs(r.transient - ref) <= 1
    assert r.transient <= r.horizon // 2  # the λ1 tail lies on the settled orbit


def test_logistic_period_two_floquet(precision):
    r = 3.2
    s = math.sqrt((r - 3) * (r + 1))
    x1, x2 = (r + 1 + s) / (2 * r), (r + 1 - s) / (2 * r)
    exact = math.log(abs(r * (1 - 2 * x1) * r * (1 - 2 * x2))) / 2  # = -0.91629...
    res = classify_regime(logistic, jnp.asarray([0.3]), key=KEY)
    assert (res.kind, res.period) == ("periodic", 2)
    assert res.exponents[0] == pytest.approx(exact, abs=1e-5 if precision == "fp32" else 1e-10)
    assert res.lambda1 == pytest.approx(exact, abs=1e-4)
    assert res.evidence["periodic"]["residual"] <= 1e-6


def test_golden_rotation_on_attracting_circle_is_quasi_periodic():
    r = classify_regime(attracting_circle, jnp.asarray([2.0, 0.0]), key=KEY, k=2)
    assert r.kind == "quasi_periodic" and r.period is None
    np.testing.assert_allclose(r.exponents, [0.0, math.log(0.5)], atol=1e-5)
    assert abs(r.lambda1) <= max(2 * r.lambda1_se, r.evidence["criteria"]["zero_atol"])
    assert r.evidence["orbit"]["kind"] == "not_converged"


def test_henon_chaotic():
    r = classify_regime(henon, jnp.asarray([0.1, 0.1]), key=KEY, k=2, max_steps=32768)
    assert r.kind == "chaotic"
    assert r.lambda1 == pytest.approx(0.41922, abs=max(3 * r.lambda1_se, 0.01))
    assert r.lambda1 - 2 * r.lambda1_se > 0
    pert = r.evidence["perturbation"]
    assert pert["lambda1"] == pytest.approx(0.41922, abs=0.03)
    assert sum(r.exponents) == pytest.approx(math.log(0.3), abs=0.02)  # λ1 + λ2 = ln|det J| = ln b


def test_slow_settling_needs_the_horizon():
    z0 = jnp.asarray([3.0, 1.0])
    short = classify_regime(slow, z0, key=KEY, k=2, max_steps=1024)
    assert short.kind == "undetermined" and short.period is None and short.horizon == 1024
    assert "max_steps=1024" in short.reason
    long = classify_regime(slow, z0, key=KEY, k=2, max_steps=8192)
    assert (long.kind, long.period) == ("fixed_point", 1)
    # float32 stores 0.999 as 0.99900001287: ln of that, to the float32 eig
    np.testing.assert_allclose(long.exponents, [math.log(float(np.float32(0.999))), math.log(0.5)], rtol=1e-6)
    ref = numpy_transient(lambda z: np.array([1 + 0.999 * (z[0] - 1) + z[1] ** 2, 0.5 * z[1]]), [3.0, 1.0],
                          long.horizon + 512)
    assert abs(long.transient - ref) <= 3 and long.transient > 1024  # it had not settled by the short cap


def test_diverged_names_the_step():
    r = classify_regime(lambda z: 2 * z + 1, jnp.asarray([1.0]), key=KEY)  # z_t = 2^(t+1) - 1 > 1e8 at t = 26
    assert r.kind == "diverged" and r.evidence["diverged_at"] == 26 and r.horizon == 26
    nan_map = lambda z: jnp.where(z > 10, jnp.nan, 1.5 * z)  # z_6 = 11.39 > 10: z_7 = NaN
    r = classify_regime(nan_map, jnp.asarray([1.0]), key=KEY)
    assert r.kind == "diverged" and r.evidence["diverged_at"] == 7 and "non-finite" in r.reason


def test_json_round_trip_and_kinds():
    r = classify_regime(logistic, jnp.asarray([0.3]), key=KEY)
    d = json.loads(json.dumps(r.to_json(), allow_nan=False))
    back = Regime.from_json(d)
    assert (back.kind, back.period, back.horizon, back.transient) == (r.kind, r.period, r.horizon, r.transient)
    assert back.exponents == pytest.approx(r.exponents) and back.lambda1 == pytest.approx(r.lambda1)
    assert back.evidence["criteria"] == RegimeCriteria().to_json()
    assert set(REGIME_KINDS) == {"fixed_point", "periodic", "quasi_periodic", "chaotic", "undetermined", "diverged"}
    div = classify_regime(lambda z: 2 * z + 1, jnp.asarray([1.0]), key=KEY).to_json()
    json.dumps(div, allow_nan=False)  # NaN λ1 is stored as null
    assert math.isnan(Regime.from_json(div).lambda1)
    with pytest.raises(ValueError, match="kind must be one of"):
        Regime.from_json({**d, "kind": "strange"})


@pytest.mark.parametrize("kw, match", [(dict(k=0), "k must be an integer >= 1"),
                                       (dict(max_steps=100), "multiple of min_steps=64"),
                                       (dict(max_steps=64), "at least twice"),
                                       (dict(min_steps=4), "min_steps must be an integer >= 8")])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        classify_regime(logistic, jnp.asarray([0.3]), key=KEY, **kw)


def test_ouro_tiny_fixed_point_matches_its_jacobian():
    """builtin:ouro-tiny, built-in prompt 0 (8 tokens, d = 1024): a fixed point whose exponents are the top
    log|eig J(z*)|, with z* and J computed here (3000 plain iterations from the front-ends' start state, the
    jacfwd Jacobian, numpy eig), not by the code under test (which uses Arnoldi on the JVP at its own z*)."""
    from loopjax.io.prompts import BUILTIN_PROMPTS
    from loopjax.io.tokenizer import get_tokenizer
    model = loopjax.load("builtin:ouro-tiny")
    ids = np.asarray(get_tokenizer(loopjax.source_dir("builtin:ouro-tiny"), model.config.vocab_size)
                     .encode(BUILTIN_PROMPTS[0].text))
    key = loopjax.prompt_key(0, 0)
    r = loopjax.regime(model, ids, key=key, max_steps=1024)
    assert (r.kind, r.period) == ("fixed_point", 1)
    f, z = loopjax.loop_map(model, ids, key=loopjax.split_key(key)[0])
    z = jax.jit(lambda f, z: jax.lax.fori_loop(0, 3000, lambda _, x: f(x), z))(f, z)
    J = np.asarray(jax.jit(jax.jacfwd(lambda x: f(x)))(z), np.float64).reshape(z.size, z.size)
    top = np.sort(np.log(np.abs(np.linalg.eigvals(J))))[::-1]
    np.testing.assert_allclose(r.exponents[:4], top[:4], atol=1e-4)
    assert r.lambda1 == pytest.approx(top[0], abs=max(3 * r.lambda1_se, 2e-3))
    assert r.evidence["fixed_point"]["residual"] <= 1e-5


@pytest.mark.parametrize("name", ["ouro-tiny", "huginn-tiny"])
def test_padded_prompt_gives_the_unpadded_verdict(name):
    """loopjax.regime(pad_multiple=8) (prompts of nearby lengths share a compilation) decides on the prompt's
    own orbit: the pad rows are held at 0, so kind, horizon, λ1 and log|eig J(z*)| are the unpadded ones."""
    from loopjax.io.prompts import builtin_prompts
    from loopjax.io.tokenizer import get_tokenizer

    model = loopjax.load(f"builtin:{name}")
    tok = get_tokenizer(loopjax.source_dir(f"builtin:{name}"), model.config.vocab_size)
    ids = tok.encode(builtin_prompts()[5].text)
    assert len(ids) % 8                                   # the check pads something
    a = loopjax.regime(model, ids, key=jax.random.key(5))
    b = loopjax.regime(model, ids, key=jax.random.key(5), pad_multiple=8)
    assert (a.kind, a.horizon, b.evidence["padded_length"]) == (b.kind, b.horizon, -(-len(ids) // 8) * 8)
    assert a.kind == "fixed_point" and "padded_length" not in a.evidence
    assert b.lambda1 == pytest.approx(a.lambda1, abs=1e-5)
    np.testing.assert_allclose(b.exponents[:2], a.exponents[:2], atol=1e-5)


def test_settle_continued_equals_one_run():
    """The transient search is continued from horizon to horizon: a run split in pieces gives the same
    states and the same last-violation step, bit for bit, as one run."""
    from jax.tree_util import Partial
    from loopjax.engine.regime import _orbit_from, _settle
    f, z0 = Partial(slow), jnp.asarray([3.0, 1.0])
    buf, last, _ = _orbit_from(z0, 2)
    one = _settle(f, buf, last, 0, 900, 1e-4, 1e-4, p=2)
    b, l = _settle(f, buf, last, 0, 250, 1e-4, 1e-4, p=2)
    b, l = _settle(f, b, l, 250, 900, 1e-4, 1e-4, p=2)
    np.testing.assert_array_equal(np.asarray(one[0]), np.asarray(b))
    assert int(one[1]) == int(l) > 100
