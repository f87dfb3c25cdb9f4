"""The per-token spectra summary."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from loopjax.analysis.tokens import TokenSpectrum
from loopjax.summary.base import Summary, as_float, as_list, register


@dataclasses.dataclass(frozen=True)
class TokenSummary(Summary):
    """Per-token spectra (`loopjax.analysis.tokens.token_spectrum`): λ1 of each position's own diagonal block of
    the loop Jacobian. `lambda1_by_position` lists per prompt the λ1 of every position (prompt order)."""
    kind: ClassVar[str] = "tokens"
    n_prompts: int
    k: int
    steps: int
    lambda1_by_position: list
    union_lambda1_mean: float             # mean over prompts of the largest position λ1 (= the prompt's λ1)
    fraction_expanding_positions: float   # positions with λ1 > 0, over all prompts
    argmax_position_fraction_last: float  # prompts whose most expanding position is the last token

    def rows(self):
        return [("prompts", str(self.n_prompts)),
                ("λ1 of the prompt = max over positions (mean)", f"{self.union_lambda1_mean:+.4f}"),
                ("positions with λ1 > 0", f"{100 * self.fraction_expanding_positions:.1f}%"),
                ("prompts whose most expanding position is the last token",
                 f"{100 * self.argmax_position_fraction_last:.1f}%")]


@register("tokens", TokenSummary, TokenSpectrum)
def summarize_tokens(results) -> TokenSummary:
    lam = [np.asarray(r.lambda1 if hasattr(r, "lambda1") and not isinstance(r, dict) else r["lambda1"],
                      dtype=np.float64) for r in results]
    first = results[0]
    k = int(np.shape(first.exponents if not isinstance(first, dict) else first["exponents"])[-1])
    steps = int(first.log_growth.shape[-2]) if not isinstance(first, dict) else int(first["steps"])
    return TokenSummary(
        n_prompts=len(lam), k=k, steps=steps, lambda1_by_position=[as_list(v) for v in lam],
        union_lambda1_mean=as_float(np.mean([v.max() for v in lam])),
        fraction_expanding_positions=as_float(np.mean(np.concatenate(lam) > 0)),
        argmax_position_fraction_last=as_float(np.mean([int(np.argmax(v)) == v.size - 1 for v in lam])))
