"""Ragged batches: a list of prompts of different lengths (`loopjax.spectrum(model, [ids_a, ids_b, ...])`)
equals the single-prompt calls with keys fold_in(key, i). Models: the random built-ins
(`builtin:ouro-tiny-random`, `builtin:huginn-tiny-random`); prompts: the built-in ones under SimpleTokenizer.

Tolerance: the batched run pads each prompt to its length bucket (8 or 16 tokens here) and vmaps the
bucket, so the same numbers go through matmuls of other shapes (padded L, a batch axis) and XLA may
block and sum them in another order; the results then differ by float32 rounding only, amplified a little
by the dynamics over the steps. Measured on all 20 prompts (k=4, T=8), ouro-tiny-random / huginn-tiny-random:
exponents 1.3e-6 / 2.9e-7, running averages 1.5e-6 / 3.0e-7, single log-growth entries 1.2e-5 / 8.3e-7
(entries up to 4.9 / 0.47 in size), state norms 1.4e-7 / 1.6e-7 relative, final states 1.9e-5 / 1.3e-6
relative to their largest entry, final probes 8.4e-6 / 6.1e-7. The tests allow 1e-5 on exponents and
running averages and 1e-4 on single steps, final states and probes: far below any real difference (a
wrong key, start state or mask changes the exponents at the 1e-2 level).

Short horizons on purpose: where the loop's orbit is chaotic (ouro-tiny-random on most built-in prompts,
lambda1 ~ +0.2 per loop) float32 rounding differences grow like exp(lambda1 * t): at the paper's T=64 the
padded and unpadded float32 runs are different orbits (state 15% apart, exponents up to 2e-2 apart, see
benchmarks/ragged_batch.py). In float64 the same comparison at k=50, T=64 on all 20 prompts agrees to
~1e-11 (the slow test below allows 1e-8).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import loopjax
from loopjax.io.prompts import BUILTIN_PROMPTS
from loopjax.io.tokenizer import SimpleTokenizer

ATOL = 1e-5        # exponents, running averages (time averages), state norms (relative)
ATOL_STEP = 1e-4   # single log-growth entries, final states (relative to their largest entry), final probes
# lengths 4, 4, 6, 9, 9, 13 under the simple tokenizer: buckets of 8 {4, 4, 6} and 16 {9, 9, 13}
SIX = [0, 1, 3, 4, 5, 2]
FIVE = [0, 1, 3, 4, 5]  # 4, 4, 6 | 9, 9: both buckets hold several prompts, one of two lengths
ONE_BUCKET = [0, 3]  # lengths 4, 6




def _prompts(model, which):
    tok = SimpleTokenizer(model.config.vocab_size)
    return [jnp.array(tok.encode(BUILTIN_PROMPTS[i].text)) for i in which]


def _check_results(model, ids, batched, singles, k):
    H = model.config.hidden_size
    assert isinstance(batched, list) and len(batched) == len(ids)
    assert len({x.shape[0] for x in ids}) > 1  # really ragged
    for x, a, b in zip(ids, batched, singles):
        L = x.shape[0]
        assert a.final_state.shape == b.final_state.shape == (L, H)  # unpadded
        assert a.final_probes.shape == b.final_probes.shape == (L * H, k)
        assert a.exponents.shape == b.exponents.shape and a.log_growth.shape == b.log_growth.shape
        assert a.names == b.names
        np.testing.assert_allclose(a.exponents, b.exponents, atol=ATOL)
        np.testing.assert_allclose(a.log_growth, b.log_growth, atol=ATOL_STEP)
        np.testing.assert_allclose(a.running, b.running, atol=ATOL)
        np.testing.assert_allclose(a.state_norms, b.state_norms, rtol=ATOL)
        scale = float(np.abs(np.asarray(b.final_state)).max())
        np.testing.assert_allclose(a.final_state, b.final_state, atol=ATOL_STEP * scale)
        np.testing.assert_allclose(a.final_probes, b.final_probes, atol=ATOL_STEP)
        assert a.total_steps == b.total_steps


@pytest.mark.parametrize("name, which", [("huginn-tiny", FIVE),
                                         pytest.param("ouro-tiny", SIX, marks=pytest.mark.slow),
                                         pytest.param("ouro-tiny", range(20), marks=pytest.mark.slow)])
def test_ragged_spectrum_equals_single_prompts(models, name, which):
    model, k, steps, key = models[name], 4, 8, jax.random.key(5)
    ids = _prompts(model, which)
    batched = loopjax.spectrum(model, ids, k=k, steps=steps, key=key)
    singles = [loopjax.spectrum(model, x, k=k, steps=steps, key=jax.random.fold_in(key, i))
               for i, x in enumerate(ids)]
    _check_results(model, ids, batched, singles, k)
    # distinct prompts give distinct spectra (the comparison is not trivially between equal numbers)
    assert np.ptp([float(r.exponents.max()) for r in singles]) > 1e-3


@pytest.mark.parametrize("name, which", [("ouro-tiny", ONE_BUCKET),
                                         pytest.param("huginn-tiny", SIX, marks=pytest.mark.slow)])
def test_ragged_attribution_equals_single_prompts(models, name, which):
    model, k, steps, key = models[name], 2, 6, jax.random.key(9)
    ids = _prompts(model, which)
    batched = loopjax.attribution(model, ids, k=k, steps=steps, key=key)
    singles = [loopjax.attribution(model, x, k=k, steps=steps, key=jax.random.fold_in(key, i))
               for i, x in enumerate(ids)]
    _check_results(model, ids, batched, singles, k)
    assert batched[0].names == model.sublayer_names


@pytest.mark.parametrize("name, which", [("ouro-tiny", ONE_BUCKET),
                                         pytest.param("huginn-tiny", SIX, marks=pytest.mark.slow)])
def test_ragged_lambda1_equals_single_prompts(models, name, which):
    model, steps, key = models[name], 6, jax.random.key(2)
    ids = _prompts(model, which)
    batched = loopjax.lambda1(model, ids, steps=steps, key=key)
    singles = np.array([float(loopjax.lambda1(model, x, steps=steps, key=jax.random.fold_in(key, i)))
                        for i, x in enumerate(ids)])
    assert batched.shape == (len(ids),)
    np.testing.assert_allclose(batched, singles, atol=ATOL)


@pytest.mark.slow
def test_ragged_spectrum_paper_settings_x64(models):
    """All 20 built-in prompts at k=50, T=64 in float64: the batched run is the single-prompt runs."""
    model, key = models["ouro-tiny"], jax.random.key(0)
    ids = _prompts(model, range(20))
    with jax.enable_x64(True):
        batched = loopjax.spectrum(model, ids, k=50, steps=64, key=key)
        for i, x in enumerate(ids):
            single = loopjax.spectrum(model, x, k=50, steps=64, key=jax.random.fold_in(key, i))
            assert batched[i].exponents.dtype == jnp.float64
            np.testing.assert_allclose(batched[i].exponents, single.exponents, atol=1e-8)
            np.testing.assert_allclose(batched[i].state_norms, single.state_norms, rtol=1e-8)


# ---- padded single-prompt paths: token spectra, orbit, convergence (one program per bucket) --------------

@pytest.mark.parametrize("name", ["ouro-tiny", "huginn-tiny"])
def test_padded_token_spectrum_equals_unpadded(models, name):
    """token_spectrum(pad_multiple=8): state padded to 16 for a 9-token prompt, positions in chunks of 8 (the
    last one filled with repeats and cut): the same per-position numbers as the unpadded run."""
    model, key = models[name], jax.random.key(3)
    ids = _prompts(model, [4])[0]  # 9 tokens: padded to 16, chunks 0-7 and 8 (+7 fillers)
    assert ids.shape[0] == 9
    a = loopjax.token_spectrum(model, ids, k=2, steps=8, key=key, pad_multiple=8)
    b = loopjax.token_spectrum(model, ids, k=2, steps=8, key=key)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert a.exponents.shape == b.exponents.shape == (9, 2)
    assert a.result.final_state.shape == b.result.final_state.shape
    assert a.result.final_probes.shape == b.result.final_probes.shape
    np.testing.assert_allclose(a.exponents, b.exponents, atol=ATOL)
    np.testing.assert_allclose(a.log_growth, b.log_growth, atol=ATOL_STEP)
    np.testing.assert_allclose(a.state_norms, b.state_norms, rtol=ATOL)
    assert np.ptp(np.asarray(b.lambda1)) > 1e-3   # positions differ: not a comparison of equal numbers


@pytest.mark.parametrize("name", ["ouro-tiny", "huginn-tiny"])
def test_padded_orbit_similarity_and_convergence_equal_unpadded(models, name):
    model, key = models[name], jax.random.key(4)
    ids = _prompts(model, [3])[0]  # 6 tokens, padded to 8
    a = loopjax.orbit(model, ids, steps=16, key=key, pad_multiple=8)
    b = loopjax.orbit(model, ids, steps=16, key=key)
    assert a.kind == b.kind
    np.testing.assert_allclose(a.return_distances, b.return_distances, rtol=ATOL, atol=1e-7)
    sa = loopjax.similarity(model, ids, loops=3, key=key, pad_multiple=8)
    sb = loopjax.similarity(model, ids, loops=3, key=key)
    assert sa["names"] == sb["names"]
    np.testing.assert_allclose(sa["matrix"], sb["matrix"], atol=ATOL)
    np.testing.assert_allclose(sa["states_norm"], sb["states_norm"], rtol=ATOL)
    ca = loopjax.convergence(model, ids, steps=16, key=key, pad_multiple=8)
    cb = loopjax.convergence(model, ids, steps=16, key=key)
    for field in ("step_norm", "state_norm"):
        assert ca[field].shape == cb[field].shape
        np.testing.assert_allclose(ca[field], cb[field], rtol=ATOL)


def test_padded_ablation_unit_equals_unpadded(models):
    from loopjax.analysis.ablation import ablation_unit

    model, key = models["huginn-tiny"], jax.random.key(6)
    ids = _prompts(model, [4])[0]  # 9 tokens, padded to 16
    a = ablation_unit(model, ids, 0.5, key=key, steps_lambda1=8, attr_steps=8, orbit_steps=16, k=2,
                      spectrum_steps=8, pad_multiple=8)
    b = ablation_unit(model, ids, 0.5, key=key, steps_lambda1=8, attr_steps=8, orbit_steps=16, k=2,
                      spectrum_steps=8)
    assert abs(a.lambda1 - b.lambda1) <= ATOL
    np.testing.assert_allclose(a.attribution.exponents, b.attribution.exponents, atol=ATOL)
    np.testing.assert_allclose(a.spectrum.exponents, b.spectrum.exponents, atol=ATOL)
    assert a.orbit.kind == b.orbit.kind
    np.testing.assert_allclose(a.orbit.return_distances, b.orbit.return_distances, rtol=ATOL, atol=1e-7)
    c = ablation_unit(model, ids, 0.0, key=key, steps_lambda1=8, attr_steps=8, orbit_steps=16, pad_multiple=8)
    assert abs(c.lambda1 - a.lambda1) > 1e-3   # alpha matters: not a comparison of equal numbers


# ---- one program per bucket: starts and probes drawn on the padded shape equal the unpadded draws --------

@pytest.mark.parametrize("name", ["ouro-tiny", "huginn-tiny"])
def test_padded_init_state_and_prefix_probes_equal_unpadded_draws(models, name):
    """The padded draw's leading rows are the unpadded draw, bit for bit (jax's partitionable threefry; QR
    of a zero-padded matrix), for several lengths from one compiled program each."""
    from loopjax.engine.lyapunov import prefix_probes, random_probes
    from loopjax.models.loop_model import padded_init_state

    model = models[name]
    H = model.config.hidden_size
    ids = _prompts(model, [4])[0]  # 9 tokens
    pad = jnp.pad(ids, (0, 7))
    for n in (3, 9):
        key = jax.random.fold_in(jax.random.key(8), n)
        z = padded_init_state(model, pad, n, key)
        assert z.shape == (16, H)
        np.testing.assert_array_equal(z[:n], loopjax.init_state(model, ids[:n], key=key))
        assert not np.any(np.asarray(z[n:]))
        q = prefix_probes(key, n * H, d=16 * H, k=5, dtype=jnp.float32)
        np.testing.assert_array_equal(q[:n * H], random_probes(key, d=n * H, k=5, dtype=jnp.float32))
        assert not np.any(np.asarray(q[n * H:]))
    if name == "huginn-tiny":   # a random start: the two lengths' draws differ (not equal by construction)
        assert np.ptp(np.asarray(padded_init_state(model, pad, 9, key)[0])) > 0


def test_bucket_multiple():
    assert loopjax.bucket_multiple([8, 8, 21, 14, 22, 23]) == 24      # one bucket: 144 <= 2 * 96
    assert loopjax.bucket_multiple([8, 8, 21, 14, 22, 23], max_overhead=1.4) == 8
    assert loopjax.bucket_multiple([5, 5, 100]) == 8                  # 312 > 2 * 110: buckets of 8
    assert loopjax.bucket_multiple([16], multiple=16) == 16
    with pytest.raises(ValueError, match="positive"):
        loopjax.bucket_multiple([])


@pytest.mark.parametrize("name", ["ouro-tiny", "huginn-tiny"])
def test_padded_dynamics_equal_unpadded(models, name):
    """CLVs, the logit lens and the attention similarity of a prompt padded 9 -> 16 tokens: cut back to the
    prompt, the same numbers as the unpadded run (tolerances as above)."""
    from loopjax.analysis.readouts import attention_similarity, logit_lens

    model, key = models[name], jax.random.key(7)
    ids = _prompts(model, [4])[0]
    a = loopjax.clv(model, ids, k=3, steps=8, warmup=8, key=key, pad_multiple=8)
    b = loopjax.clv(model, ids, k=3, steps=8, warmup=8, key=key)
    assert a.vectors.shape == b.vectors.shape and a.states.shape == b.states.shape
    np.testing.assert_allclose(a.exponents, b.exponents, atol=ATOL)
    np.testing.assert_allclose(a.gs_exponents, b.gs_exponents, atol=ATOL)
    np.testing.assert_allclose(a.angles, b.angles, atol=ATOL_STEP)
    np.testing.assert_allclose(np.abs(a.vectors), np.abs(b.vectors), atol=ATOL_STEP)
    la, lb = logit_lens(model, ids, steps=4, key=key, pad_multiple=8), logit_lens(model, ids, steps=4, key=key)
    assert la.logits.shape == lb.logits.shape
    for field in ("entropy", "agreement", "kl_to_final"):
        np.testing.assert_allclose(getattr(la, field), getattr(lb, field), atol=ATOL_STEP)
    np.testing.assert_array_equal(la.top1, lb.top1)
    sa = attention_similarity(model, ids, loops=3, key=key, pad_multiple=8)
    sb = attention_similarity(model, ids, loops=3, key=key)
    assert sa.probs.shape == sb.probs.shape
    np.testing.assert_allclose(sa.matrix, sb.matrix, atol=ATOL)
    np.testing.assert_allclose(sa.probs, sb.probs, atol=ATOL)
    assert np.ptp(np.asarray(lb.entropy)) > 1e-3   # positions and loops differ: not equal by construction


def test_ablation_units_batch_equals_unit_by_unit(models):
    """One alpha's units of several prompts as padded batches (what `loopjax ablate` runs) equal the units
    computed one prompt at a time, unpadded, with the same keys."""
    from loopjax.analysis.ablation import ablation_unit, ablation_units

    model = models["huginn-tiny"]
    ids = _prompts(model, [0, 3, 4])   # 4, 6, 9 tokens: buckets 8 and 16
    keys = [jax.random.fold_in(jax.random.key(6), i) for i in range(len(ids))]
    opts = dict(steps_lambda1=8, attr_steps=8, orbit_steps=16)
    batch = ablation_units(model, ids, 0.5, keys=keys, pad_multiple=8, **opts)
    assert len(batch) == len(ids)
    for x, key, a in zip(ids, keys, batch):
        b = ablation_unit(model, x, 0.5, key=key, **opts)
        assert a.alpha == b.alpha == 0.5
        assert abs(a.lambda1 - b.lambda1) <= ATOL
        np.testing.assert_allclose(a.attribution.exponents, b.attribution.exponents, atol=ATOL)
        assert a.orbit.kind == b.orbit.kind
    assert np.ptp([u.lambda1 for u in batch]) > 1e-3   # prompts differ: not a comparison of equal numbers
