"""`loopjax ablate`: the input-injection ablation (Huginn-style models).

For every injection scale alpha and prompt i, one unit of work `aAA-pPPP` (alpha index, prompt index) is
computed by `loopjax.ablation.ablation_unit` on `loopjax.scale_injection(model, alpha, mode)` with the key
`loopjax.prompt_key(seed, i)` (the same for every alpha) and saved atomically, so `--resume` continues an
interrupted run. `loopjax.ablation.summarize_ablation` gives every number of the summary (λ1 mean ± standard
error per alpha via `loopjax.summarize`, the adapter / core_block.0 contributions, orbit counts, alpha*);
this module only orchestrates and draws:

    DIR/ablation/results.json              settings, per-alpha per-prompt numbers, summary, crossing
    DIR/ablation/lambda1_vs_alpha.png      mean λ1 ± standard error vs alpha, prompts as dots, alpha* marked
    DIR/ablation/contributions_vs_alpha.png  adapter, core_block.0 and total (sum of sublayers) vs alpha
    DIR/ablation/index.md                  the summary table and both figures
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import loopjax
from loopjax import ablation
from loopjax.cli.commands import (KEY_SCHEME, Context, _or, check_k, load_model, read_prompts, say, transient)
from loopjax.cli.runner import Runner, header, prompt_entries
from loopjax.cli.session import CLIError, software_versions
from loopjax.prompts import prompt_set_digest
from loopjax.runstore import RunStore, atomic_write_text

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


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `loopjax ablate` on the `loopjax` subparsers."""
    from loopjax.cli.parser import _add_common, _Fmt

    p = subparsers.add_parser(
        "ablate", formatter_class=_Fmt,
        help="input-injection ablation: lambda_1 and its attribution vs the injection scale alpha",
        description="Weaken Huginn's input injection: the adapter sees concat(z, alpha * e) "
                    "(loopjax.scale_injection; --mode mean first replaces e by its mean over positions). For "
                    "every alpha and prompt: lambda_1 (one probe, T=--steps), the k=1 attribution (T=--steps; "
                    "adapter vs core blocks), the orbit type, and with --k the top-k spectrum. Writes "
                    "OUT/ablation/results.json, lambda1_vs_alpha.png, contributions_vs_alpha.png, index.md; "
                    "alpha* is where the mean lambda_1 crosses 0.")
    _add_common(p, steps_help="loop steps T of lambda_1 and of the attribution",
                steps_default=DEFAULTS["steps"])
    p.set_defaults(model=DEFAULT_MODEL)
    g = p.add_argument_group("ablation")
    g.add_argument("--injection-scale", type=parse_scales, default=DEFAULT_SCALES, metavar="A,B,...",
                   dest="injection_scale", help="the injection scales alpha, comma-separated")
    g.add_argument("--mode", choices=("mean",), default=None,
                   help="'mean': replace e by its mean over the prompt's positions before scaling")
    g.add_argument("--k", type=int, default=None,
                   help="also compute the top-k spectrum (T=--spectrum-steps) per alpha and prompt")
    g.add_argument("--spectrum-steps", type=int, default=None,
                   help=f"spectrum T with --k (default {DEFAULTS['spectrum_steps']})")
    g.add_argument("--orbit-steps", type=int, default=None,
                   help=f"loop steps of the orbit classification (default {DEFAULTS['orbit_steps']}; >= 16)")
    g.add_argument("--warmup", type=int, default=None, metavar="N",
                   help="loop steps (with QR) run before recording starts (lambda_1, attribution, spectrum); default 0")
    g.add_argument("--renorm-every", type=int, default=None, metavar="R",
                   help="QR every R steps (tangents grow un-normalised in between); default 1")
    p.set_defaults(func=cmd_ablate)
    return p


def settings_of(args, loaded, prompts, alphas) -> dict:
    steps = _or(args.steps, DEFAULTS["steps"])
    return {"analysis": "ablation", "model": loaded.source, "revision": loaded.revision, "dtype": loaded.dtype,
            "x64": bool(args.x64), "seed": int(args.seed), "key_scheme": KEY_SCHEME + "; the same key for every alpha",
            "tokenizer": loaded.tokenizer.name if not args.token_ids else "token ids given (--token-ids)",
            "prompts_file": str(args.prompts) if args.prompts else None,
            "prompt_set": "custom" if args.prompts else "builtin-20", "n_prompts": len(prompts),
            "prompt_digest": prompt_set_digest(prompts), "xla_flags": os.environ.get("XLA_FLAGS") or None,
            "alphas": alphas, "mode": args.mode, "steps_lambda1": steps, "attr_steps": steps, "attr_k": 1,
            "k": args.k, "spectrum_steps": _or(args.spectrum_steps, DEFAULTS["spectrum_steps"]) if args.k else None,
            "orbit_steps": _or(args.orbit_steps, DEFAULTS["orbit_steps"]), **transient(args)}


