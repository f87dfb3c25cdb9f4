"""What every command shares: its declaration (`Command`), the typed common options (`Common`), the one
builder of the recorded settings (`recorded_settings`), model and prompt loading, and `run_analysis`, the
one runner of a per-prompt analysis. No number is computed here: front-ends and `loopjax.summarize` compute
them all."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp

import loopjax
from loopjax.cli.analyses import TOKENS, Analysis
from loopjax.cli.budget import check_budget, check_prompt_lengths, max_positions
from loopjax.cli.fingerprint import run_fingerprint
from loopjax.cli.runner import Hooks, Interrupts, Runner, header, progress, prompt_entries
from loopjax.cli.runstore import RunStore
from loopjax.cli.session import CLIError, Loaded, software_versions
from loopjax.io.loading import hf_config_of
from loopjax.io.prompts import BUILTIN_PROMPTS, Prompt, get_prompts, prompt_set_digest

DEFAULT_MODEL = "builtin:ouro-tiny"
# `loopjax report` without --model: the trained built-ins that learned their task, and the analyses each gets
# (None: all). builtin:huginn-tiny-inject-once is the no-injection control that still reads its prompt (its
# loop never sees e; z_0 = e): its regime verdicts stand next to huginn-tiny's. builtin:huginn-tiny-noinject
# is not among them: it never reads its prompt (docs/ablation.md).
BUILTIN_REPORT = {"builtin:ouro-tiny": None, "builtin:huginn-tiny": None, "builtin:parcae-tiny": None,
                  "builtin:huginn-tiny-inject-once": ("regime",)}
BUILTIN_MODELS = tuple(BUILTIN_REPORT)
# how the top index labels a built-in beside its name
BUILTIN_ROLES = {"builtin:huginn-tiny-inject-once": "control: no injection in the loop, z_0 = e (docs/ablation.md)"}
# The paper's settings, used when an option is not given.
PAPER = {"spectrum": {"k": 50, "steps": 64}, "attribution": {"k": 1, "steps": 32}, "sweep": {"steps": 32},
         "similarity": {"loops": 8}, "tokens": {"k": 1, "steps": 64}, "trajectory": {"steps": 64}}
REPORT_ATTR_K = 50  # report: attribution heatmap over 50 directions as the paper's Fig. 5a (column 1 = λ1)
ORBIT_STEPS = 64  # loop steps orbit_type looks at (at least; the spectrum's T if longer)
HUGINN_PRETRAINING_STEPS = (6144, 10752, 11904, 17920, 23808, 29824, 35840, 41728)
PRESETS = {"huginn-pretraining": [f"tomg-group-umd/step-{s:08d}-recurrence_full_512_0"
                                  for s in HUGINN_PRETRAINING_STEPS] + ["tomg-group-umd/huginn-0125"]}
KEY_SCHEME = "loopjax.prompt_key(seed, prompt_index), split by loopjax.split_key into (state key, probe key)"


@dataclasses.dataclass
class Context:
    """What a command needs besides its arguments: test/embedding hooks and the Ctrl-C state."""
    hooks: Hooks = dataclasses.field(default_factory=Hooks)
    interrupts: Interrupts = dataclasses.field(default_factory=Interrupts)


@dataclasses.dataclass(frozen=True)
class Command:
    """One `loopjax COMMAND`: its help, its options (added to its subparser) and what it runs."""
    name: str
    help: str
    description: str
    add_options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Context], int]


def or_default(value, default):
    """An option's value, or the default when it was not given (None; never when it is 0)."""
    return default if value is None else value


