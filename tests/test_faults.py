"""Faults and hostile inputs (issue #23): checkpoint confinement, run locks, resume fingerprints, record
integrity, memory bounds, clean failures, interrupts, non-finite inputs.

Each test failed (or could not run: the function did not exist) before its fix. Library and RunStore level
where the CLI wiring belongs to the commands; CLI runs use the fast random built-in, one prompt, k=2, 2 steps.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import loopjax
from loopjax import cli
from loopjax.cli import budget, fingerprint
from loopjax.cli.runner import Hooks, Interrupts, Runner, SWALLOWED
from loopjax.cli.runstore import RunError, RunStore, check_derived, lock_owner
from loopjax.io import checkpoint, weights
from loopjax.io.tokenizer import get_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
OURO = FIXTURES / "ouro-tiny"
SHARDED = FIXTURES / "ouro-tiny-bf16-sharded"
BUILTIN = Path(loopjax.__file__).parent / "builtin_models" / "ouro-tiny"
TINY = ["--model", "builtin:ouro-tiny-random", "--k", "2", "--steps", "2", "--quiet"]
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
# A process killed by a signal mid-run must not write into the session's shared XLA cache (a half-written entry
# read back by a later process crashed it in jax's cache reader).
NO_CACHE_ENV = {**ENV, "LOOPJAX_COMPILE_CACHE": "0"}


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---- 1. confinement ----------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["dotdot", "absolute"])
def test_index_entry_outside_the_checkpoint_is_refused(tmp_path, where):
    ckpt = copy(SHARDED, tmp_path / "a" / "ckpt")
    index = json.loads((ckpt / checkpoint.INDEX_FILE).read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(ckpt / shard, outside / shard)   # a valid shard, but outside the checkpoint folder
    name = f"../../outside/{shard}" if where == "dotdot" else str(outside / shard)
    index["weight_map"] = {t: (name if s == shard else s) for t, s in index["weight_map"].items()}
    (ckpt / checkpoint.INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"weight_map entry '.*' names '.*', .*(absolute path|leaves the checkpoint)"):
        loopjax.load(ckpt)


def test_symlinked_shard_resolving_outside_is_refused(tmp_path):
    ckpt = copy(OURO, tmp_path / "ckpt")
    (tmp_path / "elsewhere.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes())
    (ckpt / "model.safetensors").unlink()
    (ckpt / "model.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(ValueError, match="resolves to .*elsewhere.safetensors, outside the checkpoint folder"):
        loopjax.load(ckpt)


def test_tokenizer_symlink_outside_is_refused(tmp_path):
    ckpt = copy(BUILTIN, tmp_path / "ckpt")
    secret = tmp_path / "secret.json"
    secret.write_text((ckpt / "tokenizer.json").read_text())
    (ckpt / "tokenizer.json").unlink()
    (ckpt / "tokenizer.json").symlink_to(secret)
    with pytest.raises(ValueError, match="tokenizer file names 'tokenizer.json', which resolves to"):
        get_tokenizer(ckpt, 512)


def hub_cache(root: Path, src: Path, repo="org--tiny", rev="0123456789abcdef0123456789abcdef01234567") -> Path:
    """The huggingface-hub cache layout: models--org--name/{blobs/<hash>, snapshots/<rev>/<file> -> blob,
    refs/main}."""
    repo_dir = root / f"models--{repo}"
    (repo_dir / "blobs").mkdir(parents=True)
    snap = repo_dir / "snapshots" / rev
    snap.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(rev)
    for f in sorted(src.iterdir()):
        if f.suffix not in (".json", ".safetensors") or f.name == "manifest.json":
            continue
        blob = repo_dir / "blobs" / fingerprint.file_sha256(f)
        shutil.copyfile(f, blob)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return snap


def test_hub_cache_snapshot_symlinks_into_blobs_stay_allowed(tmp_path):
    snap = hub_cache(tmp_path / "hub", SHARDED)
    assert all((snap / f).is_symlink() for f in os.listdir(snap))
    model = loopjax.load(snap)
    ref = loopjax.load(SHARDED)
    a, b = loopjax.to_hf_tensors(model), loopjax.to_hf_tensors(ref)
    assert sorted(a) == sorted(b) and all(np.array_equal(np.asarray(a[n]), np.asarray(b[n])) for n in a)


def test_hub_id_offline_from_local_cache(tmp_path):
    """`loopjax.load('org/tiny')` with HF_HUB_OFFLINE=1 and the cache above (a subprocess: the hub library
    reads its environment at import)."""
    hub_cache(tmp_path / "hub", BUILTIN, repo="org--tiny")
    code = ("import loopjax, loopjax.io.loading as L; m = loopjax.load('org/tiny'); "
            "print(m.model_type, len(L.tokenizer_files('org/tiny')))")
    env = {**ENV, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home")}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["ouro", "1"]


def test_confined_unit():
    base = Path("/tmp/ckpt-x")
    for bad, why in [("../x", "leaves"), ("a/../../x", "leaves"), ("/etc/passwd", "absolute"), ("", "not a file")]:
        with pytest.raises(ValueError, match=why):
            checkpoint.confined(base, bad, "entry")
    assert checkpoint.confined(base, "sub/model.safetensors", "entry") == base / "sub" / "model.safetensors"


# ---- 2. fingerprints, converters, prompt lengths ---------------------------------------------------------

def test_weights_fingerprint_detects_replaced_weights(tmp_path):
    ckpt = copy(OURO, tmp_path / "ckpt")
    before = fingerprint.weights_fingerprint(ckpt)
    st = (ckpt / "model.safetensors").stat()
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-1] ^= 1                                  # one bit of one weight, same size, same mtime
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    os.utime(ckpt / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fingerprint.weights_fingerprint(ckpt) != before
    assert fingerprint.weights_fingerprint(copy(OURO, tmp_path / "again")) == before  # content, not path


def store(root, fp, **kw):
    return RunStore(root, "spectrum", {"k": 2}, fingerprint=fp, **kw)


def test_resume_refuses_other_weights(tmp_path):
    fp = {"weights": "sha256:aaaa", "tokenizer": "name:simple", "prompts": "sha256:pppp"}
    s = store(tmp_path / "spectrum", fp)
    s.begin(["000", "001"])
    s.save_unit("000", {"index": 0}, {"x": 1.0})
    s.release()                                    # the run is gone (interrupted)
    for name in ("weights", "tokenizer", "prompts"):
        other = {**fp, name: "sha256:bbbb"}
        with pytest.raises(RunError, match=f"--resume: the {name} differ from those .*RUNNING was made with"):
            store(tmp_path / "spectrum", other, resume=True).begin(["000", "001"])
    r = store(tmp_path / "spectrum", fp, resume=True)
    r.begin(["000", "001"])
    assert r.load_unit("000", {"index": 0})["result"] == {"x": 1.0}


def test_resume_refuses_a_hand_edited_record(tmp_path):
    s = store(tmp_path / "spectrum", None)
    s.begin(["000"])
    lg = [[0.5, -1.0], [0.7, -1.2]]
    s.save_unit("000", {"index": 0}, {"log_growth": lg, "exponents": [0.6, -1.1], "running": [[0.5, -1.0],
                                                                                                [0.6, -1.1]]})
    s.release()
    path = s.unit_path("000")
    rec = json.loads(path.read_text())
    rec["result"]["exponents"][0] = 9.0
    path.write_text(json.dumps(rec))
    r = store(tmp_path / "spectrum", None, resume=True)
    r.begin(["000"])
    with pytest.raises(RunError, match="does not match its digest"):
        r.load_unit("000", {"index": 0})
    del rec["digest"]                               # an older record without a digest: the log growth decides
    path.write_text(json.dumps(rec))
    with pytest.raises(RunError, match=r"result.exponents is not what its stored log_growth gives"):
        r.load_unit("000", {"index": 0})


def test_check_derived_accepts_real_records():
    res = loopjax.spectrum(loopjax.load("builtin:ouro-tiny-random"), [5, 6, 7, 8], k=2, steps=5, key=0)
    check_derived({"result": json.loads(json.dumps(res.to_json()))}, "x")


def test_convert_to_hf_keeps_the_tokenizer(tmp_path):
    from loopjax.io.loading import convert_to_hf

    out = convert_to_hf("builtin:ouro-tiny", tmp_path / "hf", shards=2)
    assert (out / "tokenizer.json").read_bytes() == (BUILTIN / "tokenizer.json").read_bytes()
    text = "The river flows to the sea"
    assert get_tokenizer(out, 512).encode(text) == get_tokenizer(BUILTIN, 512).encode(text)
    p = subprocess.run([sys.executable, "-m", "convert", "--to-hf", "builtin:ouro-tiny", str(tmp_path / "hf2")],
                       env=ENV, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "hf2" / "tokenizer.json").is_file()


def test_prompt_longer_than_positions_refused():
    assert budget.max_positions({"max_position_embeddings": 4096}) == 4096
    assert budget.max_positions({"block_size": 8}) == 8
    assert budget.max_positions({}) is None
    tokens = [[1] * 4, [1] * 10]
    with pytest.raises(RunError, match=r"prompt 1 \('b'\) has 10 tokens, more than the 8 positions .*"
                                       r"--allow-long-prompts"):
        budget.check_prompt_lengths(tokens, 8, texts=["a", "b"])
    assert len(budget.check_prompt_lengths(tokens, 8, allow=True)) == 1
    assert budget.check_prompt_lengths(tokens, None) == []


# ---- 3. budgets and ranges -------------------------------------------------------------------------------

def test_memory_estimate_refuses_a_billion_steps():
    m = loopjax.load("builtin:ouro-tiny-random")
    with pytest.raises(RunError, match=r"needs about .* TB of memory .*more than the 16.0 GB available; use fewer "
                                       r"--steps"):
        budget.check_budget("spectrum", m, [[1] * 5], steps=10**9, k=50, available=16 * 10**9)
    est = budget.check_budget("spectrum", m, [[1] * 5], steps=64, k=50, available=16 * 10**9)
    assert est.total < 100 * 10**6
    with pytest.raises(RunError, match="--pad-multiple"):
        budget.check_budget("spectrum", m, [[1] * 5], steps=8, k=4, pad_multiple=100000, available=16 * 10**9)
    with pytest.raises(RunError, match="fewer --loops"):
        budget.check_budget("similarity", m, [[1] * 5], steps=10**8, available=16 * 10**9)


def test_memory_estimate_is_an_upper_order_of_the_stored_arrays():
    """The per-step record of spectrum is steps x k float32 x (log growth, running): at least that."""
    est = budget.estimate_memory("spectrum", steps=1000, k=10, tokens=4, hidden=8)
    assert est.parts["per-step log (steps x k)"] >= 2 * 1000 * 10 * 4
    assert budget.available_memory() > 0


@pytest.mark.parametrize("value", [0, 2**31, 10**11, 1e11, True, "3"])
def test_int_range(value):
    with pytest.raises(RunError, match="--steps must be"):
        budget.check_int_range("--steps", value)


def test_seed_and_lr_validation():
    assert budget.check_seed(2**63 - 1) == 2**63 - 1
    for bad in (2**70, -1, 1.5, True):
        with pytest.raises(ValueError, match="seed must be"):
            budget.check_seed(bad)
    for bad in (float("nan"), float("inf"), 0, -1e-3, "x"):
        with pytest.raises(RunError, match="--lr must be"):
            budget.check_positive_float("--lr", bad)


# ---- 4. locks --------------------------------------------------------------------------------------------

def test_overwrite_and_resume_refuse_a_live_folder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = tmp_path / "spectrum"
        folder.mkdir()
        (folder / "LOCK").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                 "started": "then", "token": "t"}))
        (folder / "RUNNING").write_text(json.dumps({"settings": {"k": 2}}))
        for kw in ({"overwrite": True}, {"resume": True}):
            with pytest.raises(RunError, match=f"is in use by process {holder.pid} on "):
                store(folder, None, **kw).begin([])
        assert (folder / "RUNNING").is_file()
    finally:
        holder.kill()
        holder.wait()
    s = store(folder, None, overwrite=True)  # the owner is gone: a stale lock, reported and taken over
    s.begin([])
    assert json.loads((folder / "LOCK").read_text())["pid"] == os.getpid()
    s.finish({"summary": {"x": 1.0}})
    assert not (folder / "LOCK").exists()


def test_second_run_in_the_same_process_is_refused_while_the_first_is_live(tmp_path):
    a = store(tmp_path / "spectrum", None)
    a.begin([])
    with pytest.raises(RunError, match=f"in use by process {os.getpid()}"):
        store(tmp_path / "spectrum", None, overwrite=True).begin([])
    del a  # gone without releasing (an interrupted in-process run): the lock is stale
    store(tmp_path / "spectrum", None, overwrite=True).begin([])


def test_stale_lock_message(tmp_path, capsys):
    folder = tmp_path / "spectrum"
    folder.mkdir()
    (folder / "LOCK").write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "started": "t"}))
    assert lock_owner(folder / "LOCK")[1] is False
    store(folder, None).begin([])
    assert "no longer running; taking the folder over" in capsys.readouterr().err


def test_cli_overwrite_of_a_live_run_is_refused(tmp_path, capsys):
    """Through the CLI: a run held at its first saved prompt; a second `--overwrite` run is refused."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("Water is composed of\nThe sky is blue\n")
    out = tmp_path / "out"
    seen = {}

    def after_unit(unit):
        if unit == "000":
            seen["rc"] = cli.main(["spectrum", *TINY, "--prompts", str(prompts), "--out", str(out), "--overwrite"])
            seen["err"] = capsys.readouterr().err

    assert cli.main(["spectrum", *TINY, "--prompts", str(prompts), "--out", str(out)],
                    hooks=Hooks(after_unit=after_unit)) == 0
    assert seen["rc"] == 2 and f"is in use by process {os.getpid()}" in seen["err"]
    assert json.loads((out / "spectrum" / "results.json").read_text())["status"] == "complete"
    assert not (out / "spectrum" / "LOCK").exists()