def _check_has_injection(source: str) -> None:
    """Fail before loading any weights when the config (built-in or a local folder's config.json) already
    says the architecture has no input injection; other sources are checked after loading."""
    from loopjax.checkpoint import read_json
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


def cmd_ablate(args, ctx: Context) -> int:
    prompts = read_prompts(args)
    _check_has_injection(args.model)
    loaded = load_model(args.model, args.revision, args.dtype)
    tokens = loaded.tokenize(prompts, args.token_ids)
    out = Path(args.out) if args.out else Path("results") / loaded.name
    run_ablation(args, ctx, loaded, prompts, tokens, out)
    return 0


def report_args(args) -> argparse.Namespace:
    """The ablation `loopjax report` runs for a Huginn model: this command's defaults (the paper's λ1 and
    attribution settings unless the report's --steps is given, the default alphas, no top-k spectrum) with
    the report's common options."""
    return argparse.Namespace(**{**vars(args), "injection_scale": parse_scales(DEFAULT_SCALES), "mode": None,
                                 "k": None, "spectrum_steps": None, "orbit_steps": None})


def run_ablation(args, ctx: Context, loaded, prompts, tokens, out: Path) -> dict:
    """The ablation of one loaded model into out/ablation/ (results.json, figures, index.md)."""
    try:
        loopjax.scale_injection(loaded.model, 1.0, mode=args.mode)
    except ValueError as e:
        raise CLIError(f"ablate: {loaded.name}: {e}") from None
    orbit_steps = _or(args.orbit_steps, DEFAULTS["orbit_steps"])
    if orbit_steps < 16:
        raise CLIError(f"--orbit-steps must be >= 16 (periods up to 8 are tested), got {orbit_steps}")
    if args.k:
        check_k(args.k, tokens, loaded.model.config.hidden_size, prompts)
    alphas = sorted(args.injection_scale)
    settings = settings_of(args, loaded, prompts, alphas)
    store = RunStore(out / "ablation", "ablation", settings, resume=args.resume, overwrite=args.overwrite)
    runner = Runner(store, quiet=args.quiet, hooks=ctx.hooks, interrupts=ctx.interrupts)
    units = [(f"a{j:02d}-p{i:03d}", {"index": i, "alpha_index": j, "alpha": a, "text": p.text, "register": p.register,
                                     "token_ids": ids})
             for j, a in enumerate(alphas) for i, (p, ids) in enumerate(zip(prompts, tokens))]
    runner.begin([key for key, _ in units])
    opts = {"steps_lambda1": settings["steps_lambda1"], "attr_steps": settings["attr_steps"], "k": args.k,
            "spectrum_steps": settings["spectrum_steps"] or DEFAULTS["spectrum_steps"],
            "orbit_steps": orbit_steps, "mode": args.mode, **transient(args)}

    def compute(unit: str, inputs: dict) -> dict:
        return ablation.ablation_unit(loaded.model, jnp.asarray(inputs["token_ids"], jnp.int32), inputs["alpha"],
                                      key=loopjax.prompt_key(args.seed, inputs["index"]), **opts).to_json()

    records = runner.units(units, compute, desc=f"{loaded.name} ablation")
    n = len(prompts)
    rows = [records[j * n:(j + 1) * n] for j in range(len(alphas))]
    per_alpha = [[ablation.AblationUnit.from_json(rec["result"]) for rec in row] for row in rows]
    summary = ablation.summarize_ablation(
        alphas, [[u.lambda1 for u in row] for row in per_alpha],
        attribution=[[u.attribution for u in row] for row in per_alpha],
        orbits=[[u.orbit for u in row] for row in per_alpha], mode=args.mode,
        spectra=[[u.spectrum for u in row] for row in per_alpha] if args.k else None)
    res = header("ablation", loaded.info, store, software_versions())
    res["summary"] = summary.to_json()
    res["crossing"] = summary.crossing
    res["alphas"] = alphas
    res["lambda1"] = [[u.lambda1 for u in row] for row in per_alpha]
    res["per_alpha"] = [{"alpha": a, "prompts": prompt_entries(row)} for a, row in zip(alphas, rows)]
    title = f"{loaded.name}" + (" (mode mean)" if args.mode else "")
    figs = [plot_lambda1_vs_alpha(store.root / "lambda1_vs_alpha.png", alphas, np.asarray(res["lambda1"]),
                                  summary, title),
            plot_contributions_vs_alpha(store.root / "contributions_vs_alpha.png", summary, title)]
    res["figures"] = [f.name for f in figs]
    res = runner.finish(res)
    write_index(store.root, res, summary)
    star = summary.alpha_star
    say(args, f"ablate: alpha* = {'none (' + ablation.NO_CROSSING + ')' if star is None else f'{star:.4f}'}; "
              f"lambda1 {summary.lambda1_mean[0]:+.4f} (alpha={alphas[0]:g}) .. {summary.lambda1_mean[-1]:+.4f} "
              f"(alpha={alphas[-1]:g}) -> {store.root / 'results.json'}")
    return res


