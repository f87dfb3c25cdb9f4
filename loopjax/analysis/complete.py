"""Complete Lyapunov spectra of a loop model's prompt: all d = L*H exponents (`complete_spectrum`).

The model front-end of `loopjax.engine.complete`: the loop map and start state as every front-end
(`loop_map`, `split_key(key)` = (state key, probe key)); method "dense" draws its d probes from the probe key
exactly as `loopjax.spectrum(k=d)` does, method "blocks" (default) draws position i's H probes from
fold_in(probe key, i) exactly as `loopjax.analysis.tokens.token_spectrum(k=H)` does, so the three agree
number for number with the same key. The architecture declares its structural (-inf) directions
(`declared_structural`); the engine detects them from the run and the result says whether the two agree.
"""
from __future__ import annotations

import jax
import numpy as np

from loopjax.analysis.frontends import prompt_key, split_key
from loopjax.engine.complete import STRUCTURAL_FLOOR, CompleteSpectrum, complete_spectrum_of_map
from loopjax.models.loop_model import LoopModel, check_ids, default_key, loop_map

__all__ = ["complete_spectrum", "declared_structural", "complete_spectrum_record"]

_RMSNORM_RADIAL = ("{where} ends in an RMSNorm, which is scale-invariant (up to its eps): one radial null "
                   "direction per token position")
_DECLARED = {  # model_type -> (structural directions per token position, which layer makes them)
    "ouro": (1, _RMSNORM_RADIAL.format(where="Ouro's loop map (the final norm after the decoder layers)")),
    "huginn": (1, _RMSNORM_RADIAL.format(where="Huginn's loop map (norm_4 of the last core block)")),
}


def declared_structural(model: LoopModel, L: int) -> tuple[int | None, str | None]:
    """(count, reason) of the structural exponents the architecture makes for a prompt of L tokens; (None,
    None) for an architecture that declares nothing (detection alone then decides)."""
    per_token, reason = _DECLARED.get(model.model_type, (None, None))
    return (None, None) if per_token is None else (per_token * int(L), reason)


def complete_spectrum(model: LoopModel, tokens, *, key=None, steps: int = 64, warmup: int = 0,
                      method: str = "blocks", probe_chunk: int | None = None, block_chunk: int | None = None,
                      structural_threshold: float = STRUCTURAL_FLOOR, init_state=None, **engine
                      ) -> CompleteSpectrum | list[CompleteSpectrum]:
    """All L*H Lyapunov exponents of the loop map over one prompt (L,) (a list or (B, L) array of prompts:
    one result each, prompt b with key fold_in(key, b) as for `loopjax.spectrum`). See
    `loopjax.engine.complete.complete_spectrum_of_map` for method, probe_chunk, block_chunk,
    structural_threshold; `engine` (renorm_every, remat; mesh for dense) passes to `loopjax.benettin`."""
    if isinstance(tokens, (list, tuple)) and tokens and np.ndim(tokens[0]) == 1 or np.ndim(tokens) == 2:
        key = default_key(key)
        return [complete_spectrum(model, t, key=jax.random.fold_in(key, b), steps=steps, warmup=warmup,
                                  method=method, probe_chunk=probe_chunk, block_chunk=block_chunk,
                                  structural_threshold=structural_threshold, **engine)
                for b, t in enumerate(tokens)]
    ids = check_ids(model, tokens, ndim=(1,), what="tokens")
    state_key, probe_key = split_key(default_key(key))
    f, z0 = loop_map(model, ids, key=state_key, init_state=init_state)
    count, reason = declared_structural(model, ids.shape[0])
    return complete_spectrum_of_map(f, z0, key=probe_key, steps=steps, warmup=warmup, method=method,
                                    block_size=int(model.config.hidden_size), probe_chunk=probe_chunk,
                                    block_chunk=block_chunk, structural_threshold=structural_threshold,
                                    declared_structural=count, structural_reason=reason, **engine)


def complete_spectrum_record(model: LoopModel, prompts, *, seed: int = 0, steps: int = 64, warmup: int = 0,
                             method: str = "blocks", model_name: str | None = None, **options) -> dict:
    """The JSON record of `loopjax spectrum --k all`: prompt i (a 1-D id array) with key prompt_key(seed, i)
    (the CLI's key scheme), one `CompleteSpectrum.to_json()` per prompt plus a per-run summary."""
    results = [complete_spectrum(model, ids, key=prompt_key(seed, i), steps=steps, warmup=warmup, method=method,
                                 **options) for i, ids in enumerate(prompts)]
    return {"analysis": "complete_spectrum", "model": model_name or model.model_type, "method": method,
            "seed": int(seed), "steps": int(steps), "warmup": int(warmup),
            "prompts": [[int(t) for t in np.asarray(ids)] for ids in prompts],
            "results": [r.to_json() for r in results],
            "summary": {"kaplan_yorke": [r.to_json()["kaplan_yorke"] for r in results],
                        "entropy_bound": [r.entropy_bound for r in results], "sum": [r.sum for r in results],
                        "n_structural": [r.n_structural for r in results],
                        "lambda1": [float(r.exponents[0]) for r in results]}}
