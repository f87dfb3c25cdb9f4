"""Bad inputs and faults (issue #12): every message names the problem and the file, nothing is silently wrong.

One test per case. CLI cases go through `loopjax.cli.main` and check the exit status and the message; library
cases use pytest.raises(match=...). Tests named `test_good_...` pin behaviour that was already right when the
issue was worked on; the others failed before their fix. The table of all cases is docs/bad_inputs.md.

Runs use the built-in ouro-tiny model or copies of tests/fixtures/ouro-tiny, one prompt of 4 tokens, k <= 4,
a few steps, and a persistent XLA cache shared with the subprocess runs.
"""
import gc
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import loopjax
from loopjax import cli
from loopjax.io import checkpoint
from loopjax.io import files
from loopjax.cli import Hooks
from conftest import numbers

FIXTURES = Path(__file__).parent / "fixtures"
OURO = FIXTURES / "ouro-tiny"
TINY = ["--k", "2", "--steps", "2", "--quiet"]
RANDOM = ["--model", "builtin:ouro-tiny-random"]  # the fast random built-in, where a test names no model
NOISE = ("Traceback", "Event loop is closed", "never retrieved", "Exception ignored", "ERROR:")


@pytest.fixture
def prompt1(tmp_path):
    """One prompt of 4 tokens (simple tokenizer): one compiled shape."""
    f = tmp_path / "p1.txt"
    f.write_text("Water is composed of\n")
    return f


@pytest.fixture
def prompts2(tmp_path):
    f = tmp_path / "p2.txt"
    f.write_text("Water is composed of\nThe sky is blue\n")
    return f


def run(argv, capsys, hooks=None):
    argv = [str(a) for a in argv]
    if "--model" not in argv and argv[0] in ("spectrum", "attribute", "similarity", "trajectory", "report"):
        argv = argv[:1] + RANDOM + argv[1:]
    rc = cli.main(argv, hooks=hooks)
    out = capsys.readouterr()
    return rc, out.err.strip()


def one_line_error(err: str, *needles: str) -> None:
    assert err.startswith("loopjax: error:"), err
    assert "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def results(folder: Path) -> dict:
    return numbers(json.loads((folder / "results.json").read_text()))


def copy_fixture(dst: Path) -> Path:
    shutil.copytree(OURO, dst, ignore=shutil.ignore_patterns("expected.npz"))
    return dst


# ---- 1. counts given as 0 ------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, flag", [
    (["spectrum", "--steps", 0], "--steps"), (["similarity", "--loops", 0], "--loops"),
    (["trajectory", "--steps", 0], "--steps"), (["report", "--spectrum-steps", 0], "--spectrum-steps"),
    (["report", "--attr-steps", 0], "--attr-steps"), (["report", "--traj-steps", 0], "--traj-steps"),
    (["report", "--attr-k", 0], "--attr-k"), (["spectrum", "--checkpoint-every", 0], "--checkpoint-every"),
])
def test_good_zero_counts_are_errors(argv, flag, tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = run([*argv, "--out", out, "--quiet"], capsys)
    assert rc == 2
    one_line_error(err, f"{flag} must be an integer >= 1, got 0")
    assert not out.exists()


# ---- 2. weight dtypes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [jnp.int8, np.bool_, "int8", np.int32])
def test_good_load_rejects_non_float_dtype(dtype):
    with pytest.raises(ValueError, match="not a floating-point dtype"):
        loopjax.load(OURO, dtype=dtype)


def test_good_load_float64_needs_x64():
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match="jax_enable_x64"):
            loopjax.load(OURO, dtype="float64")
        with pytest.raises(ValueError, match="jax_enable_x64"):
            loopjax.load("builtin:ouro-tiny-random", dtype=np.float64)


# ---- 3. a rejected --resume changes nothing ------------------------------------------------------------

