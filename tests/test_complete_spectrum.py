"""Complete spectra (all d exponents): exact sum rules, blocks = dense = log|eig J(z*)| at fixed points,
structural (-inf) exponents counted per token."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import loopjax
from loopjax.analysis.complete import complete_spectrum, complete_spectrum_record
from loopjax.engine.complete import CompleteSpectrum, complete_spectrum_of_map
from loopjax.models import config_from_hf
from loopjax.models.presets import preset


def henon(z, a=1.4, b=0.3):
    return jnp.stack([1 - a * z[0] ** 2 + z[1], b * z[0]])


def test_henon_sum_is_ln_b(precision):
    # det Df = -b everywhere: the two exponents sum to ln 0.3 at every step, whatever the orbit
    r = complete_spectrum_of_map(henon, jnp.array([0.1, 0.1]), key=jax.random.key(0), steps=1000, warmup=50)
    tol = 1e-5 if precision == "fp32" else 1e-12
    assert abs(r.sum - np.log(0.3)) < tol
    assert r.n_structural == 0 and r.exponents[0] > 0.35  # the chaotic attractor (lambda1 = 0.419)


def _causal_tanh(L=3, H=4, gain=1.5, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(L * H, L * H)) * gain / np.sqrt(L * H) * np.kron(np.tril(np.ones((L, L))), np.ones((H, H)))
    b = rng.normal(size=L * H) * 0.5
    Wj, bj = jnp.asarray(W), jnp.asarray(b)
    return (lambda z: jnp.tanh(Wj @ z.reshape(-1) + bj).reshape(z.shape)), W, b, rng.normal(size=(L, H))


def _logdets(W, b, z0, H, warmup, steps):
    """Independent (numpy, float64) mean log|det Df| and mean sum_i log|det Df_ii| along the orbit."""
    z = np.asarray(z0, np.float64).reshape(-1)
    full, blocks = [], []
    for t in range(warmup + steps):
        J = (1 - np.tanh(W @ z + b) ** 2)[:, None] * W
        if t >= warmup:
            full.append(np.linalg.slogdet(J)[1])
            blocks.append(sum(np.linalg.slogdet(J[i:i + H, i:i + H])[1] for i in range(0, len(z), H)))
        z = np.tanh(W @ z + b)
    return np.mean(full), np.mean(blocks)


def test_norm_free_sum_rule_and_blocks_equal_dense(precision):
    f, W, b, z0 = _causal_tanh()
    warmup, steps = 20, 300
    full, per_block = _logdets(W, b, z0, 4, warmup, steps)
    dense = complete_spectrum_of_map(f, z0, key=jax.random.key(1), steps=steps, warmup=warmup, method="dense")
    blocks = complete_spectrum_of_map(f, z0, key=jax.random.key(1), steps=steps, warmup=warmup, method="blocks")
    tol = 1e-4 if precision == "fp32" else 1e-10
    assert dense.d == blocks.d == 12 and dense.n_structural == blocks.n_structural == 0
    assert abs(dense.sum - full) < tol
    assert abs(blocks.sum - per_block) < tol
    # the orbit settles on a fixed point: both are log|eig J(z*)| (complex pairs converge as 1/T)
    z = np.asarray(z0).reshape(-1)
    for _ in range(2000):
        z = np.tanh(W @ z + b)
    ev = -np.sort(-np.log(np.abs(np.linalg.eigvals((1 - z ** 2)[:, None] * W))))
    assert np.max(np.abs(dense.exponents - ev)) < 0.01
    assert np.max(np.abs(blocks.exponents - ev)) < 0.01
    assert np.max(np.abs(blocks.exponents - dense.exponents)) < 0.01


def test_blocks_probe_convention_and_json():
    # block i of the blocks method is benettin(key=fold_in(key, i), tangent_mask=mask_i) (the token_spectrum
    # convention); same compiled programs as the sum-rule test (float32)
    f, _, _, z0 = _causal_tanh()
    r = complete_spectrum_of_map(f, z0, key=jax.random.key(1), steps=300, warmup=20, method="blocks")
    mask = jnp.zeros((3, 4)).at[1].set(1.0)
    one = loopjax.benettin(f, z0, k=4, steps=300, warmup=20, key=jax.random.fold_in(jax.random.key(1), 1),
                           tangent_mask=mask)
    np.testing.assert_allclose(np.sort(r.measured[r.block == 1]), np.sort(np.asarray(one.exponents)), atol=1e-5)
    back = CompleteSpectrum.from_json(r.to_json())
    np.testing.assert_array_equal(back.exponents, r.exponents)
    assert back.block.tolist() == r.block.tolist() and back.method == "blocks"


def test_bad_inputs():
    f, _, _, z0 = _causal_tanh()
    with pytest.raises(ValueError, match="method"):
        complete_spectrum_of_map(f, z0, key=jax.random.key(0), steps=2, method="qr")
    with pytest.raises(ValueError, match="block_size=5"):
        complete_spectrum_of_map(f, z0, key=jax.random.key(0), steps=2, method="blocks", block_size=5)


def _fixed_point_models(models):
    # builtin:ouro-tiny-random (seed 0) is chaotic on this prompt (lambda1 ~ +0.14, no fixed point);
    # the same preset with seed 3 converges to one in ~100 loops
    return {"ouro-tiny-seed3": loopjax.random_model(config_from_hf(preset("ouro-tiny")), jax.random.key(3)),
            "huginn-tiny": models["huginn-tiny"]}


IDS = jnp.arange(1, 7)  # L = 6, H = 64: d = 384


@pytest.mark.parametrize("name", ["ouro-tiny-seed3", "huginn-tiny"])
def test_tiny_model_fixed_point_blocks_dense_eig(models, name):
    model = _fixed_point_models(models)[name]
    key = jax.random.key(0)
    f, z0 = loopjax.loop_map(model, IDS, key=loopjax.split_key(key)[0])
    zs = jax.jit(lambda z: jax.lax.fori_loop(0, 300, lambda i, z: f(z), z))(z0)
    assert float(jnp.linalg.norm(f(zs) - zs)) < 1e-4 * float(jnp.linalg.norm(zs))
    J = jax.jacfwd(lambda x: f(x.reshape(zs.shape)).reshape(-1))(zs.reshape(-1))
    ev = -np.sort(-np.log(np.abs(np.linalg.eigvals(np.asarray(J, np.float64)))))
    runs = {m: complete_spectrum(model, IDS, key=key, steps=32, warmup=16, method=m, init_state=zs)
            for m in ("blocks", "dense")}
    n_eig_structural = int((ev < runs["dense"].structural_threshold).sum())
    assert n_eig_structural == 6  # the eigenvalues themselves: one annihilated direction per token
    for r in runs.values():
        assert r.d == 384 and r.n_structural == r.declared_structural == 6 and r.structural_agrees
        fin = np.isfinite(r.exponents)
        err = np.abs(r.exponents[fin] - ev[:fin.sum()])
        assert np.median(err) < 0.01 and err.max() < 0.1, (np.median(err), err.max())
    assert runs["blocks"].structural_per_block().tolist() == [1] * 6
    a, b = (runs[m].exponents[:-6] for m in ("blocks", "dense"))
    assert np.median(np.abs(a - b)) < 0.01


def test_record(models):
    # the --k all JSON record; the settings of the fixed-point test, so its compiled program is reused
    model = _fixed_point_models(models)["ouro-tiny-seed3"]
    rec = complete_spectrum_record(model, [IDS], seed=0, steps=32, warmup=16, model_name="ouro-tiny-seed3")
    res = CompleteSpectrum.from_json(rec["results"][0])
    assert res.d == 384 and rec["summary"]["n_structural"] == [6] and res.structural_per_block().tolist() == [1] * 6
    assert rec["results"][0]["exponents"][-1] is None and np.isclose(rec["summary"]["sum"][0], res.finite.sum())
