"""`loopjax ablate`: the input-injection ablation (Huginn-style models).

For every injection scale alpha and prompt i, one unit of work `aAA-pPPP` (alpha index, prompt index) is
computed by `loopjax.analysis.ablation.ablation_unit` on `loopjax.scale_injection(model, alpha, mode)` with the
key `loopjax.prompt_key(seed, i)` (the same for every alpha) and saved atomically, so `--resume` continues an
interrupted run. `loopjax.summary.summarize_ablation` gives every number of the summary (λ1 mean ± standard
error per alpha, the adapter / core_block.0 contributions, orbit counts, alpha*); this command only
orchestrates (figures: `loopjax.cli.plots`, index: `loopjax.cli.report.write_ablation_index`):

    DIR/ablation/results.json              settings, per-alpha per-prompt numbers, summary, crossing
    DIR/ablation/lambda1_vs_alpha.png      mean λ1 ± standard error vs alpha, prompts as dots, alpha* marked
    DIR/ablation/contributions_vs_alpha.png  adapter, core_block.0 and total (sum of sublayers) vs alpha
    DIR/ablation/index.md                  the summary table and both figures
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import loopjax
from loopjax.analysis import ablation
from loopjax.cli.budget import check_budget, check_int_range
from loopjax.cli.commands.base import (Command, Common, Context, Setup, Transient, check_k, loaded_fingerprint,
                                       open_run, or_default, pad_multiple, prompt_units, recorded_settings, resolve_pad, say,
                                       setup)
from loopjax.cli.parser import add_common, add_engine_steps, whole_number
from loopjax.cli.runner import header, prompt_entries
from loopjax.cli.session import CLIError, software_versions
from loopjax.engine.validate import check_int
from loopjax.summary import summarize_ablation

DEFAULT_MODEL = "builtin:huginn-tiny"
DEFAULT_SCALES = "0,0.25,0.5,0.75,1,1.25,1.5"
# the paper's settings: λ1 with one probe over T=32, attribution k=1 over T=32; spectrum (with --k) T=64
DEFAULTS = {"steps": 32, "spectrum_steps": 64, "orbit_steps": 64}


def parse_scales(text: str) -> list[float]:
    """'0,0.25,1' -> [0.0, 0.25, 1.0] (distinct, finite; at least one)."""
    try:
        values = [float(t) for t in text.replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    try:
        return ablation.check_alphas(values)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class AblationSettings(Transient):
    """What an ablation records besides the common provenance (and what `ablation_unit` runs with)."""
    alphas: list
    mode: str | None = None
    steps_lambda1: int = DEFAULTS["steps"]
    attr_steps: int = DEFAULTS["steps"]
    attr_k: int = 1
    k: int | None = None
    spectrum_steps: int | None = None
    orbit_steps: int = DEFAULTS["orbit_steps"]
    pad_multiple: int | str | None = None   # prompts padded to a multiple of N tokens (not with --mode mean)

    @classmethod
    def from_args(cls, args) -> "AblationSettings":
        steps = or_default(args.steps, DEFAULTS["steps"])
        orbit_steps = check_int_range("--orbit-steps", check_int(
            "--orbit-steps", or_default(args.orbit_steps, DEFAULTS["orbit_steps"]), 16, error=CLIError))  # periods <= 8
        return cls(alphas=sorted(args.injection_scale), mode=args.mode, steps_lambda1=steps, attr_steps=steps,
                   k=args.k, spectrum_steps=or_default(args.spectrum_steps, DEFAULTS["spectrum_steps"]) if args.k
                   else None, orbit_steps=orbit_steps, pad_multiple=None if args.mode else pad_multiple(args),
                   **dataclasses.asdict(Transient.from_args(args)))

    @classmethod
    def for_report(cls, args) -> "AblationSettings":
        """The ablation `loopjax report` runs for a Huginn model: this command's defaults (the paper's λ1 and
        attribution settings unless the report's --steps is given, the default alphas, no top-k spectrum)."""
        return cls.from_args(argparse.Namespace(**{**vars(args), "injection_scale": parse_scales(DEFAULT_SCALES),
                                                   "mode": None, "k": None, "spectrum_steps": None,
                                                   "orbit_steps": None}))

    def unit_options(self) -> dict:
        """The keyword arguments of `ablation_unit`."""
        return {"steps_lambda1": self.steps_lambda1, "attr_steps": self.attr_steps, "k": self.k,
                "spectrum_steps": self.spectrum_steps or DEFAULTS["spectrum_steps"], "orbit_steps": self.orbit_steps,
                "mode": self.mode, "pad_multiple": self.pad_multiple, "warmup": self.warmup,
                "renorm_every": self.renorm_every}


