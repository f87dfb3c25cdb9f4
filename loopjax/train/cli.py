"""`loopjax train`: the command-line front-end of loopjax.train (register with add_arguments + run).

    loopjax train --arch huginn --out runs/huginn
    loopjax train --preset injection-ablation --seeds 0,1,2 --steps 400 --out runs/ablation
    loopjax train --preset injection-ablation --variants linear,inject-once --out runs/pair
    loopjax train --arch ouro --out runs/ouro --resume                # continue an interrupted run
"""
from __future__ import annotations

import argparse
import json
import sys

from loopjax.train import forward
from loopjax.train.injection_ablation import DEFAULT_VARIANTS, EvalSettings, check_variants
from loopjax.train.trainer import ADAPTER_INITS, OURO_LOSSES, TrainConfig

CHOICES = {"ouro_loss": OURO_LOSSES, "adapter_init": ADAPTER_INITS}

_DEFAULTS = TrainConfig()

# (flag, TrainConfig field, type, help)
FIELDS = (
    ("--hidden", "hidden", int, "hidden size"),
    ("--layers", "layers", int, "Ouro: looped decoder layers; Huginn: recurrent-block layers"),
    ("--heads", "heads", int, "attention heads"),
    ("--kv-heads", "kv_heads", int, "Ouro: KV heads (default: --heads)"),
    ("--intermediate", "intermediate", int, "MLP intermediate size"),
    ("--loops", "loops", int, "Ouro: loops (total_ut_steps, default 4); Huginn: mean recurrence (default 8)"),
    ("--prelude-layers", "prelude_layers", int, "Huginn prelude layers"),
    ("--coda-layers", "coda_layers", int, "Huginn coda layers"),
    ("--backprop-depth", "backprop_depth", int, "Huginn: last loops that get gradients (truncated backprop)"),
    ("--adapter-init", "adapter_init", str, "Huginn adapter init: reference (default) or identity (z half = I)"),
    ("--ouro-loss", "ouro_loss", str, "Ouro training loss: every-loop (mean CE over the loops' logits) or last"),
    ("--corpus", "corpus", str, "UTF-8 text file (paragraphs = documents); default: the built-in pydoc corpus"),
    ("--heldout-frac", "heldout_frac", float, "fraction of the text held out (split at a document boundary)"),
    ("--vocab-size", "vocab_size", int, "byte-level BPE vocabulary size"),
    ("--seq-len", "seq_len", int, "tokens per training sequence"),
    ("--batch", "batch", int, "sequences per step"),
    ("--steps", "steps", int, "optimiser steps"),
    ("--lr", "lr", float, "peak learning rate (AdamW, warm-up + cosine)"),
    ("--warmup", "warmup", int, "linear warm-up steps"),
    ("--weight-decay", "weight_decay", float, "AdamW decoupled weight decay (matrices only)"),
    ("--clip", "clip", float, "global gradient-norm clip"),
    ("--seed", "seed", int, "seed of init, batches, loop counts and λ1 keys"),
    ("--lambda1-every", "lambda1_every", int, "measure λ1 and held-out loss (and checkpoint) every N steps"),
    ("--lambda1-prompts", "lambda1_prompts", int, "first N of the 20 built-in prompts for λ1"),
    ("--lambda1-steps", "lambda1_steps", int, "Benettin steps per λ1 measurement"),
    ("--lambda1-penalty", "lambda1_penalty", float, "W of the regulariser W*relu(λ1 - C); 0 = off"),
    ("--lambda1-target", "lambda1_target", float, "C of the regulariser"),
    ("--lambda1-horizon", "lambda1_horizon", int, "loop steps of the regulariser's differentiable λ1 probe"),
)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--arch", choices=forward.ARCHS, default=_DEFAULTS.arch,
                        help="architecture (default %(default)s); ignored with --preset injection-ablation")
    parser.add_argument("--out", required=True, help="output folder (loopjax.load(OUT) reads the final model)")
    parser.add_argument("--preset", choices=("injection-ablation",), default=None,
                        help="injection-ablation: the Huginn backbone with each --variants injection, trained "
                             "with the same recipe for every --seeds; writes ablation.json and figures")
    parser.add_argument("--ablation", action="store_true", help="the same as --preset injection-ablation")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="injection-ablation: comma-separated variants (default %(default)s)")
    parser.add_argument("--seeds", default="0,1,2",
                        help="injection-ablation: comma-separated seeds (default %(default)s)")
    parser.add_argument("--regime-steps", type=int, default=EvalSettings.regime_steps, metavar="N",
                        help="injection-ablation: horizon cap of the final regime verdicts (default %(default)s)")
    for flag, field, typ, text in FIELDS:
        default = getattr(_DEFAULTS, field)
        extra = {"choices": CHOICES[field]} if field in CHOICES else {}
        parser.add_argument(flag, type=typ, default=default, help=f"{text} (default {default})", **extra)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    group.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def config_from_args(args, arch: str | None = None) -> TrainConfig:
    return TrainConfig(**{field: getattr(args, field) for _, field, _, _ in FIELDS}, arch=arch or args.arch)


