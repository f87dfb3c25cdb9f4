"""loopjax.summarize: the numbers the CLI writes as results.json["summary"] are the library's, for results
computed in a notebook with the documented key scheme; and each summary field against a hand computation."""
import json

import jax
import numpy as np
import pytest

import loopjax
from loopjax import cli
from loopjax.summary import summary_from_json

TEXTS = ["Water is composed of", "The sky is blue"]  # 4 tokens each under the hash tokenizer


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    f = tmp_path_factory.mktemp("p") / "prompts.txt"
    f.write_text("\n".join(TEXTS) + "\n")
    return f


def _ids(model, text):
    from loopjax.io.tokenizer import get_tokenizer

    return np.asarray(get_tokenizer(None, model.config.vocab_size).encode(text), np.int32)


def _cli_summary(tmp_path, argv, analysis):
    assert cli.main([str(a) for a in argv] + ["--out", str(tmp_path), "--quiet", "--seed", "7"]) == 0
    return json.loads((tmp_path / analysis / "results.json").read_text())["summary"]


def _close(a, b, path=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-6, rel=1e-6), path
    else:
        assert a == b, path


@pytest.mark.parametrize("model_name", ["builtin:ouro-tiny-random", "builtin:huginn-tiny-random"])
def test_spectrum_and_attribution_summaries_equal_the_cli(model_name, prompts, tmp_path):
    model = loopjax.load(model_name)
    ids = [_ids(model, t) for t in TEXTS]
    keys = [loopjax.prompt_key(7, i) for i in range(len(ids))]
    spec = [loopjax.spectrum(model, x, k=4, steps=6, key=kk) for x, kk in zip(ids, keys)]
    orbits = [loopjax.orbit(model, x, steps=64, key=kk) for x, kk in zip(ids, keys)]
    seeds = [loopjax.spectrum_probe_seeds(model, x, k=4, steps=6, key=kk, n_seeds=2) for x, kk in zip(ids, keys)]
    got = _cli_summary(tmp_path, ["spectrum", "--model", model_name, "--prompts", prompts, "--k", 4, "--steps", 6,
                                  "--probe-seeds", 2], "spectrum")
    _close(loopjax.summarize(spec, orbits=orbits, probe_seed_results=seeds).to_json(), got)

    attr = [loopjax.attribution(model, x, k=2, steps=5, key=loopjax.prompt_key(7, i), relative=True)  # CLI default
            for i, x in enumerate(ids)]
    got = _cli_summary(tmp_path, ["attribute", "--model", model_name, "--prompts", prompts, "--k", 2, "--steps", 5],
                       "attribution")
    _close(loopjax.summarize(attr).to_json(), got)


def test_sweep_summary_equals_the_cli(prompts, tmp_path):
    from conftest import FIXTURES

    ckpts = [FIXTURES / "ouro-tiny", FIXTURES / "ouro-tiny-bf16-sharded"]
    lam = []
    for c in ckpts:
        m = loopjax.load(c)
        lam.append([loopjax.lambda1(m, _ids(m, t), steps=5, key=loopjax.prompt_key(7, i)) for i, t in enumerate(TEXTS)])
    got = _cli_summary(tmp_path, ["sweep", "--checkpoints", *ckpts, "--prompts", prompts, "--steps", 5], "sweep")
    _close(loopjax.summarize(lam).to_json(), got)


def test_batched_call_is_the_key_scheme():
    """spectrum on a (B, L) batch with key(S) gives row b exactly prompt_key(S, b) on that row alone."""
    model = loopjax.load("builtin:huginn-tiny-random")
    tokens = np.array([[5, 6, 7], [8, 9, 10]], np.int32)
    batch = loopjax.spectrum(model, tokens, k=3, steps=4, key=jax.random.key(7))
    for b in range(2):
        one = loopjax.spectrum(model, tokens[b], k=3, steps=4, key=loopjax.prompt_key(7, b))
        np.testing.assert_array_equal(np.asarray(batch.exponents[b]), np.asarray(one.exponents))
    # similarity / convergence of a prompt start from the z0 spectrum used (Huginn's random state)
    key = loopjax.prompt_key(7, 1)
    conv = loopjax.convergence(model, tokens[1], steps=2, key=key)
    one = loopjax.spectrum(model, tokens[1], k=3, steps=4, key=key)
    np.testing.assert_allclose(float(conv["state_norm"][0]), float(one.state_norms[0]), rtol=1e-6)
    # a batched result summarizes as its rows
    assert loopjax.summarize(batch).n_prompts == 2


def test_summary_fields_by_hand():
    ex = np.array([[0.3, -0.1, 0.2], [0.1, 0.05, -0.4]])  # two prompts, k=3, column order
    results = [loopjax.LyapunovResult(exponents=e, log_growth=np.tile(e, (4, 1)), running=np.tile(e, (4, 1)),
                                      final_state=None, final_probes=None, state_norms=np.ones(5)) for e in ex]
    s = loopjax.summarize(results)
    srt = -np.sort(-ex, axis=1)
    assert s.lambda1_mean == pytest.approx(0.2) and s.lambda1_std == pytest.approx(0.1)
    assert s.fraction_positive == pytest.approx(4 / 6)
    assert s.mean_spectrum_sorted == pytest.approx(srt.mean(0).tolist())
    assert s.sum_of_exponents_mean == pytest.approx((0.4 - 0.25) / 2)
    assert summary_from_json(json.loads(json.dumps(s.to_json()))).to_json() == s.to_json()  # NaN <-> null
    lam = loopjax.summarize([0.1, 0.3])
    assert lam.kind == "lambda1" and lam.mean == pytest.approx(0.2) and lam.sem == pytest.approx(0.1)
    sw = loopjax.summarize([[0.1, 0.3], [0.5, 0.5]])
    assert sw.std_across_checkpoints == pytest.approx(0.15) and sw.mean_per_prompt_std == pytest.approx(0.05)
    with pytest.raises(ValueError, match="at least one"):
        loopjax.summarize([])


def test_summarize_looks_the_kind_up_by_type_and_plain_dicts_name_theirs():
    from loopjax.summary import REGISTRY, kind_of

    assert kind_of(0.1) == "lambda1" and kind_of([0.1, 0.2]) == "sweep"
    conv = [{"step_norm": [1.0, 0.5, 0.25], "state_norm": [1.0, 1.0, 1.0, 1.0]}]
    with pytest.raises(ValueError, match="pass kind="):
        loopjax.summarize(conv)
    assert loopjax.summarize(conv, kind="convergence").step_norm_first_mean == 1.0
    with pytest.raises(ValueError, match="cannot summarize results of type str"):
        loopjax.summarize(["x"])
    assert set(REGISTRY) == {"spectrum", "attribution", "lambda1", "sweep", "similarity", "convergence", "tokens",
                             "ablation", "regime", "complete", "dynamics"}
