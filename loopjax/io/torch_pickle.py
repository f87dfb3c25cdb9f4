"""A safe reader for PyTorch `torch.save(state_dict)` files (`pytorch_model.bin`): never imports torch, never
runs a pickled `__reduce__`.

The file is a zip archive `<root>/data.pkl` + `<root>/data/<key>` (one raw little-endian storage per key) +
`<root>/byteorder`. data.pkl is read by `pickle.Unpickler` subclass whose `find_class` resolves only the globals
a state dict pickle uses -- `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` /
`_rebuild_parameter`, and the `torch.<Type>Storage` classes -- each to loopjax's own record-building function
(never to the real torch object), and refuses every other global with a one-line error naming the file and the
global, before anything of it runs. Persistent ids ('storage', <Type>Storage, key, location, numel) become
references to `data/<key>`; tensors become `TensorRef`s (storage, offset, shape, stride) that are read into numpy
(bf16 via ml_dtypes) only on request. Every error is one line that names the file.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import math
import pickle
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np

# torch.<name>Storage -> (safetensors dtype name, numpy dtype)
STORAGE_DTYPES = {
    "DoubleStorage": ("F64", np.dtype("<f8")), "FloatStorage": ("F32", np.dtype("<f4")),
    "HalfStorage": ("F16", np.dtype("<f2")), "BFloat16Storage": ("BF16", np.dtype(ml_dtypes.bfloat16)),
    "LongStorage": ("I64", np.dtype("<i8")), "IntStorage": ("I32", np.dtype("<i4")),
    "ShortStorage": ("I16", np.dtype("<i2")), "CharStorage": ("I8", np.dtype("i1")),
    "ByteStorage": ("U8", np.dtype("u1")), "BoolStorage": ("BOOL", np.dtype("?")),
}
TORCH_FILES = ("pytorch_model.bin", "model.pt", "model.bin")   # in the reference loaders' order of preference


class TorchPickleError(ValueError):
    """A pytorch_model.bin that is not a plain state dict of tensors, or is damaged."""


@dataclasses.dataclass(frozen=True, slots=True)
class StorageType:
    name: str         # e.g. "FloatStorage"

    @property
    def dtype(self) -> str:
        return STORAGE_DTYPES[self.name][0]


@dataclasses.dataclass(frozen=True, slots=True)
class StorageRef:
    key: str
    storage_type: StorageType
    numel: int


@dataclasses.dataclass(frozen=True, slots=True)
class TensorRef:
    """A tensor of a state dict: `shape` elements read from `storage` at `offset` with `stride` (in elements)."""
    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> str:
        return self.storage.storage_type.dtype


def _ints(x) -> bool:
    return isinstance(x, tuple) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in x)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    """loopjax's stand-in for torch._utils._rebuild_tensor_v2: a TensorRef (checked, not read)."""
    if not (isinstance(storage, StorageRef) and _ints((storage_offset,)) and _ints(tuple(size))
            and _ints(tuple(stride)) and len(size) == len(stride)):
        raise TorchPickleError("_rebuild_tensor_v2 called with arguments that are not (storage, offset, size, stride)")
    size, stride = tuple(size), tuple(stride)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else storage_offset - 1
    if last >= storage.numel:
        raise TorchPickleError(f"a tensor of shape {list(size)} reads past the end of storage {storage.key} "
                               f"({storage.numel} elements)")
    return TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, TensorRef):
        raise TorchPickleError("_rebuild_parameter called on something that is not a tensor")
    return data


def _ordered_dict(*args):
    if args:
        raise TorchPickleError("OrderedDict rebuilt with arguments (a state dict pickle never does that)")
    return collections.OrderedDict()


SAFE_GLOBALS = {("collections", "OrderedDict"): _ordered_dict,
                ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
                ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
                **{("torch", name): StorageType(name) for name in STORAGE_DTYPES}}


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only SAFE_GLOBALS (to loopjax's functions above) and persistent storage ids."""

    def __init__(self, data: bytes, path: Path):
        super().__init__(io.BytesIO(data))
        self.path = path

    def find_class(self, module, name):
        try:
            return SAFE_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise TorchPickleError(f"{self.path}: refusing to load: its pickle needs the global {module}.{name}, "
                                   f"which a PyTorch state dict never uses (only tensors are read)") from None

    def persistent_load(self, pid):
        ok = (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], StorageType)
              and isinstance(pid[2], str) and _ints((pid[4],)))
        if not ok:
            raise TorchPickleError(f"{self.path}: unsupported persistent id {str(pid)[:80]} (expected a tensor "
                                   f"storage)")
        return StorageRef(pid[2], pid[1], pid[4])


