"""The commands: each sets up (model, prompts, output folder), hands the work to the runner and prints a
one-line result. No number is computed here: front-ends and `loopjax.summarize` compute them all."""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax.numpy as jnp

import loopjax
from loopjax import report
from loopjax.cli.analyses import ANALYSES, ATTRIBUTION, SIMILARITY, SPECTRUM, TOKENS, TRAJECTORY, Analysis
from loopjax.cli.runner import Hooks, Interrupts, Runner, header, progress, prompt_entries
from loopjax.cli.session import CLIError, Loaded, check_source_exists, model_name, parse_checkpoint_spec, \
    software_versions
from loopjax.prompts import BUILTIN_PROMPTS, SWEEP_PROMPTS, Prompt, get_prompts, prompt_set_digest
from loopjax.runstore import RunStore, read_json

DEFAULT_MODEL = "builtin:ouro-tiny"
BUILTIN_MODELS = ("builtin:ouro-tiny", "builtin:huginn-tiny", "builtin:huginn-tiny-noinject",  # trained, shipped
                  "builtin:parcae-tiny")
# The paper's settings, used when an option is not given.
PAPER = {"spectrum": {"k": 50, "steps": 64}, "attribution": {"k": 1, "steps": 32}, "sweep": {"steps": 32},
         "similarity": {"loops": 8}, "tokens": {"k": 1, "steps": 64}, "trajectory": {"steps": 64}}
REPORT_ATTR_K = 50  # report: attribution heatmap over 50 directions as the paper's Fig. 5a (column 1 = λ1)
ORBIT_STEPS = 64  # loop steps orbit_type looks at (at least; the spectrum's T if longer)
HUGINN_PRETRAINING_STEPS = (6144, 10752, 11904, 17920, 23808, 29824, 35840, 41728)
PRESETS = {"huginn-pretraining": [f"tomg-group-umd/step-{s:08d}-recurrence_full_512_0"
                                  for s in HUGINN_PRETRAINING_STEPS] + ["tomg-group-umd/huginn-0125"]}
KEY_SCHEME = "loopjax.prompt_key(seed, prompt_index), split by loopjax.split_key into (state key, probe key)"
SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


@dataclasses.dataclass
class Context:
    """What a command needs besides its arguments: test/embedding hooks and the Ctrl-C state."""
    hooks: Hooks = dataclasses.field(default_factory=Hooks)
    interrupts: Interrupts = dataclasses.field(default_factory=Interrupts)


def say(args, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, flush=True)


def transient(args) -> dict:
    """--warmup / --renorm-every as engine options (recorded in the settings)."""
    return {"warmup": _or(getattr(args, "warmup", None), 0), "renorm_every": _or(getattr(args, "renorm_every", None), 1)}


def _or(value, default):
    """An option's value, or the default when it was not given (None; never when it is 0)."""
    return default if value is None else value


def load_model(source: str, revision: str | None, dtype: str | None) -> Loaded:
    try:
        return Loaded(source, revision, dtype)
    except CLIError:
        raise
    except (ValueError, OSError, NotImplementedError, TypeError) as e:
        raise CLIError(f"cannot load model {source!r}{'@' + revision if revision else ''}: {e}") from None


def read_prompts(args, default=BUILTIN_PROMPTS) -> list[Prompt]:
    try:
        return get_prompts(args.prompts, args.max_prompts, default)
    except (OSError, ValueError) as e:
        raise CLIError(str(e)) from None


def check_k(k: int, tokens: list[list[int]], hidden: int, prompts: list[Prompt], flag: str = "--k") -> None:
    for i, ids in enumerate(tokens):
        d = len(ids) * hidden
        if k > d:
            raise CLIError(f"{flag} {k} exceeds the state dimension d = L*H = {len(ids)}*{hidden} = {d} of "
                           f"prompt {i} ({prompts[i].text[:40]!r}); use {flag} <= {d}")


