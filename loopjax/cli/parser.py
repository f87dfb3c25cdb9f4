"""The `loopjax` argument parser. Options that are not given are None, so a 0 is never mistaken for
"use the default": every count must be >= 1 (`check_counts`)."""
from __future__ import annotations

import argparse
import os

from loopjax.cli import commands
from loopjax.cli.session import CLIError

# options that count something: None (not given) or an integer >= 1
COUNT_OPTIONS = ("k", "steps", "max_prompts", "checkpoint_every", "spectrum_steps", "attr_k", "attr_steps", "loops",
                 "traj_steps", "sweep_steps", "jobs", "renorm_every", "probe_seeds", "pad_multiple", "devices")
SEED_MAX = 2**63 - 1


def seed_type(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= v <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**63 - 1], got {text}")
    return v


def check_counts(args) -> None:
    if getattr(args, "warmup", None) is not None and args.warmup < 0:
        raise CLIError(f"--warmup must be >= 0, got {args.warmup}")
    for name in COUNT_OPTIONS:
        v = getattr(args, name, None)
        if v is not None and v < 1:
            flag = f"--{name.replace('_', '-')}"
            if name == "steps" and "--loops" in getattr(args, "_argv", []):  # similarity's alias
                flag = "--loops"
            raise CLIError(f"{flag} must be >= 1, got {v}")


class ParseError(CLIError):
    pass


class Parser(argparse.ArgumentParser):
    """argparse that raises (one line, reported like every other error) instead of exiting."""

    def error(self, message):
        raise ParseError(f"{message} (see `{self.prog} --help`)")