def test_good_rejected_resume_leaves_folder_untouched(tmp_path, prompts2, capsys):
    out = tmp_path / "out"
    base = ["spectrum", "--prompts", prompts2, "--out", out, *TINY]
    folder = out / "spectrum"
    # an unfinished run (interrupted after its first prompt): RUNNING + prompts/000.json
    rc, err = run(base, capsys, hooks=Hooks(after_unit=_interrupt))
    assert rc == 130 and (folder / "RUNNING").is_file()
    before = snapshot(folder)
    rc, err = run([*base, "--resume", "--k", 3], capsys)
    assert rc == 2 and "settings.k" in err and str(folder / "RUNNING") in err
    assert snapshot(folder) == before  # RUNNING marker and saved prompt byte for byte
    # finish it, then try to resume the finished 2-prompt run with 1 prompt or another k
    assert run([*base, "--resume"], capsys)[0] == 0
    before = snapshot(folder)
    for extra, field in ((["--max-prompts", 1], "settings.n_prompts"), (["--k", 3], "settings.k")):
        rc, err = run([*base, "--resume", *extra], capsys)
        assert rc == 2, err
        one_line_error(err, field, str(folder / "results.json"))
        assert snapshot(folder) == before
    # without results.json and RUNNING the saved prompt 001 is an orphan of a 1-prompt run: refused too
    (folder / "results.json").unlink()
    before = snapshot(folder)
    rc, err = run([*base, "--resume", "--max-prompts", 1], capsys)
    assert rc == 2
    one_line_error(err, "units this run does not have (001)")
    assert snapshot(folder) == before


# ---- 4. a checkpoint that does not match its config ----------------------------------------------------

def _variant(kind: str, tmp_path: Path) -> Path:
    from safetensors.numpy import load_file

    cfg = json.loads((OURO / "config.json").read_text())
    tensors = load_file(OURO / "model.safetensors")
    out = tmp_path / kind
    if kind == "hidden_size":
        cfg["hidden_size"] = 32
    elif kind == "extra":
        tensors["model.extra_adapter.weight"] = np.zeros((3, 5), np.float32)
    elif kind == "shape":
        tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((7, 64), np.float32)
    elif kind == "int32":
        tensors["model.norm.weight"] = tensors["model.norm.weight"].astype(np.int32)
    elif kind == "orbax":
        loopjax.convert(OURO, out)
        cfg = json.loads((out / "config.json").read_text())
        cfg["intermediate_size"] = 96
        (out / "config.json").write_text(json.dumps(cfg))
        return out
    return checkpoint.write_hf_checkpoint(out, cfg, tensors)


@pytest.mark.parametrize("kind, expect", [
    ("hidden_size", ["48 mis-shaped tensor(s)", "model.embed_tokens.weight: checkpoint [320, 64], config expects "
                                                "[320, 32]", "... and 43 more"]),
    ("extra", ["1 unexpected tensor(s)", "model.extra_adapter.weight [3, 5]"]),
    ("shape", ["1 mis-shaped tensor(s)", "model.layers.1.mlp.up_proj.weight: checkpoint [7, 64], config expects "
                                         "[160, 64]"]),
    ("orbax", ["does not match its config.json", "12 param(s) differ", "layers_0.down_proj.kernel: (160, 64) vs "
                                                                       "expected (96, 64)", "... and 7 more"]),
])
def test_good_checkpoint_mismatch_lists_offenders(kind, expect, tmp_path, capsys):
    ckpt = _variant(kind, tmp_path)
    rc, err = run(["spectrum", "--model", ckpt, "--out", tmp_path / "out", *TINY], capsys)  # no --debug
    assert rc == 2
    assert err.startswith(f"loopjax: error: cannot load model {str(ckpt)!r}") and "Traceback" not in err, err
    for e in expect:
        assert e in err, (e, err)
    assert len(err.splitlines()) <= 9  # the first 5 offenders and a count, not all of them
    assert not (tmp_path / "out").exists()


def test_int32_tensor_shows_shape_and_expected_dtypes(tmp_path, capsys):
    """Was already refused, naming the tensor and 'I32'; now also its shape and the dtypes that would do."""
    ckpt = _variant("int32", tmp_path)
    rc, err = run(["spectrum", "--model", ckpt, "--out", tmp_path / "out", *TINY], capsys)
    assert rc == 2 and "Traceback" not in err
    assert "1 tensor(s) of unsupported dtype" in err
    assert "model.norm.weight [64]: stored as I32, expected one of BF16, F16, F32, F64" in err


# ---- 5. files that are not (whole) safetensors ---------------------------------------------------------

