"""`loopjax report`: every analysis of one model (or of the built-in models) with index.md / index.html."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loopjax.cli import report
from loopjax.cli.analyses import (ANALYSES, ATTRIBUTION, COMPLETE, DYNAMICS, REGIME, SIMILARITY, SPECTRUM, TOKENS,
                                  TRAJECTORY)
from loopjax.cli.commands import ablate
from loopjax.cli.commands.attribute import AttributionSettings, add_plain
from loopjax.cli.commands.base import (BUILTIN_MODELS, BUILTIN_REPORT, BUILTIN_ROLES, PAPER, PRESETS, REPORT_ATTR_K, Command, Common, Context,
                                       check_k, or_default, pad_multiple, read_prompts, run_analysis, say, setup)
from loopjax.cli.commands.similarity import SimilaritySettings, TrajectorySettings
from loopjax.cli.commands.dynamics import DynamicsSettings
from loopjax.cli.commands.regime import RegimeSettings
from loopjax.cli.commands.spectrum import CompleteSettings, SpectrumSettings
from loopjax.cli.commands.sweep import SweepSettings, run_sweep, sweep_list
from loopjax.cli.commands.tokens import TokensSettings
from loopjax.cli.parser import add_common, add_transient
from loopjax.cli.runner import progress
from loopjax.cli.runstore import read_json
from loopjax.cli.session import CLIError, compile_cache_dir, model_name
from loopjax.io.prompts import SWEEP_PROMPTS

SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


@dataclasses.dataclass(frozen=True)
class ReportSettings:
    """The report's analyses, each with its command's typed settings (--steps, if given, sets every T)."""
    spectrum: SpectrumSettings
    attribution: AttributionSettings
    similarity: SimilaritySettings
    trajectory: TrajectorySettings
    tokens: TokensSettings
    regime: RegimeSettings
    complete: CompleteSettings
    dynamics: DynamicsSettings
    complete_prompts: int = 2   # the complete spectrum (all d exponents) of the first N prompts
    dynamics_prompts: int = 5   # CLVs, logit lens and attention of the first N prompts

    @classmethod
    def from_args(cls, args) -> "ReportSettings":
        def steps(given, analysis: str) -> int:  # the analysis' own option, else --steps, else the paper's
            return or_default(given, or_default(args.steps, PAPER[analysis]["steps"]))

        spectrum_steps = steps(args.spectrum_steps, "spectrum")
        return cls(spectrum=SpectrumSettings.from_args(args, steps=spectrum_steps, perturbation=True),
                   attribution=AttributionSettings.from_args(args, k=args.attr_k,
                                                             steps=steps(args.attr_steps, "attribution")),
                   similarity=SimilaritySettings(args.loops, pad_multiple=pad_multiple(args)),
                   trajectory=TrajectorySettings(steps(args.traj_steps, "trajectory"), pad_multiple=pad_multiple(args)),
                   tokens=TokensSettings.from_args(args, k=PAPER["tokens"]["k"], steps=spectrum_steps),
                   regime=RegimeSettings(max_steps=args.regime_steps, pad_multiple=or_default(
                       getattr(args, "pad_multiple", None), RegimeSettings.pad_multiple)),
                   complete=CompleteSettings(steps=spectrum_steps, warmup=spectrum_steps),
                   dynamics=DynamicsSettings(), complete_prompts=args.complete_prompts,
                   dynamics_prompts=args.dynamics_prompts)

    def note(self) -> str:
        return (f"report settings: regime per prompt at an adaptive horizon (k={self.regime.k}, up to "
                f"{self.regime.max_steps} steps); the paper's protocol: spectrum k={self.spectrum.k}, T={self.spectrum.steps}; attribution "
                f"k={self.attribution.k}, T={self.attribution.steps} (bars = direction 1, i.e. the k=1 lambda_1 "
                f"contributions); similarity {self.similarity.loops} loops; trajectory {self.trajectory.steps} steps; "
                f"complete spectrum of the first {self.complete_prompts} prompts (T={self.complete.steps} after "
                f"{self.complete.warmup}); CLVs / logit lens / attention of the first {self.dynamics_prompts}")


REPORT_ANALYSES = ("regime", "spectrum", "attribution", "similarity", "trajectory", "tokens", "complete", "dynamics",
                   "ablation")


def parse_analyses(text: str | None) -> tuple[str, ...] | None:
    """--analyses 'regime,spectrum' -> ('regime', 'spectrum'); None -> None (all)."""
    if text is None:
        return None
    names = tuple(a.strip() for a in text.split(",") if a.strip())
    bad = [a for a in names if a not in REPORT_ANALYSES]
    if bad or not names:
        raise CLIError(f"--analyses: expected names from {', '.join(REPORT_ANALYSES)}, got {text!r}")
    return names


def run_report_one(args, ctx: Context, source: str, out: Path | None, only=None) -> tuple[Path, dict]:
    """Every analysis of one model (`only`: these analyses; default --analyses, else all)."""
    only = parse_analyses(args.analyses) if only is None else only
    wanted = (lambda name: only is None or name in only)  # noqa: E731
    common = Common.from_args(args)
    s = setup(common, source, out)
    rs = ReportSettings.from_args(args)
    hidden = s.loaded.model.config.hidden_size
    check_k(rs.spectrum.k, s.tokens, hidden, s.prompts)
    check_k(rs.attribution.k, s.tokens, hidden, s.prompts, "--attr-k")
    say(common.quiet, f"[{s.loaded.name}] {len(s.prompts)} prompts -> {s.out}")
    t0 = time.perf_counter()
    results = {analysis.name: run_analysis(common, ctx, analysis, s, getattr(rs, field))
               for analysis, field in ((REGIME, "regime"), (SPECTRUM, "spectrum"), (ATTRIBUTION, "attribution"),
                                       (SIMILARITY, "similarity"), (TRAJECTORY, "trajectory"), (TOKENS, "tokens"))
               if wanted(field)}
    for analysis, field, n in ((COMPLETE, "complete", rs.complete_prompts), (DYNAMICS, "dynamics", rs.dynamics_prompts)):
        if n and wanted(field):
            first = dataclasses.replace(s, prompts=s.prompts[:n], tokens=s.tokens[:n])
            results[analysis.name] = run_analysis(common, ctx, analysis, first, getattr(rs, field))
    if s.loaded.model.arch.injection_fields(s.loaded.model.config) and not args.no_ablation and wanted("ablation"):
        results["ablation"] = ablate.run_ablation(common, ctx, s, ablate.AblationSettings.for_report(args))
    ckpts = sweep_list(args)
    if ckpts:
        results["sweep"] = run_sweep(common, ctx, SweepSettings.from_args(args, ckpts, steps=args.sweep_steps),
                                     read_prompts(common, default=SWEEP_PROMPTS), s.out,
                                     title=args.preset or "checkpoints")
    seconds = time.perf_counter() - t0
    report.write_index(s.out, s.loaded.info, results, seconds=seconds, settings_note=rs.note())
    say(common.quiet, f"[{s.loaded.name}] done in {seconds:.1f} s: {s.out / 'index.html'}")
    return s.out, results


def run(args, ctx: Context) -> int:
    if args.model:
        run_report_one(args, ctx, args.model, None)
        return 0
    root = Path(args.out) if args.out else Path("results")
    if args.jobs > 1:
        outs = _report_parallel(args, root)
    else:
        outs = [run_report_one(args, ctx, src, root / model_name(src), only=_builtin_analyses(args, src))[0]
                for src in BUILTIN_MODELS]
    done = []
    for src, out in zip(BUILTIN_MODELS, outs):
        results = {a: read_json(out / a / "results.json") for a in (*ANALYSES, "regime", "complete", "dynamics", "sweep")
                   if (out / a / "results.json").is_file()}
        role = BUILTIN_ROLES.get(src)
        done.append((model_name(src) + (f" ({role})" if role else ""), out, results))
    report.write_top_index(root, done, model_panels(root, done))
    say(args.quiet, f"wrote {root / 'index.md'} and {root / 'index.html'}")
    return 0


def model_panels(root: Path, done: list[tuple[str, Path, dict]]) -> list[Path]:
    """Figs. 1 and 2 of the paper with one panel per model, drawn from the models' results.json."""
    import numpy as np

    from loopjax.cli import plots

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


