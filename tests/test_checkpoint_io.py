"""loopjax.io.checkpoint file I/O: safetensors and orbax, read and written, and the one-line errors for broken files."""
import errno
import json
import os
import pickle
import shutil
import struct

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from loopjax.io import checkpoint
from loopjax.io.checkpoint import (read_json, read_orbax_marker, read_orbax_params, read_tensors, safetensors_header,
                                tensor_index, write_hf_checkpoint, write_orbax_checkpoint)
from loopjax.engine.dtypes import parse_dtype

CONFIG = {"model_type": "ouro", "hidden_size": 8}
# when a read fails, orbax leaves coroutines and tensorstore callbacks behind that report "Event loop is closed"
# whenever they are collected, possibly during a later test: orbax's noise, not a failure of these tests
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _raw_safetensors(path, header: dict, data: bytes):
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def _tensors(rng):
    return {"model.embed.weight": rng.normal(size=(11, 8)), "model.norm.weight": rng.normal(size=(8,)),
            "model.layers.0.w": rng.normal(size=(8, 16)), "model.layers.1.w": rng.normal(size=(16, 8)),
            "lm_head.weight": rng.normal(size=(11, 8)), "steps": np.arange(5, dtype=np.int32)}


def _leftovers(parent, keep=()):
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


# ---- safetensors: broken files ----

def test_text_file_renamed_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_text("This is not a model, it is a text file that someone renamed.\n")
    with pytest.raises(ValueError, match=r"is not a valid safetensors file: header too large$") as e:
        safetensors_header(path)
    assert str(e.value).startswith(str(path))


def test_huge_header_length_is_not_a_memory_error(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(ValueError, match="header too large") as e:
        safetensors_header(path)
    assert str(e.value).startswith(str(path))


def test_tiny_file(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"abc")
    with pytest.raises(ValueError, match="header too small") as e:
        safetensors_header(path)
    assert str(e.value).startswith(str(path))


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": np.ones((4, 4), np.float32), "b": np.zeros((100,), np.float32)}, str(path))
    size = path.stat().st_size
    assert {n: (i.dtype, i.shape) for n, i in safetensors_header(path).items()} == {"a": ("F32", (4, 4)),
                                                                                    "b": ("F32", (100,))}
    os.truncate(path, size - 10)
    with pytest.raises(ValueError) as e:
        safetensors_header(path)
    assert str(e.value).startswith(f"{path} is truncated or padded: ") and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="is truncated"):
        tensor_index(tmp_path)


def test_shape_does_not_match_byte_range(tmp_path):
    path = _raw_safetensors(tmp_path / "m.safetensors",
                            {"w": {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 16]}}, bytes(16))
    with pytest.raises(ValueError, match=r"invalid shape, data type, or offset") as e:
        safetensors_header(path)
    assert str(e.value).startswith(f"{path} is not a valid safetensors file: ")


@pytest.mark.parametrize("header, why", [
    ([1, 2], "invalid type: sequence"),
    ({"w": {"dtype": "F32", "shape": [2]}}, "missing field `data_offsets`"),
    ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, "integer `-2`"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, "invalid offset for tensor `w`"),
    ({"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 2]}}, "unknown variant `Q7`"),
])
def test_malformed_header(tmp_path, header, why):
    path = _raw_safetensors(tmp_path / "m.safetensors", header, bytes(8))
    with pytest.raises(ValueError, match=why) as e:
        safetensors_header(path)
    assert str(e.value).startswith(f"{path} is not a valid safetensors file: ") and "\n" not in str(e.value)


def test_header_not_json(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", 4) + b"\x80\x04}q")
    with pytest.raises(ValueError, match="invalid UTF-8 in header") as e:
        safetensors_header(path)
    assert str(e.value).startswith(str(path))


def test_read_tensors_names_the_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": np.ones((2,), np.float32)}, str(path))
    infos = safetensors_header(path)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=f"safetensors file {path} not found"):
        read_tensors(infos)


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        safetensors_header(tmp_path)
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        read_json(tmp_path)


# ---- JSON ----