@pytest.mark.parametrize("kind, expect", [
    ("text", "is not a valid safetensors file: header too large"),
    ("huge-header", "is not a valid safetensors file: header too large"),
    ("truncated", "is truncated: tensor"),
])
def test_good_corrupt_safetensors_is_one_line_naming_the_file(kind, expect, tmp_path, capsys):
    ckpt = copy_fixture(tmp_path / "ckpt")
    st = ckpt / "model.safetensors"
    data = st.read_bytes()
    if kind == "text":
        st.write_text("this is a text file, not a safetensors file\n")
    elif kind == "huge-header":
        st.write_bytes(struct.pack("<Q", 2**62) + data[8:])
    else:
        st.write_bytes(data[: len(data) // 2])
    rc, err = run(["spectrum", "--model", ckpt, "--out", tmp_path / "out", *TINY], capsys)
    assert rc == 2
    one_line_error(err, f"{st} {expect}" if kind != "truncated" else f"{st} is truncated")


# ---- 6. orbax checkpoints with broken files ------------------------------------------------------------

@pytest.fixture(scope="module")
def orbax_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("orbax") / "ouro-tiny"
    loopjax.convert(OURO, out)
    return out


@pytest.fixture
def noise(capfd, caplog, monkeypatch):
    """`noise()` -> (stderr, [what else was reported]) after letting leftover orbax work (if any) finish and be
    garbage-collected: unraisable exceptions ('Event loop is closed' from abandoned reads, coroutines
    destroyed with an exception) and ERROR log records (asyncio's 'exception was never retrieved', orbax's
    writer threads). Outside pytest all of these are printed on stderr after loopjax's one-line error."""
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(f"{u.exc_type.__name__}: {u.exc_value}"))
    caplog.set_level("ERROR")

    def collect():
        for _ in range(3):
            gc.collect()
            time.sleep(0.1)
        err = capfd.readouterr().err
        logged = [f"{r.name}: {r.getMessage()[:200]}" for r in caplog.records if r.levelno >= 40]
        caplog.clear()
        found = unraisable + logged + [n for n in NOISE if n in err]
        unraisable.clear()
        return err, found
    return collect


def test_orbax_truncated_data_is_one_line_and_quiet(orbax_ckpt, tmp_path, noise):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(orbax_ckpt, ckpt)
    for f in (ckpt / "params").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"^orbax checkpoint {ckpt} is unreadable: [^\n]+$"):
        loopjax.load(ckpt)
    # before the fix, orbax's abandoned reads printed dozens of "Event loop is closed" tracebacks here
    _, found = noise()
    assert not found, found[:5]
    rc = cli.main(["spectrum", "--model", str(ckpt), "--out", str(tmp_path / "out"), *TINY])
    err, found = noise()
    assert rc == 2
    one_line_error(err.strip(), f"orbax checkpoint {ckpt} is unreadable")
    assert not found, found[:5]


def test_good_orbax_pickled_metadata_is_refused(orbax_ckpt, tmp_path, capsys):
    import pickle

    ckpt = tmp_path / "ckpt"
    shutil.copytree(orbax_ckpt, ckpt)
    (ckpt / "params" / "_METADATA").write_bytes(pickle.dumps({"tree": "not json"}))
    with pytest.raises(ValueError, match=r"params/_METADATA is not JSON \(a pickle\?\); loopjax never unpickles"):
        loopjax.load(ckpt)
    rc, err = run(["spectrum", "--model", ckpt, "--out", tmp_path / "out", *TINY], capsys)
    assert rc == 2
    one_line_error(err, f"orbax checkpoint {ckpt} is unreadable", "never unpickles")


# ---- 7. prompts, token ids, full disks, seeds, configs, library arguments, convert ----------------------

def test_prompts_directory_says_directory(tmp_path, capsys):
    (tmp_path / "prompts").mkdir()
    rc, err = run(["spectrum", "--prompts", tmp_path / "prompts", "--out", tmp_path / "out", *TINY], capsys)
    assert rc == 2
    one_line_error(err, f"prompt file {tmp_path / 'prompts'} is a directory")
    assert "not found" not in err


def test_prompts_not_utf8_names_the_file(tmp_path, capsys):
    f = tmp_path / "latin1.txt"
    f.write_bytes("Water is composed of\ncafé au lait\n".encode("latin-1"))
    rc, err = run(["spectrum", "--prompts", f, "--out", tmp_path / "out", *TINY], capsys)
    assert rc == 2
    one_line_error(err, f"prompt file {f} is not UTF-8 text", "line 2")


