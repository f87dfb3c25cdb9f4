"""loopjax.io.torch_pickle: PyTorch state-dict archives are read without torch and without running the pickle.

Archives are built here byte by byte (pickle opcodes + zipfile, as torch.save lays them out), so the tests need
no torch: genuine state dicts (float32, bf16, a transposed view, a shared storage), malicious ones whose pickle
names os.system / builtins.eval / subprocess.Popen with a payload that would create a marker file, and damaged
ones. Every refusal is one line naming the file (and the global).
"""
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file

import loopjax
from conftest import FIXTURES
from loopjax.io import torch_pickle
from loopjax.io.torch_pickle import TorchPickleError, load_state_dict, read_index

DIR = FIXTURES / "parcae-tiny"


# ---- writing torch.save-style archives without torch ----

def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)


def _tuple(items) -> bytes:
    return b"(" + b"".join(_int(i) for i in items) + b"t"


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tensor(storage_type: str, key: str, numel: int, offset: int, shape, stride) -> bytes:
    storage = b"(" + _str("storage") + _global("torch", storage_type) + _str(key) + _str("cpu") + _int(numel) + b"tQ"
    hooks = _global("collections", "OrderedDict") + b")R"
    return (_global("torch._utils", "_rebuild_tensor_v2") + b"(" + storage + _int(offset) + _tuple(shape)
            + _tuple(stride) + b"\x89" + hooks + b"tR")


def state_dict_pickle(entries: list[tuple[str, bytes]], extra: bytes = b"") -> bytes:
    """PROTO 2; OrderedDict() then SETITEMS of (name, tensor pickle) pairs (+ `extra` opcodes before STOP)."""
    body = b"".join(_str(name) + t for name, t in entries)
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + body + b"u" + extra + b"."


def write_archive(path: Path, pkl: bytes, storages: dict[str, bytes], root: str = "archive") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{root}/data.pkl", pkl)
        z.writestr(f"{root}/byteorder", "little")
        for key, data in storages.items():
            z.writestr(f"{root}/data/{key}", data)
        z.writestr(f"{root}/version", "3\n")
    return path


# ---- genuine archives ----

def test_fixture_equals_its_safetensors_copy():
    got, want = load_state_dict(DIR / "pytorch_model.bin"), load_file(str(DIR / "model.safetensors"))
    assert sorted(got) == sorted(want) and len(got) == 63
    for name in want:
        assert got[name].dtype == want[name].dtype and np.array_equal(got[name], want[name]), name
    refs = read_index(DIR / "pytorch_model.bin")   # tied: lm_head and wte share one storage
    assert refs["lm_head.weight"].storage == refs["transformer.wte.weight"].storage