def _builtin_analyses(args, src: str):
    """The analyses `src` gets in the built-in report: --analyses if given, else BUILTIN_REPORT's."""
    return parse_analyses(args.analyses) if args.analyses else BUILTIN_REPORT[src]


def _child_env(name: str | None = None) -> dict:
    """The environment of the child for built-in `name`. With a persistent compilation cache (only when
    LOOPJAX_COMPILE_CACHE names one: see `compile_cache_dir`) each child gets its own, ``<cache>/<name>``:
    jax writes a cache entry without a lock or a rename unless eviction is on, and the children compile
    some identical small programs, so one child could read another's half-written entry (a crash inside the
    cache reader was seen with a shared folder). The children run XLA single-threaded (``SINGLE_THREAD_XLA`` appended to ``XLA_FLAGS``): the tiny models
    gain nothing from intra-op threads, and two multi-threaded processes on two cores can be many times
    slower. The flags change the last bits of the numbers, so they are part of the recorded settings
    (``xla_flags``) that ``--resume`` checks. CPU dispatch is synchronous (JAX_CPU_ENABLE_ASYNC_DISPATCH=false):
    a child once waited forever on a buffer of an asynchronous CPU computation (see ``STALL_SECONDS``)."""
    env = dict(os.environ)
    if "xla_cpu_multi_thread_eigen" not in env.get("XLA_FLAGS", ""):
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + SINGLE_THREAD_XLA).strip()
    env.setdefault("JAX_CPU_ENABLE_ASYNC_DISPATCH", "false")
    cache = compile_cache_dir(env)
    if name is not None and cache is not None:
        env["LOOPJAX_COMPILE_CACHE"] = os.path.join(cache, name)
    return env