def test_good_token_ids_out_of_vocab_blames_the_ids(tmp_path, capsys):
    f = tmp_path / "ids.txt"
    f.write_text("1 2 3\n5 512 7\n")  # the built-in ouro-tiny has 512 embedding rows
    rc, err = run(["spectrum", "--prompts", f, "--token-ids", "--out", tmp_path / "out", *TINY], capsys)
    assert rc == 2
    one_line_error(err, "prompt 1", "[512] out of vocabulary [0, 512)", "given with --token-ids")
    assert "tokenizer" not in err
    assert not (tmp_path / "out").exists()


def test_out_under_a_file_is_one_line(tmp_path, prompt1, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    rc, err = run(["spectrum", "--prompts", prompt1, "--out", afile, *TINY], capsys)
    assert rc == 2
    one_line_error(err, f"{afile} exists and is not a folder")  # was: "[Errno 20] Not a directory: '.../spectrum'"
    assert afile.read_text() == "not a folder\n"


class _FullDisk:
    """`os` as seen by loopjax.io.files (the atomic writer), with fsync / replace failing like a full disk."""

    def __init__(self, fail):
        self._fail = fail

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in self._fail:
            return real

        def failing(*args):
            if self._fail[name](*args):
                raise OSError(28, "No space left on device")
            return real(*args)
        return failing


@pytest.mark.parametrize("where", ["fsync-always", "replace-results"])
def test_good_disk_full_names_the_path_and_leaves_no_results(where, tmp_path, prompt1, capsys, monkeypatch):
    out = tmp_path / "out"
    folder = out / "spectrum"
    fail = ({"fsync": lambda fd: True} if where == "fsync-always" else
            {"replace": lambda src, dst: Path(dst).name == "results.json"})
    monkeypatch.setattr(files, "os", _FullDisk(fail))
    rc, err = run(["spectrum", "--prompts", prompt1, "--out", out, *TINY], capsys)
    monkeypatch.undo()
    assert rc == 2
    failed = folder / ("RUNNING" if where == "fsync-always" else "results.json")
    one_line_error(err, f"cannot write {failed}", "No space left on device")
    assert not (folder / "results.json").exists()
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]  # no half-written temporary files
    if where == "replace-results":  # the prompts are saved: --resume finishes the run
        assert (folder / "RUNNING").is_file() and (folder / "prompts" / "000.json").is_file()
        assert run(["spectrum", "--prompts", prompt1, "--out", out, *TINY, "--resume"], capsys)[0] == 0
        assert json.loads((folder / "results.json").read_text())["status"] == "complete"


def test_checkpoint_save_failure_leaves_no_tmp_folder(tmp_path, prompt1, noise, monkeypatch):
    from orbax.checkpoint._src.handlers import json_checkpoint_handler as jh

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    async def full_async(*args, **kwargs):
        raise OSError(28, "No space left on device")

    real_save, real_async_save = jh.JsonCheckpointHandler.save, jh.JsonCheckpointHandler.async_save
    monkeypatch.setattr(jh.JsonCheckpointHandler, "save", full)
    monkeypatch.setattr(jh.JsonCheckpointHandler, "async_save", full_async)
    out = tmp_path / "out"
    argv = ["spectrum", "--prompts", prompt1, "--out", out, "--k", 2, "--steps", 4, "--checkpoint-every", 2,
            "--quiet"]
    rc = cli.main([str(a) for a in argv])
    err, found = noise()
    monkeypatch.setattr(jh.JsonCheckpointHandler, "save", real_save)
    monkeypatch.setattr(jh.JsonCheckpointHandler, "async_save", real_async_save)
    assert rc == 2
    one_line_error(err.strip(), "cannot save the scan checkpoint in "
                                f"{(out / 'spectrum' / 'checkpoints' / '000').absolute()}", "No space left on device")
    # before the fix orbax's writer threads were still writing while the folder was removed: they recreated
    # the tmp folder and logged tracebacks (also at exit)
    assert not found, found[:5]
    assert not list(out.rglob("*orbax-checkpoint-tmp*"))
    assert not (out / "spectrum" / "results.json").exists()
    assert cli.main([str(a) for a in argv] + ["--resume"]) == 0  # the folder is consistent: it resumes


