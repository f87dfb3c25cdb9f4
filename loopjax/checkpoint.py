"""Finding and reading checkpoints: HF safetensors directories (single or sharded), hub repos, orbax dirs.

Weights are only ever read from safetensors or orbax (never pickle). Headers are read first, so that a
missing shard or a wrong tensor is reported before any weight is loaded.
"""
import dataclasses
import json
import os
import struct
from pathlib import Path

INDEX_FILE = "model.safetensors.index.json"
ORBAX_MARKER = "loopjax.json"       # written by `loopjax convert` beside the orbax params
HUB_PATTERNS = ["config.json", "*.safetensors", INDEX_FILE, "tokenizer.json", "tokenizer_config.json",
                "generation_config.json"]


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: str        # safetensors dtype name: F32, BF16, F16, F64, ...
    shape: tuple[int, ...]


def read_json(path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor names, dtypes and shapes from a .safetensors header, without reading the data."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
    except FileNotFoundError:
        raise FileNotFoundError(f"safetensors file {path} not found") from None
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a valid safetensors file ({e})") from None
    header.pop("__metadata__", None)
    return {name: TensorInfo(Path(path), h["dtype"], tuple(h["shape"])) for name, h in header.items()}


def tensor_index(ckpt_dir) -> dict[str, TensorInfo]:
    """Every tensor of an HF checkpoint directory, single-file or sharded (model.safetensors.index.json)."""
    ckpt_dir = Path(ckpt_dir)
    index_path = ckpt_dir / INDEX_FILE
    if index_path.exists():
        weight_map = read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index_path} has no 'weight_map'")
        shards = sorted(set(weight_map.values()))
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
        raise FileNotFoundError(f"{ckpt_dir}: no *.safetensors files (and no {INDEX_FILE}); loopjax reads "
                                f"weights only from safetensors or from an orbax dir written by `loopjax convert`")
    found = {}
    for file in files:
        found.update(safetensors_header(file))
    return found


def read_tensors(infos: dict[str, TensorInfo]):
    """name -> jax array (dtype as stored, bf16 included) for the given tensors, one file open at a time."""
    from safetensors import safe_open

    by_file: dict[Path, list[str]] = {}
    for name, info in infos.items():
        by_file.setdefault(info.file, []).append(name)
    out = {}
    for file, names in by_file.items():
        with safe_open(str(file), framework="flax") as f:
            for name in names:
                out[name] = f.get_tensor(name)
    return out


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
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS))
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(f"could not fetch {repo_id}@{revision or 'main'} from the hub and it is not in "
                                f"the local cache (offline?): {e}") from None
    except HfHubHTTPError as e:
        raise FileNotFoundError(f"hub repo {repo_id}@{revision or 'main'}: {e}") from None
