"""Prompt sets for the analyses.

The built-in set has exactly 20 prompts spread over three registers (declarative, narrative,
instructional), each tagged with its register. ``--prompts FILE`` replaces it with one prompt per
line (blank lines are skipped; a line is taken verbatim otherwise, including a leading ``#``), tagged
with the register ``"custom"``.

The five prompts the paper names are included verbatim; the other fifteen were worded so that, under
the simple tokenizer of the built-in models (``loopjax.io.tokenizer.SimpleTokenizer``), every prompt has
one of the five lengths of those five (4, 6, 9, 11 or 13 tokens). Each prompt length is a separate XLA
compilation, so this keeps a built-in run at five compilations per analysis instead of ten.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

REGISTERS = ("declarative", "narrative", "instructional")


@dataclass(frozen=True)
class Prompt:
    text: str
    register: str = "custom"

    def to_json(self) -> dict:
        return asdict(self)


_BUILTIN = (
    # declarative: facts, definitions, a syllogism
    ("Water is composed of", "declarative"),
    ("Diamonds are made of", "declarative"),
    ("If all birds can fly and a penguin is a bird, then", "declarative"),
    ("The chemical symbol for gold is", "declarative"),
    ("Photosynthesis is the process by which green plants convert", "declarative"),
    ("The speed of light in a vacuum is approximately", "declarative"),
    ("A prime number is a natural number greater than one that", "declarative"),
    # narrative: story openings
    ("Once upon a time, in a kingdom far away;", "narrative"),
    ("The old man slowly opened the door and saw", "narrative"),
    ("It was a dark and stormy night, and", "narrative"),
    ("She had never seen the ocean before, so when she", "narrative"),
    ("After the war ended, the soldiers returned home to find", "narrative"),
    ("The detective looked at the empty room and realized", "narrative"),
    # instructional: procedures and problem solving
    ("To bake a cake, first", "instructional"),
    ("To solve this problem we need to first consider", "instructional"),
    ("To change a flat tire, you should first", "instructional"),
    ("Here is how to write a good essay:", "instructional"),
    ("Step 1: Preheat the oven to 180 degrees", "instructional"),
    ("To install the package, open a terminal and run:", "instructional"),
    ("When learning a new language, the most important thing is to practise", "instructional"),
)

BUILTIN_PROMPTS: tuple[Prompt, ...] = tuple(Prompt(t, r) for t, r in _BUILTIN)
assert len(BUILTIN_PROMPTS) == 20

# The checkpoint sweep (the paper's Fig. 3 averages over 5 prompts): the five prompts the paper quotes,
# which span the three registers (two declarative, one narrative, two instructional).
SWEEP_PROMPTS: tuple[Prompt, ...] = tuple(BUILTIN_PROMPTS[i] for i in (0, 2, 7, 13, 14))


def builtin_prompts() -> list[Prompt]:
    """The 20 built-in prompts, in a fixed order (the prompt index is part of the PRNG key)."""
    return list(BUILTIN_PROMPTS)


def load_prompts(path: str | Path) -> list[Prompt]:
    """One prompt per line (UTF-8; a leading byte-order mark is dropped); blank lines are skipped; trailing
    newline/CR characters are stripped."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"prompt file {path} is a directory; pass a text file with one prompt per line")
    if not p.exists():
        raise FileNotFoundError(f"prompt file not found: {path}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise OSError(e.errno, f"cannot read prompt file {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"prompt file {path} is not UTF-8 text ({e.reason} at byte {e.start}, line {line}); "
                         f"save it as UTF-8") from None
    lines = text.splitlines()
    prompts = [Prompt(line.rstrip("\r"), "custom") for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"prompt file {path} holds no prompts")
    return prompts


def get_prompts(path: str | Path | None = None, max_prompts: int | None = None,
                default: tuple[Prompt, ...] = BUILTIN_PROMPTS) -> list[Prompt]:
    """The prompts of --prompts FILE, else `default` (the 20 built-in prompts); the first max_prompts."""
    prompts = load_prompts(path) if path else list(default)
    if max_prompts is not None:
        if max_prompts < 1:
            raise ValueError(f"--max-prompts must be >= 1, got {max_prompts}")
        prompts = prompts[:max_prompts]
    return prompts


def prompt_set_digest(prompts: list[Prompt]) -> str:
    """A short, stable digest of a prompt list (texts and registers, in order)."""
    blob = json.dumps([p.to_json() for p in prompts], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
