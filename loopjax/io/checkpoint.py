"""Checkpoint file formats, the one home of loopjax's file I/O: HF safetensors directories (single or sharded),
hub repos, and orbax directories written by `loopjax convert`.

Weights are read from safetensors or orbax, or (folders with no safetensors, e.g. Parcae's hub checkpoints) from a
`pytorch_model.bin` through loopjax.io.torch_pickle, a restricted reader that resolves only the tensor-rebuild and
storage globals of a state dict and never runs anything else in the pickle. Headers are read and checked first (by the `safetensors`
package: header length, JSON, every tensor's byte range against its shape and the file size), so that a missing shard, a
truncated file or a wrong tensor is reported, naming the file, before any weight is loaded. Every error is one
line that names the file or directory it is about. Writers build their output in a hidden sibling folder and
move it into place with os.replace, so a failed write never leaves a partial checkpoint behind.
"""
import dataclasses
import json
import logging
import os
import re
import shutil
import secrets
from pathlib import Path

from loopjax.io import torch_pickle

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
ORBAX_MARKER = "loopjax.json"       # written by `loopjax convert` beside the orbax params
ORBAX_FORMAT_VERSION = 1
ORBAX_PARAMS = "params"
HUB_PATTERNS = ["config.json", "*.safetensors", INDEX_FILE, "tokenizer.json", "tokenizer_config.json",
                "generation_config.json"]

# numpy dtype names safetensors can store
_STORABLE = {"float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint64", "uint32",
             "uint16", "uint8", "bool"}
_FLOATING = {"float64", "float32", "float16", "bfloat16"}
# orbax files that must be JSON; anything else there that is not JSON is never handed to an unpickler
_ORBAX_JSON_FILES = {"_METADATA", "_CHECKPOINT_METADATA", "_ROOT_METADATA", "_sharding", ".zarray", ".zattrs",
                     ".zgroup", "zarr.json"}
_MAX_REASON = 200


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: str        # safetensors dtype name: F32, BF16, F16, F64, ...
    shape: tuple[int, ...]


# ---- JSON ----