# A child that used less than STALL_CPU_SECONDS of CPU in STALL_SECONDS is stalled: jaxlib 0.10's CPU runtime
# was seen to wedge, every thread waiting on a futex and the main thread waiting forever for a program's output
# (in the covariant-vector analysis, with and without a persistent compilation cache); idle helper threads
# (tqdm's monitor, XLA's slow-operation alarm) still add a clock tick every ~20 s, so "no CPU at all" never
# holds. It is killed and restarted with --resume, which keeps its saved prompts. A working child, even
# sharing a core with three others, uses ~0.25 s of CPU per second.
STALL_SECONDS = 60.0
STALL_CPU_SECONDS = 1.0
MAX_RESTARTS = 2


@dataclasses.dataclass
class Child:
    src: str
    out: Path
    cmd: list
    total: int
    env: dict | None = None
    proc: subprocess.Popen | None = None
    err: object = None
    restarts: int = 0
    gave_up: bool = False
    cpu: float = -1.0
    cpu_seen: float = 0.0

    def start(self, env=None, resume: bool = False) -> None:
        """Start (or, with resume, restart) the child; `env` is kept for restarts."""
        self.env = env if env is not None else self.env
        env = self.env
        self.err = tempfile.TemporaryFile(mode="w+")
        cmd = self.cmd
        if resume:   # continue from the saved prompts: --overwrite (make run's) would refuse to combine
            cmd = [a for a in cmd if a != "--overwrite"] + ([] if "--resume" in cmd else ["--resume"])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.err, stdin=subprocess.DEVNULL,
                                     env=env)
        self.cpu, self.cpu_seen = -1.0, time.monotonic()

    def stalled(self, now: float) -> bool:
        """True when the child's CPU time (Linux /proc) grew by less than STALL_CPU_SECONDS over the last
        STALL_SECONDS (self.cpu, self.cpu_seen: the CPU time and the moment the current window began)."""
        cpu = _cpu_seconds(self.proc.pid)
        if cpu is None or self.cpu < 0 or cpu - self.cpu >= STALL_CPU_SECONDS:
            self.cpu, self.cpu_seen = (self.cpu if cpu is None else cpu), now
            return False
        return now - self.cpu_seen > STALL_SECONDS


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _report_parallel(args, root: Path) -> list[Path]:
    """One ``loopjax report --model M`` child process per built-in model (XLA compilation, the bulk of a
    built-in run, is single-threaded); the parent shows one progress bar per model by counting the saved
    prompt files, restarts a stalled child (``STALL_SECONDS``) with --resume, and reports the first error line
    of a failed child."""
    n_prompts = len(read_prompts(Common.from_args(args)))
    children, t0 = [], time.perf_counter()
    for src in BUILTIN_MODELS:
        out, only = root / model_name(src), _builtin_analyses(args, src)
        cmd = [sys.executable, "-m", "loopjax.cli", *args._argv, "--model", src, "--out", str(out), "--quiet"]
        if only is not None and not args.analyses:
            cmd += ["--analyses", ",".join(only)]
        children.append(Child(src, out, cmd, _expected_files(args, n_prompts, only)))
        children[-1].start(_child_env(model_name(src)))
    say(args.quiet, f"report: {len(children)} models in parallel ({n_prompts} prompts each) -> {root}")
    _watch(args, children)
    failed = []
    for c in children:
        c.err.seek(0)
        lines = [ln for ln in c.err.read().splitlines() if ln.strip()]
        c.err.close()
        if c.gave_up:
            failed.append(f"[{model_name(c.src)}] no progress for {STALL_SECONDS:.0f} s after {MAX_RESTARTS} restarts "
                          f"with --resume: stopped (rerun with --resume to continue from its saved prompts)")
        elif c.proc.returncode != 0:
            msg = next((ln for ln in lines if ln.startswith("loopjax:")),
                       lines[-1] if lines else f"exit status {c.proc.returncode}")
            failed.append(f"[{model_name(c.src)}] {msg.replace('loopjax: error: ', '')}")
        else:
            say(args.quiet, f"[{model_name(c.src)}] {c.out / 'index.html'}")
    if failed:
        raise CLIError("; ".join(failed))
    say(args.quiet, f"report: {len(children)} models done in {time.perf_counter() - t0:.1f} s")
    return [c.out for c in children]