# ---- figures and index (numbers from the summary; nothing computed here) ---------------------------------

def _star_text(summary) -> str:
    c = summary.crossing
    if c["alpha_star"] is None:
        return ablation.NO_CROSSING
    text = "$\\alpha^*$ = " + ", ".join(f"{x:.3f}" for x in c["crossings"])
    if c.get("resolved") and not all(c["resolved"]):
        text += " (not resolved)" if len(c["crossings"]) == 1 else " (not all resolved)"
    return text


def plot_lambda1_vs_alpha(path, alphas, lam1: np.ndarray, summary, title: str) -> Path:
    """Mean λ1 ± 1 standard error over prompts vs alpha, prompts as dots, a zero line and alpha* marked.
    ``lam1``: (A, P) per-prompt values."""
    from loopjax.plots import _RC, OKABE_ITO, _save, plt

    with plt.rc_context(_RC):
        x = np.asarray(alphas, dtype=np.float64)
        v = np.asarray(lam1, dtype=np.float64)
        A, P = v.shape
        span = float(x.max() - x.min()) or 1.0
        fig, ax = plt.subplots(figsize=(6.8, 4.4))
        rng = np.random.default_rng(0)
        for j in range(A):
            ax.scatter(x[j] + rng.uniform(-0.012, 0.012, P) * span, v[j], s=10, color=OKABE_ITO[5], alpha=0.6,
                       lw=0, label="per prompt" if j == 0 else None, zorder=2)
        sem = np.asarray([np.nan if s is None else s for s in summary.lambda1_sem], dtype=np.float64)
        ax.errorbar(x, summary.lambda1_mean, yerr=None if P < 2 else sem, fmt="o-", color=OKABE_ITO[0], capsize=4,
                    lw=1.8, ms=6, label="mean" + (" $\\pm$1 s.e. over prompts" if P > 1 else ""), zorder=3)
        ax.axhline(0, color="0.3", lw=0.8)
        resolved = summary.crossing.get("resolved") or [True] * len(summary.crossing["crossings"])
        for a, ok in zip(summary.crossing["crossings"], resolved):
            ax.axvline(a, color=OKABE_ITO[3], ls="--" if ok else ":", lw=1.2, zorder=1)
            ax.text(a, 0.98, f"$\\alpha^*$={a:.3f}" + ("" if ok else " (within 2 s.e.)"), rotation=90, va="top",
                    ha="right", color=OKABE_ITO[3], fontsize=8, transform=ax.get_xaxis_transform())
        if x.min() <= 1.0 <= x.max():  # the model itself
            ax.axvline(1.0, color="0.6", ls=":", lw=1.0)
        ax.set_xlabel("injection scale $\\alpha$ (adapter input concat(z, $\\alpha$ e); 1 = the model)")
        ax.set_ylabel("$\\lambda_1$ (log growth per loop)")
        ax.legend(loc="best")
        ax.set_title(f"{title}: $\\lambda_1$ vs injection scale, {P} prompts — {_star_text(summary)}")
        return _save(fig, path)


