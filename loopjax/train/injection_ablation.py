"""The injection ablation: Huginn vs the matched Huginn without input injection, λ1 over training.

For each seed, `huginn` and `huginn-noinject` are trained with the same TrainConfig apart from `arch`
(same seed, so the same initial weights, batches, loop counts and start states; same parameter count, the
no-injection model simply feeds cat(z, 0) to its adapter). `ablation.json` then answers:

  * final λ1 of each: mean ± sem over the prompts for every seed, and mean ± sem over the seeds' means
    (sem over seeds is reported only with >= 2 seeds);
  * the regime of each (sign of the final mean λ1: "contracting" < 0, "expanding" > 0) and whether removing
    the injection flips it;
  * from which training step the regime is settled: the first measured step from which on the sign of
    the mean λ1 (mean over seeds of the per-seed prompt means) never changes again; also per seed.

`lambda1_vs_step.png`: mean λ1 vs step for both models, with a band of ± sem (over prompts for one seed,
over seeds for several).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from loopjax.engine.stats import standard_error
from loopjax.io.files import atomic_write_json
from loopjax.train.trainer import METRICS_FILE, TrainConfig, train

PAIR = ("huginn", "huginn-noinject")


def regime(x: float) -> str:
    return "contracting" if x < 0 else "expanding" if x > 0 else "neutral"


def settled_step(steps, values) -> int | None:
    """The first step from which on sign(values) never changes (None for an empty curve)."""
    signs = np.sign(np.asarray(values, dtype=np.float64))
    if signs.size == 0:
        return None
    i = signs.size - 1
    while i > 0 and signs[i - 1] == signs[-1]:
        i -= 1
    return int(steps[i])


def lambda1_curve(metrics: dict) -> dict:
    """steps, mean and sem (over prompts) of λ1 at the measured steps of one run's metrics.json."""
    recs = [r for r in metrics["records"] if "lambda1" in r]
    return {"steps": [r["step"] for r in recs], "mean": [r["lambda1"]["mean"] for r in recs],
            "sem": [r["lambda1"]["sem"] for r in recs], "heldout_loss": [r["heldout_loss"] for r in recs]}


def summarize(curves: dict[str, dict[int, dict]]) -> dict:
    """The ablation answers from {arch: {seed: lambda1_curve}}."""
    out: dict = {"models": {}}
    for arch, by_seed in curves.items():
        seeds = sorted(by_seed)
        steps = by_seed[seeds[0]]["steps"]
        if any(by_seed[s]["steps"] != steps for s in seeds):
            raise ValueError(f"{arch}: the seeds' runs were measured at different steps")
        means = np.array([by_seed[s]["mean"] for s in seeds])           # (seeds, measured steps)
        curve_mean = means.mean(axis=0)
        if len(seeds) > 1:
            band = np.atleast_1d(standard_error(means, axis=0))
            band_of = "sem over seeds"
        else:
            band = np.array(by_seed[seeds[0]]["sem"])
            band_of = "sem over prompts"
        per_seed = {str(s): {"final_lambda1": by_seed[s]["mean"][-1], "final_sem_over_prompts": by_seed[s]["sem"][-1],
                             "final_heldout_loss": by_seed[s]["heldout_loss"][-1],
                             "regime": regime(by_seed[s]["mean"][-1]),
                             "settled_from_step": settled_step(steps, by_seed[s]["mean"])} for s in seeds}
        final = float(curve_mean[-1])
        out["models"][arch] = {
            "final_lambda1": final,
            "final_sem": (float(standard_error(means[:, -1])) if len(seeds) > 1 else by_seed[seeds[0]]["sem"][-1]),
            "final_sem_of": band_of,
            "regime": regime(final),
            "settled_from_step": settled_step(steps, curve_mean),
            "per_seed": per_seed,
            "curve": {"steps": steps, "mean": curve_mean.tolist(), "band": band.tolist(), "band_of": band_of},
        }
    a, b = (out["models"][k] for k in PAIR)
    out["removing_injection_flips_regime"] = a["regime"] != b["regime"]
    out["answer"] = (f"huginn: λ1 = {a['final_lambda1']:+.4f} ± {a['final_sem']:.4f} ({a['regime']}, settled from "
                     f"step {a['settled_from_step']}); huginn-noinject: λ1 = {b['final_lambda1']:+.4f} ± "
                     f"{b['final_sem']:.4f} ({b['regime']}, settled from step {b['settled_from_step']}); removing "
                     f"the injection {'flips' if out['removing_injection_flips_regime'] else 'does not flip'} "
                     f"the regime.")
    return out


