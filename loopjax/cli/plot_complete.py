"""The spectrum-density figure of `loopjax spectrum --k all`: every exponent against its index / d, one line
per prompt, the structural (-inf) exponents marked at the bottom edge."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from loopjax.cli.plots import OKABE_ITO, RC, save_figure  # noqa: E402


def plot_spectrum_density(path, results: Sequence, model: str) -> Path:
    """results: CompleteSpectrum objects or their to_json() dicts (one per prompt). Writes one PNG."""
    recs = [r if isinstance(r, dict) else r.to_json() for r in results]
    if not recs:
        raise ValueError("no complete spectra to plot")
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        lo = min(min(v for v in r["exponents"] if v is not None) for r in recs if any(v is not None
                                                                                       for v in r["exponents"]))
        floor = lo - 0.08 * (max(r["exponents"][0] or 0.0 for r in recs) - lo + 1e-9) - 0.5
        for j, r in enumerate(recs):
            ex = np.array([np.nan if v is None else v for v in r["exponents"]], np.float64)
            x = (np.arange(ex.size) + 0.5) / ex.size
            c = OKABE_ITO[j % len(OKABE_ITO)]
            ax.plot(x, ex, "-", color=c, lw=1.2, label=f"prompt {j} (d={r['d']}, D_KY={_fmt(r['kaplan_yorke'])})")
            s = np.isnan(ex)
            if s.any():
                ax.plot(x[s], np.full(s.sum(), floor), "v", color=c, ms=4, ls="none",
                        label=f"{int(s.sum())} structural (-inf)" if j == 0 else None)
        ax.axhline(0, color="0.3", lw=0.8, ls="--")
        ax.set_xlabel("exponent index i / d (sorted)")
        ax.set_ylabel("$\\lambda_i$ (per loop)")
        ax.set_title(f"{model}: complete Lyapunov spectrum ({recs[0]['method']}, T={recs[0]['steps']})")
        ax.legend(loc="best", fontsize=8)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_figure(fig, path)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"