def common_settings(args, loaded: Loaded, analysis: str, prompts: list[Prompt]) -> dict:
    return {"analysis": analysis, "model": loaded.source, "revision": loaded.revision, "dtype": loaded.dtype,
            "x64": bool(args.x64), "seed": int(args.seed), "key_scheme": KEY_SCHEME,
            "tokenizer": loaded.tokenizer.name if not args.token_ids else "token ids given (--token-ids)",
            "prompts_file": str(args.prompts) if args.prompts else None,
            "prompt_set": "custom" if args.prompts else "builtin-20", "n_prompts": len(prompts),
            "xla_flags": os.environ.get("XLA_FLAGS") or None}


class _Unit:
    """What a long per-prompt computation may use: its scan checkpointer, a step progress bar, hooks."""

    def __init__(self, runner: Runner, key: str, index: int):
        self.runner, self.key, self.index = runner, key, index

    def checkpointer(self):
        return self.runner.store.scan_checkpointer(self.key)

    def progress(self, total: int, initial: int = 0):
        return progress(total=total, initial=initial, desc=f"  steps ({self.key})", unit="step", leave=False,
                        quiet=self.runner.quiet)

    def after_segment(self, steps_done: int) -> None:
        self.runner.hooks.after_segment(self.key, steps_done)
        self.runner.interrupts.check()


def run_analysis(args, ctx: Context, analysis: Analysis, loaded: Loaded, prompts: list[Prompt],
                 tokens: list[list[int]], out: Path, **opts) -> dict:
    """One per-prompt analysis into out/<analysis>/: prompt i runs with key loopjax.prompt_key(seed, i)."""
    opts = {**opts, "seed": args.seed, "pad_multiple": pad_multiple(args, opts)}
    settings = {**common_settings(args, loaded, analysis.name, prompts), **{k: opts.get(k) for k in analysis.options}}
    store = RunStore(out / analysis.name, analysis.name, settings, resume=args.resume, overwrite=args.overwrite)
    runner = Runner(store, quiet=args.quiet, hooks=ctx.hooks, interrupts=ctx.interrupts)
    units = [(f"{i:03d}", {"index": i, "text": p.text, "register": p.register, "token_ids": ids})
             for i, (p, ids) in enumerate(zip(prompts, tokens))]
    runner.begin([key for key, _ in units])
    batched = _batched(analysis, opts, store, units, loaded.model)
    pieces = {u: loaded.pieces(inp["token_ids"]) for u, inp in units} if analysis is TOKENS else {}

    def compute(unit: str, inputs: dict) -> dict:
        key = loopjax.prompt_key(args.seed, inputs["index"])
        ids = jnp.asarray(inputs["token_ids"], jnp.int32)
        core = batched(unit) if batched else None
        record = analysis.to_record(analysis.compute(loaded.model, ids, key, opts, _Unit(runner, unit, inputs["index"]),
                                                     core))
        return {**record, "pieces": pieces[unit]} if unit in pieces else record

    records = runner.units(units, compute, desc=f"{loaded.name} {analysis.name}")
    results = [analysis.from_record(rec["result"]) for rec in records]
    summary = loopjax.summarize(results, kind=analysis.kind,
                                **analysis.summary_extras([rec["result"] for rec in records]))
    res = header(analysis.name, loaded.info, store, software_versions())
    res["summary"] = summary.to_json()
    res["prompts"] = prompt_entries(records)
    res["figures"] = [p.name for p in analysis.figures(store.root, results, summary, loaded.name)]
    return runner.finish(res)


def pad_multiple(args, opts: dict) -> int | None:
    """The padded-batch bucket size, or None (prompt by prompt): --pad-multiple N if given; by default 8 on
    an accelerator and None on CPU, where batching measured no faster (benchmarks/ragged_batch.py); always
    None with --no-batch or --checkpoint-every (segments go prompt by prompt)."""
    import jax

    if getattr(args, "no_batch", False) or opts.get("checkpoint_every") or opts.get("devices"):
        return None
    if getattr(args, "pad_multiple", None) is not None:
        return args.pad_multiple
    return None if jax.default_backend() == "cpu" else 8