def test_config_json_that_is_a_list(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("[1, 2, 3]")
    with pytest.raises(ValueError) as e:
        read_json(path)
    assert str(e.value) == f"{path}: expected a JSON object, got a list"
    assert read_json(path, expect=list) == [1, 2, 3]
    assert read_json(path, expect=None) == [1, 2, 3]


def test_non_utf8_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(ValueError, match="is not UTF-8 text") as e:
        read_json(path)
    assert str(path) in str(e.value)


def test_invalid_json_and_missing(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"a": 1,')
    with pytest.raises(ValueError, match=f"{path} is not valid JSON"):
        read_json(path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.json")):
        read_json(tmp_path / "nope.json")


# ---- write_hf_checkpoint ----

@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_write_hf_round_trip(tmp_path, shards, dtype):
    rng = np.random.default_rng(0)
    tensors = _tensors(rng)
    (tmp_path / "tokenizer.json").write_text('{"model": {}}')
    out = write_hf_checkpoint(tmp_path / "ckpt", CONFIG, tensors, dtype=dtype, shards=shards,
                              extra_files=[tmp_path / "tokenizer.json"])
    assert out == tmp_path / "ckpt"
    cast = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}[dtype]
    config = read_json(out / "config.json")
    assert config == {**CONFIG, "torch_dtype": dtype}
    assert (out / "tokenizer.json").read_text() == '{"model": {}}'
    files = sorted(p.name for p in out.glob("*.safetensors"))
    if shards == 1:
        assert files == ["model.safetensors"] and not (out / checkpoint.INDEX_FILE).exists()
    else:
        assert files == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
        index = read_json(out / checkpoint.INDEX_FILE)
        assert sorted(index["weight_map"]) == sorted(tensors) and set(index["weight_map"].values()) == set(files)
        want_total = sum(np.asarray(v).astype(cast if v.dtype.kind == "f" else v.dtype).nbytes
                         for v in tensors.values())
        assert index["metadata"] == {"total_size": want_total}
    infos = tensor_index(out)
    assert sorted(infos) == sorted(tensors)
    st = {"float32": "F32", "bfloat16": "BF16"}[dtype]
    assert {n: (i.dtype, i.shape) for n, i in infos.items()} == {
        n: ("I32" if n == "steps" else st, v.shape) for n, v in tensors.items()}
    back = read_tensors(infos)
    for name, v in tensors.items():
        want = v if name == "steps" else np.asarray(v).astype(cast)
        got = np.asarray(back[name])
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want)
    assert _leftovers(tmp_path, keep={"ckpt", "tokenizer.json"}) == []


def test_write_hf_keeps_dtypes(tmp_path):
    tensors = {"a": jnp.ones((2, 3), jnp.bfloat16), "b": np.ones(4, np.float16), "c": np.ones(2, np.float32)}
    out = write_hf_checkpoint(tmp_path / "ckpt", CONFIG, tensors)
    assert read_json(out / "config.json") == CONFIG
    assert {n: (i.dtype, i.shape) for n, i in tensor_index(out).items()} == {
        "a": ("BF16", (2, 3)), "b": ("F16", (4,)), "c": ("F32", (2,))}


def test_write_hf_rejects_int_dtype_and_bad_shards(tmp_path):
    with pytest.raises(ValueError, match="dtype int8 is not a floating-point dtype"):
        write_hf_checkpoint(tmp_path / "x", CONFIG, {"a": np.ones(2)}, dtype="int8")
    with pytest.raises(ValueError, match="shards must be"):
        write_hf_checkpoint(tmp_path / "x", CONFIG, {"a": np.ones(2)}, shards=2)
    assert _leftovers(tmp_path) == []


def test_write_hf_refuses_existing_dir(tmp_path):
    out = write_hf_checkpoint(tmp_path / "ckpt", CONFIG, {"a": np.ones(2, np.float32)})
    with pytest.raises(FileExistsError, match=f"{out} already exists and is not empty"):
        write_hf_checkpoint(out, CONFIG, {"b": np.ones(2, np.float32)})
    assert sorted(tensor_index(out)) == ["a"]
    write_hf_checkpoint(out, CONFIG, {"b": np.ones(2, np.float32)}, overwrite=True)
    assert sorted(tensor_index(out)) == ["b"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_hf_checkpoint(empty, CONFIG, {"c": np.ones(2, np.float32)})
    assert sorted(tensor_index(empty)) == ["c"]
    assert _leftovers(tmp_path, keep={"ckpt", "empty"}) == []


def test_write_hf_failure_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "ckpt"
    bad = {"a": np.ones(2, np.float32), "b": np.ones(2, np.float32), "z": np.array(["not", "numbers"])}
    with pytest.raises(ValueError, match=f"cannot write {out}: tensor z has dtype <U7, which safetensors"):
        write_hf_checkpoint(out, CONFIG, bad, shards=3)
    assert _leftovers(tmp_path) == []

    def disk_full(arrays, path):
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_save_safetensors", disk_full)
    with pytest.raises(OSError) as e:
        write_hf_checkpoint(out, CONFIG, {"a": np.ones(2, np.float32)})
    assert str(e.value) == f"cannot write {out}: No space left on device" and e.value.errno == errno.ENOSPC
    assert _leftovers(tmp_path) == []


# ---- orbax ----

def _params():
    rng = np.random.default_rng(1)
    return {"embed": jnp.asarray(rng.normal(size=(64, 32)), jnp.float32),
            "layers": {"0": {"w": jnp.asarray(rng.normal(size=(32, 48)), jnp.bfloat16),
                             "b": jnp.asarray(rng.normal(size=(48,)), jnp.float32)}}}


@pytest.fixture(scope="module")
def orbax_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("orbax")
    (root / "tokenizer.json").write_text("{}")
    out = write_orbax_checkpoint(root / "ckpt", _params(), CONFIG, {"model_type": "ouro", "source": "x"},
                                 extra_files=[root / "tokenizer.json"])
    return out


@pytest.fixture
def orbax_copy(orbax_ckpt, tmp_path):
    return shutil.copytree(orbax_ckpt, tmp_path / "copy")


def test_orbax_round_trip(orbax_ckpt):
    assert orbax_ckpt.is_absolute()
    assert sorted(p.name for p in orbax_ckpt.iterdir()) == ["config.json", "loopjax.json", "params", "tokenizer.json"]
    assert _leftovers(orbax_ckpt.parent, keep={"ckpt", "tokenizer.json"}) == []
    assert read_json(orbax_ckpt / "config.json") == CONFIG
    assert read_orbax_marker(orbax_ckpt) == {"format_version": 1, "model_type": "ouro", "source": "x"}
    assert checkpoint.resolve(str(orbax_ckpt)) == ("orbax", orbax_ckpt)
    want = _params()
    for abstract in (None, jax.eval_shape(lambda: want)):
        got = read_orbax_params(orbax_ckpt, abstract)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_orbax_abstract_mismatch(orbax_ckpt):
    abstract = jax.eval_shape(_params)
    abstract["layers"]["0"]["w"] = jax.ShapeDtypeStruct((32, 40), jnp.bfloat16)
    abstract["extra"] = jax.ShapeDtypeStruct((3,), jnp.float32)
    del abstract["embed"]
    with pytest.raises(ValueError) as e:
        read_orbax_params(orbax_ckpt, abstract)
    assert str(e.value) == (f"orbax checkpoint {orbax_ckpt} does not match the expected params: missing extra; "
                            f"unexpected embed; layers.0.w stored (32, 48), expected (32, 40)")


def test_orbax_refuses_existing_dir_before_writing(orbax_ckpt, monkeypatch):
    def never(*a):
        raise AssertionError("params written although the output dir exists")

    monkeypatch.setattr(checkpoint, "_orbax_save", never)
    with pytest.raises(FileExistsError, match=str(orbax_ckpt)):
        write_orbax_checkpoint(orbax_ckpt, _params(), CONFIG, {})


def test_orbax_write_failure_leaves_nothing(tmp_path, monkeypatch):
    def disk_full(path, params):
        path.mkdir()
        (path / "half-written").write_bytes(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_orbax_save", disk_full)
    out = tmp_path / "ckpt"
    with pytest.raises(OSError) as e:
        write_orbax_checkpoint(out, _params(), CONFIG, {})
    assert str(e.value) == f"cannot write {out}: No space left on device" and e.value.errno == errno.ENOSPC
    assert _leftovers(tmp_path) == []


def _data_files(ckpt):
    return [p for p in (ckpt / "params").rglob("*") if p.is_file() and p.parent.name == "d"]


@pytest.mark.parametrize("with_abstract", [False, True])
@pytest.mark.parametrize("damage", ["truncate", "truncate-chunks", "delete"])
def test_orbax_damaged_data_files(orbax_copy, damage, with_abstract):
    files = _data_files(orbax_copy)
    assert files, sorted(str(p.relative_to(orbax_copy)) for p in orbax_copy.rglob("*"))
    for p in files:
        if damage == "delete":
            p.unlink()
        elif p.stat().st_size > (100 if damage == "truncate" else 1000):
            os.truncate(p, p.stat().st_size // 2)
    with pytest.raises(ValueError) as e:
        read_orbax_params(orbax_copy, jax.eval_shape(_params) if with_abstract else None)
    msg = str(e.value)
    assert msg.startswith(f"orbax checkpoint {orbax_copy} is unreadable: ")
    assert "\n" not in msg and len(msg) <= len(str(orbax_copy)) + 250
    assert "tensorstore_spec" not in msg and "TensorStore details" not in msg


@pytest.mark.parametrize("name", ["_METADATA", "_CHECKPOINT_METADATA"])
@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_orbax_pickled_metadata_is_never_unpickled(orbax_copy, monkeypatch, name, protocol):
    target = orbax_copy / "params" / name
    assert target.exists()
    target.write_bytes(pickle.dumps({"tree_metadata": {}}, protocol=protocol))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(ValueError) as e:
        read_orbax_params(orbax_copy)
    assert str(e.value) == (f"orbax checkpoint {orbax_copy} is unreadable: metadata file params/{name} is not "
                            f"JSON (a pickle?); loopjax never unpickles")


def test_orbax_missing_params(orbax_copy, tmp_path):
    shutil.rmtree(orbax_copy / "params")
    with pytest.raises(FileNotFoundError, match=f"orbax checkpoint {orbax_copy} has no params folder"):
        read_orbax_params(orbax_copy)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        read_orbax_params(tmp_path / "nowhere")


def test_orbax_marker_version(orbax_copy):
    (orbax_copy / "loopjax.json").write_text('{"format_version": 7}')
    with pytest.raises(ValueError, match="format_version 7"):
        read_orbax_marker(orbax_copy)
    (orbax_copy / "loopjax.json").write_text("[]")
    with pytest.raises(ValueError, match="expected a JSON object, got a list"):
        read_orbax_marker(orbax_copy)


# ---- dtypes ----

@pytest.mark.parametrize("dtype, name", [(np.int8, "int8"), ("int8", "int8"), (np.bool_, "bool"),
                                         (jnp.int32, "int32"), (np.complex64, "complex64"), (object, "object")])
def test_parse_dtype_rejects_non_float(dtype, name):
    with pytest.raises(ValueError) as e:
        parse_dtype(dtype)
    assert str(e.value) == (f"dtype {name} is not a floating-point dtype; weights must be float32, bfloat16, "
                            f"float16 or float64")


@pytest.mark.parametrize("dtype, want", [(None, None), ("bf16", jnp.bfloat16), ("bfloat16", jnp.bfloat16),
                                         (jnp.bfloat16, jnp.bfloat16), (np.dtype("float16"), jnp.float16),
                                         (np.float16, jnp.float16), (jnp.float32, jnp.float32),
                                         ("fp32", jnp.float32), (ml_dtypes.bfloat16, jnp.bfloat16)])
def test_parse_dtype_accepts(dtype, want):
    assert parse_dtype(dtype) is want


def test_parse_dtype_float64_needs_x64():
    assert not jax.config.jax_enable_x64
    for d in ("float64", "fp64", np.float64, jnp.float64):
        with pytest.raises(ValueError, match=r"dtype float64 needs jax x64: call "
                                             r"jax.config.update\('jax_enable_x64', True\) \(CLI: --x64\) first"):
            parse_dtype(d)
    with jax.enable_x64(True):
        assert parse_dtype("float64") is jnp.float64 and parse_dtype(np.float64) is jnp.float64
    assert parse_dtype("float64", check_x64=False) is jnp.float64
    with pytest.raises(ValueError, match="unknown dtype 'float99'"):
        parse_dtype("float99")