_JSON_KINDS = {dict: "a JSON object", list: "a list", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def _json_kind(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(_JSON_KINDS.get(t, t.__name__) for t in types)


def read_json(path, expect=dict):
    """The JSON value in `path`; ValueError naming the file unless it is UTF-8 JSON whose top-level value is an
    instance of `expect` (a type or tuple of types; None accepts anything)."""
    if Path(path).is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a JSON file")
    try:
        with open(path, encoding="utf-8-sig") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text, so not JSON ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    except OSError as e:
        raise OSError(f"cannot read {path}: {e.strerror or e}") from None
    if expect is not None and not isinstance(value, expect):
        raise ValueError(f"{path}: expected {_json_kind(expect)}, got {_json_kind(type(value))}")
    return value


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


# ---- safetensors: reading ----

def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _invalid_safetensors(path: Path, e: Exception) -> str:
    """One line naming the file, from the safetensors package's header error."""
    reason = " ".join(str(e).split()).removeprefix("Error while deserializing header: ")
    if "not fully covered" in reason:  # the header's byte ranges and the file size disagree
        return f"{path} is truncated or padded: its header's byte ranges do not cover the file ({reason})"
    return f"{path} is not a valid safetensors file: {reason}"


def safetensors_header(path) -> dict[str, TensorInfo]:
    """Tensor names, dtypes and shapes from a .safetensors header, without reading the data.

    The `safetensors` package reads and checks the header (its length against the file size, the JSON, every
    tensor's dtype, shape and byte range, that the ranges cover the data exactly); any failure is one
    ValueError naming the file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a safetensors file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            slices = {name: f.get_slice(name) for name in f.keys()}
            return {name: TensorInfo(path, s.get_dtype(), tuple(s.get_shape())) for name, s in slices.items()}
    except FileNotFoundError:
        raise FileNotFoundError(f"safetensors file {path} not found") from None
    except SafetensorError as e:
        raise ValueError(_invalid_safetensors(path, e)) from None
    except OSError as e:
        raise OSError(f"cannot read {path}: {e.strerror or e}") from None


def tensor_index(ckpt_dir) -> dict[str, TensorInfo]:
    """Every tensor of an HF checkpoint directory, single-file or sharded (model.safetensors.index.json).
    Every shard file resolves inside the directory (see `confined`)."""
    ckpt_dir = Path(ckpt_dir)
    index_path = ckpt_dir / INDEX_FILE
    if index_path.exists():
        weight_map = read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError(f"{index_path} has no 'weight_map' of tensor name -> shard file name")
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            tensor = next(n for n, s in weight_map.items() if s == shard)
            confined(ckpt_dir, shard, f"{INDEX_FILE} weight_map entry {tensor!r}")
        missing = [s for s in shards if not (ckpt_dir / s).exists()]
        if missing:
            raise FileNotFoundError(f"{ckpt_dir}: shard file(s) listed in {INDEX_FILE} are missing: "
                                    f"{', '.join(missing)}")
        found = {}
        for shard in shards:
            found.update(safetensors_header(ckpt_dir / shard))
        absent = sorted(n for n, s in weight_map.items() if n not in found)
        if absent:
            raise ValueError(f"{ckpt_dir}: tensors listed in {INDEX_FILE} are not in their shards: {absent[:10]}")
        return found
    files = sorted(ckpt_dir.glob("*.safetensors"))
    if not files:
        torch_file = next((ckpt_dir / n for n in torch_pickle.TORCH_FILES if (ckpt_dir / n).is_file()), None)
        if torch_file is not None:
            torch_file = confined(ckpt_dir, torch_file.name, "weights file")
            return {name: TensorInfo(torch_file, ref.dtype, ref.shape)
                    for name, ref in torch_pickle.read_index(torch_file).items()}
        raise FileNotFoundError(f"{ckpt_dir}: no *.safetensors files (and no {INDEX_FILE}, no "
                                f"{' / '.join(torch_pickle.TORCH_FILES)}); loopjax reads weights only from "
                                f"safetensors, a PyTorch state dict or an orbax dir written by `loopjax convert`")
    found = {}
    for file in files:
        found.update(safetensors_header(confined(ckpt_dir, file.name, "weights file")))
    return found


def read_tensors(infos: dict[str, TensorInfo]):
    """name -> jax array (dtype as stored, bf16 included) for the given tensors, one file open at a time."""
    from safetensors import SafetensorError, safe_open

    by_file: dict[Path, list[str]] = {}
    for name, info in infos.items():
        by_file.setdefault(info.file, []).append(name)
    out = {}
    for file, names in by_file.items():
        if file.name in torch_pickle.TORCH_FILES:
            import jax.numpy as jnp

            refs = torch_pickle.read_index(file)
            arrays = torch_pickle.read_arrays(file, {n: refs[n] for n in names})
            out.update({n: jnp.asarray(a) for n, a in arrays.items()})
            continue
        try:
            with safe_open(str(file), framework="flax") as f:
                for name in names:
                    out[name] = f.get_tensor(name)
        except FileNotFoundError:
            raise FileNotFoundError(f"safetensors file {file} not found") from None
        except OSError as e:
            raise OSError(f"cannot read {file}: {e.strerror or e}") from None
        except (SafetensorError, ValueError, TypeError) as e:
            raise ValueError(f"cannot read {file}: {short_error(e)}") from None
    return out


# ---- writing: atomic output directories ----

def _check_target(out_dir: Path, overwrite: bool) -> None:
    """FileExistsError unless out_dir is absent, an empty directory, or (overwrite=True) a directory."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise FileExistsError(f"{out_dir} exists and is not a directory; choose a new output directory")
    if out_dir.is_dir() and not overwrite and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} already exists and is not empty; choose a new output directory "
                              f"(or pass overwrite=True)")