def _batched(analysis: Analysis, opts: dict, store: RunStore, units, model):
    """With --pad-multiple (the default), the core front-end of a unit is computed together with every other
    unit of the same padded length, as one vmapped program (`loopjax.spectrum` on a list of prompts);
    returns unit -> core result, or None when the analysis or the options do not batch. The batch is always
    the whole bucket (saved units included), so a resumed run computes exactly the same programs and
    numbers as an uninterrupted one."""
    if analysis.batch is None or not opts.get("pad_multiple") or opts.get("checkpoint_every"):
        return None
    cache: dict = {}
    bucket = {u: loopjax.padded_length(len(inp["token_ids"]), opts["pad_multiple"]) for u, inp in units}

    def core(unit: str):
        if unit not in cache:
            group = [(u, inp) for u, inp in units if bucket[u] == bucket[unit]]
            results = analysis.batch(model, [jnp.asarray(inp["token_ids"], jnp.int32) for _, inp in group],
                                     [loopjax.prompt_key(opts["seed"], inp["index"]) for _, inp in group], opts)
            cache.update({u: r for (u, _), r in zip(group, results)})
        return cache.pop(unit)

    return core


def _setup(args) -> tuple[Loaded, list[Prompt], list[list[int]], Path]:
    prompts = read_prompts(args)
    loaded = load_model(args.model, args.revision, args.dtype)
    tokens = loaded.tokenize(prompts, args.token_ids)
    out = Path(args.out) if args.out else Path("results") / loaded.name
    return loaded, prompts, tokens, out


# ---- the per-prompt commands ---------------------------------------------------------------------------

def cmd_spectrum(args, ctx: Context) -> int:
    loaded, prompts, tokens, out = _setup(args)
    k, steps = _or(args.k, PAPER["spectrum"]["k"]), _or(args.steps, PAPER["spectrum"]["steps"])
    check_k(k, tokens, loaded.model.config.hidden_size, prompts)
    r = run_analysis(args, ctx, SPECTRUM, loaded, prompts, tokens, out, k=k, steps=steps,
                     checkpoint_every=args.checkpoint_every, **transient(args), probe_seeds=args.probe_seeds,
                     orbit_steps=max(ORBIT_STEPS, steps), perturbation=False, devices=devices(args))
    s = r["summary"]
    say(args, f"spectrum: lambda1 = {s['lambda1_mean']:+.4f} +/- {s['lambda1_std']:.4f}, "
              f"{100 * s['fraction_positive']:.1f}% positive, range [{s['range_min']:+.3f}, "
              f"{s['range_max']:+.3f}] -> {out / 'spectrum' / 'results.json'}")
    return 0


def devices(args) -> int | None:
    """--devices N: shard the probe axis over the first N local devices (checked here, before any work)."""
    import jax

    n = getattr(args, "devices", None)
    if n is None:
        return None
    if n > len(jax.devices()):
        raise CLIError(f"--devices {n}: only {len(jax.devices())} device(s) here ({jax.default_backend()}); on "
                       f"CPU, XLA_FLAGS=--xla_force_host_platform_device_count={n} makes {n} host devices")
    if getattr(args, "checkpoint_every", None):
        raise CLIError("--devices and --checkpoint-every do not combine (segments run on one device)")
    return n


def cmd_tokens(args, ctx: Context) -> int:
    loaded, prompts, tokens, out = _setup(args)
    k, steps = _or(args.k, PAPER["tokens"]["k"]), _or(args.steps, PAPER["tokens"]["steps"])
    if k > loaded.model.config.hidden_size:
        raise CLIError(f"--k {k} exceeds the hidden size {loaded.model.config.hidden_size} (one position's block)")
    r = run_analysis(args, ctx, TOKENS, loaded, prompts, tokens, out, k=k, steps=steps, **transient(args))
    s = r["summary"]
    say(args, f"tokens: prompt lambda1 (max over positions) {s['union_lambda1_mean']:+.4f}; "
              f"{100 * s['fraction_expanding_positions']:.1f}% of positions expand -> {out / 'tokens' / 'results.json'}")
    return 0


