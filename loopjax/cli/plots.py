"""Figures (matplotlib, Agg backend, PNG at ~130 dpi, Okabe-Ito colour-blind-safe palette).

Every function takes plain numpy arrays (as read back from the results JSON), a model label for the
title and an output path, writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from loopjax.analysis.ablation import NO_CROSSING, injection_sublayer

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
DPI = 130
SEQ_CMAP = "cividis"      # perceptually uniform, CVD-safe
DIV_CMAP = "RdBu_r"       # diverging, centred on 0

RC = {
    "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 10,
    "axes.titlesize": 11,
    "figure.titlesize": 12,
    "legend.frameon": False,
}


def save_figure(fig, path) -> Path:
    """Write the figure as PNG atomically (temporary sibling, then rename) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def top_running(log_growth: np.ndarray, top: int = 5) -> np.ndarray:
    """Running averages (steps, top) of the ``top`` columns with the largest final exponents, largest
    first. ``log_growth``: (steps, k)."""
    lg = np.asarray(log_growth, dtype=np.float64)
    running = np.cumsum(lg, axis=0) / np.arange(1, lg.shape[0] + 1)[:, None]
    order = np.argsort(-running[-1], kind="stable")[:top]
    return running[:, order]


def plot_spectrum_running(path, log_growths: Sequence[np.ndarray], model: str, top: int = 5) -> Path:
    """Running-average top-``top`` exponents over steps (mean over prompts; band = +/- 1 standard error,
    drawn as dashed edges so overlapping bands stay readable), and a zoomed panel of the last half, where
    a converged estimate is flat."""
    with plt.rc_context(RC):
        runs = np.stack([top_running(lg, top) for lg in log_growths])  # (P, T, top)
        P, T, n = runs.shape
        t = np.arange(1, T + 1)
        mean = runs.mean(0)
        sem = runs.std(0, ddof=1) / np.sqrt(P) if P > 1 else np.zeros_like(mean)
        fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
        half = T // 2
        for a, sl in ((ax, slice(None)), (zoom, slice(half, None))):
            for i in range(n):
                c = OKABE_ITO[i % len(OKABE_ITO)]
                label = f"$\\lambda_{{{i + 1}}}$ ({mean[-1, i]:+.3f})" if a is ax else None
                a.plot(t[sl], mean[sl, i], color=c, lw=1.8, label=label)
                if P > 1:
                    lo, hi = mean[sl, i] - sem[sl, i], mean[sl, i] + sem[sl, i]
                    a.fill_between(t[sl], lo, hi, color=c, alpha=0.12, lw=0)
                    a.plot(t[sl], lo, color=c, lw=0.6, ls=":")
                    a.plot(t[sl], hi, color=c, lw=0.6, ls=":")
            a.axhline(0, color="0.3", lw=0.8, ls="--")
            a.set_xlabel("loop step t")
        ax.set_ylabel("running average of log growth (per loop)")
        zoom.set_title(f"last half (steps {half + 1}-{T})", fontsize=10)
        band = f", band = $\\pm$1 s.e. over {P} prompts" if P > 1 else ""
        ax.set_title(f"{model}: top-{n} exponents, running average (mean{band})")
        ax.legend(loc="best", ncols=1 if n <= 5 else 2, fontsize=9)
        return save_figure(fig, path)


def plot_spectrum_full(path, exponents: np.ndarray, model: str) -> Path:
    """The full measured spectrum, each prompt sorted descending: mean +/- std over prompts."""
    with plt.rc_context(RC):
        ex = -np.sort(-np.asarray(exponents, dtype=np.float64), axis=1)  # (P, k)
        P, k = ex.shape
        mean, std = ex.mean(0), ex.std(0)
        i = np.arange(1, k + 1)
        fig, ax = plt.subplots(figsize=(7, 4.2))
        ax.fill_between(i, mean - std, mean + std, color=OKABE_ITO[0], alpha=0.2, lw=0,
                        label=f"$\\pm$1 std over {P} prompts" if P > 1 else None)
        ax.plot(i, mean, "o-", color=OKABE_ITO[0], ms=3, lw=1.5, label="mean")
        ax.axhline(0, color="0.3", lw=0.8, ls="--")
        npos = int((mean > 0).sum())
        ax.set_xlabel("exponent index i (sorted)")
        ax.set_ylabel("$\\lambda_i$ (per loop)")
        ax.set_title(f"{model}: Lyapunov spectrum, k={k} ({npos} of {k} mean exponents > 0)")
        ax.legend(loc="best")
        return save_figure(fig, path)