def _expected_files(args, n_prompts: int, only) -> int:
    """Prompt files a child saves (its progress bar's total; a Huginn ablation is not counted)."""
    per_prompt = [a for a in ("regime", *ANALYSES) if only is None or a in only]
    extra = sum(min(n_prompts, n) for a, n in (("complete", args.complete_prompts),
                                              ("dynamics", args.dynamics_prompts)) if only is None or a in only)
    return n_prompts * (len(per_prompt) + len(sweep_list(args))) + extra


def _watch(args, children: list[Child], env=None) -> None:
    """One progress bar per child, counting its saved prompt files, until every child has exited; a stalled
    child is killed and restarted with --resume (at most MAX_RESTARTS times; then killed for good,
    `Child.gave_up`)."""
    bars = [progress(total=c.total, desc=model_name(c.src), unit="prompt", position=i, quiet=args.quiet)
            for i, c in enumerate(children)]
    try:
        while any(c.proc.poll() is None for c in children):
            now = time.monotonic()
            for bar, c in zip(bars, children):
                n = sum(1 for _ in c.out.glob("*/prompts/*.json")) if c.out.is_dir() else 0
                bar.update(max(0, min(n, c.total) - bar.n))
                if c.proc.poll() is None and c.stalled(now):
                    c.proc.kill()
                    c.proc.wait()
                    if c.restarts >= MAX_RESTARTS:   # given up: the report fails naming it (never waits forever)
                        c.gave_up = True
                        continue
                    c.restarts += 1
                    print(f"loopjax: [{model_name(c.src)}] no progress for {STALL_SECONDS:.0f} s: restarted with "
                          f"--resume ({c.restarts}/{MAX_RESTARTS})", file=sys.stderr)
                    c.start(env, resume=True)   # env None: the child's own
            time.sleep(0.5)
    finally:
        for c in children:
            c.proc.wait()  # on Ctrl-C the children got the signal too and stop at their next safe point
        for bar in bars:
            bar.close()


def add_options(p) -> None:
    add_common(p, report=True, k_default=PAPER["spectrum"]["k"],
               steps_help="if given, the step count of every analysis (overrides the per-analysis defaults below)")
    add_transient(p, probe_seeds=True)
    add_plain(p)
    p.add_argument("--spectrum-steps", type=int, default=None,
                   help=f"spectrum T (default {PAPER['spectrum']['steps']})")
    p.add_argument("--attr-k", type=int, default=REPORT_ATTR_K,
                   help="attribution directions (column 1 gives the k=1 lambda_1 contributions)")
    p.add_argument("--attr-steps", type=int, default=None,
                   help=f"attribution T (default {PAPER['attribution']['steps']})")
    p.add_argument("--loops", type=int, default=PAPER["similarity"]["loops"], help="similarity loops")
    p.add_argument("--traj-steps", type=int, default=None,
                   help=f"trajectory steps (default {PAPER['trajectory']['steps']})")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="segment the spectrum scan with orbax checkpoints every N steps")
    p.add_argument("--checkpoints", nargs="+", default=None, metavar="CKPT",
                   help="also run a lambda_1 sweep over these checkpoints")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="sweep preset")
    p.add_argument("--sweep-steps", type=int, default=PAPER["sweep"]["steps"], help="sweep T")
    p.add_argument("--regime-steps", type=int, default=RegimeSettings.max_steps, metavar="N",
                   help="the regime verdicts' horizon cap (a verdict not converged by then is 'undetermined')")
    p.add_argument("--complete-prompts", type=int, default=ReportSettings.complete_prompts, metavar="N",
                   help="the complete spectrum (all d exponents, causal blocks) of the first N prompts; 0: none")
    p.add_argument("--dynamics-prompts", type=int, default=ReportSettings.dynamics_prompts, metavar="N",
                   help="CLVs, finite-time lambda_1, logit lens and attention similarity of the first N prompts")
    p.add_argument("--analyses", default=None, metavar="LIST",
                   help=f"only these analyses, comma-separated, from {','.join(REPORT_ANALYSES)} (default: all)")
    p.add_argument("--no-ablation", action="store_true",
                   help="skip the input-injection ablation that report runs for Huginn models (`loopjax ablate`)")
    p.add_argument("--jobs", type=int, default=2 if (os.cpu_count() or 1) >= 2 else 1,
                   help="without --model: run the built-in models in this many parallel processes")


COMMAND = Command(
    "report", help="all analyses for one model (or the trained built-ins) with index.md/index.html",
    description="Regimes, spectrum, attribution (+ heatmap), similarity, trajectory, per-token spectra, complete "
                "spectra, CLVs / logit lens / attention (and a sweep if --checkpoints/--preset) "
                "into one folder with index.md and index.html. Without --model: the trained built-in models into "
                "OUT/<model-name>/ (OUT default: results).",
    add_options=add_options, run=run)