def cmd_attribute(args, ctx: Context) -> int:
    loaded, prompts, tokens, out = _setup(args)
    k, steps = _or(args.k, PAPER["attribution"]["k"]), _or(args.steps, PAPER["attribution"]["steps"])
    check_k(k, tokens, loaded.model.config.hidden_size, prompts)
    r = run_analysis(args, ctx, ATTRIBUTION, loaded, prompts, tokens, out, k=k, steps=steps, **transient(args))
    s = r["summary"]
    say(args, f"attribution: lambda1 total = {s['lambda1_total_mean']:+.4f}; largest expansion in "
              f"{s['largest_expanding_sublayer']} -> {out / 'attribution' / 'results.json'}")
    return 0


def cmd_similarity(args, ctx: Context) -> int:
    loaded, prompts, tokens, out = _setup(args)
    r = run_analysis(args, ctx, SIMILARITY, loaded, prompts, tokens, out,
                     loops=_or(args.steps, PAPER["similarity"]["loops"]))
    say(args, f"similarity: loop-output cosine (consecutive) = "
              f"{[round(x, 4) for x in r['summary']['loop_output_consecutive']]} -> "
              f"{out / 'similarity' / 'results.json'}")
    return 0


def cmd_trajectory(args, ctx: Context) -> int:
    loaded, prompts, tokens, out = _setup(args)
    r = run_analysis(args, ctx, TRAJECTORY, loaded, prompts, tokens, out,
                     steps=_or(args.steps, PAPER["trajectory"]["steps"]))
    s = r["summary"]
    say(args, f"trajectory: ||z_(t+1) - z_t|| {s['step_norm_first_mean']:.3g} -> {s['step_norm_last_mean']:.3g} "
              f"-> {out / 'trajectory' / 'results.json'}")
    return 0


# ---- sweep ---------------------------------------------------------------------------------------------

def sweep_list(args) -> list[tuple[str, str | None]]:
    specs = list(getattr(args, "checkpoints", None) or [])
    if getattr(args, "preset", None):
        specs = PRESETS[args.preset] + specs
    return [parse_checkpoint_spec(s) for s in specs]