class _Fmt(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _add_common(p: argparse.ArgumentParser, *, model: bool = True, report: bool = False,
                k_default: int | None = None,
                steps_help: str = "loop steps T", steps_default: int | None = None) -> None:
    g = p.add_argument_group("common options")
    if model:
        g.add_argument("--model", default=None if report else commands.DEFAULT_MODEL,
                       help="what loopjax.load takes: HF checkpoint dir, hub id ORG/NAME, orbax dir "
                            "from `loopjax convert`, or builtin:ouro-tiny / builtin:huginn-tiny / builtin:parcae-tiny"
                            + (" (default: both built-in models)" if report else ""))
        g.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of --model")
    if k_default is not None:
        g.add_argument("--k", type=int, default=None,
                       help=f"number of Lyapunov exponents (probe directions); default {k_default}")
    g.add_argument("--steps", type=int, default=None,
                   help=f"{steps_help}; default {steps_default}" if steps_default else steps_help)
    g.add_argument("--prompts", default=None, metavar="FILE",
                   help="text file, one prompt per line (replaces the 20 built-in prompts)")
    g.add_argument("--token-ids", action="store_true",
                   help="the lines of --prompts are whitespace-separated token ids, not text")
    g.add_argument("--max-prompts", type=int, default=None, metavar="N",
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
    g.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    g.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _add_transient(p, probe_seeds: bool = False) -> None:
    g = p.add_argument_group("transient, estimator and batching")
    g.add_argument("--pad-multiple", type=int, default=None, metavar="N",
                   help="run prompts as padded batches, one compiled program per length bucket of N tokens "
                        "(default: 8 on a GPU/TPU, prompt by prompt on CPU where it is not faster); the "
                        "numbers equal one-by-one runs up to float rounding amplified by the dynamics")
    g.add_argument("--no-batch", action="store_true", help="run the prompts one by one (one program per length)")
    g.add_argument("--warmup", type=int, default=None, metavar="N",
                   help="loop steps (with QR) run before recording starts; default 0")
    g.add_argument("--renorm-every", type=int, default=None, metavar="R",
                   help="QR every R steps (tangents grow un-normalised in between); default 1")
    if probe_seeds:
        g.add_argument("--devices", type=int, default=None, metavar="N",
                       help="shard the probe axis over the first N local devices (k is padded to a multiple "
                            "of N with extra probe columns and the first k exponents kept)")
        g.add_argument("--probe-seeds", type=int, default=None, metavar="N",
                       help="also rerun each prompt with N other probe keys (same start state) and report the "
                            "spread of the exponents")


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="loopjax", formatter_class=_Fmt,
        description="Lyapunov spectral analysis of looped transformers (Ouro, Huginn) in JAX.",
        epilog="Run `loopjax COMMAND --help` for each command's options. `loopjax report` with no --model "
               "analyses both built-in models into results/<model-name>/.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)

    p = sub.add_parser("convert", formatter_class=_Fmt,
                       help="convert an HF checkpoint (dir or hub id) to a loopjax orbax checkpoint",
                       description="Convert an HF checkpoint (local dir or hub id) into an orbax "
                                   "checkpoint that `loopjax.load` reads.")
    p.add_argument("src", metavar="SRC", help="HF checkpoint dir or hub id ORG/NAME")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--revision", default=None, help="hub revision of SRC")
    p.add_argument("--dtype", default=None, help="store the weights in this dtype (default: as stored)")
    p.add_argument("--quiet", action="store_true", help="no messages")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.set_defaults(func=commands.cmd_convert)

    p = sub.add_parser("spectrum", formatter_class=_Fmt,
                       help="top-k Lyapunov exponents of the loop map, per prompt",
                       description="Top-k Lyapunov exponents (Benettin/QR) of the loop map z -> f(z) "
                                   "for each prompt (the state is the prompt's whole (L, H) residual "
                                   "stream). Writes OUT/spectrum/results.json and figures.")
    _add_common(p, k_default=commands.PAPER["spectrum"]["k"], steps_default=commands.PAPER["spectrum"]["steps"])
    _add_transient(p, probe_seeds=True)
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="run the scan in segments of N steps and save (state, probes, log growth, step) "
                        "with orbax after each; --resume continues from the latest")
    p.set_defaults(func=commands.cmd_spectrum)

    p = sub.add_parser("attribute", formatter_class=_Fmt,
                       help="per-sublayer Lyapunov exponents (QR after every sublayer)",
                       description="Per-sublayer exponents: QR after each named sublayer, so the "
                                   "sublayer exponents sum to the loop's. k=1 gives each sublayer's "
                                   "contribution to lambda_1; k>1 adds a sublayer x direction heatmap.")
    _add_common(p, k_default=commands.PAPER["attribution"]["k"], steps_default=commands.PAPER["attribution"]["steps"])
    _add_transient(p, probe_seeds=False)
    p.set_defaults(func=commands.cmd_attribute)

    p = sub.add_parser("tokens", formatter_class=_Fmt,
                       help="per-token spectra: the exponents of each position's own block of the Jacobian",
                       description="The loop map is causal, so its Jacobian is block lower-triangular over "
                                   "positions and the prompt's spectrum is the union of the per-position "
                                   "blocks' spectra (loopjax.positions.token_spectrum). Writes "
                                   "OUT/tokens/results.json and a figure of lambda_1 per token of prompt 0.")
    _add_common(p, k_default=commands.PAPER["tokens"]["k"], steps_default=commands.PAPER["tokens"]["steps"])
    p.add_argument("--warmup", type=int, default=None, metavar="N", help="loop steps before recording; default 0")
    p.add_argument("--renorm-every", type=int, default=None, metavar="R", help="QR every R steps; default 1")
    p.set_defaults(func=commands.cmd_tokens)

    p = sub.add_parser("sweep", formatter_class=_Fmt,
                       help="lambda_1 (one probe) across a list of checkpoints",
                       description="Prompts: the paper's five quoted prompts (two declarative, one narrative, two "
                                   "instructional; Fig. 3) unless --prompts is given. "
                                   "The x axis of the figure is the training step read from the checkpoint names. "
                                   "lambda_1 (single probe) per prompt for each checkpoint; the same "
                                   "per-prompt keys for every checkpoint.\nPresets:\n  huginn-pretraining: "
                                   + ", ".join(commands.PRESETS["huginn-pretraining"]))
    p.add_argument("--checkpoints", nargs="+", default=None, metavar="CKPT",
                   help="checkpoint dirs or hub ids, optionally ORG/NAME@REVISION")
    p.add_argument("--preset", choices=sorted(commands.PRESETS), default=None,
                   help="a named checkpoint list (prepended to --checkpoints)")
    _add_common(p, model=False, steps_default=commands.PAPER["sweep"]["steps"])
    _add_transient(p, probe_seeds=False)
    p.set_defaults(func=commands.cmd_sweep)

    p = sub.add_parser("similarity", formatter_class=_Fmt,
                       help="cosine similarity of the states after every sublayer across loops",
                       description="Residual-stream cosine similarity between the states after every "
                                   "sublayer (Ouro: n_layers + final norm per loop; Huginn: adapter + "
                                   "n_core blocks per loop) over n loops, averaged over prompts.")
    _add_common(p, steps_help="number of loops n (alias --loops)",
                steps_default=commands.PAPER["similarity"]["loops"])
    # --loops as an alias of --steps
    p.add_argument("--loops", type=int, dest="steps", help=argparse.SUPPRESS)
    p.set_defaults(func=commands.cmd_similarity)

    p = sub.add_parser("trajectory", formatter_class=_Fmt,
                       help="convergence: ||z_(t+1) - z_t|| and ||z_t|| over loop steps",
                       description="||z_{t+1} - z_t|| and ||z_t|| over loop steps, per prompt.")
    _add_common(p, steps_default=commands.PAPER["trajectory"]["steps"])
    p.set_defaults(func=commands.cmd_trajectory)

    p = sub.add_parser("report", formatter_class=_Fmt,
                       help="all analyses for one model (or both built-ins) with index.md/index.html",
                       description="Spectrum, attribution (+ heatmap), similarity, trajectory (and a "
                                   "sweep if --checkpoints/--preset) into one folder with index.md and "
                                   "index.html. Without --model: both built-in models into "
                                   "OUT/<model-name>/ (OUT default: results).")
    _add_common(p, report=True, k_default=commands.PAPER["spectrum"]["k"],
                steps_help="if given, the step count of every analysis (overrides the per-analysis "
                           "defaults below)")
    _add_transient(p, probe_seeds=True)
    p.add_argument("--spectrum-steps", type=int, default=None,
                   help=f"spectrum T (default {commands.PAPER['spectrum']['steps']})")
    p.add_argument("--attr-k", type=int, default=commands.REPORT_ATTR_K,
                   help="attribution directions (column 1 gives the k=1 lambda_1 contributions)")
    p.add_argument("--attr-steps", type=int, default=None,
                   help=f"attribution T (default {commands.PAPER['attribution']['steps']})")
    p.add_argument("--loops", type=int, default=commands.PAPER["similarity"]["loops"], help="similarity loops")
    p.add_argument("--traj-steps", type=int, default=None,
                   help=f"trajectory steps (default {commands.PAPER['trajectory']['steps']})")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="segment the spectrum scan with orbax checkpoints every N steps")
    p.add_argument("--checkpoints", nargs="+", default=None, metavar="CKPT",
                   help="also run a lambda_1 sweep over these checkpoints")
    p.add_argument("--preset", choices=sorted(commands.PRESETS), default=None, help="sweep preset")
    p.add_argument("--sweep-steps", type=int, default=commands.PAPER["sweep"]["steps"], help="sweep T")
    p.add_argument("--no-ablation", action="store_true",
                   help="skip the input-injection ablation that report runs for Huginn models (`loopjax ablate`)")
    p.add_argument("--jobs", type=int, default=2 if (os.cpu_count() or 1) >= 2 else 1,
                   help="without --model: run the built-in models in this many parallel processes")
    p.set_defaults(func=commands.cmd_report)

    from loopjax.cli import ablate  # `loopjax ablate`: the input-injection ablation (loopjax/cli/ablate.py)
    ablate.add_parser(sub)

    from loopjax.train import cli as train_cli  # `loopjax train`: loop language models with optax
    p = sub.add_parser("train", formatter_class=_Fmt, help="train a small loop language model (optax), with "
                       "lambda_1 through training; --preset injection-ablation trains the matched pair",
                       description=train_cli.__doc__)
    train_cli.add_arguments(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.set_defaults(func=lambda args, ctx: train_cli.run(args))
    return ap


