"""Loading and conversion: round trips (HF -> orbax -> load, params -> HF names) and clear errors."""
import json
import shutil

import jax
import numpy as np
import pytest
from safetensors import safe_open

import loopjax

from checkpoints import HUGINN_UNTIED, huginn_tensors, write_checkpoint
from conftest import CASES, FIXTURES, expected


def _leaves(model):
    return {jax.tree_util.keystr(p): np.asarray(w) for p, w in jax.tree_util.tree_flatten_with_path(model.params)[0]}


def _stored(ckpt_dir):
    out = {}
    for file in sorted(ckpt_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="flax") as f:
            out.update({n: np.asarray(f.get_tensor(n)) for n in f.keys()})
    return out


@pytest.mark.parametrize("case", CASES)
def test_orbax_roundtrip_is_bit_identical(case, tmp_path):
    direct = loopjax.load(FIXTURES / case)
    out = loopjax.convert(FIXTURES / case, tmp_path / "orbax")
    again = loopjax.load(out)
    assert again.config == direct.config
    a, b = _leaves(direct), _leaves(again)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    ids = expected(case)["input_ids"]
    key = jax.random.key(0)
    np.testing.assert_array_equal(loopjax.logits(direct, ids, key=key), loopjax.logits(again, ids, key=key))


@pytest.mark.parametrize("case", CASES)
def test_export_gives_back_every_stored_tensor(case):
    stored = _stored(FIXTURES / case)
    exported = loopjax.to_hf_tensors(loopjax.load(FIXTURES / case))
    assert set(stored) - set(exported) <= {"freqs_cis"}      # the one tensor the converter ignores by design
    for name, w in exported.items():
        np.testing.assert_array_equal(w, stored[name], err_msg=name)


def test_convert_refuses_to_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        loopjax.convert(FIXTURES / "ouro-tiny", tmp_path / "out")


def test_huginn_with_duplicate_lm_head_loads(tmp_path):
    """The public huginn-0125 upload holds lm_head.weight beside the tied wte (two copies)."""
    cfg = {**HUGINN_UNTIED, "tie_embeddings": True}
    ckpt = write_checkpoint(tmp_path, cfg, huginn_tensors(cfg, np.random.default_rng(0), lm_head_copy=True))
    model = loopjax.load(ckpt)
    assert "lm_head" not in model.params


def _copy(case, tmp_path):
    dst = tmp_path / case
    shutil.copytree(FIXTURES / case, dst)
    return dst


def test_missing_shard_is_named(tmp_path):
    ckpt = _copy("ouro-tiny-bf16-sharded", tmp_path)
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        loopjax.load(ckpt)


def test_all_tensor_mismatches_reported_together(tmp_path):
    stored = _stored(FIXTURES / "ouro-tiny")
    del stored["model.layers.1.mlp.up_proj.weight"]                         # missing
    stored["model.layers.9.mlp.up_proj.weight"] = np.zeros((160, 64), np.float32)   # unexpected
    stored["model.norm.weight"] = np.zeros((65,), np.float32)                 # mis-shaped
    cfg = json.loads((FIXTURES / "ouro-tiny" / "config.json").read_text())
    ckpt = write_checkpoint(tmp_path / "bad", cfg, stored)
    with pytest.raises(ValueError) as err:
        loopjax.load(ckpt)
    msg = str(err.value)
    for needle in ("layers_1.up_proj.kernel", "model.layers.9.mlp.up_proj.weight", "model.norm.weight",
                   "checkpoint [65], config expects [64]"):
        assert needle in msg, msg


def test_config_shape_mismatch(tmp_path):
    ckpt = _copy("huginn-tiny", tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 128}))
    with pytest.raises(ValueError, match="mlp.fc.weight: checkpoint \\[320, 64\\], config expects \\[256, 64\\]"):
        loopjax.load(ckpt)


@pytest.mark.parametrize("edit, error, match", [
    (lambda c: {**c, "model_type": "llama"}, ValueError, "unknown model_type 'llama'"),
    (lambda c: {k: v for k, v in c.items() if k not in ("rope_theta", "total_ut_steps")}, ValueError,
     "missing required field\\(s\\): rope_theta, total_ut_steps"),
    (lambda c: {**c, "hidden_act": "gelu"}, NotImplementedError, "hidden_act 'gelu'"),
])
def test_bad_config(tmp_path, edit, error, match):
    ckpt = _copy("ouro-tiny", tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(edit(cfg)))
    with pytest.raises(error, match=match):
        loopjax.load(ckpt)


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        loopjax.load(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        loopjax.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "ouro"}))
    with pytest.raises(ValueError, match="missing required field"):
        loopjax.load(tmp_path)
    with pytest.raises(ValueError, match="unknown built-in model"):
        loopjax.load("builtin:nothing")


def test_no_safetensors_no_pickle(tmp_path):
    """Without safetensors, a pytorch_model.bin is read only by loopjax's restricted state-dict reader
    (tests/test_torch_pickle.py), never unpickled: here it is not even a torch archive, and is refused."""
    ckpt = _copy("ouro-tiny", tmp_path)
    (ckpt / "model.safetensors").rename(ckpt / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin is not a readable PyTorch state dict: it is not a zip"):
        loopjax.load(ckpt)
    (ckpt / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        loopjax.load(ckpt)


def test_bad_inputs_fail_early():
    m = loopjax.load(FIXTURES / "ouro-tiny")
    ids = expected("ouro-tiny")["input_ids"]
    with pytest.raises(ValueError, match="token id\\(s\\) \\[320\\] out of vocabulary \\[0, 320\\)"):
        loopjax.logits(m, np.array([[1, 2, 320]]))
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        loopjax.logits(m, ids, steps=0)
    with pytest.raises(ValueError, match="input_ids must be integers"):
        loopjax.logits(m, ids.astype(np.float32))
    bad = np.zeros((2, 7, 64)); bad[0, 3, 5] = np.nan
    with pytest.raises(FloatingPointError, match="init_state contains NaN"):
        loopjax.logits(m, ids, init_state=bad)
    with pytest.raises(ValueError, match="init_state has shape \\(2, 7, 32\\)"):
        loopjax.logits(m, ids, init_state=np.zeros((2, 7, 32)))
    with pytest.raises(ValueError, match="k=449 probes exceed the state dimension d=448"):
        loopjax.spectrum(m, ids[0], k=449, steps=2)


def test_builtin_models_load_and_are_reproducible():
    for name in ("builtin:ouro-tiny-random", "builtin:huginn-tiny-random"):
        a, b = loopjax.load(name), loopjax.load(name)
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
            np.testing.assert_array_equal(x, y)
        out = loopjax.logits(a, np.array([[1, 2, 3, 4]]), key=jax.random.key(1))
        assert out.shape == (1, 4, a.config.vocab_size) and bool(np.isfinite(out).all())


def test_convert_keeps_the_tokenizer(tmp_path):
    ckpt = _copy("ouro-tiny", tmp_path)
    (ckpt / "tokenizer.json").write_text('{"version": "1.0"}')
    out = loopjax.convert(ckpt, tmp_path / "orbax")
    assert (out / "tokenizer.json").read_text() == '{"version": "1.0"}'
