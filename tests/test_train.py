"""loopjax.train: tokenizer, batches, optimisation, metrics, resume, HF round trip, no-injection model."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import loopjax
from loopjax.train import TrainConfig, data, forward, train, trainer
from loopjax.train import injection_ablation as ablation_mod

TINY = dict(hidden=32, layers=1, heads=2, intermediate=64, vocab_size=300, seq_len=16, batch=4, loops=3,
            heldout_windows=8, lambda1_prompts=2, lambda1_steps=4, backprop_depth=2, warmup=0, lr=1e-2, steps=8,
            lambda1_every=4)
# one recipe for the optimisation and the resume tests: they share the compiled steps (cached per recipe)
HUGINN = TrainConfig(arch="huginn", **TINY)


def tiny_model(arch, vocab=300, seed=0):
    config = forward.make_config(arch, vocab_size=vocab, hidden=32, layers=1, heads=2, kv_heads=2, intermediate=64,
                                 loops=3, prelude_layers=1, coda_layers=1)
    return loopjax.random_model(config, jax.random.key(seed))


def test_tokenizer_trains_encodes_and_decodes():
    text = ("The quick brown fox jumps over the lazy dog. Loops iterate a map over the hidden state.\n\n"
            "Unicode survives byte-level BPE: naïve café, 日本語, emoji 🙂.") * 3
    docs = [d for d in text.split("\n\n")]
    tok = data.train_tokenizer(docs, vocab_size=300)
    assert tok.get_vocab_size() <= 300 and tok.token_to_id(data.EOS) == 0
    for d in docs:
        ids = tok.encode(d, add_special_tokens=False).ids
        assert ids and max(ids) < 300 and min(ids) >= 0
        assert tok.decode(ids) == d
    stream = data.encode_docs(tok, docs)
    assert stream.dtype == np.int32 and stream[-1] == 0 and (stream == 0).sum() == len(docs)


def test_corpus_split_and_batches_are_deterministic():
    corpus = data.load_corpus()
    assert corpus.train_docs and corpus.heldout_docs
    held = sum(map(len, corpus.heldout_docs)) / (sum(map(len, corpus.heldout_docs)) + sum(map(len, corpus.train_docs)))
    assert 0.05 <= held < 0.15
    assert corpus.digest == data.load_corpus().digest
    tokens = np.arange(1000, dtype=np.int32)
    a = data.sample_batch(tokens, 7, batch=4, seq_len=16, seed=3)
    assert a.shape == (4, 17) and np.array_equal(a, data.sample_batch(tokens, 7, batch=4, seq_len=16, seed=3))
    assert not np.array_equal(a, data.sample_batch(tokens, 8, batch=4, seq_len=16, seed=3))
    assert np.all(np.diff(a, axis=1) == 1)      # contiguous windows


@pytest.mark.parametrize("arch", ["ouro", "huginn"])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(arch):
    cfg = HUGINN if arch == "huginn" else TrainConfig(arch=arch, **TINY)
    model = tiny_model(arch)
    train_step, objective, _ = trainer.build_steps(cfg, model.config)
    tx, _ = trainer.make_optimizer(cfg)
    params, opt_state = model.params, tx.init(model.params)
    batch = jnp.asarray(np.random.default_rng(0).integers(1, 300, size=(4, 17)), jnp.int32)
    key, loops = jax.random.key(1), jnp.asarray(3, jnp.int32)   # fixed z0 and loop count: a fixed objective
    before = float(objective(params, batch, key, loops)["loss"])
    for _ in range(8):
        params, opt_state, out = train_step(params, opt_state, batch, key, loops)
    after = float(objective(params, batch, key, loops)["loss"])
    assert np.isfinite(out["grad_norm"]) and after < before - 0.1, (before, after)


def test_metrics_checkpoints_and_resume_equal_an_uninterrupted_run(tmp_path):
    """Batches, loop counts and z0 are functions of (seed, step), and the resumed run restores params and
    optimiser state exactly from the step-4 checkpoint, so the same compiled steps replay the same floats:
    the final params and every recorded number are bit-identical (exact equality, no tolerance)."""
    cfg = HUGINN
    train(cfg, tmp_path / "whole")
    out = train(cfg, tmp_path / "cut", stop_after=6)                  # "killed" after 6 updates
    assert out["status"] == "interrupted"
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    resumed = train(cfg, tmp_path / "cut", resume=True)
    assert resumed["resumed_from_step"] == 4

    m = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    measured = [r["step"] for r in m["records"] if "lambda1" in r]
    assert measured == [0, 4, 8] and m["status"] == "complete"
    assert len(m["records"][0]["lambda1"]["per_prompt"]) == 2 and np.isfinite(m["records"][-1]["lambda1"]["mean"])
    assert m["unigram_baseline"] > 0 and all(np.isfinite(r["loss"]) for r in m["records"])

    m2 = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert m2["records"] == m["records"]
    a, b = loopjax.load(tmp_path / "whole"), loopjax.load(tmp_path / "cut")
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    ckpts = sorted((tmp_path / "whole" / "checkpoints").glob("step_*"))
    assert [p.name for p in ckpts] == ["step_000000", "step_000004", "step_000008"]
    assert not any((p / "train_state").exists() for p in ckpts)
    state = sorted(p.name for p in (tmp_path / "whole" / "train_state").iterdir())
    assert state == ["8"]   # orbax CheckpointManager: only the latest training state is kept
    ckpt = loopjax.load(tmp_path / "whole" / "checkpoints" / "step_000004")
    assert (tmp_path / "whole" / "checkpoints" / "step_000004" / "tokenizer.json").is_file()
    assert jax.tree.structure(ckpt.params) == jax.tree.structure(a.params)
    with pytest.raises(ValueError, match="another recipe"):
        train(dataclasses.replace(cfg, steps=9), tmp_path / "cut", resume=True)


@pytest.mark.parametrize("arch", ["ouro", "huginn", "huginn-noinject"])
def test_hf_round_trip_gives_the_same_logits(arch, tmp_path):
    model = tiny_model(arch)
    ids = jnp.asarray([[5, 17, 42, 7, 99, 3]], jnp.int32)
    key = jax.random.key(4)
    mine = forward.forward_logits(model.params, model.config, ids, key=key)
    forward.save_hf_checkpoint(model, tmp_path / "m", arch=arch)
    loaded = loopjax.load(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text()).get("injection_type") == (
        "none" if arch == "huginn-noinject" else ("linear" if arch == "huginn" else None))
    theirs = loopjax.logits(loaded, ids, key=key)
    np.testing.assert_allclose(np.asarray(theirs), np.asarray(mine), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(loopjax.logits(model, ids, key=key)), np.asarray(mine), atol=1e-5, rtol=0)


def test_noinject_loop_map_does_not_depend_on_the_injection():
    ids = jnp.asarray([5, 17, 42, 7, 99], jnp.int32)
    tangents = {}
    for arch in ("huginn", "huginn-noinject"):
        g, z0, e = forward.injection_loop_step(tiny_model(arch), arch, ids, key=jax.random.key(0))
        v = jax.random.normal(jax.random.key(1), e.shape)
        _, tangents[arch] = jax.jit(lambda e_, v_: jax.jvp(lambda x: g(z0, x), (e_,), (v_,)))(e, v)
    assert np.all(np.asarray(tangents["huginn-noinject"]) == 0.0)
    assert np.abs(np.asarray(tangents["huginn"])).max() > 1e-3      # the check can fail
    # the loaded no-injection model's own context carries e = 0 too
    assert np.all(np.asarray(loopjax.context(tiny_model("huginn-noinject"), ids)["injection"]) == 0.0)


def test_lambda1_regulariser_is_differentiable():
    model = tiny_model("ouro")
    ids = jnp.asarray([5, 17, 42, 7, 99, 3], jnp.int32)
    lam, grads = jax.value_and_grad(lambda p: forward.lambda1_probe(p, model.config, ids, horizon=4,
                                                                    key=jax.random.key(2)))(model.params)
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
    assert np.isfinite(float(lam)) and all(np.isfinite(norms)) and max(norms) > 0


@pytest.mark.parametrize("arch", [a for a in forward.HUGINN_INJECTIONS if a not in ("huginn", "huginn-noinject")])
def test_injection_variants_round_trip_and_read_the_prompt(arch, tmp_path):
    """Every ablation variant saves and loads to the same logits, and its output depends on the prompt (the
    degenerate `none` model is the one that does not: test_noinject_...)."""
    model = tiny_model(arch)
    ids = jnp.asarray([5, 17, 42, 7, 99, 3], jnp.int32)
    key = jax.random.key(4)
    forward.save_hf_checkpoint(model, tmp_path / "m", arch=arch)
    loaded = loopjax.load(tmp_path / "m")
    assert loaded.config.injection_type == forward.HUGINN_INJECTIONS[arch]
    np.testing.assert_array_equal(np.asarray(loopjax.logits(loaded, ids, key=key)),
                                  np.asarray(loopjax.logits(model, ids, key=key)))
    assert ablation_mod.prompt_sensitivity(model, ids, key) > 1e-4
    injection = model.params.get("adapter", {})
    want = {"huginn-add": set(), "huginn-gate": {"gate"}, "huginn-diagonal": {"A_log", "dt_bias", "B"},
            "huginn-inject-once": {"kernel"}}[arch]
    assert set(injection) == want


def test_inject_once_starts_from_the_injection_and_its_loop_ignores_it():
    model = tiny_model("huginn-inject-once")
    ids = jnp.asarray([5, 17, 42, 7, 99], jnp.int32)
    e = loopjax.context(model, ids)["injection"]
    np.testing.assert_array_equal(np.asarray(loopjax.init_state(model, ids, key=jax.random.key(3))), np.asarray(e))
    g, z0, e = forward.injection_loop_step(model, "huginn-inject-once", ids)
    v = jax.random.normal(jax.random.key(1), e.shape)
    assert np.all(np.asarray(jax.jvp(lambda x: g(z0, x), (e,), (v,))[1]) == 0.0)
    assert model.arch.injection_fields(model.config) == ()


def test_identity_adapter_init_sets_only_the_z_half():
    """adapter_init="identity": the adapter kernel's first H rows (the z half) are I, everything else is the
    reference draw of the same seed; archs without that adapter refuse it, naming the field."""
    ref_cfg = TrainConfig(arch="huginn-inject-once", **TINY)
    cfg = dataclasses.replace(ref_cfg, adapter_init="identity")
    config = forward.make_config(cfg.arch, vocab_size=300, hidden=32, layers=1, heads=2, kv_heads=2, intermediate=64,
                                 loops=3, prelude_layers=1, coda_layers=1)
    ref, ident = trainer.initial_model(ref_cfg, config), trainer.initial_model(cfg, config)
    k_ref, k_id = np.asarray(ref.params["adapter"]["kernel"]), np.asarray(ident.params["adapter"]["kernel"])
    assert k_id.shape == (64, 32) and np.array_equal(k_id[:32], np.eye(32)) and np.array_equal(k_id[32:], k_ref[32:])
    assert not np.allclose(k_ref[:32], np.eye(32))
    same = jax.tree.map(np.array_equal, {k: v for k, v in ref.params.items() if k != "adapter"},
                        {k: v for k, v in ident.params.items() if k != "adapter"})
    assert all(jax.tree.leaves(same))
    for arch in ("huginn-add", "huginn-diagonal", "ouro", "parcae"):
        with pytest.raises(ValueError, match="adapter_init"):
            TrainConfig(arch=arch, adapter_init="identity")
    with pytest.raises(ValueError, match="adapter_init"):
        TrainConfig(arch="huginn", adapter_init="eye")
    # in the ablation preset it applies to the variants with the adapter only
    base = TrainConfig(arch="huginn", adapter_init="identity")
    assert [ablation_mod.variant_config(base, v, 1).adapter_init for v in ("linear", "add", "diagonal", "inject-once")] \
        == ["identity", "reference", "reference", "identity"]


def test_diagonal_variant_is_parcaes_injection():
    """huginn-diagonal's adapter is z exp(-dt A) + dt e B^T (PARCAE.md 4.8), written out here in NumPy."""
    model = tiny_model("huginn-diagonal")
    p = {k: np.asarray(v, np.float64) for k, v in model.params["adapter"].items()}
    z, e = (np.asarray(jax.random.normal(jax.random.key(i), (5, 32)), np.float64) for i in (1, 2))
    dt = np.log1p(np.exp(p["dt_bias"]))
    want = z * np.exp(-dt * np.exp(p["A_log"])) + dt * (e @ p["B"].T)
    ctx = {**loopjax.context(model, jnp.arange(5)), "injection": jnp.asarray(e, jnp.float32)}
    got = model.arch.sublayers(model.config)[0][1](model.params, model.config, ctx, jnp.asarray(z, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_ablation_statistics():
    curve = {"steps": [0, 4], "mean": [0.1, -0.2], "sem": [0.01, 0.01]}

    def run(lam, kind, loss=5.0):
        final = {"verdicts": {kind: 2}, "majority": kind, "lambda1": lam, "prompt_sensitivity": 1.0,
                 "attribution": {"names": ["adapter"], "mean": [lam]}}
        return {"heldout_loss": loss, "unigram_baseline": 6.0, "final": final, "curve": curve}

    a = ablation_mod.across_seeds({0: run(-0.50, "fixed_point"), 1: run(-0.52, "fixed_point"),
                                   2: run(-0.48, "fixed_point")})
    b = ablation_mod.across_seeds({0: run(0.10, "chaotic"), 1: run(0.12, "chaotic"), 2: run(0.08, "chaotic")})
    c = ablation_mod.across_seeds({0: run(-0.40, "fixed_point"), 1: run(-0.70, "quasi_periodic"),
                                   2: run(-0.55, "fixed_point", 7.0)})
    assert a["lambda1"]["mean"] == pytest.approx(-0.50) and a["lambda1"]["se"] == pytest.approx(0.02 / np.sqrt(3))
    assert a["verdicts"] == {"fixed_point": 6} and c["beats_unigram"] == [True, True, False]
    assert ablation_mod.compare(b, a) == {"regime_differs": True, "lambda1_difference": pytest.approx(0.6),
                                          "lambda1_differs_beyond_seed_noise": True,
                                          "both_learned_in_every_seed": True}
    same = ablation_mod.compare(c, a)   # one seed's majority is a's: not beyond seed noise
    assert not same["regime_differs"] and not same["lambda1_differs_beyond_seed_noise"]
    assert not same["both_learned_in_every_seed"]          # c's seed 2 is above the unigram baseline
    one = ablation_mod.across_seeds({0: run(-0.5, "fixed_point")})
    assert one["lambda1"]["se"] is None and ablation_mod.compare(one, a)["lambda1_differs_beyond_seed_noise"] is None
    with pytest.raises(ValueError, match="--variants"):
        ablation_mod.check_variants(["linear", "sideways"])


def test_injection_ablation_preset_runs_end_to_end(tmp_path):
    """A tiny `loopjax train --preset injection-ablation` over three variants and two seeds: every run trained,
    evaluated (regime verdicts, attribution, prompt sensitivity), ablation.json and both figures written."""
    from loopjax.cli import main

    out = tmp_path / "abl"
    argv = ["train", "--preset", "injection-ablation", "--variants", "linear,inject-once,none", "--seeds", "0,1",
            "--out", str(out), "--quiet", "--regime-steps", "256", "--hidden", "32", "--layers", "1", "--heads", "2",
            "--intermediate", "64", "--vocab-size", "300", "--seq-len", "16", "--batch", "4", "--loops", "3",
            "--lambda1-prompts", "2", "--lambda1-steps", "4", "--backprop-depth", "2", "--warmup", "0",
            "--steps", "4", "--lambda1-every", "2"]
    assert main(argv) == 0
    res = json.loads((out / "ablation.json").read_text())
    assert list(res["variants"]) == ["linear", "inject-once", "none"] and res["settings"]["seeds"] == [0, 1]
    for v, s in res["variants"].items():
        assert set(s["per_seed"]) == {"0", "1"} and s["across_seeds"]["curve"]["steps"] == [0, 2, 4]
        for r in s["per_seed"].values():
            assert sum(r["final"]["verdicts"].values()) == 2 and len(r["final"]["per_prompt"]) == 2
            assert r["final"]["attribution"]["names"][0] == "adapter"
    assert res["variants"]["none"]["across_seeds"]["prompt_sensitivity"]["mean"] == 0.0
    assert res["variants"]["inject-once"]["across_seeds"]["prompt_sensitivity"]["mean"] > 0.0
    assert res["variants"]["inject-once"]["num_params_minus_linear"] == 0 and "vs_linear" in res["variants"]["none"]
    assert all((out / f).stat().st_size > 1000 for f in res["figures"]) and len(res["figures"]) == 2


@pytest.mark.parametrize("name", ["ouro-tiny", "huginn-tiny", "huginn-tiny-noinject", "parcae-tiny",
                                  "huginn-tiny-inject-once"])
def test_shipped_builtins_are_the_trained_models_they_claim(name):
    """The trained built-ins load with their own BPE tokenizer, and their shipped (bf16) weights give the
    held-out loss their training.json states; the injected models beat the unigram baseline."""
    import json

    import loopjax
    from loopjax.io.loading import BUILTIN_DIR
    from loopjax.io.tokenizer import get_tokenizer
    from loopjax.train import builtins
    from loopjax.train.trainer import TrainConfig

    folder = BUILTIN_DIR / name
    info = json.loads((folder / "training.json").read_text())
    model = loopjax.load(f"builtin:{name}")
    assert loopjax.source_dir(f"builtin:{name}") == folder
    tok = get_tokenizer(folder, model.config.vocab_size)
    ids = tok.encode("Once upon a time, in a kingdom far away;")
    assert "simple" not in tok.name and 3 < len(ids) < 20 and max(ids) < model.config.vocab_size
    cfg = builtins.builtin_config(name)
    assert json.loads((folder / "train_recipe.json").read_text()) == json.loads(json.dumps(cfg.to_json()))
    loss = builtins.heldout_loss(model, cfg, folder)
    assert loss == pytest.approx(info["heldout_loss_shipped"], abs=1e-4)
    if name != "huginn-tiny-noinject":   # the no-injection Huginn never sees its input (docs/training.md)
        assert loss < info["unigram_baseline"] - 1.0
    if name == "huginn-tiny-inject-once":   # the control's loop never sees e, but its output reads the prompt
        from loopjax.train.injection_ablation import prompt_sensitivity
        assert prompt_sensitivity(model, jnp.asarray(ids), jax.random.key(0)) > 0.05