def plot(summary: dict, path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for arch, color in zip(PAIR, ("tab:blue", "tab:orange")):
        c = summary["models"][arch]["curve"]
        steps, mean, band = np.array(c["steps"]), np.array(c["mean"]), np.array(c["band"])
        ax.plot(steps, mean, marker="o", ms=3, color=color, label=f"{arch}")
        ax.fill_between(steps, mean - band, mean + band, color=color, alpha=0.25, linewidth=0)
    ax.axhline(0.0, color="gray", lw=0.8, ls="--")
    band_of = summary["models"][PAIR[0]]["curve"]["band_of"]
    ax.set_xlabel("training step")
    ax.set_ylabel("λ1 (mean over prompts)")
    ax.set_title(f"λ1 of the loop map during training (band: ± {band_of})")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def ablation(out_dir, *, seeds=(0,), base: TrainConfig | None = None, resume: bool = False,
             overwrite: bool = False, progress=None, stop_requested=None, **overrides) -> dict:
    """Train huginn and huginn-noinject for every seed under out_dir/<arch>/seed_<s>/ (a run that is already
    complete is reused with resume=True), then write out_dir/ablation.json and lambda1_vs_step.png.
    `base` (default TrainConfig()) plus keyword overrides give the shared recipe; arch and seed are set here.
    progress(arch, seed, step, record) is called after every training step. With `stop_requested` (see
    `train`) an interrupted run returns its {"status": "interrupted", ...} at once (resume=True continues)."""
    out_dir = Path(out_dir)
    seeds = tuple(int(s) for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {seeds}")
    base = dataclasses.replace(base or TrainConfig(), **overrides)
    for seed in seeds:  # every recipe checked before the first run writes anything
        dataclasses.replace(base, arch=PAIR[0], seed=seed)
    curves: dict[str, dict[int, dict]] = {arch: {} for arch in PAIR}
    runs, params = {}, {}
    for seed in seeds:
        for arch in PAIR:
            cfg = dataclasses.replace(base, arch=arch, seed=seed)
            run_dir = out_dir / arch / f"seed_{seed}"
            cb = None if progress is None else (lambda step, rec, a=arch, s=seed: progress(a, s, step, rec))
            summary = train(cfg, run_dir, resume=resume, overwrite=overwrite, progress=cb,
                            stop_requested=stop_requested)
            if summary.get("status") == "interrupted":
                return summary
            metrics = json.loads((run_dir / METRICS_FILE).read_text())
            curves[arch][seed] = lambda1_curve(metrics)
            runs[f"{arch}/seed_{seed}"] = {"dir": str(run_dir), **summary}
            params[arch] = metrics["settings"]["num_params"]
    if params[PAIR[0]] != params[PAIR[1]]:
        raise AssertionError(f"the pair is not matched: {params}")
    result = {"settings": {"base_recipe": base.to_json(), "seeds": list(seeds), "pair": list(PAIR),
                           "num_params": params[PAIR[0]],
                           "lambda1": "mean over the prompts at every measured step (see each run's metrics.json)",
                           "settled_from_step": "first measured step from which the sign of the mean λ1 never "
                                                "changes again"},
              **summarize(curves), "runs": runs}
    plot(result, out_dir / "lambda1_vs_step.png")
    result["figure"] = "lambda1_vs_step.png"
    atomic_write_json(out_dir / "ablation.json", result)
    return result