def run_sweep(args, ctx: Context, checkpoints, prompts: list[Prompt], out: Path, *, steps: int, title: str) -> dict:
    """λ1 (one probe) for every checkpoint and prompt; prompt i uses prompt_key(seed, i) for every checkpoint."""
    if not checkpoints:
        raise CLIError("sweep needs --checkpoints A B@REV ... or --preset NAME")
    for src, _rev in checkpoints:
        check_source_exists(src)
    settings = {"analysis": "sweep", "checkpoints": [[s, r] for s, r in checkpoints], "dtype": args.dtype,
                "x64": bool(args.x64), "seed": int(args.seed), "key_scheme": KEY_SCHEME, "steps": steps, "k": 1,
                **transient(args),
                "prompts_file": str(args.prompts) if args.prompts else None,
                "prompt_set": "custom" if args.prompts else "paper-5", "n_prompts": len(prompts),
                "prompt_digest": prompt_set_digest(prompts), "xla_flags": os.environ.get("XLA_FLAGS") or None}
    store = RunStore(out / "sweep", "sweep", settings, resume=args.resume, overwrite=args.overwrite)
    runner = Runner(store, quiet=args.quiet, hooks=ctx.hooks, interrupts=ctx.interrupts)
    keys = [[f"c{c:02d}-p{i:03d}" for i in range(len(prompts))] for c in range(len(checkpoints))]
    runner.begin([k for row in keys for k in row])
    lam, per_ckpt = [], []
    for c, (src, rev) in enumerate(checkpoints):
        records = _saved_sweep_units(store, keys[c], prompts, [src, rev]) if args.resume else None
        if records is None:  # load the checkpoint only when some unit is missing
            loaded = load_model(src, rev, args.dtype)
            tokens = loaded.tokenize(prompts, args.token_ids)
            units = [(keys[c][i], {"index": i, "text": p.text, "register": p.register, "token_ids": ids,
                                   "checkpoint": [src, rev]}) for i, (p, ids) in enumerate(zip(prompts, tokens))]

            def compute(unit, inputs, loaded=loaded):
                v = loopjax.lambda1(loaded.model, jnp.asarray(inputs["token_ids"], jnp.int32), steps=steps,
                                    key=loopjax.prompt_key(args.seed, inputs["index"]), **transient(args))
                return {"lambda1": float(v), "model": loaded.info}

            records = runner.units(units, compute, desc=f"sweep {c + 1}/{len(checkpoints)} {loaded.name}")
        lam.append([rec["result"]["lambda1"] for rec in records])
        info = records[0]["result"].get("model") or {}
        per_ckpt.append({"source": src, "revision": rev, "label": model_name(src, rev), "model": info,
                         "training_step": training_step(src, rev), "resolved_commit": info.get("resolved_commit"),
                         "prompts": prompt_entries(records)})
    summary = loopjax.summarize(lam, kind="sweep")
    res = header("sweep", None, store, software_versions())
    res.update(title=title, checkpoints=per_ckpt, lambda1=lam, summary=summary.to_json())
    from loopjax import plots

    import numpy as np
    f = plots.plot_sweep(store.root / "sweep_lambda1.png", [p["label"] for p in per_ckpt], np.asarray(lam), title,
                         [p["training_step"] for p in per_ckpt])
    res["figures"] = [f.name]
    return runner.finish(res)


def training_step(source: str, revision: str | None) -> int | None:
    """The training step a checkpoint's name or revision states (``step-00006144-...``), else None."""
    m = re.search(r"step[-_]?0*(\d+)", f"{source} {revision or ''}")
    return int(m.group(1)) if m else None


def _saved_sweep_units(store: RunStore, keys: list[str], prompts: list[Prompt], ckpt: list) -> list[dict] | None:
    """All saved units of one checkpoint (settings and prompt texts checked), or None if any is missing.
    The token ids are checked only when the checkpoint is loaded (i.e. when some unit is missing)."""
    if not all(store.unit_path(k).is_file() for k in keys):
        return None
    out = []
    for i, (k, p) in enumerate(zip(keys, prompts)):
        saved = read_json(store.unit_path(k)).get("inputs", {})
        want = {"index": i, "text": p.text, "register": p.register, "checkpoint": ckpt,
                "token_ids": saved.get("token_ids")}
        out.append(store.load_unit(k, want))
    return out


def cmd_sweep(args, ctx: Context) -> int:
    prompts = read_prompts(args, default=SWEEP_PROMPTS)
    out = Path(args.out) if args.out else Path("results") / (args.preset or "sweep")
    r = run_sweep(args, ctx, sweep_list(args), prompts, out, steps=_or(args.steps, PAPER["sweep"]["steps"]),
                  title=args.preset or "checkpoints")
    s = r["summary"]
    say(args, f"sweep: std across checkpoints {s['std_across_checkpoints']:.4f} vs mean per-prompt std "
              f"{s['mean_per_prompt_std']:.4f} -> {out / 'sweep' / 'results.json'}")
    return 0


# ---- report --------------------------------------------------------------------------------------------

def report_settings(args) -> dict:
    return {"spectrum_k": _or(args.k, PAPER["spectrum"]["k"]),
            "spectrum_steps": _or(args.spectrum_steps, _or(args.steps, PAPER["spectrum"]["steps"])),
            "attr_k": args.attr_k,
            "attr_steps": _or(args.attr_steps, _or(args.steps, PAPER["attribution"]["steps"])),
            "loops": args.loops, "traj_steps": _or(args.traj_steps, _or(args.steps, PAPER["trajectory"]["steps"]))}


