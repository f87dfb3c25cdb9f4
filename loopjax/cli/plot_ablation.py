"""Figures of the training ablation (`loopjax train --preset injection-ablation`), drawn from ablation.json."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from loopjax.cli.plots import OKABE_ITO, RC, REGIME_STYLE, plt, save_figure

KINDS = ("fixed_point", "periodic", "quasi_periodic", "chaotic", "undetermined", "diverged")


def plot_lambda1_vs_step(result: dict, path) -> Path:
    """Mean λ1 over the prompts vs training step, one line per variant, band ± its se over the seeds,
    and a thin line per seed."""
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(7.2, 4.4))
        band_of = ""
        for i, (v, s) in enumerate(result["variants"].items()):
            c = s["across_seeds"]["curve"]
            steps, mean, band = (np.asarray(c[k], np.float64) for k in ("steps", "mean", "band"))
            color = OKABE_ITO[i % len(OKABE_ITO)]
            label = f"{v} (degenerate)" if v in result["settings"]["degenerate"] else v
            ax.plot(steps, mean, marker="o", ms=3, color=color, label=label, ls="--" if "degenerate" in label else "-")
            ax.fill_between(steps, mean - band, mean + band, color=color, alpha=0.2, linewidth=0)
            for run in s["per_seed"].values():   # every seed thin: a mean over seeds can hide a collapsed one
                ax.plot(run["curve"]["steps"], run["curve"]["mean"], color=color, lw=0.7, alpha=0.6)
            band_of = c["band_of"]
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"λ1 (mean over prompts, T = {result['settings']['base_recipe']['lambda1_steps']})")
        n = len(result["settings"]["seeds"])
        ax.set_title(f"λ1 of the loop map during training, {n} seed{'s' * (n > 1)} (band: ± {band_of}; thin: each seed)")
        ax.legend(fontsize=9, ncol=2)
        return save_figure(fig, path)


def plot_regime_table(result: dict, path) -> Path:
    """A table: one row per variant, one column per seed, each cell the verdict counts over the prompts,
    coloured by the majority verdict; the last columns give λ1 ± se and the held-out loss over seeds."""
    variants, seeds = list(result["variants"]), result["settings"]["seeds"]
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(2.2 + 1.9 * (len(seeds) + 2), 0.9 + 0.55 * len(variants)))
        ax.set_axis_off()
        cells, colours = [], []
        for v in variants:
            s = result["variants"][v]
            row, row_c = [], []
            for seed in seeds:
                final = s["per_seed"][str(seed)]["final"]
                row.append(", ".join(f"{n} {_short(k)}" for k, n in sorted(final["verdicts"].items())))
                row_c.append(_tint(REGIME_STYLE.get(final["majority"], ("0.6", ""))[0]))
            lam, loss = s["across_seeds"]["lambda1"], s["across_seeds"]["heldout_loss"]
            se = f" ± {lam['se']:.3f}" if lam["se"] is not None else ""
            row += [f"{lam['mean']:+.3f}{se}", f"{loss['mean']:.2f}"]
            row_c += ["white", "white"]
            cells.append(row)
            colours.append(row_c)
        table = ax.table(cellText=cells, cellColours=colours, loc="center", cellLoc="center",
                         rowLabels=[f"{v} *" if v in result["settings"]["degenerate"] else v for v in variants],
                         colLabels=[f"seed {s}" for s in seeds] + ["final λ1 (seeds)", "held-out loss"])
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.scale(1, 1.5)
        unigram = np.mean([r["unigram_baseline"] for s in result["variants"].values() for r in s["per_seed"].values()])
        ax.set_title(f"regime verdicts per prompt (fp fixed point, qp quasi-periodic, per periodic, und "
                     f"undetermined); unigram loss {unigram:.2f}; * degenerate", fontsize=9)
        return save_figure(fig, path)


def _short(kind: str) -> str:
    return {"fixed_point": "fp", "quasi_periodic": "qp", "periodic": "per", "undetermined": "und",
            "chaotic": "chaotic", "diverged": "div"}.get(kind, kind)


def _tint(color: str) -> tuple:
    """A light version of a verdict's colour, so the cell text stays legible."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return (0.65 + 0.35 * r, 0.65 + 0.35 * g, 0.65 + 0.35 * b)


def plot_all(result: dict, out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    return [plot_lambda1_vs_step(result, out_dir / "lambda1_vs_step.png"),
            plot_regime_table(result, out_dir / "regimes.png")]
