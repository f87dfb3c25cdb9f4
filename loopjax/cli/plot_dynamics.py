"""Figures for where the dynamics live: CLV angles, localisation, finite-time exponents, the logit lens and
attention similarity across loops. Style and saving from `loopjax.cli.plots`; every function takes plain
numpy arrays (as read back from a results JSON), a model label and an output path, and returns the path."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from loopjax.cli.plots import OKABE_ITO, RC, SEQ_CMAP, plt, save_figure


def plot_clv_angles(path, angles: Sequence[np.ndarray], model: str, split: Sequence[int] | int = 1) -> Path:
    """Histogram (degrees) of the minimal angle between the unstable and the stable CLV span, pooled over
    prompts and window steps; angles near 0 are near-tangencies (non-hyperbolic), near 90° orthogonal."""
    with plt.rc_context(RC):
        a = np.degrees(np.concatenate([np.ravel(x) for x in angles]))
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        ax.hist(a, bins=np.linspace(0, 90, 46), color=OKABE_ITO[0], alpha=0.85)
        ax.axvline(np.median(a), color=OKABE_ITO[3], lw=1.5, ls="--", label=f"median {np.median(a):.1f}°")
        ax.set_xlim(0, 90)
        ax.set_xlabel("minimal angle between unstable and stable CLV span (degrees)")
        ax.set_ylabel("count (prompts × window steps)")
        splits = sorted(set(np.atleast_1d(split).tolist()))
        ax.set_title(f"{model}: CLV angles ({len(angles)} prompts; split after CLV {', '.join(map(str, splits))})")
        ax.legend()
        return save_figure(fig, path)


def plot_localisation(path, weights: np.ndarray, model: str, tokens: Sequence[str] | None = None,
                      show: int = 3) -> Path:
    """Heatmaps of the fraction of ‖v_i(t)‖² on each token position (x) over the window's loop steps (y) for
    the first `show` CLVs. weights: (k, W, L)."""
    w = np.asarray(weights, dtype=np.float64)
    n = min(show, w.shape[0])
    with plt.rc_context({**RC, "axes.grid": False}):
        fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 1, 4.2), squeeze=False)
        vmax = float(w[:n].max())
        for i, ax in enumerate(axes[0]):
            im = ax.imshow(w[i], aspect="auto", cmap=SEQ_CMAP, vmin=0, vmax=vmax, interpolation="nearest",
                           origin="lower")
            L = w.shape[2]
            labels = list(tokens) if tokens is not None and len(tokens) == L else [str(j) for j in range(L)]
            ax.set_xticks(np.arange(L), labels, rotation=60, ha="right", fontsize=7)
            ax.set_xlabel("token position")
            ax.set_title(f"CLV {i + 1}")
            if i == 0:
                ax.set_ylabel("window step (loop)")
        fig.colorbar(im, ax=axes[0].tolist(), fraction=0.03, pad=0.02, label="fraction of ‖v‖² on position")
        fig.suptitle(f"{model}: where the leading covariant vectors live")
        return save_figure(fig, path)


def plot_finite_time(path, series: Sequence[np.ndarray], taus: Sequence[int], model: str,
                     label: str = "Benettin") -> Path:
    """Finite-time λ1 (non-overlapping windows of τ steps): histograms for each τ (left) and the variance
    against τ (right, log-log, with a 1/τ guide: the slope of an orbit with decaying correlations).
    series: one (T,) log-growth series of λ1 per prompt (pooled)."""
    from loopjax.engine.clv import finite_time_exponents

    with plt.rc_context(RC):
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
        var = []
        for j, tau in enumerate(taus):
            x = np.concatenate([np.asarray(finite_time_exponents(np.asarray(s), int(tau))) for s in series
                                if len(s) >= tau])
            var.append(np.mean([np.var(np.asarray(finite_time_exponents(np.asarray(s), int(tau))), ddof=1)
                                for s in series if len(s) >= 2 * tau]))
            lo, hi = float(x.min()), float(x.max())
            if hi - lo < 1e-6 * (1.0 + abs(lo)):  # a collapsed distribution (a fixed point): one visible bar
                lo, hi = lo - 1e-3 * (1.0 + abs(lo)), hi + 1e-3 * (1.0 + abs(lo))
            ax.hist(x, bins=np.linspace(lo, hi, 41), histtype="step", lw=1.6, color=OKABE_ITO[j % 8], label=f"τ = {tau}",
                    density=True)
        ax.axvline(0, color="0.3", lw=0.8, ls="--")
        ax.set_xlabel("finite-time $\\lambda_1$ (per loop)")
        ax.set_ylabel("density")
        ax.legend()
        ax.set_title(f"finite-time $\\lambda_1$ ({label}, {len(series)} prompts)")
        t, v = np.asarray(taus, float), np.asarray(var)
        ok = np.isfinite(v) & (v > 0)
        bx.loglog(t[ok], v[ok], "o-", color=OKABE_ITO[0], label="variance (mean over prompts)")
        if ok.any():
            i0 = int(np.argmax(ok))
            bx.loglog(t, v[i0] * t[i0] / t, ":", color="0.4", label="∝ 1/τ")
        bx.set_xlabel("τ (loops)")
        bx.set_ylabel("var of finite-time $\\lambda_1$")
        bx.legend()
        bx.set_title("variance vs window length")
        fig.suptitle(model)
        return save_figure(fig, path)


def plot_logit_lens(path, entropy: Sequence[np.ndarray], agreement: Sequence[np.ndarray], model: str,
                    exit_gate: Sequence[np.ndarray] | None = None, trained_steps: int | None = None) -> Path:
    """Per loop: mean entropy of the readout (nats), top-1 agreement with the last loop, and (Ouro) the mean
    exit-gate probability. Each is (S,) per prompt: prompts thin, mean thick."""
    panels = [("entropy of the readout (nats)", entropy), ("top-1 agreement with the last loop", agreement)]
    if exit_gate is not None:
        panels.append(("exit-gate probability λ_s", exit_gate))
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.8), squeeze=False)
        for ax, (title, ys) in zip(axes[0], panels):
            ys = np.stack([np.asarray(y, float) for y in ys])
            s = np.arange(1, ys.shape[1] + 1)
            for y in ys:
                ax.plot(s, y, color=OKABE_ITO[0], lw=0.6, alpha=0.4)
            ax.plot(s, ys.mean(0), color=OKABE_ITO[3], lw=2.2, label="mean")
            if trained_steps:
                ax.axvline(trained_steps, color="0.3", lw=0.8, ls="--", label=f"trained depth {trained_steps}")
            ax.set_xlabel("loop")
            ax.set_title(title)
        axes[0][0].legend()
        fig.suptitle(f"{model}: logit lens over the loop ({len(entropy)} prompts)")
        return save_figure(fig, path)


def plot_attention_similarity(path, matrix: np.ndarray, names: Sequence[str], model: str,
                              measure: str = "1 - JS") -> Path:
    """Loops × loops similarity of the attention patterns, one small heatmap per layer (rows) and head
    (columns). matrix: (n_layers, heads, loops, loops)."""
    m = np.asarray(matrix, dtype=np.float64)
    n, h, T, _ = m.shape
    with plt.rc_context({**RC, "axes.grid": False}):
        fig, axes = plt.subplots(n, h, figsize=(2.2 * h + 1, 2.2 * n + 0.6), squeeze=False)
        lo = float(m.min())
        for i in range(n):
            for j in range(h):
                ax = axes[i][j]
                im = ax.imshow(m[i, j], cmap=SEQ_CMAP, vmin=lo, vmax=1.0, interpolation="nearest")
                ax.set_xticks(range(T), [str(t + 1) for t in range(T)], fontsize=6)
                ax.set_yticks(range(T), [str(t + 1) for t in range(T)], fontsize=6)
                if i == 0:
                    ax.set_title(f"head {j}", fontsize=9)
                if j == 0:
                    ax.set_ylabel(f"{names[i]}\nloop", fontsize=8)
                if i == n - 1:
                    ax.set_xlabel("loop", fontsize=8)
        fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02, label=measure)
        fig.suptitle(f"{model}: attention-pattern similarity between loops")
        return save_figure(fig, path)


__all__ = ["plot_clv_angles", "plot_localisation", "plot_finite_time", "plot_logit_lens",
           "plot_attention_similarity"]