@dataclasses.dataclass(frozen=True)
class Common:
    """The options every analysis command shares, typed (`Common.from_args`)."""
    model: str | None = None
    revision: str | None = None
    dtype: str | None = None
    x64: bool = False
    seed: int = 0
    prompts: str | None = None
    token_ids: bool = False
    max_prompts: int | None = None
    out: str | None = None
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False
    allow_long_prompts: bool = False

    @classmethod
    def from_args(cls, args) -> "Common":
        return cls(**{f.name: getattr(args, f.name, f.default) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class Transient:
    """--warmup / --renorm-every: the engine options an analysis records (the base of the commands' typed
    settings that run the engine)."""
    warmup: int = 0
    renorm_every: int = 1

    @classmethod
    def from_args(cls, args) -> "Transient":
        return cls(warmup=or_default(getattr(args, "warmup", None), 0),
                   renorm_every=or_default(getattr(args, "renorm_every", None), 1))


def say(quiet, msg: str) -> None:
    """Print a message unless quiet (`quiet`: a bool, or anything with a .quiet)."""
    if not (quiet if isinstance(quiet, bool) else getattr(quiet, "quiet", False)):
        print(msg, flush=True)


def recorded_settings(common: Common, analysis: str, prompts: list[Prompt], *, loaded: Loaded | None = None,
                      prompt_set: str = "builtin-20", digest: bool = False, key_note: str = "") -> dict:
    """The provenance every results.json records under "settings" (and --resume compares): what ran
    (analysis, model or checkpoints), on which prompts, with which seed, dtype, x64 and XLA flags. The
    command adds its own typed settings (`dataclasses.asdict`)."""
    s: dict[str, Any] = {"analysis": analysis}
    if loaded is not None:
        s.update(model=loaded.source, revision=loaded.revision)
    s.update(dtype=common.dtype, x64=bool(common.x64), seed=int(common.seed), key_scheme=KEY_SCHEME + key_note)
    if loaded is not None:
        s["tokenizer"] = loaded.tokenizer.name if not common.token_ids else "token ids given (--token-ids)"
    s.update(prompts_file=str(common.prompts) if common.prompts else None,
             prompt_set="custom" if common.prompts else prompt_set, n_prompts=len(prompts))
    if digest:
        s["prompt_digest"] = prompt_set_digest(prompts)
    s["xla_flags"] = os.environ.get("XLA_FLAGS") or None
    return s


def load_model(source: str, revision: str | None, dtype: str | None) -> Loaded:
    try:
        return Loaded(source, revision, dtype)
    except CLIError:
        raise
    except (ValueError, OSError, NotImplementedError, TypeError) as e:
        raise CLIError(f"cannot load model {source!r}{'@' + revision if revision else ''}: {e}") from None


def read_prompts(common: Common, default=BUILTIN_PROMPTS) -> list[Prompt]:
    try:
        return get_prompts(common.prompts, common.max_prompts, default)
    except (OSError, ValueError) as e:
        raise CLIError(str(e)) from None


def check_k(k: int, tokens: list[list[int]], hidden: int, prompts: list[Prompt], flag: str = "--k") -> None:
    for i, ids in enumerate(tokens):
        d = len(ids) * hidden
        if k > d:
            raise CLIError(f"{flag} {k} exceeds the state dimension d = L*H = {len(ids)}*{hidden} = {d} of "
                           f"prompt {i} ({prompts[i].text[:40]!r}); use {flag} <= {d}")


@dataclasses.dataclass(frozen=True)
class Setup:
    """A loaded model, its prompts, their token ids and the output folder."""
    loaded: Loaded
    prompts: list
    tokens: list
    out: Path


def setup(common: Common, source: str | None = None, out: Path | None = None) -> Setup:
    prompts = read_prompts(common)
    loaded = load_model(source or common.model, common.revision, common.dtype)
    tokens = loaded.tokenize(prompts, common.token_ids)
    check_lengths(loaded, prompts, tokens, common.allow_long_prompts)
    out = out or (Path(common.out) if common.out else Path("results") / loaded.name)
    return Setup(loaded, prompts, tokens, out)


def check_lengths(loaded: Loaded, prompts: list[Prompt], tokens: list[list[int]], allow: bool) -> None:
    """Prompts longer than the positions the model's config allows: refused (CLI: exit 2, before any
    folder is made), or with --allow-long-prompts one warning each on stderr."""
    limit = max_positions(hf_config_of(loaded.source, loaded.revision, loaded.model))
    for line in check_prompt_lengths(tokens, limit, allow=allow, texts=[p.text for p in prompts]):
        print(line, file=sys.stderr)


def check_analysis_budget(analysis: Analysis, options, s: Setup) -> None:
    """The memory `analysis` needs with these options on these prompts against the memory available
    (`budget.check_budget`): a run that cannot fit is refused with the estimate before any compute."""
    steps = next(getattr(options, name) for name in ("steps", "loops", "max_steps", "window")  # similarity: loops,
                 if getattr(options, name, None))                                        # regime: its cap, CLVs
    k = getattr(options, "k", None) or getattr(options, "clv_k", None) or 1
    if analysis.name == "complete":  # every exponent: k = d of the longest prompt
        k = max(len(ids) for ids in s.tokens) * s.loaded.model.config.hidden_size
    check_budget(analysis.name, s.loaded.model, s.tokens, steps=steps, k=k,
                 pad_multiple=getattr(options, "pad_multiple", None),
                 checkpoint_every=getattr(options, "checkpoint_every", None))


AUTO_PAD = "auto"   # settings' pad_multiple until the prompts are known: see `resolve_pad`


def pad_multiple(args, *, checkpoint_every=None, devices=None) -> int | str | None:
    """The padded-batch bucket size, or None (prompt by prompt): --pad-multiple N if given, else AUTO_PAD,
    which `resolve_pad` turns into `loopjax.bucket_multiple` of the prompt lengths (on CPU too: compiling one
    program per prompt length, not the arithmetic, is most of a CPU run on small models); always None with
    --no-batch, --checkpoint-every (segments go prompt by prompt) or --devices."""
    if getattr(args, "no_batch", False) or checkpoint_every or devices:
        return None
    if getattr(args, "pad_multiple", None) is not None:
        return args.pad_multiple
    return AUTO_PAD


def resolve_pad(options, tokens: list[list[int]]):
    """`options` (a settings dataclass) with pad_multiple AUTO_PAD replaced by `loopjax.bucket_multiple` of
    the prompts' lengths (one bucket for prompts of similar lengths), so the recorded settings hold the
    number every program ran with."""
    if getattr(options, "pad_multiple", None) != AUTO_PAD:
        return options
    return dataclasses.replace(options, pad_multiple=loopjax.bucket_multiple([len(t) for t in tokens]))


def devices(args) -> int | None:
    """--devices N: shard the probe axis over the first N local devices (checked here, before any work)."""
    n = getattr(args, "devices", None)
    if n is None:
        return None
    if n > len(jax.devices()):
        raise CLIError(f"--devices {n}: only {len(jax.devices())} device(s) here ({jax.default_backend()}); on "
                       f"CPU, XLA_FLAGS=--xla_force_host_platform_device_count={n} makes {n} host devices")
    if getattr(args, "checkpoint_every", None):
        raise CLIError("--devices and --checkpoint-every do not combine (segments run on one device)")
    return n


class Unit:
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


def prompt_units(prompts: list[Prompt], tokens: list[list[int]], key=lambda i: f"{i:03d}", **extra) -> list:
    """(unit key, inputs) per prompt: the inputs a saved unit is checked against on --resume."""
    return [(key(i), {"index": i, "text": p.text, "register": p.register, "token_ids": ids, **extra})
            for i, (p, ids) in enumerate(zip(prompts, tokens))]


def open_run(common: Common, ctx: Context, folder: Path, analysis: str, settings: dict,
             fingerprint: dict | None = None) -> Runner:
    """The Runner of one results folder; `fingerprint` (`loopjax.cli.fingerprint.run_fingerprint`) is
    recorded and compared on --resume. Nothing is written until `Runner.begin`."""
    store = RunStore(folder, analysis, settings, resume=common.resume, overwrite=common.overwrite,
                     fingerprint=fingerprint)
    return Runner(store, quiet=common.quiet, hooks=ctx.hooks, interrupts=ctx.interrupts)


def loaded_fingerprint(loaded: Loaded, units) -> dict:
    """The fingerprint of a run on one loaded model: its weights, its tokenizer and these units."""
    return run_fingerprint(loaded.source_dir, loaded.tokenizer, units, loaded.source)


def run_analysis(common: Common, ctx: Context, analysis: Analysis, s: Setup, options) -> dict:
    """One per-prompt analysis into out/<analysis>/ with its typed `options` (recorded in the settings):
    prompt i runs with key loopjax.prompt_key(seed, i). Every check (memory budget included) runs before
    the folder is made; an error after that removes it or leaves it for --resume (`Runner.__exit__`)."""
    options = resolve_pad(options, s.tokens)
    settings = {**recorded_settings(common, analysis.name, s.prompts, loaded=s.loaded), **dataclasses.asdict(options)}
    units = prompt_units(s.prompts, s.tokens)
    check_analysis_budget(analysis, options, s)
    runner = open_run(common, ctx, s.out / analysis.name, analysis.name, settings, loaded_fingerprint(s.loaded, units))
    with runner:
        runner.begin([key for key, _ in units])
        return analysis_results(common, analysis, s, options, runner, units)


def analysis_results(common: Common, analysis: Analysis, s: Setup, options, runner: Runner, units) -> dict:
    """The prompts of `units` computed (or reused) into the begun `runner`, summarized, drawn, finished."""
    batched = batched_core(analysis, options, common.seed, units, s.loaded.model)
    pieces = {u: s.loaded.pieces(inp["token_ids"]) for u, inp in units} if analysis is TOKENS else {}

    def compute(unit: str, inputs: dict) -> dict:
        key = loopjax.prompt_key(common.seed, inputs["index"])
        ids = jnp.asarray(inputs["token_ids"], jnp.int32)
        core = batched(unit) if batched else None
        out = analysis.compute(s.loaded.model, ids, key, options, Unit(runner, unit, inputs["index"]), core)
        record = analysis.to_record(out)
        return {**record, "pieces": pieces[unit]} if unit in pieces else record

    records = runner.units(units, compute, desc=f"{s.loaded.name} {analysis.name}")
    results = [analysis.from_record(rec["result"]) for rec in records]
    summary = loopjax.summarize(results, kind=analysis.kind,
                                **analysis.summary_extras([rec["result"] for rec in records]))
    res = header(analysis.name, s.loaded.info, runner.store, software_versions())
    res["summary"] = summary.to_json()
    res["prompts"] = prompt_entries(records)
    res["figures"] = [p.name for p in analysis.figures(runner.store.root, results, summary, s.loaded.name)]
    return runner.finish(res)


def run_command(args, ctx: Context, analysis: Analysis, make_settings: Callable, line: Callable[[dict], str],
                check: Callable[[Any, Setup], None] | None = None) -> int:
    """A per-prompt command: typed settings from the options, `check(settings, setup)` before any work, the
    run, and one line `<analysis>: line(summary) -> results.json`."""
    common = Common.from_args(args)
    s = setup(common)
    settings = make_settings(args)
    if check is not None:
        check(settings, s)
    summary = run_analysis(common, ctx, analysis, s, settings)["summary"]
    say(common.quiet, f"{analysis.name}: {line(summary)} -> {s.out / analysis.name / 'results.json'}")
    return 0


def check_k_fits(settings, s: Setup) -> None:
    """--k against every prompt's state dimension L*H."""
    check_k(settings.k, s.tokens, s.loaded.model.config.hidden_size, s.prompts)


def batched_core(analysis: Analysis, options, seed: int, units, model):
    """With a padded-batch size (`options.pad_multiple`), the core front-end of a unit is computed together
    with every other unit of the same padded length, as one vmapped program (`loopjax.spectrum` on a list of
    prompts); returns unit -> core result, or None when the analysis or the options do not batch. The batch
    is always the whole bucket (saved units included), so a resumed run computes exactly the same programs
    and numbers as an uninterrupted one."""
    pad = getattr(options, "pad_multiple", None)
    if analysis.batch is None or not pad or getattr(options, "checkpoint_every", None):
        return None
    cache: dict = {}
    bucket = {u: loopjax.padded_length(len(inp["token_ids"]), pad) for u, inp in units}

    def core(unit: str):
        if unit not in cache:
            group = [(u, inp) for u, inp in units if bucket[u] == bucket[unit]]
            results = analysis.batch(model, [jnp.asarray(inp["token_ids"], jnp.int32) for _, inp in group],
                                     [loopjax.prompt_key(seed, inp["index"]) for _, inp in group], options)
            cache.update({u: r for (u, _), r in zip(group, results)})
        return cache.pop(unit)

    return core