def test_dtypes_views_and_shared_storage(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    bf = rng.normal(size=(5,)).astype(ml_dtypes.bfloat16)
    ints = np.arange(6, dtype=np.int64)
    entries = [("w", _tensor("FloatStorage", "0", 12, 0, (3, 4), (4, 1))),
               ("w_t", _tensor("FloatStorage", "0", 12, 0, (4, 3), (1, 4))),       # a transposed view
               ("w_row1", _tensor("FloatStorage", "0", 12, 4, (4,), (1,))),        # an offset view
               ("bf", _tensor("BFloat16Storage", "1", 5, 0, (5,), (1,))),
               ("steps", _tensor("LongStorage", "2", 6, 0, (2, 3), (3, 1))),
               ("scalar", _tensor("FloatStorage", "0", 12, 7, (), ()))]
    path = write_archive(tmp_path / "pytorch_model.bin", state_dict_pickle(entries),
                         {"0": w.tobytes(), "1": bf.tobytes(), "2": ints.tobytes()})
    got = load_state_dict(path)
    np.testing.assert_array_equal(got["w"], w)
    np.testing.assert_array_equal(got["w_t"], w.T)
    np.testing.assert_array_equal(got["w_row1"], w[1])
    assert got["bf"].dtype == ml_dtypes.bfloat16 and np.array_equal(got["bf"], bf)
    np.testing.assert_array_equal(got["steps"], ints.reshape(2, 3))
    assert got["scalar"].shape == () and got["scalar"] == w.reshape(-1)[7]
    assert {n: r.dtype for n, r in read_index(path).items()}["bf"] == "BF16"


def test_folder_with_only_pytorch_model_bin_loads(tmp_path):
    for name in ("config.json", "pytorch_model.bin"):
        shutil.copy(DIR / name, tmp_path / name)
    a, b = loopjax.load(tmp_path), loopjax.load(DIR)
    for x, y in zip(*(sorted(loopjax.to_hf_tensors(m).items()) for m in (a, b))):
        assert x[0] == y[0] and np.array_equal(np.asarray(x[1]), np.asarray(y[1]))


# ---- malicious archives: refused, the payload never runs ----

def _payloads(marker: Path):
    cmd = f"touch {marker}"
    return {
        "os.system": (("os", "system"), _global("os", "system") + b"(" + _str(cmd) + b"tR"),
        "posix.system": (("posix", "system"), _global("posix", "system") + b"(" + _str(cmd) + b"tR"),
        "builtins.eval": (("builtins", "eval"), _global("builtins", "eval") + b"("
                          + _str(f"__import__('os').system({cmd!r})") + b"tR"),
        "subprocess.Popen": (("subprocess", "Popen"), _global("subprocess", "Popen") + b"((" + _str("touch")
                             + _str(str(marker)) + b"ttR"),
    }


@pytest.mark.parametrize("name", ["os.system", "posix.system", "builtins.eval", "subprocess.Popen"])
@pytest.mark.parametrize("where", ["alone", "inside a tensor entry"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, name, where):
    marker = tmp_path / "PWNED"
    (module, attr), payload = _payloads(marker)[name]
    if where == "alone":
        pkl = b"\x80\x02" + payload + b"."
    else:   # a genuine-looking state dict whose second tensor's offset is the payload's result
        good = _tensor("FloatStorage", "0", 4, 0, (4,), (1,))
        bad = good.replace(_int(0) + _tuple((4,)), payload + _tuple((4,)), 1)
        pkl = state_dict_pickle([("a", good), ("b", bad)])
    path = write_archive(tmp_path / "pytorch_model.bin", pkl, {"0": np.zeros(4, np.float32).tobytes()})
    for reader in (read_index, load_state_dict):
        with pytest.raises(TorchPickleError) as e:
            reader(path)
        msg = str(e.value)
        assert "\n" not in msg and str(path) in msg and f"{module}.{attr}" in msg, msg
        assert not marker.exists()
    cfg = tmp_path / "config.json"
    shutil.copy(DIR / "config.json", cfg)
    with pytest.raises(ValueError, match=f"{module}.{attr}"):
        loopjax.load(tmp_path)
    assert not marker.exists()
    if where == "alone":   # the payload is live: python's own unpickler runs it (in a child process)
        code = "import pickle, sys; r = pickle.loads(sys.stdin.buffer.read()); getattr(r, 'wait', int)()"
        subprocess.run([sys.executable, "-c", code], input=pkl, capture_output=True, timeout=60, cwd=tmp_path)
        assert marker.exists(), "the test payload should have been live for the plain unpickler"


@pytest.mark.parametrize("pkl, match", [
    (b"\x80\x02" + _global("collections", "OrderedDict") + b"(" + _int(1) + b"tR.",
     "OrderedDict rebuilt with arguments"),
    (b"\x80\x02" + _str("just a string") + b".", "holds a str, not a state dict"),
    (state_dict_pickle([("a", _tensor("FloatStorage", "0", 4, 2, (4,), (1,)))]), "reads past the end of storage 0"),
    (state_dict_pickle([("a", _tensor("FloatStorage", "9", 4, 0, (4,), (1,)))]), r"storages missing from the archive"),
    (state_dict_pickle([("a", _int(3))]), "entries that are not named tensors"),
    (b"\x80\x02" + _global("torch", "FloatStorage") + b")R.", "malformed pickle"),
    (b"\x80\x02" + _str("x") + b"Q.", "unsupported persistent id"),
    (b"\x80\x02" + _global("collections", "OrderedDict") + b")R}" + _str("__setstate__") + _int(1) + b"sb" + b".",
     None),   # a BUILD on the state dict (torch.save sets its _metadata this way): accepted, read as empty
])
def test_not_a_state_dict(tmp_path, pkl, match):
    path = write_archive(tmp_path / "pytorch_model.bin", pkl, {"0": np.zeros(4, np.float32).tobytes()})
    if match is None:   # an empty state dict with a harmless BUILD: read as empty
        assert read_index(path) == {}
        return
    with pytest.raises(TorchPickleError, match=match) as e:
        read_index(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


# ---- damaged archives ----

def _copy(tmp_path) -> Path:
    d = tmp_path / "ckpt"
    d.mkdir()
    for name in ("config.json", "pytorch_model.bin"):
        shutil.copy(DIR / name, d / name)
    return d


@pytest.mark.parametrize("damage", ["truncated", "half", "text", "legacy", "empty"])
def test_damaged_archive_is_one_line_naming_the_file(tmp_path, damage):
    d = _copy(tmp_path)
    path = d / "pytorch_model.bin"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:-100], "half": data[:len(data) // 2], "text": b"not a model\n",
                      "legacy": pickle.dumps({"a": 1}, protocol=2), "empty": b""}[damage])
    with pytest.raises(ValueError) as e:
        loopjax.load(d)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    if damage == "legacy":
        assert "legacy pre-zip" in msg


def test_corrupt_storage_bytes(tmp_path):
    """A flipped byte inside a tensor's data: zip's CRC check catches it when the storage is read."""
    d = _copy(tmp_path)
    path = d / "pytorch_model.bin"
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("pytorch_model/data/1")
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(path.read_bytes())
    data[start + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as e:
        loopjax.load(d)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "data/1" in msg, msg


def test_big_endian_archive_is_refused(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", state_dict_pickle([]))
        z.writestr("archive/byteorder", "big")
    with pytest.raises(TorchPickleError, match="big-endian"):
        read_index(path)


def test_safe_globals_are_loopjax_functions_only():
    """Every resolvable global maps to this module's own stand-ins, never to an imported callable."""
    for (module, name), target in torch_pickle.SAFE_GLOBALS.items():
        assert module in ("collections", "torch", "torch._utils")
        assert getattr(target, "__module__", type(target).__module__) == torch_pickle.__name__, (module, name)
