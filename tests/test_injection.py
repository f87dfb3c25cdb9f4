"""The input-injection ablation: `loopjax.scale_injection`, `loopjax.analysis.ablation` and `loopjax ablate`.

Short horizons (T=8, k = 1, orbits over 16 steps) and 4-token prompts throughout, so the tests share their
compiled programs (alpha is a leaf: every scaled model is one compilation)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

import loopjax
from loopjax.analysis import ablation
from loopjax.summary import AblationSummary, summarize_ablation
from loopjax import cli
from loopjax.cli import Hooks

IDS = jnp.array([5, 17, 33, 99], jnp.int32)
IDS2 = jnp.array([7, 8, 9, 10], jnp.int32)
T = 8


@pytest.fixture(scope="module")
def huginn():
    return loopjax.load("builtin:huginn-tiny-random")


@pytest.fixture(scope="module")
def ouro():
    """Ouro's architecture without weights: scale_injection only looks at the architecture."""
    from loopjax.models import config_from_hf
    from loopjax.models.presets import preset

    return loopjax.LoopModel({}, config_from_hf(preset("ouro-tiny")))


def _eq_result(a, b):
    for name in ("exponents", "log_growth", "running", "final_state", "final_probes", "state_norms"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)


# ---- alpha = 1 is the model, bit for bit ------------------------------------------------------------------

def test_scale_one_reproduces_every_analysis(huginn):
    m, m1 = huginn, loopjax.scale_injection(huginn, 1.0)
    key = loopjax.prompt_key(0, 3)
    # (k=1 throughout: lambda1, spectrum and the ablation then share one compiled program per model structure)
    _eq_result(loopjax.spectrum(m, IDS, k=1, steps=T, key=key), loopjax.spectrum(m1, IDS, k=1, steps=T, key=key))
    _eq_result(loopjax.attribution(m, IDS, k=1, steps=T, key=key),
               loopjax.attribution(m1, IDS, k=1, steps=T, key=key))
    np.testing.assert_array_equal(loopjax.lambda1(m, IDS, steps=T, key=key), loopjax.lambda1(m1, IDS, steps=T, key=key))
    s, s1 = loopjax.similarity(m, IDS, loops=2, key=key), loopjax.similarity(m1, IDS, loops=2, key=key)
    assert s["names"] == s1["names"]
    np.testing.assert_array_equal(s["matrix"], s1["matrix"])
    np.testing.assert_array_equal(s["states_norm"], s1["states_norm"])
    c, c1 = loopjax.convergence(m, IDS, steps=T, key=key), loopjax.convergence(m1, IDS, steps=T, key=key)
    for name in c:
        np.testing.assert_array_equal(c[name], c1[name], err_msg=name)
    assert (loopjax.orbit(m, IDS, steps=16, key=key).to_json()
            == loopjax.orbit(m1, IDS, steps=16, key=key).to_json())


# ---- alpha = 0 against a hand-built loop step ---------------------------------------------------------------

def _hand_step(model, ids, key):
    """One loop step with no injection, built by hand: the adapter kernel applied to concat(z, 0), then the
    original model's core-block sublayer maps (which do not read the injection)."""
    names, maps, z0 = loopjax.sublayer_maps(model, ids, key=key)
    assert names[0] == "adapter" and names[1] == "core_block.0"
    kernel = model.params["adapter"]["kernel"]

    def step(kernel, core, z):
        x = jnp.concatenate([z, jnp.zeros_like(z)], axis=-1)
        z = jnp.einsum("li,io->lo", x, kernel.astype(z.dtype), precision=jax.lax.Precision.HIGHEST)
        for g in core:
            z = g(z)
        return z

    return Partial(step, kernel, tuple(maps[1:])), z0


def test_alpha_zero_equals_hand_built_reference(huginn):
    key = loopjax.prompt_key(0, 1)
    state_key, probe_key = loopjax.split_key(key)
    m0 = loopjax.scale_injection(huginn, 0.0)
    f0, z0 = loopjax.loop_map(m0, IDS, key=state_key)
    ref, z0_ref = _hand_step(huginn, IDS, state_key)
    np.testing.assert_array_equal(z0, z0_ref)  # the start state does not depend on the injection
    np.testing.assert_allclose(f0(z0), ref(z0), rtol=1e-6, atol=1e-6)
    z1 = f0(z0)
    np.testing.assert_allclose(f0(z1), ref(z1), rtol=1e-6, atol=1e-6)
    # the same through the architecture's own sublayer functions with ctx["injection"] replaced by zeros
    ctx = dict(loopjax.context(huginn, IDS))
    ctx["injection"] = jnp.zeros_like(ctx["injection"])
    z = z0
    for _, fn in huginn.arch.sublayers(huginn.config):
        z = fn(huginn.params, huginn.config, ctx, z)
    np.testing.assert_array_equal(z, f0(z0))
    # λ1: the engine on the hand-built step vs the front-end on scale_injection(m, 0)
    lam_ref = loopjax.benettin(ref, z0_ref, k=1, steps=T, key=probe_key).exponents[0]
    lam0 = loopjax.lambda1(m0, IDS, steps=T, key=key)
    np.testing.assert_allclose(lam0, lam_ref, rtol=1e-4, atol=1e-5)
    assert abs(float(lam0) - float(loopjax.lambda1(huginn, IDS, steps=T, key=key))) > 1e-3  # it does change