def _sibling(out_dir: Path, kind: str) -> Path:
    """A new hidden folder beside out_dir (mkdir, not mkdtemp: the checkpoint keeps the umask's permissions)."""
    while True:
        path = out_dir.parent / f".{out_dir.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _install(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Move the finished tmp folder to out_dir (replacing an empty dir, or any dir when overwrite=True)."""
    _check_target(out_dir, overwrite)
    if out_dir.is_dir():
        if not any(out_dir.iterdir()):
            out_dir.rmdir()
        else:
            old = _sibling(out_dir, "old")
            os.replace(out_dir, old / out_dir.name)
            try:
                os.replace(tmp, out_dir)
            except BaseException:
                os.replace(old / out_dir.name, out_dir)
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
            return
    os.replace(tmp, out_dir)


def _write_atomically(out_dir: Path, build, overwrite: bool, wrap=(OSError,)) -> Path:
    """build(tmp) fills a hidden sibling folder of out_dir, which then becomes out_dir; on failure the folder is
    removed and errors of the `wrap` types become one OSError naming out_dir (errno kept when there is one)."""
    _check_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out_dir, "tmp")
    try:
        build(tmp)
        _install(tmp, out_dir, overwrite)
    except FileExistsError:
        raise
    except wrap as e:
        err = OSError(f"cannot write {out_dir}: {getattr(e, 'strerror', None) or short_error(e)}")
        err.errno = getattr(e, "errno", None)
        raise err from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _copy_extras(extra_files, reserved) -> list[Path]:
    extras = [Path(p) for p in extra_files]
    for p in extras:
        if not p.is_file():
            raise FileNotFoundError(f"extra file {p} not found")
        if p.name in reserved:
            raise ValueError(f"extra file {p} would overwrite the checkpoint's own {p.name}")
    names = [p.name for p in extras]
    if len(set(names)) != len(names):
        raise ValueError(f"extra files with the same name: {sorted(n for n in set(names) if names.count(n) > 1)}")
    return extras


# ---- safetensors: writing ----

def _save_safetensors(arrays: dict, path: Path) -> None:
    """One safetensors file from host (numpy / ml_dtypes) arrays (a seam the tests replace)."""
    from safetensors.numpy import save_file

    save_file(arrays, str(path))


def _host_array(name: str, value, cast, out_dir: Path):
    import numpy as np

    try:
        a = np.asarray(value)
    except Exception as e:  # noqa: BLE001 - any array-like failure is reported with the tensor's name
        raise ValueError(f"cannot write {out_dir}: tensor {name} is not an array ({short_error(e)})") from None
    if a.dtype.name not in _STORABLE:
        raise ValueError(f"cannot write {out_dir}: tensor {name} has dtype {a.dtype}, which safetensors cannot "
                         f"store")
    if cast is not None and a.dtype.name in _FLOATING:
        a = a.astype(cast)
    return np.ascontiguousarray(a)


