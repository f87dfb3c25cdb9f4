"""Per-sublayer goldens (bonsai-style per-module tests): every named sublayer of every fixture against the
reference's per-sublayer log-growth and exponents, so a failure names the sublayer that is off."""
import functools
import math

import jax
import numpy as np
import pytest

import loopjax
from conftest import CASES, FIXTURES, expected
from test_parity import _benettin_args, tolerance


@functools.lru_cache(maxsize=None)
def _attribution(case: str, x64: bool):
    with jax.enable_x64(x64):
        tokens, kw = _benettin_args(case)
        r = loopjax.attribution(loopjax.load(FIXTURES / case), tokens, **kw)
        return r.names, np.asarray(r.log_growth, np.float64), np.asarray(r.exponents, np.float64)


SUBLAYERS = [(case, j, str(name)) for case in CASES for j, name in enumerate(expected(case)["sublayer_names"])]


@pytest.mark.parametrize("case, j, name", SUBLAYERS, ids=[f"{c}-{n}" for c, _, n in SUBLAYERS])
@pytest.mark.parametrize("precision", ["fp32", "fp64"])
def test_sublayer_against_reference(case, j, name, precision):
    names, log_growth, exponents = _attribution(case, precision == "fp64")
    assert names[j] == name
    want_lg, want_ex = expected(case)["attr_log_growth"][:, j], expected(case)["attr_exponents"][j]
    err_lg = np.abs(log_growth[:, j] - want_lg).max()
    err_ex = np.abs(exponents[j] - want_ex).max()
    assert err_lg <= tolerance(case, "attr_log_growth", precision), f"{name}: log-growth error {err_lg:.3e}"
    assert err_ex <= tolerance(case, "attr_exponents", precision), f"{name}: exponent error {err_ex:.3e}"


@pytest.mark.parametrize("case", CASES)
def test_declared_sublayers_compose_to_the_loop_map(case):
    """The (name, function) pairs an architecture declares are the loop map, in order."""
    model = loopjax.load(FIXTURES / case)
    tokens, kw = _benettin_args(case)
    names, maps, z0 = loopjax.sublayer_maps(model, tokens, key=jax.random.key(3))
    f, z0_f = loopjax.loop_map(model, tokens, key=jax.random.key(3))
    assert names == model.sublayer_names == tuple(str(n) for n in expected(case)["sublayer_names"])
    z = z0
    for g in maps:
        z = g(z)
    np.testing.assert_array_equal(np.asarray(z), np.asarray(f(z0_f)))


# ---------------------------------------------------------------- gauge-relative attribution

def _scaled_after(g, c, z):
    return c * g(z)


def _scaled_before(g, c, z):
    return g(z / c)


@pytest.mark.parametrize("case", ["ouro-tiny", "huginn-tiny"])
def test_relative_attribution_is_unchanged_by_a_rescaling_between_sublayers(models, case):
    """Sublayer 0 multiplies the state by c = 10 and sublayer 1 divides it back (f unchanged): the plain
    contributions of rows 0 and 1 move by +-ln 10, the relative ones do not move (to float tolerance)."""
    from jax.tree_util import Partial
    model, c = models[case], 10.0
    tokens = np.arange(3, 9)
    names, maps, z0 = loopjax.sublayer_maps(model, tokens, key=jax.random.key(1))
    scaled = (Partial(_scaled_after, maps[0], c), Partial(_scaled_before, maps[1], c)) + tuple(maps[2:])
    kw = dict(k=2, steps=24, key=jax.random.key(2), names=names)
    plain, plain_s = (loopjax.benettin_sublayers(m, z0, **kw) for m in (maps, scaled))
    rel, rel_s = (loopjax.benettin_sublayers(m, z0, relative=True, **kw) for m in (maps, scaled))
    shift = np.zeros((len(names), 1))
    shift[0], shift[1] = np.log(c), -np.log(c)
    np.testing.assert_allclose(plain_s.exponents, np.asarray(plain.exponents) + shift, atol=2e-4)
    assert np.abs(np.asarray(plain_s.exponents) - np.asarray(plain.exponents)).max() > 2.0  # plain ones move
    np.testing.assert_allclose(rel_s.exponents, rel.exponents, atol=2e-4)
    np.testing.assert_allclose(rel_s.total(), rel.total(), atol=2e-4)


def test_relative_sum_rule_and_continuation(models):
    """Relative rows sum to the full exponents minus the state's net log growth log(||z_T||/||z_0||)/T; the
    full exponents are those of benettin on the composed map from the same probes; continuing equals one run."""
    model = models["ouro-tiny"]
    tokens = np.arange(5, 12)
    key = jax.random.key(4)
    rel = loopjax.attribution(model, tokens, k=3, steps=30, key=key, relative=True)
    plain = loopjax.attribution(model, tokens, k=3, steps=30, key=key)
    np.testing.assert_allclose(rel.total(), plain.total(), atol=1e-5)
    norms = np.asarray(rel.state_norms, np.float64)
    net = math.log(norms[-1] / norms[0]) / 30
    assert float(rel.net_state_growth()) == pytest.approx(net, abs=1e-5)
    np.testing.assert_allclose(np.asarray(rel.exponents).sum(0), np.asarray(plain.total()) - net, atol=1e-5)
    names, maps, z0 = loopjax.sublayer_maps(model, tokens, key=loopjax.split_key(key)[0])
    a = loopjax.benettin_sublayers(maps, z0, k=3, steps=12, key=loopjax.split_key(key)[1], names=names,
                                   relative=True)
    b = loopjax.benettin_continue(maps, a, steps=18)
    np.testing.assert_allclose(b.exponents, rel.exponents, atol=1e-5)
    np.testing.assert_allclose(b.state_growth, rel.state_growth, atol=1e-6)
    assert b.to_json()["relative"] is True and len(b.to_json()["state_growth"]) == len(names)