def test_mean_mode_injection_is_constant_over_positions(huginn):
    e = np.asarray(loopjax.context(huginn, IDS)["injection"])
    for alpha in (1.0, 0.5):
        em = np.asarray(loopjax.context(loopjax.scale_injection(huginn, alpha, mode="mean"), IDS)["injection"])
        assert em.shape == e.shape
        np.testing.assert_array_equal(em, np.broadcast_to(em[:1], em.shape))  # every position the same
        np.testing.assert_allclose(em[0], alpha * e.mean(0), rtol=1e-5, atol=1e-6)
    es = np.asarray(loopjax.context(loopjax.scale_injection(huginn, 0.5), IDS)["injection"])
    np.testing.assert_allclose(es, 0.5 * e, rtol=1e-6, atol=1e-7)


def test_ouro_and_bad_mode_raise(ouro, huginn):
    with pytest.raises(ValueError, match="no input injection"):
        loopjax.scale_injection(ouro, 0.5)
    with pytest.raises(ValueError, match="no input injection"):
        ablation.injection_ablation(ouro, [IDS], [0.0, 1.0])
    with pytest.raises(ValueError, match="mode"):
        loopjax.scale_injection(huginn, 0.5, mode="median")


# ---- vmap over alphas == the loop ---------------------------------------------------------------------------

