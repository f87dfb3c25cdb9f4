"""`loopjax spectrum`: the top-k Lyapunov exponents of the loop map, per prompt."""
from __future__ import annotations

import dataclasses

from loopjax.cli.analyses import COMPLETE, SPECTRUM
from loopjax.cli.commands.base import (DEFAULT_MODEL, ORBIT_STEPS, PAPER, Command, Transient, check_k_fits, devices,
                                       or_default, pad_multiple, run_command)
from loopjax.cli.parser import K_ALL, add_common, add_transient


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpectrumSettings(Transient):
    """What a spectrum run records (results.json "settings") and computes with."""
    k: int
    steps: int
    checkpoint_every: int | None = None
    probe_seeds: int | None = None
    orbit_steps: int = ORBIT_STEPS
    perturbation: bool = False
    pad_multiple: int | str | None = None
    devices: int | None = None

    @classmethod
    def from_args(cls, args, *, k=None, steps=None, perturbation: bool = False) -> "SpectrumSettings":
        k = or_default(k if k is not None else args.k, PAPER["spectrum"]["k"])
        steps = or_default(steps if steps is not None else args.steps, PAPER["spectrum"]["steps"])
        n_devices = devices(args)
        return cls(k=k, steps=steps, **dataclasses.asdict(Transient.from_args(args)),
                   checkpoint_every=args.checkpoint_every, probe_seeds=args.probe_seeds,
                   orbit_steps=max(ORBIT_STEPS, steps), perturbation=perturbation,
                   pad_multiple=pad_multiple(args, checkpoint_every=args.checkpoint_every, devices=n_devices),
                   devices=n_devices)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompleteSettings:
    """`--k all`: all d exponents (`loopjax.complete_spectrum`) with the causal-blocks or the dense method."""
    steps: int
    warmup: int = 0
    method: str = "blocks"

    @classmethod
    def from_args(cls, args, *, steps=None, warmup=None) -> "CompleteSettings":
        return cls(steps=or_default(steps if steps is not None else args.steps, PAPER["spectrum"]["steps"]),
                   warmup=or_default(warmup if warmup is not None else getattr(args, "warmup", None), 0),
                   method=getattr(args, "method", None) or "blocks")


def add_options(p) -> None:
    add_common(p, model_default=DEFAULT_MODEL, k_default=PAPER["spectrum"]["k"],
               steps_default=PAPER["spectrum"]["steps"], k_all=True)
    p.add_argument("--method", choices=("blocks", "dense"), default=None,
                   help="with --k all: causal diagonal blocks (L QRs of H columns) or one dense d x d QR")
    add_transient(p, probe_seeds=True)
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="run the scan in segments of N steps and save (state, probes, log growth, step) "
                        "with orbax after each; --resume continues from the latest")


def summary_line(r: dict) -> str:
    return (f"lambda1 = {r['lambda1_mean']:+.4f} +/- {r['lambda1_std']:.4f}, {100 * r['fraction_positive']:.1f}% "
            f"positive, range [{r['range_min']:+.3f}, {r['range_max']:+.3f}]")


def complete_line(r: dict) -> str:
    return (f"complete spectra ({r['method']}), lambda1 per prompt [{min(r['lambda1']):+.4f}, "
            f"{max(r['lambda1']):+.4f}], {min(r['n_structural'])}-{max(r['n_structural'])} structural")


def run(args, ctx) -> int:
    if args.k == K_ALL:
        return run_command(args, ctx, COMPLETE, CompleteSettings.from_args, complete_line)
    return run_command(args, ctx, SPECTRUM, SpectrumSettings.from_args, summary_line, check_k_fits)


COMMAND = Command(
    "spectrum", help="top-k Lyapunov exponents of the loop map, per prompt",
    description="Top-k Lyapunov exponents (Benettin/QR) of the loop map z -> f(z) for each prompt (the state is "
                "the prompt's whole (L, H) residual stream). Writes OUT/spectrum/results.json and figures.",
    add_options=add_options, run=run)
