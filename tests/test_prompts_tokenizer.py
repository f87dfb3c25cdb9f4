"""The built-in prompt set, prompt files and the tokenizers (no JAX needed)."""
import collections
import json

import pytest

from loopjax.io.prompts import (BUILTIN_PROMPTS, REGISTERS, Prompt, builtin_prompts, get_prompts, load_prompts,
                             prompt_set_digest)
from loopjax.io.tokenizer import HFTokenizer, SimpleTokenizer, check_ids, get_tokenizer

PAPER_PROMPTS = [
    "Water is composed of",
    "Once upon a time, in a kingdom far away;",
    "To bake a cake, first",
    "To solve this problem we need to first consider",
    "If all birds can fly and a penguin is a bird, then",
]


def test_builtin_set_has_20_prompts_over_three_registers():
    ps = builtin_prompts()
    assert len(ps) == 20 == len(BUILTIN_PROMPTS)
    assert len({p.text for p in ps}) == 20
    counts = collections.Counter(p.register for p in ps)
    assert set(counts) == set(REGISTERS)
    assert all(n >= 6 for n in counts.values())
    texts = {p.text: p.register for p in ps}
    for t in PAPER_PROMPTS:
        assert t in texts
    assert texts["Once upon a time, in a kingdom far away;"] == "narrative"
    assert texts["To bake a cake, first"] == "instructional"
    assert texts["Water is composed of"] == "declarative"


def test_builtin_prompts_share_few_lengths_under_the_simple_tokenizer():
    tok = SimpleTokenizer(512)
    lengths = {len(tok.encode(p.text)) for p in builtin_prompts()}
    assert lengths == {len(tok.encode(t)) for t in PAPER_PROMPTS} == {4, 6, 9, 11, 13}


def test_prompt_file(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("first prompt\n\n  \nsecond, with punctuation!\r\n# a hash line is a prompt too\n")
    ps = load_prompts(f)
    assert [p.text for p in ps] == ["first prompt", "second, with punctuation!", "# a hash line is a prompt too"]
    assert all(p.register == "custom" for p in ps)
    assert [p.text for p in get_prompts(f, max_prompts=2)] == ["first prompt", "second, with punctuation!"]
    assert len(get_prompts(None, 3)) == 3
    assert prompt_set_digest(ps) == prompt_set_digest(load_prompts(f))
    assert prompt_set_digest(ps) != prompt_set_digest(ps[:2])
    with pytest.raises(FileNotFoundError):
        load_prompts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        load_prompts(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="max-prompts"):
        get_prompts(None, 0)
    assert Prompt("x").to_json() == {"text": "x", "register": "custom"}


def test_simple_tokenizer_is_fixed_and_never_zero():
    tok = SimpleTokenizer(320)
    # golden values: the map must never change (saved results and resume depend on it)
    assert tok.encode("Water is composed of") == [294, 156, 155, 78]
    assert tok.encode("Once upon a time, in a kingdom far away,") == [32, 64, 68, 213, 77, 35, 68, 97, 113, 49, 77]
    assert SimpleTokenizer(512).encode("Water is composed of") == [448, 331, 155, 168]
    for V in (2, 3, 320, 65536):
        ids = SimpleTokenizer(V).encode(" ".join(p.text for p in builtin_prompts()) + " é ünïcode 123")
        assert ids and all(1 <= i < V for i in ids)
    assert tok.encode("") == []
    with pytest.raises(ValueError):
        SimpleTokenizer(1)


def _write_tokenizer_json(path, vocab):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.save(str(path / "tokenizer.json"))


def test_get_tokenizer_uses_the_checkpoint_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer

    vocab = {"[UNK]": 0, "<s>": 1, "water": 2, "is": 3, "composed": 4, "of": 5}
    _write_tokenizer_json(tmp_path, vocab)
    tok = get_tokenizer(tmp_path, 320)
    assert isinstance(tok, HFTokenizer)
    ref = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tok.encode("water is composed of") == ref.encode("water is composed of").ids == [2, 3, 4, 5]
    # tokenizer_config add_bos_token (LlamaTokenizerFast behaviour)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True, "bos_token": "<s>"}))
    assert get_tokenizer(tmp_path, 320).encode("water is") == [1, 2, 3]
    # no tokenizer.json (built-in models, fixtures) -> the simple tokenizer
    assert isinstance(get_tokenizer(None, 320), SimpleTokenizer)
    assert isinstance(get_tokenizer(tmp_path / "nothing-here", 320), SimpleTokenizer)


def test_check_ids():
    check_ids([0, 1, 319], 320)
    with pytest.raises(ValueError, match="out of vocabulary"):
        check_ids([1, 320], 320, "prompt 3")
    with pytest.raises(ValueError, match="zero tokens"):
        check_ids([], 320)
