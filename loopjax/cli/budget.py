"""Checks before any compute: integer arguments inside the ranges JAX represents, seeds, prompt lengths
against the model's position count, and the memory a command will need against the memory available.

`estimate_memory` is an order-of-magnitude bound from the arguments alone (no tracing): the largest
arrays each analysis holds at once, in bytes. It is meant to catch the arguments that cannot fit (a
billion steps, a pad multiple of 100,000), not to predict the peak to a few percent.
"""
from __future__ import annotations

import dataclasses
import math
import os

from loopjax.cli.runstore import RunError

INT32_MAX = 2**31 - 1        # scan lengths, shapes and loop counters are int32 in XLA
SEED_MAX = 2**63 - 1         # jax.random.key takes a C long
JSON_NUMBER_BYTES = 64       # one stored number as a Python float in a list, plus its JSON text
POSITION_FIELDS = ("max_position_embeddings", "block_size", "n_positions", "max_seq_len")


def check_int_range(flag: str, value, lo: int = 1, hi: int = INT32_MAX) -> int:
    """`value` as an int in [lo, hi], else RunError naming the flag (floats such as 1e11 and bools are
    refused: a count is a whole number)."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and lo <= value <= hi:
            return int(value)
        raise RunError(f"{flag} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        top = "2**31 - 1" if hi == INT32_MAX else ("2**63 - 1" if hi == SEED_MAX else str(hi))
        raise RunError(f"{flag} must be in [{lo}, {top}] (what JAX can count), got {value}")
    return value


def check_seed(seed, what: str = "seed") -> int:
    """A PRNG seed as jax.random.key takes it: an int in [0, 2**63 - 1]; ValueError naming `what`."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{what} must be an integer in [0, 2**63 - 1], got {type(seed).__name__} {seed!r}")
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"{what} must be in [0, 2**63 - 1], got {seed}")
    return seed


