"""Lyapunov exponents are differentiable: jax.grad of `lambda1` and of a function of `spectrum(...).exponents`
(the sum of the top-2 exponents, k=2) with respect to the weights (a random unit direction v: grad·v against
central finite differences of ε -> f(params + ε v), ε = 1e-3) and, for Huginn, with respect to the injection
scale alpha (`loopjax.scale_injection`, at alpha = 1: the model itself); `remat=True` gives the same
gradient. Short horizons (T = 4, k <= 2) on both built-in models, everything in float64 (jax.enable_x64).

Compilation dominates the run time (the backward pass of a Benettin scan is a large program), so each
function is compiled once per model, at XLA's lowest backend optimisation level (the numbers agree with
the default level to ~1e-15; only the compile time changes)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import loopjax

IDS = jnp.array([5, 17, 33, 99], jnp.int32)
T = 4
EPS = 1e-3
RTOL = 1e-2
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _compile(fn, *args):
    return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)


@pytest.fixture(scope="module", params=["builtin:ouro-tiny-random", "builtin:huginn-tiny-random"], ids=["ouro", "huginn"])
def case(request):
    """The model in float64; λ1 and the top-2 sum as functions of (params, alpha); their gradients with
    respect to both (Ouro: params only), and λ1's gradient with remat=True. Computed once per model."""
    with jax.enable_x64(True):
        model = loopjax.load(request.param).astype("float64")
        key = loopjax.prompt_key(0, 2)
        injection = bool(model.arch.injection_fields())
        argnums = (0, 1) if injection else (0,)

        def scaled(params, alpha):
            m = model.replace(params=params)
            return loopjax.scale_injection(m, alpha) if injection else m

        def lam(params, alpha, remat=False):
            return loopjax.lambda1(scaled(params, alpha), IDS, steps=T, key=key, remat=remat)

        def top2(params, alpha):
            return jnp.sum(loopjax.spectrum(scaled(params, alpha), IDS, k=2, steps=T, key=key).sorted()[:2])

        def lam_remat(params, alpha):
            return lam(params, alpha, remat=True)

        p, a = model.params, jnp.asarray(1.0, jnp.float64)
        v = jax.jit(_direction)(p)
        out = {"params": p, "alpha": a, "v": v, "injection": injection, "f": {}, "grad": {}}
        for name, fn in (("lambda1", lam), ("top2", top2)):
            # f(params + s v, alpha): the finite differences in params (s = ±ε) and in alpha (s = 0)
            out["f"][name] = _compile(lambda p, v, a, s, fn=fn: fn(_axpy(s, v, p), a), p, v, a, 0.0)
            out["grad"][name] = _compile(jax.grad(fn, argnums=argnums), p, a)(p, a)
        out["grad_remat"] = _compile(jax.grad(lam_remat, argnums=argnums), p, a)(p, a)
        out["grad_dot_v"] = {name: float(jax.jit(_dot)(g[0], v)) for name, g in out["grad"].items()}
        yield out


def _direction(params, seed=0):
    """A random direction in parameter space with unit norm."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    v = [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    norm = jnp.sqrt(sum(jnp.sum(x * x) for x in v))
    return jax.tree.unflatten(tree, [x / norm for x in v])


def _axpy(s, v, p):
    return jax.tree.map(lambda x, d: x + s * d, p, v)


def _dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _close(g, fd, what):
    assert np.isfinite(g) and abs(fd) > 1e-8, (what, g, fd)
    assert abs(g - fd) <= RTOL * abs(fd), f"{what}: gradient {g:.8g} vs central finite differences {fd:.8g}"


@pytest.mark.parametrize("name", ["lambda1", "top2"])
def test_grad_wrt_params_matches_finite_differences(case, name):
    with jax.enable_x64(True):
        p, v, a, f = case["params"], case["v"], case["alpha"], case["f"][name]
        fd = (float(f(p, v, a, EPS)) - float(f(p, v, a, -EPS))) / (2 * EPS)
        _close(case["grad_dot_v"][name], fd, f"d {name} / d params · v")


@pytest.mark.parametrize("case", ["builtin:huginn-tiny-random"], indirect=True, ids=["huginn"])  # Ouro has none
@pytest.mark.parametrize("name", ["lambda1", "top2"])
def test_grad_wrt_injection_scale_matches_finite_differences(case, name):
    assert case["injection"]
    with jax.enable_x64(True):
        p, v, a, f = case["params"], case["v"], case["alpha"], case["f"][name]
        fd = (float(f(p, v, a + EPS, 0.0)) - float(f(p, v, a - EPS, 0.0))) / (2 * EPS)
        _close(float(case["grad"][name][1]), fd, f"d {name} / d alpha")


def test_remat_gives_the_same_gradient(case):
    ref, got = jax.tree.leaves(case["grad"]["lambda1"]), jax.tree.leaves(case["grad_remat"])
    scale = max(float(np.max(np.abs(np.asarray(x)))) for x in ref)
    assert scale > 0
    diff = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(got, ref))
    assert diff <= 1e-6 * scale, (diff, scale)