# ---- 5. debris -------------------------------------------------------------------------------------------

def test_error_before_any_prompt_removes_the_folder(tmp_path):
    s = store(tmp_path / "spectrum", None)
    runner = Runner(s, quiet=True)
    runner.begin(["000"])

    def boom(unit, inputs):
        raise ValueError("bad option")

    with pytest.raises(RunError, match=r"bad option; nothing was finished, so .*spectrum was removed"):
        runner.units([("000", {})], boom, desc="x")
    assert not (tmp_path / "spectrum").exists()


def test_error_after_a_prompt_keeps_a_resumable_folder(tmp_path):
    s = store(tmp_path / "spectrum", None)
    runner = Runner(s, quiet=True)
    runner.begin(["000", "001"])

    def second_fails(unit, inputs):
        if unit == "001":
            raise FloatingPointError("diverged")
        return {"x": 1.0}

    with pytest.raises(RunError, match="diverged; the finished prompts are kept in .*; rerun with --resume"):
        runner.units([("000", {}), ("001", {})], second_fails, desc="x")
    r = Runner(store(tmp_path / "spectrum", None, resume=True), quiet=True)
    r.begin(["000", "001"])  # accepted: not locked, same settings
    recs = r.units([("000", {}), ("001", {})], lambda u, i: {"x": 2.0}, desc="x")
    assert [rec["result"]["x"] for rec in recs] == [1.0, 2.0]