def add_options(p) -> None:
    add_common(p, model_default=DEFAULT_MODEL, steps_help="loop steps T of lambda_1 and of the attribution",
               steps_default=DEFAULTS["steps"])
    g = p.add_argument_group("ablation")
    g.add_argument("--injection-scale", type=parse_scales, default=DEFAULT_SCALES, metavar="A,B,...",
                   dest="injection_scale", help="the injection scales alpha, comma-separated")
    g.add_argument("--mode", choices=("mean",), default=None,
                   help="'mean': replace e by its mean over the prompt's positions before scaling")
    g.add_argument("--k", type=whole_number, default=None,
                   help="also compute the top-k spectrum (T=--spectrum-steps) per alpha and prompt")
    g.add_argument("--spectrum-steps", type=whole_number, default=None,
                   help=f"spectrum T with --k (default {DEFAULTS['spectrum_steps']})")
    g.add_argument("--orbit-steps", type=whole_number, default=None,
                   help=f"loop steps of the orbit classification (default {DEFAULTS['orbit_steps']}; >= 16)")
    add_engine_steps(g, " (lambda_1, attribution, spectrum)")


def _check_has_injection(source: str) -> None:
    """Fail before loading any weights when the config (built-in or a local folder's config.json) already
    says the architecture has no input injection; other sources are checked after loading."""
    from loopjax.io.checkpoint import read_json
    from loopjax.models import architecture, config_from_hf
    from loopjax.models.presets import PRESETS

    try:
        if source.startswith("builtin:") and source[len("builtin:"):].removesuffix("-random") in PRESETS:
            cfg = PRESETS[source[len("builtin:"):].removesuffix("-random")]
        elif os.path.isfile(os.path.join(os.path.expanduser(source), "config.json")):
            cfg = read_json(Path(os.path.expanduser(source)) / "config.json")
        else:
            return
        config = config_from_hf(cfg)
        arch = architecture(config)
    except Exception:  # noqa: BLE001 - a bad config is reported by the full load
        return
    if not arch.injection_fields(config):
        raise CLIError(f"ablate: {source}: {arch.name} has no input injection to scale (only Huginn-style "
                       f"models do)")


def run(args, ctx: Context) -> int:
    common = Common.from_args(args)
    _check_has_injection(common.model)
    run_ablation(common, ctx, setup(common), AblationSettings.from_args(args))
    return 0


def run_ablation(common: Common, ctx: Context, s: Setup, settings: AblationSettings) -> dict:
    """The ablation of one loaded model into out/ablation/ (results.json, figures, index.md)."""
    from loopjax.cli import report

    try:
        loopjax.scale_injection(s.loaded.model, 1.0, mode=settings.mode)
    except ValueError as e:
        raise CLIError(f"ablate: {s.loaded.name}: {e}") from None
    if settings.k:
        check_k(settings.k, s.tokens, s.loaded.model.config.hidden_size, s.prompts)
    settings = resolve_pad(settings, s.tokens)
    check_ablation_budget(s, settings)
    recorded = {**recorded_settings(common, "ablation", s.prompts, loaded=s.loaded, digest=True,
                                    key_note="; the same key for every alpha"), **dataclasses.asdict(settings)}
    alphas = settings.alphas
    units = [u for j, a in enumerate(alphas)
             for u in prompt_units(s.prompts, s.tokens, key=lambda i, j=j: f"a{j:02d}-p{i:03d}", alpha_index=j,
                                   alpha=a)]
    runner = open_run(common, ctx, s.out / "ablation", "ablation", recorded, loaded_fingerprint(s.loaded, units))
    with runner:
        runner.begin([key for key, _ in units])
        res, summary = ablation_results(common, s, settings, runner, units)
    report.write_ablation_index(runner.store.root, res, summary)
    star = summary.alpha_star
    say(common.quiet, f"ablate: alpha* = {'none (' + ablation.NO_CROSSING + ')' if star is None else f'{star:.4f}'}; "
                      f"lambda1 {summary.lambda1_mean[0]:+.4f} (alpha={alphas[0]:g}) .. "
                      f"{summary.lambda1_mean[-1]:+.4f} (alpha={alphas[-1]:g}) -> {runner.store.root / 'results.json'}")
    return res


