"""The `loopjax` options: an argparse that raises instead of exiting, the option groups the commands share,
and the count checks. Options that are not given are None, so a 0 is never mistaken for "use the default":
every count must be >= 1 (`check_counts`). Each command declares its own options (`loopjax.cli.commands`)."""
from __future__ import annotations

import argparse
import math

from loopjax.cli.budget import check_int_range, check_seed
from loopjax.cli.session import CLIError
from loopjax.engine.validate import check_int

# options that count something: None (not given) or an integer >= 1
COUNT_OPTIONS = ("k", "steps", "max_prompts", "checkpoint_every", "spectrum_steps", "attr_k", "attr_steps", "loops",
                 "traj_steps", "sweep_steps", "jobs", "renorm_every", "probe_seeds", "pad_multiple", "devices")


def whole_number(text: str) -> int:
    """An option's whole number: an integer ('64') or a float string of one ('1e3', '1e11'); the range is
    checked by `check_counts`, which names the flag. '1.5', 'nan', 'x' are refused here."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not math.isfinite(v) or not v.is_integer():
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(v)


def seed_type(text: str) -> int:
    """--seed: an integer in [0, 2**63 - 1] (`budget.check_seed`; what jax.random.key takes)."""
    try:
        return check_seed(whole_number(text))
    except ValueError as e:  # ArgumentTypeError included
        raise argparse.ArgumentTypeError(str(e).removeprefix("seed ")) from None


K_ALL = "all"  # `--k all`: every exponent (spectrum: the complete spectrum)


def k_or_all(text: str):
    """--k N, or `all` where the command takes it."""
    return K_ALL if text.strip().lower() == K_ALL else whole_number(text)


def check_counts(args) -> None:
    """--warmup >= 0 and every given count option >= 1 and <= 2**31 - 1 (what JAX can count; CLIError
    naming the flag)."""
    if getattr(args, "warmup", None) is not None:
        check_int("--warmup", args.warmup, 0, error=CLIError)
        check_int_range("--warmup", args.warmup, 0)
    for name in COUNT_OPTIONS:
        v = getattr(args, name, None)
        if v is not None and v != K_ALL:
            flag = f"--{name.replace('_', '-')}"
            if name == "steps" and "--loops" in getattr(args, "_argv", []):  # similarity's alias
                flag = "--loops"
            check_int(flag, v, 1, error=CLIError)
            check_int_range(flag, v)


class ParseError(CLIError):
    pass


class Parser(argparse.ArgumentParser):
    """argparse that raises (one line, reported like every other error) instead of exiting."""

    def error(self, message):
        raise ParseError(f"{message} (see `{self.prog} --help`)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def add_model(g, *, default: str | None, report: bool = False) -> None:
    g.add_argument("--model", default=default,
                   help="what loopjax.load takes: HF checkpoint dir, hub id ORG/NAME, orbax dir "
                        "from `loopjax convert`, or builtin:ouro-tiny / builtin:huginn-tiny / builtin:parcae-tiny"
                        + (" (default: the trained built-in models)" if report else ""))
    g.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of --model")


def add_common(p: argparse.ArgumentParser, *, model_default: str | None = None, model: bool = True,
               report: bool = False, k_default: int | None = None, steps_help: str = "loop steps T",
               steps_default: int | None = None, k_all: bool = False) -> None:
    """The options every analysis command takes (model, prompts, seed, output folder, resume, ...)."""
    g = p.add_argument_group("common options")
    if model:
        add_model(g, default=model_default, report=report)
    if k_default is not None:
        g.add_argument("--k", type=k_or_all if k_all else whole_number, default=None,
                       help=f"number of Lyapunov exponents (probe directions); default {k_default}"
                            + ("; `all`: all d = L*H exponents (the complete spectrum)" if k_all else ""))
    g.add_argument("--steps", type=whole_number, default=None,
                   help=f"{steps_help}; default {steps_default}" if steps_default else steps_help)
    g.add_argument("--prompts", default=None, metavar="FILE",
                   help="text file, one prompt per line (replaces the 20 built-in prompts)")
    g.add_argument("--token-ids", action="store_true",
                   help="the lines of --prompts are whitespace-separated token ids, not text")
    g.add_argument("--max-prompts", type=whole_number, default=None, metavar="N",
                   help="use only the first N prompts (quick runs)")
    g.add_argument("--seed", type=seed_type, default=0,
                   help="PRNG seed; prompt i uses fold_in(key(seed), i) for probes and Huginn's state")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="results folder (default results/<model-name>; the analysis writes DIR/<analysis>/)")
    g.add_argument("--dtype", default=None, help="cast the weights (float32, bfloat16, float16, float64); "
                                                 "default: as stored")
    g.add_argument("--x64", action="store_true", help="enable jax x64: float64 activations and QR")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in DIR (saved prompts are reused if the settings match)")
    g.add_argument("--overwrite", action="store_true", help="delete an existing DIR/<analysis> first")
    g.add_argument("--allow-long-prompts", action="store_true",
                   help="analyse prompts longer than the positions the model's config allows (a warning each) "
                        "instead of refusing them")
    add_quiet_debug(g)


def add_quiet_debug(g) -> None:
    g.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    g.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def add_engine_steps(g, what: str = "") -> None:
    """--warmup and --renorm-every (the engine's transient and QR interval)."""
    g.add_argument("--warmup", type=whole_number, default=None, metavar="N",
                   help=f"loop steps (with QR) run before recording starts{what}; default 0")
    g.add_argument("--renorm-every", type=whole_number, default=None, metavar="R",
                   help="QR every R steps (tangents grow un-normalised in between); default 1")


def add_transient(p, probe_seeds: bool = False) -> None:
    g = p.add_argument_group("transient, estimator and batching")
    g.add_argument("--pad-multiple", type=whole_number, default=None, metavar="N",
                   help="pad prompts to a multiple of N tokens, so that nearby lengths share one compiled "
                        "program (spectrum, attribution: one padded batch per bucket); default: the longest "
                        "prompt rounded up to 8 (one bucket) when that pads at most 2x the real tokens, else "
                        "8 (loopjax.bucket_multiple); the numbers equal one-by-one runs up to float rounding "
                        "amplified by the dynamics")
    g.add_argument("--no-batch", action="store_true", help="run the prompts one by one (one program per length)")
    add_engine_steps(g)
    if probe_seeds:
        g.add_argument("--devices", type=whole_number, default=None, metavar="N",
                       help="shard the probe axis over the first N local devices (k is padded to a multiple "
                            "of N with extra probe columns and the first k exponents kept)")
        g.add_argument("--probe-seeds", type=whole_number, default=None, metavar="N",
                       help="also rerun each prompt with N other probe keys (same start state) and report the "
                            "spread of the exponents")