def write_hf_checkpoint(out_dir, config: dict, tensors: dict, *, dtype=None, shards: int = 1, extra_files=(),
                        overwrite: bool = False) -> Path:
    """An HF-format checkpoint directory: config.json, the tensors as one `model.safetensors` or as `shards`
    files `model-0000i-of-0000n.safetensors` (names sorted, split in contiguous runs) with
    model.safetensors.index.json, and copies of `extra_files` (tokenizer.json, ...).

    dtype None keeps each array's dtype; a float dtype ('float32', 'bfloat16', 'float16', 'float64', or a dtype
    object) casts the floating-point tensors to it (integer / bool buffers keep theirs) and sets "torch_dtype" in
    config.json. Written atomically; an existing non-empty out_dir is refused unless overwrite=True.
    """
    import numpy as np

    from loopjax.engine.dtypes import parse_dtype

    out_dir = Path(out_dir)
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (the HF config.json), got {type(config).__name__}")
    names = sorted(tensors)
    if not all(isinstance(n, str) for n in names):
        raise TypeError("tensor names must be strings")
    if not _is_int(shards) or shards < 1 or shards > max(len(names), 1):
        raise ValueError(f"shards must be an int from 1 to the number of tensors ({len(names)}), got {shards!r}")
    cast = parse_dtype(dtype, check_x64=False)
    files = ([SINGLE_FILE] if shards == 1 else
             [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)])
    extras = _copy_extras(extra_files, {"config.json", INDEX_FILE, *files})
    config = dict(config)
    json.dumps(config)  # not JSON-serialisable -> TypeError now, before any tensor is written
    if cast is not None:
        config["torch_dtype"] = np.dtype(cast).name
    groups = [names] if shards == 1 else [list(g) for g in np.array_split(np.array(names, dtype=object), shards)]

    def build(tmp: Path):
        weight_map, total = {}, 0
        for file, group in zip(files, groups):
            arrays = {n: _host_array(n, tensors[n], cast, out_dir) for n in group}
            total += sum(a.nbytes for a in arrays.values())
            _save_safetensors(arrays, tmp / file)
            weight_map.update({n: file for n in group})
            del arrays
        if shards > 1:
            _write_json(tmp / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})
        _write_json(tmp / "config.json", config)
        for p in extras:
            shutil.copyfile(p, tmp / p.name)

    from safetensors import SafetensorError

    return _write_atomically(out_dir, build, overwrite, wrap=(OSError, SafetensorError))


# ---- orbax ----

def _orbax_save(path: Path, params) -> None:
    """params -> an orbax StandardCheckpointer dir at `path` (a seam the tests replace)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, params)
        ckptr.wait_until_finished()


def write_orbax_checkpoint(out_dir, params, config: dict, meta: dict | None = None, extra_files=(), *,
                           overwrite: bool = False) -> Path:
    """`params/` (orbax StandardCheckpointer), the HF `config.json`, the `loopjax.json` marker
    {"format_version": 1, **meta} and copies of `extra_files` (tokenizer files), written atomically.

    An existing non-empty out_dir is refused (FileExistsError) before anything is written, unless overwrite=True;
    any failure while writing (disk full, ...) removes the partial folder and raises one OSError naming out_dir.
    """
    out_dir = Path(out_dir).absolute()
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (the HF config.json), got {type(config).__name__}")
    marker = {"format_version": ORBAX_FORMAT_VERSION, **(meta or {})}
    json.dumps(marker)  # not JSON-serialisable -> TypeError now, not after the params are written
    extras = _copy_extras(extra_files, {"config.json", ORBAX_MARKER, ORBAX_PARAMS})

    def build(tmp: Path):
        _orbax_save(tmp.resolve() / ORBAX_PARAMS, params)
        _write_json(tmp / "config.json", config)
        for p in extras:
            shutil.copyfile(p, tmp / p.name)
        _write_json(tmp / ORBAX_MARKER, marker)  # last: its presence marks a complete checkpoint

    return _write_atomically(out_dir, build, overwrite, wrap=(Exception,))


def read_orbax_marker(ckpt_dir) -> dict:
    """loopjax.json of an orbax checkpoint dir (format_version checked)."""
    path = Path(ckpt_dir) / ORBAX_MARKER
    marker = read_json(path)
    version = marker.get("format_version")
    if version != ORBAX_FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {version!r} is not one this loopjax reads "
                         f"({ORBAX_FORMAT_VERSION})")
    return marker


def short_error(e: BaseException) -> str:
    """One line of at most ~200 characters from an exception (orbax / tensorstore messages run to pages): the
    first line, without tensorstore's spec dump, keeping its start and its end (the root cause)."""
    while "See full TensorStore details" in str(e) and (e.__cause__ or e.__context__) is not None:
        e = e.__cause__ or e.__context__   # orbax's wrapper: the tensorstore error it wraps says what failed
    text = re.split(r"\s*\[\w+=|\s*See full TensorStore details", str(e).strip())[0].strip()
    text = " ".join(text.splitlines()[0].split()) if text else type(e).__name__
    if len(text) > _MAX_REASON:
        text = text[:90] + " ... " + text[-(_MAX_REASON - 95):]
    return text