def check_ablation_budget(s: Setup, settings: AblationSettings) -> None:
    """The memory of one alpha's largest parts (the attribution, the top-k spectrum with --k; with padding the
    whole prompt set as one batch, `_alpha_rows`) against the memory available, before the folder is made."""
    pad = None if settings.mode else settings.pad_multiple
    check_budget("attribution", s.loaded.model, s.tokens, steps=max(settings.attr_steps, settings.steps_lambda1),
                 k=settings.attr_k, pad_multiple=pad)
    if settings.k:
        check_budget("spectrum", s.loaded.model, s.tokens, steps=settings.spectrum_steps, k=settings.k,
                     pad_multiple=pad)


def _alpha_rows(common: Common, s: Setup, settings: AblationSettings, units):
    """With padding (and not --mode mean): alpha index -> the units of every prompt at that alpha, computed
    together as padded batches (`ablation.ablation_units`) on first use. A row is always the whole prompt set
    (saved units included), so a resumed run computes the same programs and numbers as an uninterrupted one.
    None without padding: unit by unit."""
    if not settings.pad_multiple or settings.mode:
        return None
    opts = {k: v for k, v in settings.unit_options().items() if k not in ("mode", "pad_multiple")}
    ids = [jnp.asarray(inp["token_ids"], jnp.int32) for _, inp in units[:len(s.prompts)]]
    keys = [loopjax.prompt_key(common.seed, i) for i in range(len(ids))]
    cache: dict = {}

    def row(j: int) -> list:
        if j not in cache:
            cache.clear()   # one alpha's row at a time: the units run in alpha order
            cache[j] = ablation.ablation_units(s.loaded.model, ids, settings.alphas[j], keys=keys,
                                               pad_multiple=settings.pad_multiple, **opts)
        return cache[j]

    return row


def ablation_results(common: Common, s: Setup, settings: AblationSettings, runner, units) -> tuple:
    """(the finished results, the summary): every unit computed (or reused) into the begun `runner`,
    summarized, drawn and finished."""
    from loopjax.cli import plots

    alphas = settings.alphas
    row_of = _alpha_rows(common, s, settings, units)

    def compute(unit: str, inputs: dict) -> dict:
        if row_of is not None:
            return row_of(inputs["alpha_index"])[inputs["index"]].to_json()
        return ablation.ablation_unit(s.loaded.model, jnp.asarray(inputs["token_ids"], jnp.int32), inputs["alpha"],
                                      key=loopjax.prompt_key(common.seed, inputs["index"]),
                                      **settings.unit_options()).to_json()

    records = runner.units(units, compute, desc=f"{s.loaded.name} ablation")
    n = len(s.prompts)
    rows = [records[j * n:(j + 1) * n] for j in range(len(alphas))]
    saved = [[ablation.AblationUnit.from_json(r["result"]) for r in row] for row in rows]
    result = ablation.AblationResult(alphas=alphas, units=saved, settings={"mode": settings.mode})
    summary = summarize_ablation(result)
    res = header("ablation", s.loaded.info, runner.store, software_versions())
    res.update(summary=summary.to_json(), crossing=summary.crossing, alphas=alphas, lambda1=result.lambda1.tolist(),
               per_alpha=[{"alpha": a, "prompts": prompt_entries(row)} for a, row in zip(alphas, rows)])
    title = f"{s.loaded.name}" + (" (mode mean)" if settings.mode else "")
    figs = [plots.plot_lambda1_vs_alpha(runner.store.root / "lambda1_vs_alpha.png", alphas, np.asarray(res["lambda1"]),
                                        summary, title),
            plots.plot_contributions_vs_alpha(runner.store.root / "contributions_vs_alpha.png", summary, title)]
    res["figures"] = [f.name for f in figs]
    return runner.finish(res), summary


COMMAND = Command(
    "ablate", help="input-injection ablation: lambda_1 and its attribution vs the injection scale alpha",
    description="Weaken Huginn's input injection: the adapter sees concat(z, alpha * e) (loopjax.scale_injection; "
                "--mode mean first replaces e by its mean over positions). For every alpha and prompt: lambda_1 "
                "(one probe, T=--steps), the k=1 attribution (T=--steps; adapter vs core blocks), the orbit type, "
                "and with --k the top-k spectrum. Writes OUT/ablation/results.json, lambda1_vs_alpha.png, "
                "contributions_vs_alpha.png, index.md; alpha* is where the mean lambda_1 crosses 0.",
    add_options=add_options, run=run)