def test_unreadable_scan_checkpoint_on_resume_is_one_line(tmp_path, prompt1, noise):
    out = tmp_path / "out"
    argv = [str(a) for a in ["spectrum", "--prompts", prompt1, "--out", out, "--k", 2, "--steps", 4,
                             "--checkpoint-every", 2, "--quiet"]]
    assert cli.main(argv, hooks=Hooks(after_segment=_interrupt)) == 130
    step = (out / "spectrum" / "checkpoints" / "000" / "2").absolute()
    for f in step.rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[:3])
    noise()
    rc = cli.main([*argv, "--resume"])
    err, found = noise()
    assert rc == 2
    one_line_error(err.strip(), f"--resume: scan checkpoint {step} is unreadable (", "delete that folder")
    assert not found, found[:5]
    shutil.rmtree(step)  # as the message says: the prompt starts over
    assert cli.main([*argv, "--resume"]) == 0


def test_good_seed_out_of_range_is_one_line(tmp_path, capsys):
    rc, err = run(["spectrum", "--seed", "99999999999999999999", "--out", tmp_path / "out", *TINY], capsys)
    assert rc == 2
    one_line_error(err, "--seed", "2**63 - 1")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind, expect", [
    ("list", "config.json: expected a JSON object, got a list"),
    ("string-field", "config.json has invalid field(s): hidden_size='64' (expected a positive integer)"),
])
def test_good_bad_config_json(kind, expect, tmp_path, capsys):
    ckpt = copy_fixture(tmp_path / "ckpt")
    cfg = json.loads((ckpt / "config.json").read_text())
    if kind == "list":
        cfg = [cfg]
    else:
        cfg["hidden_size"] = "64"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    rc, err = run(["spectrum", "--model", ckpt, "--out", tmp_path / "out", *TINY], capsys)
    assert rc == 2
    one_line_error(err, expect)
    assert kind != "list" or str(ckpt / "config.json") in err


@pytest.fixture(scope="module")
def model():
    return loopjax.load("builtin:ouro-tiny-random")


def test_good_empty_prompt_is_an_error(model):
    with pytest.raises(ValueError, match="empty"):
        loopjax.spectrum(model, [], k=2, steps=2)
    with pytest.raises(ValueError, match="empty"):
        loopjax.lambda1(model, jnp.zeros((0,), jnp.int32), steps=2)


def test_good_key_int_seed_and_bad_key(model):
    ids = jnp.array([1, 2, 3, 4])
    a = loopjax.spectrum(model, ids, k=2, steps=2, key=0)
    b = loopjax.spectrum(model, ids, k=2, steps=2, key=jax.random.key(0))
    np.testing.assert_array_equal(a.exponents, b.exponents)
    for bad in ("x", 1.5, True):
        with pytest.raises(TypeError, match="key must be"):
            loopjax.spectrum(model, ids, k=2, steps=2, key=bad)
    with pytest.raises(TypeError, match="key must be"):
        loopjax.similarity(model, ids, loops=2, key="x")


def test_good_convert_refuses_existing_out_before_loading(tmp_path, capsys):
    src = tmp_path / "not-a-checkpoint"   # loading it would fail (no config.json)
    src.mkdir()
    out = tmp_path / "exists"
    out.mkdir()
    rc, err = run(["convert", src, out], capsys)
    assert rc == 2
    one_line_error(err, f"{out} already exists")
    assert "config.json" not in err
    with pytest.raises(FileExistsError, match="already exists"):
        loopjax.convert(src, out)


# ---- 8. Ctrl-C -----------------------------------------------------------------------------------------

def _interrupt(unit, *rest):
    raise KeyboardInterrupt


CHILD = ("import sys, time; from loopjax.cli import Hooks, main; "
         "sys.exit(main(sys.argv[1:], hooks=Hooks(after_unit=lambda unit: time.sleep(2))))")