def _printer(quiet: bool, every: int, prefix: str = ""):
    if quiet:
        return None

    def show(step, rec):
        if "lambda1" in rec or step % every == 0:
            parts = [f"{prefix}step {step}", f"loss {rec.get('loss', float('nan')):.4f}"]
            if "heldout_loss" in rec:
                parts.append(f"held-out {rec['heldout_loss']:.4f}")
            if "lambda1" in rec:
                parts.append(f"λ1 {rec['lambda1']['mean']:+.4f} ± {rec['lambda1']['sem']:.4f}")
            print("  ".join(parts), file=sys.stderr, flush=True)

    return show


def parse_seeds(text: str) -> list[int]:
    """--seeds '0,1,2' -> [0, 1, 2]; ValueError naming the flag."""
    try:
        return [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from None


def interrupted_message(result: dict) -> str:
    return (f"loopjax: interrupted at step {result['step']}; the training state is saved in {result['out_dir']}, "
            f"rerun with --resume to continue")


def parse_variants(text: str) -> tuple[str, ...]:
    """--variants 'linear,add' -> ('linear', 'add'); ValueError naming the flag and the choices."""
    return check_variants(v.strip() for v in str(text).split(",") if v.strip())


def run(args, stop_requested=None, draw=None) -> int:
    """The command; `stop_requested` (the CLI's Ctrl-C flag): stop after the current step, save, exit 130.
    `draw(result, out_dir)`: the ablation's figures (the CLI passes loopjax.cli.plot_ablation.plot_all)."""
    from loopjax.train.injection_ablation import ablation
    from loopjax.train.trainer import train

    is_ablation = args.ablation or args.preset == "injection-ablation"
    cfg = config_from_args(args, arch="huginn" if is_ablation else None)
    every = max(1, min(100, cfg.steps // 20 or 1))
    if is_ablation:
        seeds = parse_seeds(args.seeds)
        printers = {}

        def show(arch, seed, step, rec):
            if (arch, seed) not in printers:
                printers[arch, seed] = _printer(False, every, f"[{arch} seed {seed}] ")
            printers[arch, seed](step, rec)

        cb = None if args.quiet else show
        result = ablation(args.out, variants=parse_variants(args.variants), seeds=seeds,
                          base=cfg, settings=EvalSettings(args.regime_steps),
                          resume=args.resume, overwrite=args.overwrite, progress=cb, stop_requested=stop_requested,
                          draw=draw)
    else:
        result = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                       progress=_printer(args.quiet, every), stop_requested=stop_requested)
    if result.get("status") == "interrupted":
        print(interrupted_message(result), file=sys.stderr)
        return 130
    print(result["answer"] if "answer" in result else json.dumps(result, indent=2))
    return 0


def main(argv=None) -> int:
    """Stand-alone entry (python -m loopjax.train.cli ...) until `loopjax train` is registered."""
    parser = add_arguments(argparse.ArgumentParser(prog="loopjax train", description=__doc__.split("\n\n")[0]))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