def check_positive_float(flag: str, value) -> float:
    """A finite number > 0 (a learning rate, a scale); RunError naming the flag (nan, inf, 0, < 0)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise RunError(f"{flag} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise RunError(f"{flag} must be a finite number > 0, got {value!r}")
    return v


# ---- prompt lengths ---------------------------------------------------------------------------------------

def max_positions(hf_config: dict) -> int | None:
    """The number of positions a checkpoint's config.json allows (max_position_embeddings, Huginn's
    block_size, ...), or None when it names none."""
    for field in POSITION_FIELDS:
        v = hf_config.get(field)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def check_prompt_lengths(tokens: list[list[int]], limit: int | None, *, allow: bool = False,
                         texts: list[str] | None = None, flag: str = "--allow-long-prompts") -> list[str]:
    """Refuse (RunError) the first prompt longer than `limit` positions, naming it, the limit and `flag`;
    with allow=True return one warning line per such prompt instead. No limit: nothing to check."""
    if limit is None:
        return []
    warnings = []
    for i, ids in enumerate(tokens):
        if len(ids) <= limit:
            continue
        name = f"prompt {i}" + (f" ({texts[i][:40]!r})" if texts else "")
        line = f"{name} has {len(ids)} tokens, more than the {limit} positions the model's config allows"
        if not allow:
            raise RunError(f"{line}; shorten it, or pass {flag} to analyse it anyway (the model never saw "
                           f"such positions)")
        warnings.append(f"loopjax: warning: {line}")
    return warnings


# ---- memory ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    total: int                      # bytes
    parts: dict                     # what -> bytes (the terms of the total)

    def describe(self, n: int = 3) -> str:
        top = sorted(self.parts.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{what} {format_bytes(b)}" for what, b in top if b)


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def padded(n: int, multiple: int | None) -> int:
    return n if not multiple else -(-n // multiple) * multiple


def estimate_memory(analysis: str, *, steps: int, tokens: int, hidden: int, k: int = 1, n_prompts: int = 1,
                    pad_multiple: int | None = None, intermediate: int | None = None, heads: int = 1,
                    n_sublayers: int = 1, params_bytes: int = 0, itemsize: int = 4,
                    checkpoint_every: int | None = None) -> MemoryEstimate:
    """Bytes one command needs at once, from its arguments. `tokens`: the longest prompt; with
    `pad_multiple` the prompts are padded, and for spectrum and attribution a bucket's prompts run together
    (all `n_prompts` assumed in one bucket).
    Terms: the params; the per-step records the scan stores (steps x k x 3 arrays: log growth, running
    mean, the scan's own buffer; a `checkpoint_every` segment bounds the scan buffer, not the record) and
    their JSON copies; the d x k tangents (probes, their JVP images, QR: x4); the JVP activations of one
    layer for k probes (q/k/v/MLP and the L x L attention scores); similarity's stored sublayer states and
    its (loops*sublayers)^2 matrix; trajectory's per-step norms."""
    L = padded(tokens, pad_multiple)
    # spectrum and attribution run a bucket's prompts as one vmapped batch; the others pad prompt by prompt
    batch = n_prompts if pad_multiple and analysis in ("spectrum", "attribution") else 1
    d = L * hidden
    inter = intermediate or 4 * hidden
    parts = {"params": params_bytes}
    if analysis in ("spectrum", "attribution", "tokens", "sweep", "ablation", "regime", "complete"):
        maps = n_sublayers if analysis == "attribution" else 1
        positions = L if analysis == "tokens" else 1
        scan = checkpoint_every if checkpoint_every and checkpoint_every < steps else steps
        parts["per-step log (steps x k)"] = (2 * steps + scan) * k * maps * positions * itemsize * batch
        parts["per-step log as JSON"] = 2 * steps * k * maps * positions * JSON_NUMBER_BYTES * n_prompts
        parts["tangents (d x k)"] = 4 * d * k * itemsize * batch
        parts["JVP activations"] = 2 * k * L * (4 * hidden + 3 * inter + heads * L) * itemsize * batch
    elif analysis == "dynamics":  # CLVs: the window's Q, R, C and vectors (W x d x k) plus the backward pass
        parts["CLV window (Q, vectors: 2 x steps x d x k)"] = 2 * 2 * steps * d * k * itemsize
        parts["tangents (d x k)"] = 4 * d * k * itemsize
        parts["JVP activations"] = 2 * k * L * (4 * hidden + 3 * inter + heads * L) * itemsize
    elif analysis == "similarity":
        n = steps * n_sublayers
        parts["stored states (loops x sublayers x d)"] = 2 * n * d * itemsize
        parts["similarity matrix"] = n * n * (itemsize + JSON_NUMBER_BYTES)
        parts["activations"] = 2 * L * (4 * hidden + 3 * inter + heads * L) * itemsize
    elif analysis in ("trajectory", "convergence"):
        parts["per-step norms"] = 3 * steps * (itemsize + JSON_NUMBER_BYTES)
        parts["activations"] = 2 * L * (4 * hidden + 3 * inter + heads * L) * itemsize * batch
    else:
        raise ValueError(f"estimate_memory: unknown analysis {analysis!r}")
    return MemoryEstimate(int(sum(parts.values())), parts)


def model_sizes(model) -> dict:
    """The `estimate_memory` arguments a LoopModel fixes: hidden, intermediate, heads, n_sublayers,
    params_bytes, itemsize (of its compute dtype: 8 under x64)."""
    import jax

    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_heads", 1)
    return {"hidden": int(cfg.hidden_size), "intermediate": int(getattr(cfg, "intermediate_size", 0)) or None,
            "heads": int(heads), "n_sublayers": len(model.sublayer_names),
            "params_bytes": int(sum(x.nbytes for x in jax.tree_util.tree_leaves(model.params))),
            "itemsize": 8 if jax.config.jax_enable_x64 else 4}


def check_budget(analysis: str, model, tokens: list[list[int]], *, steps: int, k: int = 1,
                 pad_multiple: int | None = None, checkpoint_every: int | None = None,
                 available: int | None = None) -> MemoryEstimate:
    """estimate_memory for `model` on these prompts (the longest counts), then check_memory with the way
    out that fits; returns the estimate."""
    est = estimate_memory(analysis, steps=steps, k=k, tokens=max(len(t) for t in tokens), n_prompts=len(tokens),
                          pad_multiple=pad_multiple, checkpoint_every=checkpoint_every, **model_sizes(model))
    check_memory(est, available, way_out=way_out(analysis, est, steps=steps, checkpoint_every=checkpoint_every))
    return est


def available_memory() -> int | None:
    """Bytes available to a new allocation: MemAvailable of /proc/meminfo (psutil if installed, where
    there is no /proc), None when neither says."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - no psutil, or it cannot tell
        return None


def check_memory(estimate: MemoryEstimate, available: int | None = None, *, fraction: float = 0.9,
                 way_out: str = "use fewer --steps or a smaller --k") -> None:
    """RunError with the estimate, its largest terms and `way_out` when it exceeds `fraction` of the
    available memory (`available_memory()` by default; nothing is checked when that is unknown).
    LOOPJAX_NO_MEMORY_CHECK=1 skips the check."""
    if os.environ.get("LOOPJAX_NO_MEMORY_CHECK") == "1":
        return
    available = available_memory() if available is None else available
    if available is None or estimate.total <= fraction * available:
        return
    raise RunError(f"this run needs about {format_bytes(estimate.total)} of memory ({estimate.describe()}), "
                   f"more than the {format_bytes(available)} available; {way_out} "
                   f"(LOOPJAX_NO_MEMORY_CHECK=1 skips this check)")


def way_out(analysis: str, estimate: MemoryEstimate, *, steps: int, checkpoint_every: int | None) -> str:
    """The advice for `check_memory`: which argument to lower, given the largest term of the estimate."""
    top = max(estimate.parts, key=estimate.parts.get)
    if analysis == "similarity":
        return "use fewer --loops"
    if top.startswith("per-step") and analysis == "spectrum" and not checkpoint_every:
        return ("use fewer --steps or a smaller --k (the per-step log growth of every step is kept); "
                "--checkpoint-every N also bounds the scan's own buffer")
    if top.startswith("per-step"):
        return "use fewer --steps or a smaller --k (the per-step log growth of every step is kept)"
    if top in ("JVP activations", "tangents (d x k)", "activations"):
        return "use a smaller --k, a smaller --pad-multiple (or --no-batch), or shorter prompts"
    return "use fewer --steps or a smaller --k"