def test_vmap_over_alphas_equals_loop(huginn):
    alphas = [0.0, 0.5, 1.25]
    key = loopjax.prompt_key(0, 0)
    loop = np.asarray([loopjax.lambda1(loopjax.scale_injection(huginn, a), IDS, steps=T, key=key) for a in alphas])
    # vmap=True is jax.vmap(lambda a: loopjax.lambda1(loopjax.scale_injection(m, a), ids, key=k))(alphas), and
    # the same for the attribution
    kw = dict(steps_lambda1=T, attr_steps=T, orbit_steps=16)
    r_loop = ablation.injection_ablation(huginn, [IDS], alphas, **kw)
    r_vmap = ablation.injection_ablation(huginn, [IDS], alphas, vmap=True, **kw)
    np.testing.assert_allclose(r_vmap.lambda1, r_loop.lambda1, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(r_vmap.lambda1[:, 0], loop, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(r_vmap.contributions(), r_loop.contributions(), rtol=1e-6, atol=1e-7)
    assert r_vmap.orbits() == r_loop.orbits()


# ---- the summary and alpha* ---------------------------------------------------------------------------------

def test_crossing_alpha():
    c = ablation.crossing_alpha([0, 0.5, 1.0], [0.2, 0.1, -0.1])
    assert c.alpha_star == pytest.approx(0.75) and c.crossings == (pytest.approx(0.75),)
    assert c.directions == ("expanding->contracting",) and c.note == "one crossing"
    none = ablation.crossing_alpha([0, 1, 2], [-0.3, -0.2, -0.1])
    assert none.alpha_star is None and none.crossings == () and none.note == "no crossing in range"
    several = ablation.crossing_alpha([1.0, 0.0, 2.0, 3.0], [-1.0, 1.0, 1.0, -3.0])  # unsorted input
    # sorted: (0, 1), (1, -1), (2, 1), (3, -3)
    assert several.crossings == (pytest.approx(0.5), pytest.approx(1.5), pytest.approx(2.25))
    assert several.alpha_star == pytest.approx(0.5) and several.note.startswith("3 crossings")
    assert several.directions == ("expanding->contracting", "contracting->expanding", "expanding->contracting")
    exact = ablation.crossing_alpha([0, 1, 2], [0.1, 0.0, -0.1])
    assert exact.crossings == (1.0,) and exact.directions == ("expanding->contracting",)
    assert ablation.crossing_alpha([0, 1, 2], [0.1, float("nan"), -0.1]).alpha_star is None  # no claim across NaN
    # with standard errors: resolved only when both bracketing means are more than 2 s.e. from 0
    se = ablation.crossing_alpha([0, 0.5, 1.0], [0.2, 0.1, -0.1], sems=[0.01, 0.01, 0.08])
    assert se.crossings == c.crossings and se.resolved == (False,) and "not resolved" in se.note
    assert ablation.crossing_alpha([0, 0.5, 1.0], [0.2, 0.1, -0.1], sems=[0.01, 0.01, 0.01]).resolved == (True,)
    with pytest.raises(ValueError, match="distinct"):
        ablation.crossing_alpha([0, 0], [1, -1])
    assert json.loads(json.dumps(c.to_json())) == c.to_json()


def test_summarize_ablation(huginn):
    alphas = [1.0, 0.0, 0.5]  # unsorted on purpose
    r = ablation.injection_ablation(huginn, [IDS, IDS2], alphas, steps_lambda1=T, attr_steps=T, orbit_steps=16,
                                    k=1, spectrum_steps=T, seed=3)
    s = summarize_ablation(r)
    assert loopjax.summarize(r).to_json() == s.to_json()   # registered for AblationResult
    assert s.alphas == [0.0, 0.5, 1.0] and s.n_prompts == 2 and s.names[:2] == ["adapter", "core_block.0"]
    order = np.argsort(alphas)
    lam = r.lambda1[order]
    for j in range(3):
        ref = loopjax.summarize(list(lam[j]), kind="lambda1")
        assert (s.lambda1_mean[j], s.lambda1_sem[j], s.lambda1_std[j]) == (ref.mean, ref.sem, ref.std)
        c = r.contributions()[order[j]]  # (P, n_sub)
        np.testing.assert_allclose(s.adapter_mean[j], c[:, 0].mean(), rtol=1e-12)
        np.testing.assert_allclose(s.core_block0_mean[j], c[:, 1].mean(), rtol=1e-12)
        # k=1 attribution telescopes: its total is λ1 of the same start, probe and T
        np.testing.assert_allclose(s.attribution_total_mean[j], s.lambda1_mean[j], rtol=1e-4, atol=1e-5)
        assert sum(s.orbit_counts[j].values()) == 2
        assert s.spectrum_summaries[j]["k"] == 1
        np.testing.assert_allclose(s.spectrum_summaries[j]["lambda1_mean"], s.lambda1_mean[j], rtol=1e-12)
    assert s.crossing == ablation.crossing_alpha(s.alphas, s.lambda1_mean, s.lambda1_sem).to_json()
    # the JSON round trip, and the functional form from the per-alpha lists
    back = AblationSummary.from_json(json.loads(json.dumps(s.to_json())))
    assert back.to_json() == s.to_json()
    # the saved units (JSON) summarise to the same numbers
    again = summarize_ablation(ablation.AblationResult.from_json(json.loads(json.dumps(r.to_json()))))
    np.testing.assert_allclose(again.contribution_mean, s.contribution_mean, rtol=1e-12)
    assert again.lambda1_mean == s.lambda1_mean and again.orbit_counts == s.orbit_counts
    assert s.rows()[2][0].startswith("alpha*")


# ---- loopjax ablate -----------------------------------------------------------------------------------------

def test_cli_ablate_writes_everything_and_resumes(tmp_path, monkeypatch, capsys, huginn):
    monkeypatch.setenv("LOOPJAX_COMPILE_CACHE", "0")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Water is composed of\nThe sky is blue\n")  # 4 tokens each under the simple tokenizer
    out = tmp_path / "out"
    argv = ["ablate", "--model", "builtin:huginn-tiny-random", "--prompts", prompts, "--injection-scale", "0,0.5,1",
            "--steps", str(T), "--orbit-steps", "16", "--out", out, "--quiet"]
    computed = []

    def interrupt_after_two(unit):
        computed.append(unit)
        if len(computed) == 2:
            raise KeyboardInterrupt

    assert cli.main([str(a) for a in argv], hooks=Hooks(after_unit=interrupt_after_two)) == 130
    folder = out / "ablation"
    assert (folder / "RUNNING").is_file() and not (folder / "results.json").exists()
    assert sorted(p.stem for p in (folder / "prompts").glob("*.json")) == ["a00-p000", "a00-p001"]
    computed.clear()
    assert cli.main([str(a) for a in argv + ["--resume"]], hooks=Hooks(after_unit=computed.append)) == 0
    assert computed == ["a01-p000", "a01-p001", "a02-p000", "a02-p001"]
    for name in ("results.json", "index.md", "lambda1_vs_alpha.png", "contributions_vs_alpha.png"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    res = json.loads((folder / "results.json").read_text())
    assert res["status"] == "complete" and res["alphas"] == [0.0, 0.5, 1.0]
    assert res["summary"]["kind"] == "ablation" and res["crossing"] == res["summary"]["crossing"]
    index = (folder / "index.md").read_text()
    assert "lambda1_vs_alpha.png" in index and "contributions_vs_alpha.png" in index and "α*" in index
    # every number is the library's: the same run through loopjax.analysis.ablation
    ids = [jnp.asarray(p["token_ids"], jnp.int32) for p in res["per_alpha"][0]["prompts"]]
    lib = ablation.injection_ablation(huginn, ids, [0.0, 0.5, 1.0], steps_lambda1=T, attr_steps=T, orbit_steps=16)
    np.testing.assert_array_equal(np.asarray(res["lambda1"]), lib.lambda1)
    assert res["summary"] == json.loads(json.dumps(summarize_ablation(lib).to_json()))
    capsys.readouterr()
    # Ouro: one line, exit status 2, nothing written
    assert cli.main(["ablate", "--model", "builtin:ouro-tiny-random", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no input injection" in err[0]
    assert not (tmp_path / "o").exists()
