"""Tokenisers for the analyses.

``get_tokenizer(source_dir, vocab_size)``:

* If ``source_dir`` (a local checkpoint dir, or the hub snapshot dir of a hub id) holds a
  ``tokenizer.json``, that file is loaded with the ``tokenizers`` library, which is what a
  Hugging Face fast tokenizer does: ``encode`` applies the file's normaliser, pre-tokeniser, model and
  post-processor (so special tokens are added exactly as the file says). If ``tokenizer_config.json``
  says ``add_bos_token: true`` and the post-processor did not add the BOS token, it is prepended, as
  ``LlamaTokenizerFast`` does.
* Otherwise (built-in models, the test fixtures) a :class:`SimpleTokenizer` is used: a fixed,
  deterministic word-level hash tokeniser. The text is split into words and single punctuation
  characters (regex ``\\w+|[^\\w\\s]``); each piece maps to ``1 + crc32(piece.encode("utf-8")) %
  (vocab_size - 1)``, i.e. into ``[1, vocab_size)``: id 0 (pad/bos/eos in the Ouro config) is never
  produced. The map is stable across runs, machines and Python versions (it does not use ``hash()``),
  gives roughly the token counts of a real BPE tokeniser, and is only meant for random/tiny models
  (different pieces may share an id).

Both expose ``encode(text) -> list[int]`` and a ``name``.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_PIECE = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class SimpleTokenizer:
    """Deterministic word-level hash tokeniser into ``[1, vocab_size)`` (see module docstring)."""

    def __init__(self, vocab_size: int):
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 for the simple tokenizer, got {vocab_size}")
        self.vocab_size = int(vocab_size)
        self.name = f"simple-crc32-words(vocab={self.vocab_size})"

    def encode(self, text: str) -> list[int]:
        return [1 + zlib.crc32(p.encode("utf-8")) % (self.vocab_size - 1) for p in _PIECE.findall(text)]


class HFTokenizer:
    """A checkpoint's own ``tokenizer.json`` loaded with the ``tokenizers`` library."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer

        path = Path(path)
        self.path = path
        try:
            self.tok = Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 - the tokenizers library raises a bare Exception on a bad file
            reason = " ".join(str(e).split())[:200] or type(e).__name__
            raise ValueError(f"{path} is not a valid tokenizer.json ({reason}); fix or remove it") from None
        self.name = f"tokenizer.json ({path.parent.name})"
        self.bos_id: int | None = None
        cfg_path = path.parent / "tokenizer_config.json"
        if cfg_path.is_file():
            try:
                cfg = json.loads(cfg_path.read_text())
            except (OSError, ValueError):
                cfg = {}
            if cfg.get("add_bos_token"):
                bos = cfg.get("bos_token")
                if isinstance(bos, dict):
                    bos = bos.get("content")
                if isinstance(bos, str):
                    self.bos_id = self.tok.token_to_id(bos)

    def encode(self, text: str) -> list[int]:
        ids = list(self.tok.encode(text, add_special_tokens=True).ids)
        if self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id] + ids
        return ids


def get_tokenizer(source_dir: str | Path | None, vocab_size: int):
    """The checkpoint's ``tokenizer.json`` where it has one, else :class:`SimpleTokenizer`. The tokenizer
    files (``TOKENIZER_FILES``) must resolve inside ``source_dir`` (`loopjax.io.checkpoint.confined`)."""
    if source_dir is not None:
        from loopjax.io.checkpoint import confined

        for name in TOKENIZER_FILES:
            confined(source_dir, name, "tokenizer file")
        p = Path(source_dir) / "tokenizer.json"
        if p.is_file():
            return HFTokenizer(p)
    return SimpleTokenizer(vocab_size)


def check_ids(ids: list[int], vocab_size: int, what: str = "prompt") -> None:
    """Raise ``ValueError`` (one line) if ``ids`` is empty or holds an id outside ``[0, vocab_size)``."""
    if len(ids) == 0:
        raise ValueError(f"{what} tokenises to zero tokens")
    bad = [i for i in ids if not (0 <= int(i) < vocab_size)]
    if bad:
        raise ValueError(
            f"{what}: token id {bad[0]} is out of vocabulary (vocab_size {vocab_size}); "
            f"the tokenizer does not match the model"
        )