def test_good_ctrl_c_exits_130_and_resumes_to_the_same_numbers(tmp_path, capsys):
    prompts = tmp_path / "p3.txt"
    prompts.write_text("Water is composed of\nThe sky is blue\nCats like warm milk\n")
    cmd = ["spectrum", "--prompts", prompts, "--max-prompts", 3, "--k", 4, "--steps", 16, "--quiet", *RANDOM]
    ref = tmp_path / "ref"
    assert run([*cmd, "--out", ref], capsys)[0] == 0
    for attempt, delay in enumerate((0.0, 0.5, 1.0)):  # SIGINT at different points of the 2 s pause
        out = tmp_path / f"part{attempt}"
        proc = subprocess.Popen([sys.executable, "-c", CHILD, *map(str, cmd), "--out", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        first = out / "spectrum" / "prompts" / "000.json"
        deadline = time.time() + 120
        while not first.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.exists(), proc.stderr.read().decode() if proc.poll() is not None else "timeout"
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        err = err.decode()
        assert proc.returncode == 130, (proc.returncode, err)  # never 139 (segfault) or a traceback
        assert "Traceback" not in err, err
        assert f"loopjax: interrupted; finished prompts are saved in {out / 'spectrum'}, rerun with --resume" in err
        assert (out / "spectrum" / "RUNNING").is_file() and not (out / "spectrum" / "results.json").exists()
        assert run([*cmd, "--out", out, "--resume"], capsys)[0] == 0
        assert results(out / "spectrum") == results(ref / "spectrum")


def test_ctrl_c_before_any_folder_says_nothing_was_written(tmp_path, prompt1, capsys, monkeypatch):
    """SIGINT while the model loads only sets a flag; the run must stop before it creates its folder."""
    from loopjax.cli import session

    real_init = session.Loaded.__init__

    def load_then_sigint(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        handler = signal.getsignal(signal.SIGINT)
        if type(getattr(handler, "__self__", None)).__name__ != "Interrupts":  # never SIGINT pytest itself
            raise RuntimeError(f"loopjax's SIGINT handler is not installed while loading ({handler!r})")
        os.kill(os.getpid(), signal.SIGINT)   # handled by loopjax's handler: a flag, checked at a safe point

    monkeypatch.setattr(session.Loaded, "__init__", load_then_sigint)
    out = tmp_path / "out"
    rc, err = run(["spectrum", "--prompts", prompt1, "--out", out, *TINY], capsys)
    assert rc == 130
    assert err.splitlines()[-1] == "loopjax: interrupted; nothing was written", err
    assert "finished prompts are saved" not in err
    assert not out.exists()


# ---- 9. out-of-vocabulary ids under jax.jit ------------------------------------------------------------

def test_validate_ids_reports_oov_under_jit_with_checkify(model):
    from jax.experimental import checkify

    from loopjax.models.loop_model import validate_ids

    def plain(m, ids):
        return loopjax.logits(m, ids[None], steps=2)

    def validated(m, ids):
        return loopjax.logits(m, validate_ids(m, ids)[None], steps=2)

    good, oov = jnp.array([1, 2, 3]), jnp.array([1, 512, 3])
    # the problem: under jit the range cannot be checked and an out-of-vocabulary id silently gives NaN
    assert bool(jnp.isnan(jax.jit(plain)(model, oov)).any())
    checked = jax.jit(checkify.checkify(validated))
    err, out = checked(model, good)
    assert err.get() is None and bool(jnp.isfinite(out).all())
    err, _ = checked(model, oov)
    assert "token id(s) out of vocabulary [0, 512): ids range from 1 to 512" in err.get()
    with pytest.raises(Exception, match="out of vocabulary"):
        err.throw()
    err, _ = checkify.checkify(jax.jit(validated))(model, jnp.array([-1, 2]))
    assert "ids range from -1 to 2" in err.get()
    with pytest.raises(ValueError, match=r"\[512\] out of vocabulary"):  # concrete ids: checked at once
        validate_ids(model, [1, 512])


@pytest.mark.parametrize("value, ok", [(3, True), (0, False), (True, False), (2.0, False), ("3", False)])
def test_check_int_is_the_one_integer_check(value, ok):
    from loopjax.engine.validate import check_int, check_positive

    if ok:
        assert check_positive("--k", value) == value and check_int("n", value, 0, hi=3) == value
    else:
        with pytest.raises(ValueError, match=rf"--k must be an integer >= 1, got {value!r}"):
            check_positive("--k", value)