def test_runner_context_manager_cleans_an_error_after_the_prompts(tmp_path):
    with pytest.raises(RunError, match="KeyError: 'summary'.*kept in"):
        with Runner(store(tmp_path / "spectrum", None), quiet=True) as runner:
            runner.begin(["000"])
            runner.units([("000", {})], lambda u, i: {"x": 1.0}, desc="x")
            {}["summary"]
    assert not (tmp_path / "spectrum" / "LOCK").exists() and (tmp_path / "spectrum" / "prompts" / "000.json").exists()


# ---- 6. interrupts ---------------------------------------------------------------------------------------

def test_ctrl_c_lost_in_a_gc_callback_still_stops(tmp_path):
    """A KeyboardInterrupt raised inside a gc callback is unraisable: before, Python printed "Exception
    ignored" and the run went on. Now it is kept and the next safe point stops."""
    import gc

    def callback(phase, info):
        if phase == "start":
            gc.callbacks.remove(callback)
            raise KeyboardInterrupt

    SWALLOWED.clear()
    gc.callbacks.append(callback)
    gc.collect()
    assert SWALLOWED
    with Interrupts() as it, pytest.raises(KeyboardInterrupt):
        it.check()


def test_interrupts_poll_for_train():
    it = Interrupts(safe_point="after the current training step")
    with it:
        assert not it.stop_requested()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert it.stop_requested()  # the first Ctrl-C only asks; train saves a checkpoint and exits 130


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # preexec_fn: the child must not inherit SIG_IGN
def test_ctrl_c_early_in_a_cli_run_exits_130_without_traceback(tmp_path):
    """SIGINT at several moments of a subprocess run, the first second included: exit 130, one line."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("Water is composed of\n")
    for delay in (0.3, 1.5):
        out = tmp_path / f"out{delay}"
        p = subprocess.Popen([sys.executable, "-m", "loopjax.cli", "spectrum", *TINY, "--prompts", str(prompts),
                              "--out", str(out)], env=NO_CACHE_ENV, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        err = p.communicate(timeout=300)[1]
        if p.returncode == 0:
            continue   # finished before the signal: nothing to check
        assert p.returncode == 130, err   # before: SIGSEGV at 0.3 s, the run finishing (exit 0) at 1.5 s
        # A signal before the CLI's handler is installed gives the one closing line; one after it first
        # announces the stop (which one depends on the machine's speed: CI saw both). Nothing else, no traceback.
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert lines[-1] == "loopjax: interrupted; nothing was written", err
        assert all(ln.startswith("loopjax: stopping at the next safe point") for ln in lines[:-1]), err
        assert len(lines) <= 2, err
        assert not out.exists()


# ---- 7. non-finite ---------------------------------------------------------------------------------------

def test_nan_weight_is_named_at_load(tmp_path):
    from safetensors.numpy import load_file, save_file

    ckpt = copy(OURO, tmp_path / "ckpt")
    t = load_file(ckpt / "model.safetensors")
    name = sorted(t)[3]
    t[name] = t[name].copy()
    t[name].flat[0] = np.nan
    save_file(t, ckpt / "model.safetensors")
    with pytest.raises(ValueError, match=rf"non-finite weights in 1 tensor\(s\): {name} \[.*\]: 1 NaN, 0 inf"):
        loopjax.load(ckpt)


def test_all_nan_result_is_not_saved_nor_marked_complete(tmp_path):
    s = store(tmp_path / "spectrum", None)
    s.begin(["000"])
    with pytest.raises(RunError, match="every number of the result is NaN or inf"):
        s.save_unit("000", {"index": 0}, {"step_norm": [float("nan")] * 3, "steps": 3})
    with pytest.raises(RunError, match="results.json was not written"):
        s.finish({"summary": {"mean": None}, "prompts": [{"index": 0, "step_norm": [None, None]}]})
    assert not s.results_path.exists()


def test_trajectory_on_nan_weights_is_refused_at_load(tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    ckpt = copy(OURO, tmp_path / "ckpt")
    t = load_file(ckpt / "model.safetensors")
    t["model.norm.weight"] = np.full_like(t["model.norm.weight"], np.nan)
    save_file(t, ckpt / "model.safetensors")
    rc = cli.main(["trajectory", "--model", str(ckpt), "--steps", "2", "--quiet", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "model.norm.weight" in err and "NaN" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("field,value", [("rope_theta", -1.0), ("rope_theta", 0), ("rms_norm_eps", 0.0),
                                         ("rms_norm_eps", float("nan"))])
def test_ouro_config_numbers_must_be_positive(tmp_path, field, value):
    cfg = json.loads((OURO / "config.json").read_text())
    cfg[field] = value
    with pytest.raises(ValueError, match=f"Ouro config.json has invalid field.*{field}="):
        loopjax.models.config_from_hf(cfg)


@pytest.mark.parametrize("field", ["rope_base", "norm_eps"])
def test_huginn_config_numbers_must_be_positive(field):
    cfg = json.loads((FIXTURES / "huginn-tiny" / "config.json").read_text())
    cfg[field] = -2.0
    with pytest.raises(ValueError, match=f"Huginn config.json has invalid field.*{field}=-2.0"):
        loopjax.models.config_from_hf(cfg)


def test_corrupt_tokenizer_json_is_named(tmp_path):
    ckpt = copy(BUILTIN, tmp_path / "ckpt")
    (ckpt / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "nonsense"}}')
    with pytest.raises(ValueError, match=r"ckpt/tokenizer.json is not a valid tokenizer.json"):
        get_tokenizer(ckpt, 512)


def test_config_without_model_type_says_what_is_missing(tmp_path):
    ckpt = copy(OURO, tmp_path / "ckpt")
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg["model_type"]
    cfg["architectures"] = ["LlamaForCausalLM"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"has no 'model_type' \(it names architectures \['LlamaForCausalLM'\]\).*"
                                         r"supports model_type .*ouro"):
        weights.read_config(ckpt)


# ---- 8. the checks wired into the commands ---------------------------------------------------------------

def run_cli(argv, capsys):
    rc = cli.main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["spectrum", "--steps", "1e11"], "--steps must be in [1, 2**31 - 1] (what JAX can count), got 100000000000"),
    (["spectrum", "--steps", "1.5"], "argument --steps: not a whole number: '1.5'"),
    (["spectrum", "--k", "2147483648"], "--k must be in [1, 2**31 - 1]"),
    (["spectrum", "--seed", str(2**70)], f"argument --seed: must be in [0, 2**63 - 1], got {2**70}"),
    (["spectrum", "--steps", "1000000000"], "needs about 7.0 TB of memory"),
    (["similarity", "--loops", "1e8"], "use fewer --loops"),
    (["spectrum", "--pad-multiple", "100000", "--steps", "4", "--k", "2"], "a smaller --pad-multiple"),
    (["attribute", "--steps", "1000000000"], "more than the"),
    (["tokens", "--steps", "1000000000", "--k", "1"], "more than the"),
    (["trajectory", "--steps", "2000000000"], "more than the"),
    (["ablate", "--model", "builtin:huginn-tiny-random", "--steps", "1000000000"], "more than the"),
])
def test_cli_refuses_before_any_folder(tmp_path, capsys, monkeypatch, argv, message):
    """Counts, seeds and memory budgets: one line, exit 2, no folder (before: JAX's OverflowError, a bare
    MemoryError, or 22 GB and the kernel's OOM killer)."""
    monkeypatch.setattr(budget, "available_memory", lambda: 16 * 10**9)
    model = [] if "--model" in argv else ["--model", "builtin:ouro-tiny-random"]
    rc, err = run_cli([*argv, *model, "--max-prompts", "1", "--quiet", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_cli_long_prompt_refused_or_warned(tmp_path, capsys):
    ckpt = copy(OURO, tmp_path / "ckpt")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["max_position_embeddings"] = 8
    (ckpt / "config.json").write_text(json.dumps(cfg))
    prompts = tmp_path / "p.txt"
    prompts.write_text(" ".join(["word"] * 12) + "\n")
    base = ["trajectory", "--model", str(ckpt), "--prompts", str(prompts), "--steps", "2", "--quiet",
            "--out", str(tmp_path / "o")]
    rc, err = run_cli(base, capsys)
    assert rc == 2 and "prompt 0 ('word word" in err and "more than the 8 positions" in err
    assert "--allow-long-prompts" in err and not (tmp_path / "o").exists()
    rc, err = run_cli([*base, "--allow-long-prompts"], capsys)
    assert rc == 0 and "warning: prompt 0" in err
    assert json.loads((tmp_path / "o" / "trajectory" / "results.json").read_text())["status"] == "complete"


def test_cli_resume_after_the_weights_changed_is_refused(tmp_path, capsys):
    """Before: --resume mixed the prompts of the old and the new weights. Now the fingerprint names them."""
    ckpt = copy(OURO, tmp_path / "ckpt")
    prompts = tmp_path / "p.txt"
    prompts.write_text("Water is composed of\nThe sky is blue\n")
    argv = ["spectrum", "--model", str(ckpt), "--k", "2", "--steps", "2", "--quiet", "--prompts", str(prompts),
            "--out", str(tmp_path / "o")]

    def stop(unit):
        raise KeyboardInterrupt

    assert cli.main(argv, hooks=Hooks(after_unit=stop)) == 130
    capsys.readouterr()
    from safetensors.numpy import load_file, save_file

    t = load_file(ckpt / "model.safetensors")
    name = sorted(t)[0]
    t[name] = t[name] * 1.01
    save_file(t, ckpt / "model.safetensors")
    rc, err = run_cli([*argv, "--resume"], capsys)
    assert rc == 2 and "--resume: the weights differ from those" in err and "RUNNING was made with" in err
    assert sorted(p.name for p in (tmp_path / "o" / "spectrum" / "prompts").iterdir()) == ["000.json"]


def test_cli_sweep_resume_refuses_other_weights(tmp_path, capsys):
    ckpt = copy(OURO, tmp_path / "ckpt")
    argv = ["sweep", "--checkpoints", "builtin:ouro-tiny-random", str(ckpt), "--max-prompts", "1", "--steps", "2",
            "--quiet", "--out", str(tmp_path / "o")]
    assert cli.main(argv) == 0
    fp = json.loads((tmp_path / "o" / "sweep" / "results.json").read_text())["fingerprint"]
    assert sorted(fp) == ["prompts", "tokenizer", "weights"]
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    capsys.readouterr()
    rc, err = run_cli([*argv, "--resume"], capsys)
    assert rc == 2 and "--resume: the weights differ" in err and "results.json was made with" in err


def test_cli_error_after_the_folder_exists_removes_it(tmp_path, capsys, monkeypatch):
    """An error raised after begin (here: while summarizing) used to leave RUNNING and block the corrected
    command ("not empty, use --overwrite"); now the message says what happened to the folder."""
    def broken(*a, **k):
        raise ValueError("summary failed")

    monkeypatch.setattr(loopjax, "summarize", broken)
    argv = ["trajectory", "--model", "builtin:ouro-tiny-random", "--steps", "2", "--max-prompts", "1", "--quiet",
            "--out", str(tmp_path / "o")]
    rc, err = run_cli(argv, capsys)
    assert rc == 2 and "summary failed; the finished prompts are kept in" in err and "--resume" in err
    assert not (tmp_path / "o" / "trajectory" / "LOCK").exists()
    monkeypatch.undo()
    assert cli.main([*argv, "--resume"]) == 0


TRAIN = ["--hidden", "32", "--layers", "1", "--heads", "2", "--intermediate", "64", "--vocab-size", "300",
         "--seq-len", "16", "--batch", "4", "--loops", "2", "--lambda1-prompts", "1", "--lambda1-steps", "2",
         "--warmup", "0", "--arch", "ouro", "--quiet"]


@pytest.mark.parametrize("extra,message", [
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--lr=-1e-3"], "--lr must be a finite number > 0, got -0.001"),
    (["--seed", str(2**70)], f"--seed must be in [0, 2**63 - 1], got {2**70}"),
    (["--ablation", "--seeds", f"0,{2**70}"], "--seeds must be in [0, 2**63 - 1]"),
    (["--lambda1-steps", str(2**31)], "--lambda1-steps must be in [0, 2**31 - 1]"),
    (["--seq-len", "100000"], "fewer than seq_len + 1 = 100001"),
    (["--hidden", "30", "--heads", "4"], "hidden 30 is not a multiple of heads 4"),
])
def test_train_validates_before_writing(tmp_path, capsys, extra, message):
    """Before: the recipe and the tokenizer were written first (and --lr nan was accepted)."""
    rc, err = run_cli(["train", "--out", str(tmp_path / "t"), *TRAIN, "--steps", "4", *extra], capsys)
    assert rc == 2 and message in err, err
    assert not (tmp_path / "t").exists()


def test_train_first_ctrl_c_saves_a_resumable_state_and_exits_130(tmp_path, capsys, monkeypatch):
    """A real SIGINT after step 1 (sent from the progress callback): the run stops at that step boundary,
    saves the training state and exits 130; --resume then ends with exactly the uninterrupted records.
    Before: "stopping at the next safe point", then trained to the end and exited 0."""
    from loopjax.train import cli as train_cli

    def printer(quiet, every, prefix=""):
        return lambda step, rec: os.kill(os.getpid(), signal.SIGINT) if step == 1 else None

    argv = ["train", *TRAIN, "--steps", "4", "--lambda1-every", "100"]
    assert cli.main([*argv, "--out", str(tmp_path / "whole")]) == 0
    monkeypatch.setattr(train_cli, "_printer", printer)
    rc, err = run_cli([*argv, "--out", str(tmp_path / "cut")], capsys)
    assert rc == 130, err
    assert f"interrupted at step 2; the training state is saved in {tmp_path / 'cut'}, rerun with --resume" in err
    m = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert m["status"] == "interrupted" and m["records"][-1]["step"] == 1
    monkeypatch.undo()
    assert cli.main([*argv, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert cut["records"] == whole["records"] and cut["summary"]["resumed_from_step"] == 2