def run_report_one(args, ctx: Context, source: str, out: Path | None) -> tuple[Path, dict]:
    prompts = read_prompts(args)
    loaded = load_model(source, args.revision, args.dtype)
    tokens = loaded.tokenize(prompts, args.token_ids)
    out = out or (Path(args.out) if args.out else Path("results") / loaded.name)
    rs = report_settings(args)
    hidden = loaded.model.config.hidden_size
    check_k(rs["spectrum_k"], tokens, hidden, prompts)
    check_k(rs["attr_k"], tokens, hidden, prompts, "--attr-k")
    say(args, f"[{loaded.name}] {len(prompts)} prompts -> {out}")
    t0 = time.perf_counter()
    results = {
        "spectrum": run_analysis(args, ctx, SPECTRUM, loaded, prompts, tokens, out, k=rs["spectrum_k"],
                                 steps=rs["spectrum_steps"], checkpoint_every=args.checkpoint_every,
                                 **transient(args), probe_seeds=args.probe_seeds,
                                 orbit_steps=max(ORBIT_STEPS, rs["spectrum_steps"]), perturbation=True,
                                 devices=devices(args)),
        "attribution": run_analysis(args, ctx, ATTRIBUTION, loaded, prompts, tokens, out, k=rs["attr_k"],
                                    steps=rs["attr_steps"], **transient(args)),
        "similarity": run_analysis(args, ctx, SIMILARITY, loaded, prompts, tokens, out, loops=rs["loops"]),
        "trajectory": run_analysis(args, ctx, TRAJECTORY, loaded, prompts, tokens, out, steps=rs["traj_steps"]),
        "tokens": run_analysis(args, ctx, TOKENS, loaded, prompts, tokens, out, k=PAPER["tokens"]["k"],
                               steps=rs["spectrum_steps"], **transient(args)),
    }
    if loaded.model.arch.injection_fields(loaded.model.config) and not args.no_ablation:  # Huginn: the injection ablation too
        from loopjax.cli import ablate

        results["ablation"] = ablate.run_ablation(ablate.report_args(args), ctx, loaded, prompts, tokens, out)
    ckpts = sweep_list(args)
    if ckpts:
        results["sweep"] = run_sweep(args, ctx, ckpts, read_prompts(args, default=SWEEP_PROMPTS), out,
                                     steps=args.sweep_steps, title=args.preset or "checkpoints")
    seconds = time.perf_counter() - t0
    report.write_index(out, loaded.info, results, seconds=seconds, settings_note=report_note(rs))
    say(args, f"[{loaded.name}] done in {seconds:.1f} s: {out / 'index.html'}")
    return out, results


def report_note(rs: dict) -> str:
    return (f"report settings: spectrum k={rs['spectrum_k']}, T={rs['spectrum_steps']}; attribution "
            f"k={rs['attr_k']}, T={rs['attr_steps']} (bars = direction 1, i.e. the k=1 lambda_1 contributions); "
            f"similarity {rs['loops']} loops; trajectory {rs['traj_steps']} steps")


def cmd_report(args, ctx: Context) -> int:
    if args.model:
        run_report_one(args, ctx, args.model, None)
        return 0
    root = Path(args.out) if args.out else Path("results")
    if args.jobs > 1:
        outs = _report_parallel(args, root)
    else:
        outs = [run_report_one(args, ctx, src, root / model_name(src))[0] for src in BUILTIN_MODELS]
    done = []
    for src, out in zip(BUILTIN_MODELS, outs):
        results = {a: read_json(out / a / "results.json") for a in (*ANALYSES, "sweep")
                   if (out / a / "results.json").is_file()}
        done.append((model_name(src), out, results))
    report.write_top_index(root, done, model_panels(root, done))
    say(args, f"wrote {root / 'index.md'} and {root / 'index.html'}")
    return 0