def _fail(path, why) -> TorchPickleError:
    return TorchPickleError(f"{path} is not a readable PyTorch state dict: {why}")


def _root(path: Path, archive: zipfile.ZipFile) -> str:
    pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise _fail(path, "the zip archive has no <root>/data.pkl (not written by torch.save)")
    root = pkls[0][:-len("data.pkl")]
    if root + "byteorder" in archive.namelist() and archive.read(root + "byteorder").strip() != b"little":
        raise _fail(path, "it was written on a big-endian machine (only little-endian files are supported)")
    return root


def _open(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{path} is a directory, not a PyTorch file") from None
    except zipfile.BadZipFile as e:
        with open(path, "rb") as f:
            head = f.read(2)
        legacy = " (a legacy pre-zip torch.save file, which loopjax does not read)" if head[:1] == b"\x80" else ""
        raise _fail(path, f"it is not a zip archive{legacy}: {e}") from None
    except OSError as e:
        raise OSError(f"cannot read {path}: {e.strerror or e}") from None


def read_index(path) -> dict[str, TensorRef]:
    """name -> TensorRef of every tensor of a torch.save'd state dict, without reading any tensor data."""
    path = Path(path)
    with _open(path) as archive:
        try:
            root = _root(path, archive)
            result = _StateDictUnpickler(archive.read(root + "data.pkl"), path).load()
            present = set(archive.namelist())
        except TorchPickleError as e:   # the stand-ins' own complaints do not know the file yet
            raise e if str(path) in str(e) else _fail(path, str(e)) from None
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise _fail(path, f"damaged archive ({type(e).__name__}: {e})") from None
        except Exception as e:  # noqa: BLE001 - any malformed pickle: one line naming the file
            raise _fail(path, f"malformed pickle ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(result, dict):
        raise _fail(path, f"its pickle holds a {type(result).__name__}, not a state dict")
    bad = [str(k)[:60] for k, v in result.items() if not (isinstance(k, str) and isinstance(v, TensorRef))]
    if bad:
        raise _fail(path, f"entries that are not named tensors: {bad[:5]}")
    missing = sorted({f"data/{t.storage.key}" for t in result.values()} - {n[len(root):] for n in present})
    if missing:
        raise _fail(path, f"storages missing from the archive: {missing[:5]}")
    return dict(result)


def read_arrays(path, refs: dict[str, TensorRef]) -> dict[str, np.ndarray]:
    """name -> numpy array (a copy, C-contiguous; bf16 as ml_dtypes.bfloat16) for the given TensorRefs."""
    path = Path(path)
    out, storages = {}, {}
    with _open(path) as archive:
        root = _root(path, archive)
        for name, ref in refs.items():
            key = ref.storage.key
            if key not in storages:
                np_dtype = STORAGE_DTYPES[ref.storage.storage_type.name][1]
                try:
                    raw = archive.read(f"{root}data/{key}")
                except (zipfile.BadZipFile, KeyError, EOFError, OSError) as e:
                    raise _fail(path, f"cannot read storage data/{key} ({type(e).__name__}: {e})") from None
                need = ref.storage.numel * np_dtype.itemsize
                if len(raw) < need:
                    raise _fail(path, f"storage data/{key} holds {len(raw)} bytes, needs {need}")
                storages[key] = np.frombuffer(raw, np_dtype, count=ref.storage.numel)
            out[name] = _view(storages[key], ref)
    return out


def _view(storage: np.ndarray, ref: TensorRef) -> np.ndarray:
    if math.prod(ref.shape) == 0:
        return np.zeros(ref.shape, storage.dtype)
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[ref.offset:], ref.shape, tuple(s * item for s in ref.stride),
                                           writeable=False)
    return np.array(view, order="C")   # a copy (ascontiguousarray would make a 0-d tensor 1-d)


def load_state_dict(path) -> dict[str, np.ndarray]:
    """Every tensor of a pytorch_model.bin as numpy arrays."""
    return read_arrays(path, read_index(path))
