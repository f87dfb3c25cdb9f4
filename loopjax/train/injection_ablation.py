"""The injection ablation: the same Huginn backbone trained with each way of reading the prompt, over seeds.

Variants (``VARIANTS``; the Huginn config's ``injection_type``, see ``loopjax.models.huginn``):

  linear       adapter(cat(z, e))           Huginn-0125's injection (2H^2 injection parameters)
  add          z + e                        no injection parameters
  diagonal     z exp(-dt A) + dt (e B^T)    Parcae's (H^2 + 2H)
  gate         z + sigmoid(g) e             a per-channel gate (H)
  inject-once  z_0 = e, then the loop       the control that reads the prompt only through its start state
               map without e                (same tree as linear; the adapter's e half is unused)
  none         the loop map without e from  degenerate: the model never reads its prompt (labelled so)
               a random start

Every (variant, seed) is trained with the same TrainConfig apart from ``arch`` -- same data order, loop
counts, random start states and budget -- so the seeds are matched across variants (the initial weights of
the shared tensors are the same draw only where the trees agree). After training, each final model is
evaluated on the first ``lambda1_prompts`` built-in prompts: the regime verdict of every prompt
(``loopjax.regime`` at an adaptive horizon), λ1 ± its error, the gauge-relative attribution
(``loopjax.attribution(relative=True)``) and whether the output depends on the prompt at all.

``ablation.json`` holds, per variant and seed, the held-out loss (and the unigram baseline), λ1 through
training, the final verdicts, λ1 and the attribution; across seeds mean ± standard error; and, for every
variant against ``linear``, whether the regime differs beyond seed noise (``compare``).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

import loopjax
from loopjax.engine.stats import standard_error
from loopjax.io.files import atomic_write_json
from loopjax.train import data, forward
from loopjax.train.trainer import METRICS_FILE, TOKENIZER_FILE, TrainConfig, train

VARIANTS = {v: arch for arch, v in forward.HUGINN_INJECTIONS.items()}   # "linear" -> "huginn", ...
DEFAULT_VARIANTS = ("linear", "add", "diagonal", "gate", "inject-once", "none")
REFERENCE = "linear"
EVALUATION_FILE = "evaluation.json"
DEGENERATE = {"none": "never reads its prompt: the loop map ignores e and z_0 is random"}


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How each trained model is evaluated after training."""
    regime_steps: int = 4096      # the regime verdicts' horizon cap
    attribution_steps: int = 64   # Benettin steps of the relative attribution (k = 1)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def check_variants(variants) -> tuple[str, ...]:
    variants = tuple(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants or len(set(variants)) != len(variants):
        raise ValueError(f"--variants: expected distinct names from {', '.join(DEFAULT_VARIANTS)}, got "
                         f"{', '.join(variants) or 'nothing'}")
    return variants


def lambda1_curve(metrics: dict) -> dict:
    """steps, mean and sem (over prompts) of λ1 and the held-out loss at the measured steps of one run."""
    recs = [r for r in metrics["records"] if "lambda1" in r]
    return {"steps": [r["step"] for r in recs], "mean": [r["lambda1"]["mean"] for r in recs],
            "sem": [r["lambda1"]["sem"] for r in recs], "heldout_loss": [r["heldout_loss"] for r in recs]}


def prompt_ids(run_dir: Path, n: int) -> list:
    """The first n built-in prompts in the run's own tokenizer (the prompts λ1 was measured on)."""
    tok = data.load_tokenizer(run_dir / TOKENIZER_FILE)
    return data.encode_prompts(tok, forward.builtin_prompt_texts()[:n])


def prompt_sensitivity(model, ids, key) -> float:
    """max |Δ logits| at the last position when the first token changes (0: the output ignores the prompt's
    start). Same start-state key for both prompts."""
    ids = np.asarray(ids)
    other = ids.copy()
    other[0] = (other[0] + 1) % model.config.vocab_size
    a = loopjax.logits(model, ids, key=key)[-1]
    b = loopjax.logits(model, other, key=key)[-1]
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def evaluate(run_dir: Path, cfg: TrainConfig, settings: EvalSettings) -> dict:
    """Regime verdicts, λ1 ± se, relative attribution (k = 1) and prompt sensitivity of a run's final model."""
    model = loopjax.load(run_dir)
    ids = prompt_ids(run_dir, cfg.lambda1_prompts)
    key = jax.random.key(cfg.seed)
    verdicts = loopjax.regime(model, ids, key=key, max_steps=settings.regime_steps)
    attr = loopjax.attribution(model, ids, k=1, steps=settings.attribution_steps, key=key, relative=True)
    rows = np.stack([np.asarray(a.exponents)[:, 0] for a in attr])   # (prompts, sublayers): the λ1 direction
    lams = np.array([np.nan if v.lambda1 is None else v.lambda1 for v in verdicts], dtype=np.float64)
    lams = lams[np.isfinite(lams)]                                  # a diverged orbit has no λ1
    kinds = [v.kind for v in verdicts]
    return {"verdicts": {k: kinds.count(k) for k in sorted(set(kinds))},
            "majority": max(sorted(set(kinds)), key=kinds.count),
            "per_prompt": [{"kind": v.kind, "period": v.period, "horizon": v.horizon, "lambda1": v.lambda1,
                            "lambda1_se": v.lambda1_se} for v in verdicts],
            "lambda1": float(np.mean(lams)), "lambda1_sem": float(standard_error(lams)),
            "horizon_max": int(max(v.horizon for v in verdicts)),
            "attribution": {"names": list(attr[0].names), "mean": rows.mean(axis=0).tolist(),
                            "sem": np.atleast_1d(standard_error(rows, axis=0)).tolist()},
            "prompt_sensitivity": prompt_sensitivity(model, ids[0], key)}


def _mean_se(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "se": float(standard_error(values)) if values.size > 1 else None,
            "n": int(values.size)}


def across_seeds(per_seed: dict[int, dict]) -> dict:
    """Mean ± standard error over the seeds of the final numbers, and the verdicts summed."""
    runs = [per_seed[s] for s in sorted(per_seed)]
    counts: dict[str, int] = {}
    for r in runs:
        for kind, n in r["final"]["verdicts"].items():
            counts[kind] = counts.get(kind, 0) + n
    curves = np.array([r["curve"]["mean"] for r in runs])
    return {"heldout_loss": _mean_se([r["heldout_loss"] for r in runs]),
            "beats_unigram": [r["heldout_loss"] < r["unigram_baseline"] for r in runs],
            "lambda1": _mean_se([r["final"]["lambda1"] for r in runs]),
            "prompt_sensitivity": _mean_se([r["final"]["prompt_sensitivity"] for r in runs]),
            "verdicts": counts, "majority_per_seed": [r["final"]["majority"] for r in runs],
            "attribution": {"names": runs[0]["final"]["attribution"]["names"],
                            "mean": np.mean([r["final"]["attribution"]["mean"] for r in runs], axis=0).tolist()},
            "curve": {"steps": runs[0]["curve"]["steps"], "mean": curves.mean(axis=0).tolist(),
                      "band": (np.atleast_1d(standard_error(curves, axis=0)).tolist() if len(runs) > 1
                               else runs[0]["curve"]["sem"]),
                      "band_of": "se over seeds" if len(runs) > 1 else "sem over prompts (one seed)"}}


def compare(a: dict, b: dict) -> dict:
    """Does variant a differ from b beyond seed noise? regime: every seed's majority verdict of a differs from
    every seed's of b (the sets of per-seed majorities are disjoint); λ1: |Δ mean| > 2 se of the difference
    (needs >= 2 seeds for both; None otherwise). A difference between a model that learned and one that did
    not (held-out loss at or above the unigram baseline) is about learning, not injection:
    both_learned_in_every_seed says whether the comparison is a matched one."""
    regime = not set(a["majority_per_seed"]) & set(b["majority_per_seed"])
    learned = all(a["beats_unigram"]) and all(b["beats_unigram"])
    la, lb = a["lambda1"], b["lambda1"]
    if la["se"] is None or lb["se"] is None:
        lam = None
    else:
        lam = bool(abs(la["mean"] - lb["mean"]) > 2 * float(np.hypot(la["se"], lb["se"])))
    return {"regime_differs": regime, "lambda1_difference": la["mean"] - lb["mean"],
            "lambda1_differs_beyond_seed_noise": lam, "both_learned_in_every_seed": learned}


def answer(summary: dict) -> str:
    """One line per variant: verdicts, λ1 ± se over seeds, held-out loss, and the comparison with linear."""
    lines = []
    for v, s in summary["variants"].items():
        a = s["across_seeds"]
        lam, loss = a["lambda1"], a["heldout_loss"]
        se = f" ± {lam['se']:.4f}" if lam["se"] is not None else ""
        verdicts = ", ".join(f"{n} {k}" for k, n in sorted(a["verdicts"].items()))
        learned = sum(a["beats_unigram"])
        if learned < len(a["beats_unigram"]):
            verdicts += f"; learned (held-out < unigram) in {learned} of {len(a['beats_unigram'])} seeds"
        cmp = s.get("vs_linear")
        tail = "" if cmp is None else (f"; vs linear: regime {'differs' if cmp['regime_differs'] else 'same'}, "
                                       f"λ1 {'differs' if cmp['lambda1_differs_beyond_seed_noise'] else 'within seed noise'}")
        lines.append(f"{v}: λ1 = {lam['mean']:+.4f}{se} over {lam['n']} seeds ({verdicts}); held-out loss "
                     f"{loss['mean']:.3f}{tail}")
    return "\n".join(lines)


def variant_config(base: TrainConfig, variant: str, seed: int) -> TrainConfig:
    """The recipe of one (variant, seed): `base` with its arch and seed. adapter_init applies to the variants
    with Huginn's adapter (linear, inject-once, none); add, gate and diagonal have none (their z path starts
    at the identity, resp. Parcae's decay), so for them it stays "reference"."""
    arch = VARIANTS[variant]
    init = base.adapter_init if forward.has_adapter(arch) else "reference"
    return dataclasses.replace(base, arch=arch, seed=seed, adapter_init=init)


def train_all(out_dir: Path, variants, seeds, base: TrainConfig, *, resume, overwrite, progress, stop_requested):
    """Train every (variant, seed) under out_dir/<variant>/seed_<s>/; returns ({variant: {seed: run}}, None) or
    (None, the interrupted summary)."""
    runs: dict[str, dict[int, tuple[Path, dict]]] = {v: {} for v in variants}
    for seed in seeds:
        for v in variants:
            cfg = variant_config(base, v, seed)
            run_dir = out_dir / v / f"seed_{seed}"
            cb = None if progress is None else (lambda step, rec, a=v, s=seed: progress(a, s, step, rec))
            summary = train(cfg, run_dir, resume=resume, overwrite=overwrite, progress=cb,
                            stop_requested=stop_requested)
            if summary.get("status") == "interrupted":
                return None, summary
            runs[v][seed] = (run_dir, summary)
    return runs, None


def cached_evaluation(run_dir: Path, cfg: TrainConfig, settings: EvalSettings) -> dict:
    """`evaluate`, saved as run_dir/evaluation.json with its settings and reused while they match (a retrained
    run starts from an empty folder, so the file never outlives its model)."""
    path = run_dir / EVALUATION_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("settings") == settings.to_json():
            return saved["final"]
    final = evaluate(run_dir, cfg, settings)
    atomic_write_json(path, {"settings": settings.to_json(), "final": final})
    return final


def run_record(run_dir: Path, summary: dict, cfg: TrainConfig, settings: EvalSettings) -> dict:
    metrics = json.loads((run_dir / METRICS_FILE).read_text())
    return {"dir": str(run_dir), "num_params": metrics["settings"]["num_params"],
            "heldout_loss": summary["final_heldout_loss"], "unigram_baseline": summary["unigram_baseline"],
            "train_seconds": summary.get("wall_seconds_this_session"), "curve": lambda1_curve(metrics),
            "final": cached_evaluation(run_dir, cfg, settings)}


def ablation(out_dir, *, variants=DEFAULT_VARIANTS, seeds=(0,), base: TrainConfig | None = None,
             settings: EvalSettings | None = None, resume: bool = False, overwrite: bool = False, progress=None,
             stop_requested=None, draw=None, **overrides) -> dict:
    """Train and evaluate every variant for every seed (see the module docstring), then write
    out_dir/ablation.json (and the figures `draw(result, out_dir)` returns the paths of, e.g.
    loopjax.cli.plot_ablation.plot_all: lambda1_vs_step.png and regimes.png). `base` (default TrainConfig()) plus keyword
    overrides give the shared recipe; arch and seed are set here. A complete run is reused with resume=True.
    progress(variant, seed, step, record) is called after every training step. With `stop_requested` an
    interrupted run returns its {"status": "interrupted", ...} at once (resume=True continues)."""
    out_dir, variants = Path(out_dir), check_variants(variants)
    seeds = tuple(int(s) for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be distinct and non-empty, got {seeds}")
    base = dataclasses.replace(base or TrainConfig(), **overrides)
    settings = settings or EvalSettings()
    for v in variants:  # every recipe checked before the first run writes anything
        for seed in seeds:
            variant_config(base, v, seed)
    runs, interrupted = train_all(out_dir, variants, seeds, base, resume=resume, overwrite=overwrite,
                                  progress=progress, stop_requested=stop_requested)
    if interrupted is not None:
        return interrupted
    result = {"settings": {"base_recipe": base.to_json(), "variants": list(variants), "seeds": list(seeds),
                           "evaluation": settings.to_json(), "reference": REFERENCE, "degenerate": DEGENERATE,
                           "compare": compare.__doc__.split("?", 1)[1].strip()},
              "variants": {}}
    for v in variants:
        per_seed = {s: run_record(d, summ, variant_config(base, v, s), settings)
                    for s, (d, summ) in runs[v].items()}
        result["variants"][v] = {"arch": VARIANTS[v], "num_params": per_seed[seeds[0]]["num_params"],
                                 "per_seed": {str(s): r for s, r in per_seed.items()},
                                 "across_seeds": across_seeds(per_seed)}
    if REFERENCE in result["variants"]:
        ref = result["variants"][REFERENCE]
        for v, s in result["variants"].items():
            s["num_params_minus_linear"] = s["num_params"] - ref["num_params"]
            if v != REFERENCE:
                s["vs_linear"] = compare(s["across_seeds"], ref["across_seeds"])
    result["answer"] = answer(result)
    result["figures"] = [] if draw is None else [Path(p).name for p in draw(result, out_dir)]
    atomic_write_json(out_dir / "ablation.json", result)
    return result
