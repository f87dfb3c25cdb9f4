"""The `loopjax` command line end to end on tiny settings (real models, real engine).

To keep compilations few, most runs use one prompt length (4 tokens under the simple tokenizer),
k=4 and T=4 (no persistent XLA cache: see conftest.compile_cache).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from loopjax import cli
from loopjax.cli import Hooks
from conftest import numbers

FIXTURES = Path(__file__).parent / "fixtures"
RANDOM = ["--model", "builtin:ouro-tiny-random"]  # the fast random built-in (the default is the trained one)
TINY = ["--k", "4", "--steps", "4", "--quiet"]


@pytest.fixture
def prompts4(tmp_path):
    """Two prompts of 4 tokens each (simple tokenizer): one compiled shape."""
    f = tmp_path / "prompts.txt"
    f.write_text("Water is composed of\nThe sky is blue\n")
    return f


def run(argv, capsys=None, hooks=None):
    rc = cli.main([str(a) for a in argv], hooks=hooks)
    out = capsys.readouterr() if capsys is not None else None
    return rc, out


def load(path):
    return json.loads(Path(path).read_text())


def assert_complete(folder: Path, figures):
    res = load(folder / "results.json")
    assert res["status"] == "complete"
    assert not (folder / "RUNNING").exists()
    for f in figures:
        assert (folder / f).is_file() and (folder / f).stat().st_size > 5000, f
        assert f in res["figures"]
    for key in ("jax", "jaxlib", "flax", "numpy", "loopjax"):
        assert res["software"][key]
    assert res["timestamps"]["started"] and res["timestamps"]["finished"]
    assert res["seed"] == 0 and res["settings"]["seed"] == 0
    return res


# ------------------------------------------------------------------------------------------------------

SUBCOMMANDS = ["convert", "spectrum", "attribute", "sweep", "similarity", "trajectory", "report"]


@pytest.mark.parametrize("sub", [None] + SUBCOMMANDS)
def test_help(sub, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(([sub] if sub else []) + ["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "usage: loopjax" in text
    if sub in ("spectrum", "attribute", "similarity", "trajectory", "report"):
        for flag in ("--model", "--revision", "--steps", "--prompts", "--seed", "--out", "--dtype", "--resume",
                     "--max-prompts", "--x64", "--quiet"):
            assert flag in text, (sub, flag)
    if sub == "spectrum":
        assert "--checkpoint-every" in text and "default 50" in text and "default 64" in text
    if sub == "attribute":
        assert "default 1" in text and "default 32" in text
    if sub == "sweep":
        assert "huginn-pretraining" in text and "step-00006144-recurrence_full_512_0" in text


def test_entry_point_installed():
    exe = Path(sys.executable).parent / "loopjax"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "spectrum" in r.stdout


def test_presets_and_checkpoint_specs():
    from loopjax.cli.commands import training_step
    from loopjax.cli.session import model_name, parse_checkpoint_spec

    assert training_step("tomg-group-umd/step-00006144-recurrence_full_512_0", None) == 6144
    assert training_step("tomg-group-umd/huginn-0125", None) is None

    presets = cli.commands.PRESETS
    assert presets["huginn-pretraining"][0] == "tomg-group-umd/step-00006144-recurrence_full_512_0"
    assert presets["huginn-pretraining"][-1] == "tomg-group-umd/huginn-0125"
    assert len(presets["huginn-pretraining"]) == 9
    assert parse_checkpoint_spec("org/name@abc123") == ("org/name", "abc123")
    assert parse_checkpoint_spec("org/name") == ("org/name", None)
    assert model_name("builtin:ouro-tiny-random") == "ouro-tiny-random"
    assert model_name("ByteDance/Ouro-1.4B", "main") == "Ouro-1.4B@main"


# ------------------------------------------------------------------------------------------------------

def test_spectrum_builtin_end_to_end(tmp_path, capsys):
    import jax
    import loopjax

    out = tmp_path / "out"
    rc, _ = run(["spectrum", "--model", "builtin:ouro-tiny-random", "--max-prompts", 2, "--out", out, *TINY,
                 "--pad-multiple", 8], capsys)
    assert rc == 0
    res = assert_complete(out / "spectrum", ["spectrum_running_top5.png", "spectrum_full.png"])
    assert res["model"]["source"] == "builtin:ouro-tiny-random" and res["model"]["model_type"] == "ouro"
    assert res["settings"]["k"] == 4 and res["settings"]["steps"] == 4
    assert [p["text"] for p in res["prompts"]] == ["Water is composed of", "Diamonds are made of"]
    for name in ("fraction_positive", "range_max", "range_min", "lambda1_mean", "mean_spectrum_sorted"):
        assert name in res["summary"]
    assert sorted(os.listdir(out / "spectrum" / "prompts")) == ["000.json", "001.json"]
    # the numbers are the library's, with the documented key scheme: the CLI runs the prompts of one padded
    # length as one batch (loopjax.spectrum on a list), bit for bit; one-by-one calls agree to float rounding
    m = loopjax.load("builtin:ouro-tiny-random")
    ids = [np.asarray(p["token_ids"], np.int32) for p in res["prompts"]]
    batch = loopjax.spectrum(m, ids, k=4, steps=4, key=[loopjax.prompt_key(0, p["index"]) for p in res["prompts"]])
    for p, b in zip(res["prompts"], batch):
        r = loopjax.spectrum(m, np.asarray(p["token_ids"], np.int32), k=4, steps=4,
                             key=jax.random.fold_in(jax.random.key(0), p["index"]))
        # one estimator: the CLI stores the engine's (compensated) exponents, not a sum of its own
        np.testing.assert_array_equal(np.asarray(p["exponents"]), np.asarray(b.exponents, np.float64))
        np.testing.assert_array_equal(np.asarray(p["log_growth"]), np.asarray(b.log_growth, np.float64))
        np.testing.assert_allclose(np.asarray(p["exponents"]), np.asarray(r.exponents, np.float64), atol=2e-6)


def test_spectrum_fixture_checkpoint(tmp_path, prompts4, capsys):
    out = tmp_path / "out"
    rc, _ = run(["spectrum", "--model", FIXTURES / "ouro-tiny", "--prompts", prompts4, "--out", out, *TINY], capsys)
    assert rc == 0
    res = assert_complete(out / "spectrum", ["spectrum_running_top5.png", "spectrum_full.png"])
    assert res["model"]["vocab_size"] == 320 and res["model"]["source_dir"]
    assert len(res["prompts"]) == 2 and all(len(p["exponents"]) == 4 for p in res["prompts"])
    assert all(1 <= t < 320 for p in res["prompts"] for t in p["token_ids"])


def test_other_analyses(tmp_path, prompts4, capsys):
    """attribute (k>1: heatmap), similarity, trajectory on Huginn; a sweep over two local checkpoints."""
    out = tmp_path / "h"
    common = ["--model", "builtin:huginn-tiny-random", "--prompts", prompts4, "--out", out, "--quiet"]
    assert run(["attribute", *common, "--k", 3, "--steps", 4], capsys)[0] == 0
    res = assert_complete(out / "attribution", ["attribution_lambda1.png", "attribution_heatmap.png"])
    names = res["summary"]["names"]
    assert names[0] == "adapter" and len(names) == 5
    p0 = res["prompts"][0]
    assert np.asarray(p0["exponents"]).shape == (5, 3) and np.asarray(p0["log_growth"]).shape == (4, 5, 3)
    np.testing.assert_allclose(res["summary"]["lambda1_cumulative_mean"][-1], res["summary"]["lambda1_total_mean"])

    assert run(["similarity", *common, "--loops", 2], capsys)[0] == 0
    res = assert_complete(out / "similarity", ["similarity.png"])
    assert len(res["summary"]["states_names"]) == 2 * 5
    m = np.asarray(res["summary"]["mean_matrix"])
    assert m.shape == (10, 10) and np.allclose(np.diag(m), 1, atol=1e-5)

    assert run(["trajectory", *common, "--steps", 4], capsys)[0] == 0
    res = assert_complete(out / "trajectory", ["convergence.png"])
    assert len(res["prompts"][0]["step_norm"]) == 4 and len(res["prompts"][0]["state_norm"]) == 5
    # every analysis of a prompt starts from the same z0 (Huginn's random state from split(prompt key)[0])
    import jax
    import loopjax

    m = loopjax.load("builtin:huginn-tiny-random")
    for p in res["prompts"]:
        key = jax.random.fold_in(jax.random.key(0), p["index"])
        z0 = loopjax.init_state(m, np.asarray(p["token_ids"], np.int32), key=jax.random.split(key)[0])
        np.testing.assert_allclose(p["state_norm"][0], float(np.linalg.norm(np.asarray(z0))), rtol=1e-5)

    sw = tmp_path / "sw"
    rc, _ = run(["sweep", "--checkpoints", FIXTURES / "ouro-tiny", FIXTURES / "ouro-tiny-bf16-sharded",
                 "--prompts", prompts4, "--steps", 4, "--out", sw, "--quiet"], capsys)
    assert rc == 0
    res = assert_complete(sw / "sweep", ["sweep_lambda1.png"])
    lam = np.asarray(res["lambda1"])
    assert lam.shape == (2, 2) and np.all(np.isfinite(lam))
    s = res["summary"]
    assert s["std_across_checkpoints"] == pytest.approx(lam.mean(1).std())
    assert s["mean_per_prompt_std"] == pytest.approx(lam.std(1).mean())


def test_report_both_builtins(tmp_path, prompts4, capsys):
    out = tmp_path / "results"
    rc, _ = run(["report", "--prompts", prompts4, "--k", 4, "--steps", 4, "--attr-k", 3, "--loops", 2,
                 "--regime-steps", 128, "--complete-prompts", 1, "--dynamics-prompts", 1,
                 "--out", out, "--jobs", 1, "--quiet"], capsys)
    assert rc == 0
    assert (out / "index.md").is_file() and (out / "index.html").is_file()
    top = (out / "index.md").read_text()
    assert "huginn-tiny-noinject" not in top and "regime verdicts" in top   # it never reads its prompt
    assert "huginn-tiny-inject-once (control" in top     # the control: its regime verdicts only
    assert (out / "huginn-tiny-inject-once" / "regime" / "results.json").is_file()
    assert not (out / "huginn-tiny-inject-once" / "spectrum").exists()
    for name in ("ouro-tiny", "huginn-tiny", "parcae-tiny"):  # the trained built-ins with every analysis
        d = out / name
        assert "simple" not in load(d / "spectrum" / "results.json")["model"]["tokenizer"]  # their own BPE
        md, html = (d / "index.md").read_text(), (d / "index.html").read_text()
        pngs = sorted(str(p.relative_to(d)) for p in d.glob("*/*.png"))
        # regimes, running top-5, full spectrum, bars, heatmap, similarity, convergence, tokens, spectrum density,
        # 5 dynamics figures (CLV angles, localisation, finite-time λ1, logit lens, attention); models with an
        # injection (Huginn, Parcae): + the ablation's two; Parcae exposes no attention probabilities (- 1)
        assert len(pngs) == {"huginn-tiny": 16, "parcae-tiny": 15}.get(name, 14), pngs
        for a in ("regime", "complete", "dynamics"):
            assert load(d / a / "results.json")["status"] == "complete"
        assert "Regime per prompt" in md and "horizon T = 4 converged?" in md
        for png in pngs:
            assert f"({png})" in md and f"src='{png}'" in html
        for a in ("spectrum", "attribution", "similarity", "trajectory"):
            assert load(d / a / "results.json")["status"] == "complete"
        assert "fraction of positive exponents" in md and "λ1" in html
        assert f"{name}/index.html" in (out / "index.html").read_text()
        spec = load(d / "spectrum" / "results.json")["summary"]
        assert spec["orbit_counts"] and len(spec["ci95_lo_sorted"]) == 4 and "| λ1 |" in md  # exponent table
    for panel in ("models_spectrum_running_top5.png", "models_attribution_lambda1.png"):  # Figs. 1 and 2
        assert (out / panel).stat().st_size > 5000 and f"({panel})" in (out / "index.md").read_text()


# ------------------------------------------------------------------------------------------------------

def _spectrum_cmd(out, prompts, *extra):
    return ["spectrum", "--model", "builtin:ouro-tiny-random", "--prompts", prompts, "--out", out, *TINY, *extra]


def test_kill_and_resume_matches_uninterrupted(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Water is composed of\nThe sky is blue\nCats like warm milk\n")
    ref, part = tmp_path / "ref", tmp_path / "part"
    assert run(_spectrum_cmd(ref, prompts), capsys)[0] == 0

    # the CLI in a child process whose runner sleeps after the first saved prompt (an injected hook)
    script = ("import sys, time; from loopjax.cli import Hooks, main; "
              "sys.exit(main(sys.argv[1:], hooks=Hooks(after_unit=lambda unit: time.sleep(60))))")
    cmd = [sys.executable, "-c", script, *map(str, _spectrum_cmd(part, prompts))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,  # killed: no shared XLA cache
                            env={**os.environ, "LOOPJAX_COMPILE_CACHE": "0"})
    first = part / "spectrum" / "prompts" / "000.json"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.exists(), proc.stderr.read().decode() if proc.poll() is not None else "timeout"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    # an unfinished folder never looks finished
    assert (part / "spectrum" / "RUNNING").exists()
    assert json.loads((part / "spectrum" / "RUNNING").read_text())["status"] == "incomplete"
    assert not (part / "spectrum" / "results.json").exists()
    assert sorted(os.listdir(part / "spectrum" / "prompts")) == ["000.json"]
    # without --resume: refuse; with other settings: refuse with the differing field
    rc, o = run(_spectrum_cmd(part, prompts), capsys)
    assert rc == 2 and "--resume" in o.err and "Traceback" not in o.err
    rc, o = run(["spectrum", "--model", "builtin:ouro-tiny-random", "--prompts", prompts, "--out", part, "--k", 3,
                 "--steps", 4, "--quiet", "--resume"], capsys)
    assert rc == 2 and "settings.k" in o.err
    assert not (part / "spectrum" / "results.json").exists()

    before = first.read_bytes()
    assert run(_spectrum_cmd(part, prompts, "--resume"), capsys)[0] == 0
    assert first.read_bytes() == before  # reused, not recomputed
    a, b = load(ref / "spectrum" / "results.json"), load(part / "spectrum" / "results.json")
    assert numbers(a) == numbers(b)
    assert not (part / "spectrum" / "RUNNING").exists()


def _interrupt(unit, *rest):
    raise KeyboardInterrupt


def test_interrupt_hook_then_resume(tmp_path, prompts4, capsys):
    ref, part = tmp_path / "ref", tmp_path / "part"
    assert run(_spectrum_cmd(ref, prompts4), capsys)[0] == 0
    rc, o = run(_spectrum_cmd(part, prompts4), capsys, hooks=Hooks(after_unit=_interrupt))
    assert rc == 130 and "--resume" in o.err
    assert not (part / "spectrum" / "results.json").exists()
    assert run(_spectrum_cmd(part, prompts4, "--resume"), capsys)[0] == 0
    assert numbers(load(ref / "spectrum" / "results.json")) == numbers(load(part / "spectrum" / "results.json"))
    # resuming a finished run rewrites the same numbers
    assert run(_spectrum_cmd(part, prompts4, "--resume"), capsys)[0] == 0
    assert numbers(load(ref / "spectrum" / "results.json")) == numbers(load(part / "spectrum" / "results.json"))
    # --overwrite starts over
    assert run(_spectrum_cmd(part, prompts4, "--overwrite"), capsys)[0] == 0


def test_checkpoint_every_equals_one_shot_and_resumes(tmp_path, prompts4, capsys):
    one, seg, part = tmp_path / "one", tmp_path / "seg", tmp_path / "part"
    steps = ["--steps", 4]
    # segmented runs go prompt by prompt, so compare with the one-by-one (unbatched) run
    assert run(_spectrum_cmd(one, prompts4, *steps, "--no-batch"), capsys)[0] == 0
    assert run(_spectrum_cmd(seg, prompts4, *steps, "--checkpoint-every", 2, "--no-batch"), capsys)[0] == 0
    a, b = load(one / "spectrum" / "results.json"), load(seg / "spectrum" / "results.json")
    for pa, pb in zip(a["prompts"], b["prompts"]):  # the engine uses the given probes as-is: bitwise equal
        np.testing.assert_array_equal(pb["log_growth"], pa["log_growth"])
        np.testing.assert_array_equal(pb["exponents"], pa["exponents"])
    assert not (seg / "spectrum" / "checkpoints").exists()  # removed once the prompts are done

    # interrupted after the first segment of prompt 0: an orbax checkpoint at step 2 is left
    assert run(_spectrum_cmd(part, prompts4, *steps, "--checkpoint-every", 2, "--no-batch"), capsys,
               hooks=Hooks(after_segment=_interrupt))[0] == 130
    ck = part / "spectrum" / "checkpoints" / "000"
    assert (ck / "2").is_dir()
    assert not (part / "spectrum" / "results.json").exists()
    assert run(_spectrum_cmd(part, prompts4, *steps, "--checkpoint-every", 2, "--no-batch", "--resume"),
               capsys)[0] == 0
    assert numbers(load(seg / "spectrum" / "results.json")) == numbers(load(part / "spectrum" / "results.json"))


# ------------------------------------------------------------------------------------------------------

def _bad_tokenizer_ckpt(tmp_path):
    """The ouro fixture with a tokenizer.json whose ids exceed the model's vocabulary (320)."""
    import shutil

    from tokenizers import Tokenizer, models, pre_tokenizers

    d = tmp_path / "ckpt"
    shutil.copytree(FIXTURES / "ouro-tiny", d, ignore=shutil.ignore_patterns("expected.npz"))
    tk = Tokenizer(models.WordLevel({"[UNK]": 999, "water": 5, "is": 1000}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.save(str(d / "tokenizer.json"))
    return d


@pytest.mark.parametrize("case", ["missing-model", "k0", "k-too-big", "oov-ids", "oov-tokenizer",
                                  "missing-prompts", "max-prompts-0", "token-ids-no-prompts", "bad-dtype"])
def test_bad_input_is_one_line_error(case, tmp_path, prompts4, capsys):
    out = tmp_path / "out"
    base = ["--out", out, "--quiet"]
    ids = tmp_path / "ids.txt"
    ids.write_text("1 2 3\n5 99999 7\n")
    argv = {
        "missing-model": ["spectrum", "--model", tmp_path / "no-such-checkpoint", *base],
        "k0": ["spectrum", "--prompts", prompts4, "--k", 0, *base],
        "k-too-big": ["spectrum", "--prompts", prompts4, "--k", 4 * 64 + 1, "--steps", 2, *base],
        "oov-ids": ["spectrum", "--prompts", ids, "--token-ids", "--k", 2, *base],
        "oov-tokenizer": ["spectrum", "--model", _bad_tokenizer_ckpt(tmp_path) if case == "oov-tokenizer" else "",
                          "--prompts", prompts4, *base],
        "missing-prompts": ["attribute", "--prompts", tmp_path / "nope.txt", *base],
        "max-prompts-0": ["trajectory", "--max-prompts", 0, *base],
        "token-ids-no-prompts": ["spectrum", "--token-ids", *base],
        "bad-dtype": ["spectrum", "--dtype", "float7", *base],
    }[case]
    argv = argv[:1] + RANDOM + argv[1:]  # an explicit --model later in argv wins
    rc, o = run(argv, capsys)
    assert rc != 0
    err = o.err.strip()
    assert err.startswith("loopjax: error:") and "\n" not in err and "Traceback" not in err, err
    expect = {"missing-model": "does not exist", "k0": "--k must be an integer >= 1",
              "k-too-big": "exceeds the state dimension",
              "oov-ids": "out of vocabulary", "oov-tokenizer": "out of vocabulary",
              "missing-prompts": "not found", "max-prompts-0": "--max-prompts", "token-ids-no-prompts": "--prompts",
              "bad-dtype": "dtype"}[case]
    assert expect in err, err
    assert not list(tmp_path.rglob("results.json"))
    assert not out.exists()


def test_convert_command(tmp_path, capsys):
    out = tmp_path / "orbax"
    rc, _ = run(["convert", FIXTURES / "ouro-tiny", out, "--quiet"], capsys)
    assert rc == 0 and (out / "config.json").is_file()
    rc, o = run(["convert", tmp_path / "missing", tmp_path / "o2"], capsys)
    assert rc == 2 and o.err.startswith("loopjax: error:") and "Traceback" not in o.err


def test_tokens_command_and_devices(tmp_path, prompts4, capsys):
    """`loopjax tokens` writes per-token λ1 and its figure; `--devices 4` (4 forced host devices, k=5 not a
    multiple of 4) gives the 1-device exponents up to float32 rounding."""
    out = tmp_path / "t"
    assert run(["tokens", *RANDOM, "--prompts", prompts4, "--steps", 4, "--out", out, "--quiet"], capsys)[0] == 0
    res = load(out / "tokens" / "results.json")
    assert (out / "tokens" / "tokens_lambda1.png").stat().st_size > 5000
    lam = res["prompts"][0]["lambda1"]
    assert len(lam) == len(res["prompts"][0]["token_ids"]) == 4
    assert res["summary"]["union_lambda1_mean"] == pytest.approx(np.mean([max(p["lambda1"]) for p in res["prompts"]]))

    one, four = tmp_path / "one", tmp_path / "four"
    argv = ["spectrum", *RANDOM, "--prompts", prompts4, "--k", 5, "--steps", 6, "--quiet"]
    assert run([*argv, "--out", one], capsys)[0] == 0
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    r = subprocess.run([sys.executable, "-m", "loopjax.cli", *map(str, argv), "--out", str(four), "--devices", "4"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    a, b = load(one / "spectrum" / "results.json"), load(four / "spectrum" / "results.json")
    assert b["settings"]["devices"] == 4
    for pa, pb in zip(a["prompts"], b["prompts"]):
        np.testing.assert_allclose(pb["exponents"], pa["exponents"], atol=1e-5)


def test_report_restarts_a_stalled_child_with_resume(tmp_path, monkeypatch, capsys):
    """A child that uses almost no CPU for STALL_SECONDS (here: one whose main thread sleeps while a helper
    thread wakes every 0.1 s for a few milliseconds, as a wedged jaxlib process with tqdm's monitor and XLA's
    alarm threads does: its CPU time still creeps up) is killed and started again with --resume; one that
    keeps working is left alone."""
    import sys
    import types

    from loopjax.cli.commands import report as report_cmd

    monkeypatch.setattr(report_cmd, "STALL_SECONDS", 1.0)
    monkeypatch.setattr(report_cmd, "STALL_CPU_SECONDS", 0.5)
    sleeper = [sys.executable, "-c", "import sys, threading, time\n"
               "def tick():\n"
               "    while True:\n"
               "        t = time.perf_counter()\n"
               "        while time.perf_counter() - t < 0.005: pass\n"
               "        time.sleep(0.1)\n"
               "threading.Thread(target=tick, daemon=True).start()\n"
               "time.sleep(0 if '--resume' in sys.argv else 120)\n"
               "sys.exit(3 if '--overwrite' in sys.argv and '--resume' in sys.argv else 0)", "--overwrite"]
    worker = [sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 4: pass"]
    children = [report_cmd.Child("builtin:a", tmp_path / "a", sleeper, 1),
                report_cmd.Child("builtin:b", tmp_path / "b", worker, 1)]
    env = report_cmd._child_env()
    assert env["JAX_CPU_ENABLE_ASYNC_DISPATCH"] == "false" and "xla_cpu_multi_thread_eigen" in env["XLA_FLAGS"]
    # every child its own compilation cache (jax writes entries unlocked): a folder per built-in, or none
    monkeypatch.setenv("LOOPJAX_COMPILE_CACHE", str(tmp_path / "xla"))
    assert report_cmd._child_env("ouro-tiny")["LOOPJAX_COMPILE_CACHE"] == str(tmp_path / "xla" / "ouro-tiny")
    monkeypatch.setenv("LOOPJAX_COMPILE_CACHE", "0")
    assert report_cmd._child_env("ouro-tiny")["LOOPJAX_COMPILE_CACHE"] == "0"
    for c in children:
        c.start(env)
    report_cmd._watch(types.SimpleNamespace(quiet=True), children, env)
    assert [c.restarts for c in children] == [1, 0] and [c.proc.returncode for c in children] == [0, 0]
    assert "no progress for 1 s: restarted with --resume (1/2)" in capsys.readouterr().err
    assert not any(c.gave_up for c in children)
    # one that stalls again after every restart is killed for good after MAX_RESTARTS: the watch ends
    monkeypatch.setattr(report_cmd, "MAX_RESTARTS", 1)
    stuck = report_cmd.Child("builtin:c", tmp_path / "c", [sys.executable, "-c", "import time; time.sleep(120)"], 1)
    stuck.start(env)
    report_cmd._watch(types.SimpleNamespace(quiet=True), [stuck], env)
    assert stuck.gave_up and stuck.restarts == 1 and stuck.proc.returncode != 0


def test_report_analyses_selects_the_sections(tmp_path, prompts4, capsys):
    out = tmp_path / "r"
    rc, _ = run(["report", "--model", "builtin:huginn-tiny-random", "--prompts", prompts4, "--k", 2, "--steps", 4,
                 "--attr-k", 2, "--regime-steps", 128, "--analyses", "regime,attribution", "--out", out, "--quiet"],
                capsys)
    assert rc == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["attribution", "regime"]
    assert "Regime per prompt" in (out / "index.md").read_text()
    rc, cap = run(["report", "--model", "builtin:huginn-tiny-random", "--analyses", "regime,sideways",
                   "--out", tmp_path / "bad"], capsys)
    assert rc != 0 and "--analyses" in cap.err and not (tmp_path / "bad").exists()


def test_tokens_interrupt_then_resume(tmp_path, prompts4, capsys):
    """Per-token records keep log_growth as (positions, steps, k): the saved-record check on --resume reads
    the steps from axis 1 (it read axis 0 and refused every saved prompt whose length was not T)."""
    def cmd(out, *extra):
        return ["tokens", *RANDOM, "--prompts", prompts4, "--out", out, "--k", 2, "--steps", 6, "--quiet", *extra]

    ref, part = tmp_path / "ref", tmp_path / "part"
    assert run(cmd(ref), capsys)[0] == 0
    rc, o = run(cmd(part), capsys, hooks=Hooks(after_unit=_interrupt))
    assert rc == 130 and "--resume" in o.err
    rc, o = run(cmd(part, "--resume"), capsys)
    assert rc == 0, o.err
    assert numbers(load(ref / "tokens" / "results.json")) == numbers(load(part / "tokens" / "results.json"))
    # the check itself still catches an edited per-token exponent (on --resume the record's digest fails first)
    from loopjax.cli.runstore import RunError, check_derived

    rec = load(part / "tokens" / "prompts" / "000.json")["result"]
    check_derived(rec, "000.json")
    rec["exponents"][0][0] += 0.5
    with pytest.raises(RunError, match="exponents is not what its stored log_growth gives"):
        check_derived(rec, "000.json")


MALLOC_PROBE = """
import ctypes, resource, sys
from loopjax.cli.session import tune_malloc
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
applied = tune_malloc()
n = 48 << 20  # above glibc's largest adaptive mmap threshold (32 MiB), as XLA's large temporaries are

def cycle():
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    libc.free(p)

cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_tune_malloc_keeps_large_freed_blocks_for_reuse():
    """Without tune_malloc every 48 MiB block is a fresh mapping whose pages fault in again (12,288 faults a
    block); with it the freed block is reused. LOOPJAX_MALLOC=default leaves malloc alone."""
    def faults(setting):
        env = {**os.environ, "LOOPJAX_MALLOC": setting}
        out = subprocess.run([sys.executable, "-c", MALLOC_PROBE], env=env, capture_output=True, text=True,
                             check=True).stdout.split()
        return out[0] == "True", int(out[1])
    applied, tuned = faults("tuned")
    left_alone, default = faults("default")
    assert applied and not left_alone
    assert default >= 10 * (48 << 20) // 4096 // 2   # most pages of every block faulted in again
    assert tuned < default // 20


def test_cli_main_tunes_malloc(monkeypatch, tmp_path, capsys):
    called = []
    monkeypatch.setattr(cli, "tune_malloc", lambda: called.append(True))
    assert cli.main(["regime", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert called == [True] and "missing" in capsys.readouterr().err