def model_panels(root: Path, done: list[tuple[str, Path, dict]]) -> list[Path]:
    """Figs. 1 and 2 of the paper with one panel per model, drawn from the models' results.json."""
    from loopjax import plots

    import numpy as np
    runs = [(name, [np.asarray(p["log_growth"]) for p in r["spectrum"]["prompts"]]) for name, _, r in done
            if "spectrum" in r]
    attr = [(name, r["attribution"]["summary"]["names"],
             np.asarray([np.asarray(p["exponents"])[:, 0] for p in r["attribution"]["prompts"]]))
            for name, _, r in done if "attribution" in r]
    figs = []
    if len(runs) > 1:
        figs.append(plots.plot_models_running(root / "models_spectrum_running_top5.png", runs))
    if len(attr) > 1:
        figs.append(plots.plot_models_attribution(root / "models_attribution_lambda1.png", attr))
    return figs


def _report_parallel(args, root: Path) -> list[Path]:
    """One ``loopjax report --model M`` child process per built-in model (XLA compilation, the bulk of a
    built-in run, is single-threaded); the parent shows one progress bar per model by counting the saved
    prompt files, and reports the first error line of a failed child.

    The children run XLA single-threaded (``SINGLE_THREAD_XLA`` appended to ``XLA_FLAGS``): the tiny models
    gain nothing from intra-op threads, and two multi-threaded processes on two cores can be many times
    slower. The flags change the last bits of the numbers, so they are part of the recorded settings
    (``xla_flags``) that ``--resume`` checks."""
    n_prompts = len(read_prompts(args))
    total = n_prompts * (len(ANALYSES) + len(sweep_list(args)))  # (a Huginn ablation's units are not counted)
    env = dict(os.environ)
    if "xla_cpu_multi_thread_eigen" not in env.get("XLA_FLAGS", ""):
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + SINGLE_THREAD_XLA).strip()
    jobs, t0 = [], time.perf_counter()
    for src in BUILTIN_MODELS:
        out = root / model_name(src)
        err = tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, "-m", "loopjax.cli", *args._argv, "--model", src, "--out", str(out), "--quiet"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env)
        jobs.append((src, out, proc, err))
    say(args, f"report: {len(jobs)} models in parallel ({n_prompts} prompts each) -> {root}")
    bars = [progress(total=total, desc=model_name(src), unit="prompt", position=i, quiet=args.quiet)
            for i, (src, *_rest) in enumerate(jobs)]
    try:
        while any(proc.poll() is None for *_x, proc, _e in jobs):
            for bar, (src, out, proc, err) in zip(bars, jobs):
                n = sum(1 for _ in out.glob("*/prompts/*.json")) if out.is_dir() else 0
                bar.update(min(n, total) - bar.n)
            time.sleep(0.5)
    finally:
        for _src, _out, proc, _err in jobs:
            proc.wait()  # on Ctrl-C the children got the signal too and stop at their next safe point
        for bar in bars:
            bar.close()
    failed = []
    for src, out, proc, err in jobs:
        err.seek(0)
        lines = [ln for ln in err.read().splitlines() if ln.strip()]
        err.close()
        if proc.returncode != 0:
            msg = next((ln for ln in lines if ln.startswith("loopjax:")),
                       lines[-1] if lines else f"exit status {proc.returncode}")
            failed.append(f"[{model_name(src)}] {msg.replace('loopjax: error: ', '')}")
        else:
            say(args, f"[{model_name(src)}] {out / 'index.html'}")
    if failed:
        raise CLIError("; ".join(failed))
    say(args, f"report: {len(jobs)} models done in {time.perf_counter() - t0:.1f} s")
    return [root / model_name(src) for src in BUILTIN_MODELS]


# ---- convert -------------------------------------------------------------------------------------------

def cmd_convert(args, ctx: Context) -> int:
    if Path(args.out).exists():
        raise CLIError(f"{args.out} already exists; choose a new output directory")
    check_source_exists(args.src)
    loopjax.convert(args.src, args.out, revision=args.revision, dtype=args.dtype)
    say(args, f"converted {args.src} -> {args.out}")
    return 0