def plot_attribution(path, names: Sequence[str], contributions: np.ndarray, model: str) -> Path:
    """Per-sublayer lambda_1 contributions (bars, mean +/- std over prompts) and the cumulative
    lambda_1 through the loop (line, right axis). ``contributions``: (P, n_sub)."""
    with plt.rc_context(RC):
        c = np.asarray(contributions, dtype=np.float64)
        P, n = c.shape
        mean, std = c.mean(0), c.std(0)
        cum = np.cumsum(c, axis=1)
        x = np.arange(n)
        fig, ax = plt.subplots(figsize=(max(6.5, 0.45 * n + 3), 4.4))
        colors = [OKABE_ITO[0] if v >= 0 else OKABE_ITO[3] for v in mean]
        ax.bar(x, mean, yerr=std if P > 1 else None, color=colors, alpha=0.85, capsize=3)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xticks(x, list(names), rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center")
        ax.set_xlabel("sublayer (in loop order)")
        ax.set_ylabel("contribution to $\\lambda_1$ (log growth per loop)")
        ax2 = ax.twinx()
        ax2.grid(False)
        ax2.spines["right"].set_visible(True)
        ax2.plot(x, cum.mean(0), "D-", color=OKABE_ITO[1], lw=1.8, ms=4, label="cumulative $\\lambda_1$")
        if P > 1:
            ax2.fill_between(x, cum.mean(0) - cum.std(0), cum.mean(0) + cum.std(0), color=OKABE_ITO[1],
                             alpha=0.15, lw=0)
        ax2.set_ylabel("cumulative $\\lambda_1$ through the loop", color=OKABE_ITO[1])
        lo = min(ax.get_ylim()[0], ax2.get_ylim()[0])
        hi = max(ax.get_ylim()[1], ax2.get_ylim()[1])
        ax.set_ylim(lo, hi)
        ax2.set_ylim(lo, hi)
        from matplotlib.patches import Patch

        sd = " ($\\pm$1 std)" if P > 1 else ""
        h1 = [Patch(color=OKABE_ITO[0], alpha=0.85), Patch(color=OKABE_ITO[3], alpha=0.85)]
        l1 = [f"expanding sublayer{sd}", f"contracting sublayer{sd}"]
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, fontsize=9)
        ax.set_title(f"{model}: $\\lambda_1$ by sublayer (total {cum.mean(0)[-1]:+.3f}, {P} prompts)", pad=26)
        return save_figure(fig, path)