_short = short_error  # the old private name, until every caller imports short_error


def _check_orbax_metadata(ckpt_dir: Path, params_dir: Path) -> None:
    """Every orbax metadata file must be UTF-8 JSON: nothing else is ever handed to a reader (never unpickled)."""
    for path in sorted(params_dir.rglob("*")):
        rel = path.relative_to(params_dir)
        if not path.is_file() or not (path.name in _ORBAX_JSON_FILES or rel.parts[0] == "array_metadatas"):
            continue
        data = path.read_bytes()
        where = f"orbax checkpoint {ckpt_dir} is unreadable: metadata file {path.relative_to(ckpt_dir)}"
        try:
            json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"{where} is not JSON (a pickle?); loopjax never unpickles") from None
        except json.JSONDecodeError as e:
            hint = " (a pickle?); loopjax never unpickles" if data[:1] in (b"\x80", b"(", b"c", b"}") else f" ({e})"
            raise ValueError(f"{where} is not JSON{hint}") from None


def _path_str(path) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _leaves(tree) -> dict:
    import jax

    is_leaf = lambda x: hasattr(x, "shape") and hasattr(x, "dtype")  # noqa: E731
    return {_path_str(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]}


def read_orbax_params(ckpt_dir, abstract=None):
    """The params pytree of an orbax checkpoint dir, as jax arrays on the default device.

    With `abstract` (a pytree of jax.ShapeDtypeStruct), the stored tree must have the same paths and shapes
    (checked against orbax's metadata before any array is read; one ValueError lists the differences) and the
    arrays are restored as its dtypes. Any failure to read is one line: ValueError("orbax checkpoint DIR is
    unreadable: <reason>"). Metadata files must be JSON; nothing is ever unpickled.
    """
    import jax

    ckpt_dir = Path(ckpt_dir).absolute()
    if not ckpt_dir.is_dir():
        if ckpt_dir.exists():
            raise NotADirectoryError(f"orbax checkpoint {ckpt_dir} is a file, not a directory")
        raise FileNotFoundError(f"orbax checkpoint {ckpt_dir} not found")
    params_dir = ckpt_dir / ORBAX_PARAMS
    if not params_dir.is_dir():
        raise FileNotFoundError(f"orbax checkpoint {ckpt_dir} has no {ORBAX_PARAMS} folder ({params_dir} not found)")
    _check_orbax_metadata(ckpt_dir, params_dir)
    unreadable = f"orbax checkpoint {ckpt_dir} is unreadable"

    import orbax.checkpoint as ocp

    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)   # orbax logs, then swallows, metadata failures; restore reports them
    try:
        with ocp.StandardCheckpointer() as ckptr:
            stored = ckptr.metadata(params_dir)
        stored = getattr(stored, "item_metadata", stored)
        stored = getattr(stored, "tree", stored)
        stored_leaves = {} if stored is None else _leaves(stored)
    except Exception as e:  # noqa: BLE001 - orbax raises anything; the reader gets one line
        raise ValueError(f"{unreadable}: {short_error(e)}") from None
    finally:
        absl_logger.setLevel(level)

    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    is_leaf = lambda x: hasattr(x, "shape") and hasattr(x, "dtype")  # noqa: E731
    if abstract is None and stored_leaves:
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding), stored,
                              is_leaf=is_leaf)
    elif abstract is None:
        target = None          # orbax could not read its metadata: the restore below says why
    else:
        want = _leaves(abstract)
        problems = [] if not stored_leaves else [f"missing {p}" for p in sorted(set(want) - set(stored_leaves))]
        problems += [f"unexpected {p}" for p in sorted(set(stored_leaves) - set(want))]
        problems += [f"{p} stored {tuple(stored_leaves[p].shape)}, expected {tuple(want[p].shape)}"
                     for p in sorted(set(want) & set(stored_leaves))
                     if tuple(stored_leaves[p].shape) != tuple(want[p].shape)]
        if problems:
            more = f"; ... ({len(problems) - 8} more)" if len(problems) > 8 else ""
            raise ValueError(f"orbax checkpoint {ckpt_dir} does not match the expected params: "
                             f"{'; '.join(problems[:8])}{more}")
        target = jax.tree.map(lambda a: a if getattr(a, "sharding", None) is not None else
                              jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract, is_leaf=is_leaf)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            return ckptr.restore(params_dir, target)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{unreadable}: {short_error(e)}") from None


