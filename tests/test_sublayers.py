"""Per-sublayer goldens (bonsai-style per-module tests): every named sublayer of every fixture against the
reference's per-sublayer log-growth and exponents, so a failure names the sublayer that is off."""
import functools

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