def plot_attribution_heatmap(path, names: Sequence[str], exponents: np.ndarray, model: str) -> Path:
    """Sublayer x direction heatmap of the mean (over prompts) per-sublayer exponents (n_sub, k)."""
    with plt.rc_context({**RC, "axes.grid": False}):
        e = np.asarray(exponents, dtype=np.float64)
        n, k = e.shape
        fig, ax = plt.subplots(figsize=(max(5.5, 0.35 * k + 3), max(3.5, 0.35 * n + 1.5)))
        vmax = float(np.max(np.abs(e))) or 1.0
        im = ax.imshow(e, cmap=DIV_CMAP, norm=TwoSlopeNorm(0.0, -vmax, vmax), aspect="auto",
                       interpolation="nearest")
        ax.set_yticks(np.arange(n), list(names))
        step = max(1, k // 16)
        ax.set_xticks(np.arange(0, k, step), [str(j + 1) for j in range(0, k, step)])
        ax.set_xlabel("probe direction j (column order)")
        ax.set_ylabel("sublayer")
        if n * k <= 120:
            for i in range(n):
                for j in range(k):
                    ax.text(j, i, f"{e[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if abs(e[i, j]) > 0.6 * vmax else "black")
        fig.colorbar(im, ax=ax, label="log growth per loop")
        ax.set_title(f"{model}: per-sublayer exponents, sublayer x direction (k={k})")
        return save_figure(fig, path)


def plot_sweep(path, labels: Sequence[str], lam1: np.ndarray, title: str,
               training_steps: Sequence[int | None] | None = None) -> Path:
    """lambda_1 across checkpoints: mean over prompts with +/- 1 std error bars, prompts as dots.
    ``lam1``: (C, P). With ``training_steps`` (the training step of each checkpoint, None for a final
    model) the x axis is the training step, as the paper's Fig. 3, and final models are black stars."""
    with plt.rc_context(RC):
        v = np.asarray(lam1, dtype=np.float64)
        C, P = v.shape
        known = [s for s in (training_steps or []) if s is not None]
        by_step = bool(known)
        if by_step:
            gap = max(known) * 0.08 if max(known) > 0 else 1.0
            x = np.array([s if s is not None else max(known) + gap * (1 + j) for j, s in
                          enumerate(training_steps)], dtype=np.float64)
            jitter = gap * 0.15
        else:
            x = np.arange(C, dtype=np.float64)
            jitter = 0.12
        fig, ax = plt.subplots(figsize=(max(6.5, 0.7 * C + 2.5), 4.4))
        rng = np.random.default_rng(0)
        for c in range(C):
            ax.scatter(x[c] + rng.uniform(-jitter, jitter, P), v[c], s=9, color=OKABE_ITO[5], alpha=0.6,
                       lw=0, label="per prompt" if c == 0 else None, zorder=2)
        inter = np.array([not by_step or training_steps[c] is not None for c in range(C)])
        ax.errorbar(x[inter], v.mean(1)[inter], yerr=v.std(1)[inter] if P > 1 else None, fmt="o-",
                    color=OKABE_ITO[0], capsize=4, lw=1.8, ms=6,
                    label="mean" + (" $\\pm$1 std over prompts" if P > 1 else ""), zorder=3)
        if (~inter).any():
            ax.errorbar(x[~inter], v.mean(1)[~inter], yerr=v.std(1)[~inter] if P > 1 else None, fmt="*",
                        color="black", ms=13, capsize=4, label="final model", zorder=4)
        ax.axhline(0, color="0.3", lw=0.8, ls="--")
        if by_step:
            ax.set_xlabel("training step")
        else:
            ax.set_xticks(x, list(labels), rotation=35 if C > 3 else 0, ha="right" if C > 3 else "center")
            ax.set_xlabel("checkpoint")
        ax.set_ylabel("$\\lambda_1$ (single probe, per loop)")
        ax.set_title(f"{title}: $\\lambda_1$ across checkpoints ({P} prompts)")
        ax.legend(loc="best", fontsize=9)
        return save_figure(fig, path)


def plot_similarity(path, names: Sequence[str], matrix: np.ndarray, loops: int, model: str) -> Path:
    """Cosine-similarity heatmaps: (left) every sublayer state across loops; (right) the loop outputs
    (the state after the last sublayer of each loop) against each other."""
    with plt.rc_context({**RC, "axes.grid": False}):
        m = np.asarray(matrix, dtype=np.float64)
        n = m.shape[0]
        per = n // max(loops, 1)
        ends = [(t + 1) * per - 1 for t in range(loops)]
        fig, axes = plt.subplots(1, 2, figsize=(13, 5.6), gridspec_kw={"width_ratios": [1.6, 1],
                                                                          "wspace": 0.45})
        ax = axes[0]
        im = ax.imshow(m, cmap=SEQ_CMAP, vmin=min(0.0, float(m.min())), vmax=1.0, interpolation="nearest")
        for t in range(1, loops):
            ax.axhline(t * per - 0.5, color="white", lw=0.8)
            ax.axvline(t * per - 0.5, color="white", lw=0.8)
        if n <= 24:
            ax.set_xticks(np.arange(n), list(names), rotation=90, fontsize=7)
            ax.set_yticks(np.arange(n), list(names), fontsize=7)
        else:
            centers = [t * per + (per - 1) / 2 for t in range(loops)]
            ax.set_xticks(centers, [f"loop {t}" for t in range(loops)])
            ax.set_yticks(centers, [f"loop {t}" for t in range(loops)])
        ax.set_title(f"states after every sublayer ({per} per loop, {loops} loops)")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
        ax = axes[1]
        sub = m[np.ix_(ends, ends)]
        im2 = ax.imshow(sub, cmap=SEQ_CMAP, vmin=min(0.0, float(sub.min())), vmax=1.0,
                        interpolation="nearest")
        ax.set_xticks(np.arange(loops), [str(t) for t in range(loops)])
        ax.set_yticks(np.arange(loops), [str(t) for t in range(loops)])
        ax.set_xlabel("loop")
        ax.set_ylabel("loop")
        if loops <= 12:
            for i in range(loops):
                for j in range(loops):
                    ax.text(j, i, f"{sub[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if sub[i, j] < 0.5 * (sub.min() + 1) else "black")
        ax.set_title("loop outputs")
        fig.colorbar(im2, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
        fig.suptitle(f"{model}: residual-stream cosine similarity across loops (mean over prompts)")
        return save_figure(fig, path)


def plot_convergence(path, step_norms: np.ndarray, state_norms: np.ndarray, model: str) -> Path:
    """||z_{t+1} - z_t|| (log y) and ||z_t|| over loop steps: prompts thin, mean thick."""
    with plt.rc_context(RC):
        d = np.asarray(step_norms, dtype=np.float64)   # (P, T)
        s = np.asarray(state_norms, dtype=np.float64)  # (P, T+1)
        P, T = d.shape
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        ax = axes[0]
        t = np.arange(T)
        for p in range(P):
            ax.plot(t, d[p], color=OKABE_ITO[5], lw=0.7, alpha=0.5,
                    label="per prompt" if p == 0 else None)
        pos = np.where(d > 0, d, np.nan)
        ax.plot(t, np.exp(np.nanmean(np.log(pos), axis=0)), color=OKABE_ITO[0], lw=2,
                label="geometric mean")
        ax.set_yscale("log")
        ax.set_xlabel("loop step t")
        ax.set_ylabel("$\\|z_{t+1} - z_t\\|$")
        ax.set_title("step size (convergence)")
        ax.legend(loc="best", fontsize=9)
        ax = axes[1]
        t1 = np.arange(T + 1)
        for p in range(P):
            ax.plot(t1, s[p], color=OKABE_ITO[5], lw=0.7, alpha=0.5,
                    label="per prompt" if p == 0 else None)
        ax.plot(t1, s.mean(0), color=OKABE_ITO[1], lw=2, label="mean")
        ax.set_xlabel("loop step t")
        ax.set_ylabel("$\\|z_t\\|$")
        ax.set_title("state norm")
        ax.legend(loc="best", fontsize=9)
        fig.suptitle(f"{model}: loop trajectory over {T} steps ({P} prompts)")
        return save_figure(fig, path)


def plot_models_running(path, models: Sequence[tuple[str, Sequence[np.ndarray]]], top: int = 5) -> Path:
    """The paper's Fig. 1 for several models side by side: running-average top-``top`` exponents (mean
    over prompts, band = +/- 1 s.e.), one panel per model. ``models``: (name, per-prompt log growths)."""
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.0), squeeze=False)
        for ax, (name, lgs) in zip(axes[0], models):
            runs = np.stack([top_running(lg, top) for lg in lgs])
            P, T, n = runs.shape
            t = np.arange(1, T + 1)
            mean = runs.mean(0)
            sem = runs.std(0, ddof=1) / np.sqrt(P) if P > 1 else np.zeros_like(mean)
            for i in range(n):
                c = OKABE_ITO[i % len(OKABE_ITO)]
                ax.plot(t, mean[:, i], color=c, lw=1.6, label=f"$\\lambda_{{{i + 1}}}$ ({mean[-1, i]:+.3f})")
                ax.fill_between(t, mean[:, i] - sem[:, i], mean[:, i] + sem[:, i], color=c, alpha=0.12, lw=0)
            ax.axhline(0, color="0.3", lw=0.8, ls="--")
            ax.set_xlabel("loop step t")
            ax.set_title(f"{name} ({P} prompts)")
            ax.legend(loc="best", fontsize=8)
        axes[0][0].set_ylabel("running average of log growth")
        fig.suptitle(f"Top-{top} Lyapunov exponents, running averages (band = ±1 s.e.)")
        return save_figure(fig, path)


def plot_models_attribution(path, models: Sequence[tuple[str, Sequence[str], np.ndarray]]) -> Path:
    """The paper's Fig. 2 for several models side by side: per-sublayer contributions to lambda_1 (bars,
    mean +/- std over prompts) and the cumulative lambda_1 (line). ``models``: (name, sublayer names,
    contributions (P, n_sub))."""
    with plt.rc_context(RC):
        widths = [max(3.0, 0.3 * len(names) + 2) for _, names, _ in models]
        fig, axes = plt.subplots(1, len(models), figsize=(sum(widths) + 1, 4.2), squeeze=False,
                                 gridspec_kw={"width_ratios": widths})
        for ax, (name, names, contributions) in zip(axes[0], models):
            c = np.asarray(contributions, dtype=np.float64)
            P, n = c.shape
            x = np.arange(n)
            mean = c.mean(0)
            ax.bar(x, mean, yerr=c.std(0) if P > 1 else None, capsize=2, alpha=0.85,
                   color=[OKABE_ITO[0] if v >= 0 else OKABE_ITO[3] for v in mean])
            ax.plot(x, np.cumsum(c, axis=1).mean(0), "D-", color=OKABE_ITO[1], lw=1.5, ms=3,
                    label="cumulative $\\lambda_1$")
            ax.axhline(0, color="0.3", lw=0.8)
            tilt = n > 6 or max(len(str(nm)) for nm in names) > 8
            ax.set_xticks(x, list(names), rotation=45 if tilt else 0, ha="right" if tilt else "center", fontsize=8)
            ax.set_title(f"{name}: $\\lambda_1$ = {np.cumsum(c, axis=1).mean(0)[-1]:+.3f}")
            ax.legend(loc="best", fontsize=8)
        axes[0][0].set_ylabel("contribution to $\\lambda_1$ (per loop)")
        fig.suptitle("Per-sublayer contributions to $\\lambda_1$ (blue: expanding, vermillion: contracting)")
        return save_figure(fig, path)


def plot_token_lambda1(path, tokens: Sequence[str], lambda1: np.ndarray, model: str) -> Path:
    """lambda_1 of each token position (`loopjax.analysis.tokens.token_spectrum`): the largest exponent of the
    position's own diagonal block of the loop Jacobian, one bar per token in prompt order (blue: expanding,
    vermillion: contracting). ``lambda1``: (L,) or (P, L) (P runs of the same prompt, e.g. probe seeds:
    bar = mean, error bar = +/- 1 std, dots = runs); NaN marks a position that was not measured. The
    dashed line is the largest (mean) bar: the prompt's lambda_1 when every position was measured (union
    property)."""
    with plt.rc_context(RC):
        v = np.asarray(lambda1, dtype=np.float64)
        v = v[None] if v.ndim == 1 else v
        P, L = v.shape
        if len(tokens) != L:
            raise ValueError(f"{len(tokens)} tokens for lambda1 of {L} positions")
        measured = np.isfinite(v).any(axis=0)
        vm = np.where(np.isfinite(v[:, measured]), v[:, measured], np.nan)
        mean, std = np.full(L, np.nan), np.full(L, np.nan)
        mean[measured], std[measured] = np.nanmean(vm, axis=0), np.nanstd(vm, axis=0)
        x = np.arange(L)
        fig, ax = plt.subplots(figsize=(max(6.5, 0.45 * L + 2.5), 4.4))
        colors = [OKABE_ITO[0] if m >= 0 else OKABE_ITO[3] for m in np.nan_to_num(mean)]
        ax.bar(x[measured], mean[measured], yerr=std[measured] if P > 1 else None, capsize=3, alpha=0.85,
               color=[c for c, m in zip(colors, measured) if m])
        if P > 1:
            rng = np.random.default_rng(0)
            for p in range(P):
                ok = np.isfinite(v[p])
                ax.scatter(x[ok] + rng.uniform(-0.15, 0.15, ok.sum()), v[p, ok], s=9, color=OKABE_ITO[5],
                           alpha=0.7, lw=0, zorder=3, label="per run" if p == 0 else None)
        top = float(np.nanmax(mean)) if measured.any() else np.nan
        if np.isfinite(top):
            ax.axhline(top, color=OKABE_ITO[1], lw=1.2, ls="--", label=f"max over positions: {top:+.3f}")
        ax.axhline(0, color="0.3", lw=0.8)
        labels = [str(t) if len(str(t)) <= 12 else str(t)[:11] + "…" for t in tokens]
        tilt = L > 8 or max((len(s) for s in labels), default=0) > 6
        ax.set_xticks(x, labels, rotation=45 if tilt else 0, ha="right" if tilt else "center", fontsize=9)
        ax.set_xlabel("token (position in the prompt)")
        ax.set_ylabel("$\\lambda_1$ of the position (per loop)")
        runs = f", mean $\\pm$1 std over {P} runs" if P > 1 else ""
        ax.set_title(f"{model}: per-token $\\lambda_1$ ({int(measured.sum())} of {L} positions{runs})")
        ax.legend(loc="best", fontsize=9)
        return save_figure(fig, path)


# ---- the input-injection ablation (numbers from its summary; nothing computed here) -----------------------

def _star_text(summary) -> str:
    c = summary.crossing
    if c["alpha_star"] is None:
        return NO_CROSSING
    text = "$\\alpha^*$ = " + ", ".join(f"{x:.3f}" for x in c["crossings"])
    if c.get("resolved") and not all(c["resolved"]):
        text += " (not resolved)" if len(c["crossings"]) == 1 else " (not all resolved)"
    return text


def plot_lambda1_vs_alpha(path, alphas, lam1: np.ndarray, summary, title: str) -> Path:
    """Mean λ1 ± 1 standard error over prompts vs alpha, prompts as dots, a zero line and alpha* marked.
    ``lam1``: (A, P) per-prompt values."""
    with plt.rc_context(RC):
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
        ax.set_xlabel("injection scale $\\alpha$ (e -> $\\alpha$ e in the loop; 1 = the model)")
        ax.set_ylabel("$\\lambda_1$ (log growth per loop)")
        ax.legend(loc="best")
        ax.set_title(f"{title}: $\\lambda_1$ vs injection scale, {P} prompts — {_star_text(summary)}")
        return save_figure(fig, path)


def plot_contributions_vs_alpha(path, summary, title: str) -> Path:
    """Mean (over prompts) k=1 λ1 contributions of the adapter and core_block.0, and the total (sum over all
    sublayers), vs alpha; bands ± 1 standard error where available."""
    with plt.rc_context(RC):
        x = np.asarray(summary.alphas, dtype=np.float64)
        fig, ax = plt.subplots(figsize=(6.8, 4.4))
        f = lambda v: np.asarray([np.nan if s is None else s for s in v], dtype=np.float64)  # noqa: E731
        inj = injection_sublayer(summary.names)  # Huginn: adapter, Parcae: injection
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
        return save_figure(fig, path)


# ---- regimes (numbers from loopjax.summary.RegimeSummary; nothing computed here) --------------------------

REGIME_STYLE = {"fixed_point": (OKABE_ITO[2], "o"), "periodic": (OKABE_ITO[1], "s"),
                "quasi_periodic": (OKABE_ITO[4], "D"), "chaotic": (OKABE_ITO[3], "^"),
                "undetermined": ("0.55", "x"), "diverged": (OKABE_ITO[7], "v")}


def plot_regimes(path, summary, model: str) -> Path:
    """Per prompt: λ1 ± its standard error at the horizon the verdict used (top), coloured by verdict, and
    that horizon (bottom, log scale): what each prompt's orbit does and how long it took to tell."""
    with plt.rc_context(RC):
        fig, (ax, bx) = plt.subplots(2, 1, figsize=(7.2, 5.2), sharex=True, height_ratios=(3, 1.3))
        x = np.arange(summary.n_prompts)
        lam = np.asarray([np.nan if v is None else v for v in summary.lambda1], np.float64)
        se = np.asarray([0.0 if v is None else v for v in summary.lambda1_se], np.float64)
        for kind in dict.fromkeys(summary.kinds):
            m = np.asarray([k == kind for k in summary.kinds])
            color, marker = REGIME_STYLE.get(kind, ("0.3", "o"))
            ax.errorbar(x[m], lam[m], yerr=se[m], fmt=marker, color=color, ms=6, capsize=3, lw=1.2,
                        label=f"{kind.replace('_', ' ')} ({int(m.sum())})")
            bx.bar(x[m], np.asarray(summary.horizons)[m], color=color, width=0.7)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_ylabel("$\\lambda_1$ at the verdict's horizon")
        ax.legend(loc="best", fontsize=9)
        ax.set_title(f"{model}: regime per prompt (adaptive horizon, {summary.n_prompts} prompts)")
        bx.set_yscale("log")
        bx.set_ylabel("horizon (steps)")
        bx.set_xlabel("prompt")
        bx.set_xticks(x)
        return save_figure(fig, path)