# ---- finding checkpoints ----

def resolve(source: str, revision: str | None = None) -> tuple[str, Path | str]:
    """(kind, location) with kind in {'builtin', 'orbax', 'hf'}; hub ids are downloaded (or taken from the
    local hub cache) with huggingface-hub."""
    source = str(source)
    if source.startswith("builtin:"):
        return "builtin", source[len("builtin:"):]
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / ORBAX_MARKER).exists():
            return "orbax", path
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has no config.json: not an HF checkpoint directory")
        return "hf", path
    if path.exists():
        raise ValueError(f"{path} is a file; pass the checkpoint directory that holds config.json")
    looks_local = source.startswith((".", "/", "~")) or source.count("/") != 1 or os.sep == "\\"
    if looks_local:
        raise FileNotFoundError(f"checkpoint directory {source} does not exist (and it is not a hub id "
                                f"of the form org/name)")
    return "hf", hub_snapshot(source, revision)


def hub_snapshot(repo_id: str, revision: str | None) -> Path:
    """The repo's snapshot folder with its config, safetensors and tokenizer; a repo without safetensors
    (Parcae publishes only pytorch_model.bin) gets its PyTorch state dict fetched in a second pass, so repos
    with both never download the pickle."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        where = Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS))
        if any(where.glob("*.safetensors")):
            return where
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(torch_pickle.TORCH_FILES)))
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(f"could not fetch {repo_id}@{revision or 'main'} from the hub and it is not in "
                                f"the local cache (offline?): {e}") from None
    except HfHubHTTPError as e:
        raise FileNotFoundError(f"hub repo {repo_id}@{revision or 'main'}: {e}") from None


# ---- confinement: every file a checkpoint names stays inside it ----

def hub_blobs(ckpt_dir) -> Path | None:
    """The `blobs/` folder of a Hugging Face hub-cache snapshot (models--org--name/snapshots/<rev>/), whose
    files are symlinks into it; None when `ckpt_dir` is not laid out as one."""
    ckpt_dir = Path(ckpt_dir).absolute()
    repo = ckpt_dir.parent.parent
    if ckpt_dir.parent.name == "snapshots" and (repo / "blobs").is_dir():
        return (repo / "blobs").resolve()
    return None


def confined(ckpt_dir, name: str, what: str) -> Path:
    """`ckpt_dir / name`, refusing (ValueError naming `what` and the entry) a name that is empty, absolute or
    holds `..`, and a path that resolves (symlinks followed) outside `ckpt_dir`, except into the `blobs/`
    folder of a hub-cache snapshot (`hub_blobs`). The file need not exist."""
    ckpt_dir = Path(ckpt_dir)
    bad = f"{ckpt_dir}: {what} names {name!r}"
    if not isinstance(name, str) or not name or "\0" in name:
        raise ValueError(f"{bad}, which is not a file name")
    parts = Path(name).parts
    if Path(name).is_absolute() or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"{bad}, an absolute path; a checkpoint may only name files inside its own folder")
    if ".." in parts or ".." in name.replace("\\", "/").split("/"):
        raise ValueError(f"{bad}, which leaves the checkpoint folder ('..'); a checkpoint may only name files "
                         f"inside its own folder")
    path = ckpt_dir / name
    target = path.resolve()
    roots = [ckpt_dir.resolve()] + [b for b in [hub_blobs(ckpt_dir)] if b is not None]
    if not any(target == r or r in target.parents for r in roots):
        raise ValueError(f"{bad}, which resolves to {target}, outside the checkpoint folder; a checkpoint may "
                         f"only name files inside its own folder")
    return path