def plot_contributions_vs_alpha(path, summary, title: str) -> Path:
    """Mean (over prompts) k=1 λ1 contributions of the adapter and core_block.0, and the total (sum over all
    sublayers), vs alpha; bands ± 1 standard error where available."""
    from loopjax.plots import _RC, OKABE_ITO, _save, plt

    with plt.rc_context(_RC):
        x = np.asarray(summary.alphas, dtype=np.float64)
        fig, ax = plt.subplots(figsize=(6.8, 4.4))
        f = lambda v: np.asarray([np.nan if s is None else s for s in v], dtype=np.float64)  # noqa: E731
        inj = ablation.injection_sublayer(summary.names)   # Huginn: adapter, Parcae: injection
        for mean, sem, label, c, m in ((summary.adapter_mean, summary.adapter_sem, inj, OKABE_ITO[3], "s"),
                                       (summary.core_block0_mean, summary.core_block0_sem, "core_block.0",
                                        OKABE_ITO[0], "o")):
            mean, sem = f(mean), f(sem)
            ax.plot(x, mean, m + "-", color=c, lw=1.8, ms=5, label=label)
            if np.isfinite(sem).any():
                ax.fill_between(x, mean - sem, mean + sem, color=c, alpha=0.15, lw=0)
        ax.plot(x, f(summary.attribution_total_mean), "D-", color="0.15", lw=1.8, ms=4,
                label="total (sum of all sublayers)")
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xlabel("injection scale $\\alpha$")
        ax.set_ylabel("contribution to $\\lambda_1$ (k=1 attribution)")
        ax.legend(loc="best", frameon=True, framealpha=0.85, edgecolor="none")
        ax.set_title(f"{title}: sublayer contributions to $\\lambda_1$ vs injection scale")
        return _save(fig, path)


def write_index(folder: Path, res: dict, summary) -> Path:
    """DIR/ablation/index.md: settings, the per-alpha table (from the summary), alpha*, both figures."""
    st = res["settings"]
    c = summary.crossing
    star = (ablation.NO_CROSSING if c["alpha_star"] is None
            else f"**{c['alpha_star']:.4f}**" + ("" if c["note"] == "one crossing" else f" ({c['note']})")
            + " — " + ", ".join(c["directions"]))
    lines = [f"# Input-injection ablation: {res['model']['name']}", "",
             f"Adapter input concat(z, α·e) (`loopjax.scale_injection`{', mode mean' if st['mode'] else ''}); "
             f"{st['n_prompts']} prompts, seed {st['seed']} (prompt i: `loopjax.prompt_key(seed, i)` for every α); "
             f"λ1 one probe T={st['steps_lambda1']}, attribution k=1 T={st['attr_steps']}"
             + (f", spectrum k={st['k']} T={st['spectrum_steps']}" if st["k"] else "")
             + f", orbit {st['orbit_steps']} steps.", "",
             f"α* (mean λ1 crosses 0, linear interpolation): {star}", "",
             f"| α | λ1 mean ± s.e. | min / max | {ablation.injection_sublayer(summary.names)} | core_block.0 | "
             "total (attribution) | orbits |",
             "|---|---|---|---|---|---|---|"]
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.4f}"  # noqa: E731
    for j, a in enumerate(summary.alphas):
        lines.append(f"| {a:g} | {summary.lambda1_mean[j]:+.4f} ± {fmt(summary.lambda1_sem[j])} | "
                     f"{summary.lambda1_min[j]:+.4f} / {summary.lambda1_max[j]:+.4f} | "
                     f"{summary.adapter_mean[j]:+.4f} | {summary.core_block0_mean[j]:+.4f} | "
                     f"{summary.attribution_total_mean[j]:+.4f} | "
                     + ", ".join(f"{k} {n}" for k, n in summary.orbit_counts[j].items()) + " |")
    if summary.spectrum_summaries:
        lines += ["", "| α | spectrum λ1 mean | fraction positive | sum of exponents |", "|---|---|---|---|"]
        for a, s in zip(summary.alphas, summary.spectrum_summaries):
            lines.append(f"| {a:g} | {fmt(s['lambda1_mean'])} | {fmt(s['fraction_positive'])} | "
                         f"{fmt(s['sum_of_exponents_mean'])} |")
    lines += [""] + [f"![{Path(f).stem}]({f})" for f in res["figures"]]
    lines += ["", "All numbers: [`results.json`](results.json)", ""]
    path = Path(folder) / "index.md"
    atomic_write_text(path, "\n".join(lines))
    return path
