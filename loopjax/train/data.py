"""Training data: a built-in offline English corpus, a byte-level BPE tokenizer, token arrays, batches.

Corpus. The built-in corpus is the text of CPython's ``pydoc_data.topics.topics`` (the ~465 kB of
reference-manual sections that ``help()`` shows): one document per topic, in sorted key order, so it is
the same on every machine with the same Python minor version (its digest is recorded in the settings).
``--corpus FILE`` takes any UTF-8 text file instead; its documents are the paragraphs separated by
blank lines. The held-out split is the tail of the document list: the fewest last documents that hold
at least ``heldout_frac`` of the characters (so the split is at a document boundary), at least one
document on each side.

Tokenizer. A byte-level BPE (GPT-2 style pre-tokeniser, full 256-byte initial alphabet, so every string
encodes and decodes back) trained with the ``tokenizers`` library on the *train* documents only, with one
special token ``<|endoftext|>`` (id 0) that separates documents in the token stream. Saved as a HF
``tokenizer.json``.

Batches. ``batch(tokens, step, ...)`` draws ``batch`` random windows of ``seq_len + 1`` tokens from a numpy
Generator seeded with ``(seed, step)``: the batch at a step is a pure function of (corpus, tokenizer,
seed, step), which is what makes ``resume`` reproduce an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import numpy as np

EOS = "<|endoftext|>"
BUILTIN_CORPUS = "builtin:pydoc-topics"


@dataclasses.dataclass(frozen=True)
class Corpus:
    name: str
    train_docs: tuple[str, ...]
    heldout_docs: tuple[str, ...]

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (*self.train_docs, "\x00--heldout--\x00", *self.heldout_docs):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        return {"name": self.name, "digest": self.digest,
                "train_docs": len(self.train_docs), "heldout_docs": len(self.heldout_docs),
                "train_chars": sum(map(len, self.train_docs)),
                "heldout_chars": sum(map(len, self.heldout_docs))}


def builtin_documents() -> list[str]:
    """The pydoc topics, one document per topic, in sorted key order."""
    from pydoc_data.topics import topics

    return [topics[k].strip() for k in sorted(topics) if topics[k].strip()]


def file_documents(path) -> list[str]:
    """A UTF-8 text file split into paragraphs (blank-line separated)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    text = p.read_text(encoding="utf-8")
    docs = [d.strip() for d in re.split(r"\n\s*\n", text) if d.strip()]
    if len(docs) < 2:
        # one paragraph: fall back to lines so there is still a document boundary to split at
        docs = [line.strip() for line in text.splitlines() if line.strip()]
    if len(docs) < 2:
        raise ValueError(f"corpus {path} needs at least two paragraphs or lines (train and held-out)")
    return docs


def split_documents(docs, heldout_frac: float) -> tuple[list[str], list[str]]:
    """Train = leading documents, held-out = the fewest trailing documents holding >= heldout_frac of the text."""
    if not 0 < heldout_frac < 1:
        raise ValueError(f"heldout_frac must be in (0, 1), got {heldout_frac}")
    total = sum(map(len, docs))
    tail, cut = 0, len(docs)
    while cut > 1 and tail < heldout_frac * total:
        cut -= 1
        tail += len(docs[cut])
    cut = min(cut, len(docs) - 1)
    return list(docs[:cut]), list(docs[cut:])


def load_corpus(corpus: str | None = None, heldout_frac: float = 0.05) -> Corpus:
    """The built-in corpus (None or 'builtin:pydoc-topics') or a text file, split into train / held-out."""
    if corpus in (None, BUILTIN_CORPUS):
        docs, name = builtin_documents(), BUILTIN_CORPUS
    else:
        docs, name = file_documents(corpus), str(corpus)
    train, heldout = split_documents(docs, heldout_frac)
    return Corpus(name, tuple(train), tuple(heldout))


# ---- tokenizer ----

def train_tokenizer(docs, vocab_size: int = 2048):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on `docs`; id 0 is <|endoftext|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 258:
        raise ValueError(f"vocab_size must be >= 258 (256 bytes + <|endoftext|> + one merge), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(docs), trainer)
    return tok


def save_tokenizer(tok, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def load_tokenizer(path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def tokenizer_digest(tok) -> str:
    return hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]


def encode_docs(tok, docs) -> np.ndarray:
    """One int32 token stream: every document followed by <|endoftext|>."""
    eos = tok.token_to_id(EOS)
    out: list[int] = []
    for enc in tok.encode_batch(list(docs), add_special_tokens=False):
        out.extend(enc.ids)
        out.append(eos)
    return np.asarray(out, dtype=np.int32)


def encode_prompts(tok, texts) -> list[np.ndarray]:
    """Each prompt text as a 1-D int32 array (no special tokens); an empty encoding is an error."""
    out = []
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False).ids
        if not ids:
            raise ValueError(f"prompt {text!r} tokenises to zero tokens")
        out.append(np.asarray(ids, dtype=np.int32))
    return out


# ---- batches ----

def batch_rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(step)])


def sample_batch(tokens: np.ndarray, step: int, *, batch: int, seq_len: int, seed: int) -> np.ndarray:
    """(batch, seq_len + 1) random windows of the token stream; a pure function of (tokens, seed, step)."""
    n = tokens.shape[0] - (seq_len + 1)
    if n < 0:
        raise ValueError(f"the training corpus has {tokens.shape[0]} tokens, fewer than seq_len + 1 = {seq_len + 1}")
    starts = batch_rng(seed, step).integers(0, n + 1, size=batch)
    return np.stack([tokens[s:s + seq_len + 1] for s in starts])


def heldout_windows(tokens: np.ndarray, seq_len: int, max_windows: int | None = None) -> np.ndarray:
    """Non-overlapping (n, seq_len + 1) windows from the start of the held-out stream (fixed, deterministic)."""
    w = seq_len + 1
    n = tokens.shape[0] // w
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise ValueError(f"the held-out text has {tokens.shape[0]} tokens, fewer than seq_len + 1 = {w}")
    return tokens[: n * w].reshape(n, w)


def unigram_cross_entropy(train_tokens: np.ndarray, targets: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of `targets` under the add-one-smoothed unigram frequencies of the train
    stream: the loss of the best context-free predictor a model could learn from the training data."""
    counts = np.bincount(train_tokens.ravel(), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[targets.ravel()].mean())
