"""Train small looped transformers (Ouro, Huginn, Huginn without injection, Parcae) with optax, tracking λ1.

Objective: next-token cross-entropy (mean over the batch's seq_len positions; for Ouro by default the mean
over the logits read out after every loop, ``ouro_loss="every-loop"``, see below), plus, when
``lambda1_penalty`` W > 0, ``W * relu(λ1_probe - lambda1_target)`` with the differentiable single-probe
estimate of ``forward.lambda1_probe`` (``loopjax.lambda1``, horizon ``lambda1_horizon`` loop steps on the batch's first
sequence). Optimiser: optax AdamW (b1 0.9, b2 0.95, eps 1e-8, decoupled weight decay on matrices only,
i.e. leaves with ndim == 2) with linear warm-up to ``lr`` over ``warmup`` steps and cosine decay to
``min_lr_ratio * lr`` at ``steps``, after global-norm clipping at ``clip``.

Huginn's (and Parcae's) loop count per step follows Huginn's reference sampler ("log-normal Poisson"): with mean r̄ =
``loops`` and backprop depth s, rate ~ LogNormal(log r̄ - σ²/2, σ = 0.5), r = min(Poisson(rate) + 1,
``max_loops_factor`` * r̄) loops (E[r] ≈ r̄ + 1), of which the last min(r, s) carry gradients; the state
entering them is `stop_gradient`-ed. z_0 is the architecture's random start. Loop count and z_0 are
functions of (seed, step), like the batch.

Ouro's loss. The model's logits are the last loop's (held-out loss, λ1, saved model). Training on the last
loop's logits alone (``ouro_loss="last"``) does not learn at the default size: within the first ~50 steps
it drives the loop map from λ1 ≈ +0.27 (init) to strong contraction (≈ -0.8 at step 20, -1.25 at step 60,
-1.5 at step 250), i.e. onto an input-independent fixed point (Ouro has no input injection), and the loss
settles at the unigram level (no progress in 450 steps at lr 1e-3, 3e-3 or 1e-2). The default,
``"every-loop"``, supervises every loop's read-out with equal weights, the fixed-weight version of Ouro's
own objective (expected loss under its exit distribution); it keeps λ1 ≈ 0..+0.16 and learns.

Step convention: record ``step = s`` holds the objective of the model after s updates on batch s (the
batch update s+1 is computed from), and, at measured steps (s = 0, every ``lambda1_every``, and s =
``steps``), its held-out loss and λ1 over the prompts. The last record (s = steps) evaluates the final
model on batch `steps` without updating.

Output folder::

    train_recipe.json        the TrainConfig
    tokenizer.json           trained on the train split
    metrics.json             {"settings", "unigram_baseline", "records", "status", ...}, rewritten at every
                             measured step (status 'running' until the end)
    config.json, model.safetensors   the final model (HF layout; loopjax.load(DIR))
    checkpoints/step_NNNNNN/ at each measured step: params/ + config.json + loopjax.json + tokenizer.json
                             (loopjax.load reads it)
    train_state/<step>/      the latest measured step's training state for ``resume``: orbax's
                             CheckpointManager (params and the optax state as pytrees, the records as
                             JSON; written atomically, only the latest kept). Runs saved before this
                             layout (checkpoints/step_N/train_state/) do not resume: start them again.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import loopjax
from loopjax.engine.stats import standard_error
from loopjax.engine.validate import check_int
from loopjax.io.files import atomic_write_json
from loopjax.train import data, forward

RECIPE_FILE = "train_recipe.json"
METRICS_FILE = "metrics.json"
TOKENIZER_FILE = "tokenizer.json"
SEED_MAX = 2**63 - 1     # jax.random.key takes a C long
CHECKPOINTS = "checkpoints"
TRAIN_STATE = "train_state"
FORMAT_VERSION = 1
OURO_LOSSES = ("every-loop", "last")
ADAPTER_INITS = ("reference", "identity")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    arch: str = "ouro"                   # ouro | huginn | huginn-noinject | parcae
    # model size (vocab comes from the tokenizer)
    hidden: int = 128
    layers: int = 2                      # Ouro: looped decoder layers; Huginn: recurrent-block layers
    heads: int = 4
    kv_heads: int | None = None          # None = heads (Huginn requires it)
    intermediate: int = 384
    loops: int | None = None             # Ouro total_ut_steps (default 4); Huginn/Parcae mean_recurrence (default 8)
    prelude_layers: int = 1              # Huginn / Parcae only
    coda_layers: int = 1                 # Huginn / Parcae only
    backprop_depth: int = 4              # Huginn / Parcae: loops with gradient (truncated backprop)
    adapter_init: str = "reference"      # Huginn adapter (2H -> H): "reference" (N(0, std^2)) or "identity"
                                         # (its z half starts at I, its e half as the reference: the loop
                                         # starts near the identity and carries its start state)
    ouro_loss: str = "every-loop"        # Ouro: "every-loop" (mean CE of every loop's logits) or "last"
    max_loops_factor: float = 3.0        # Huginn / Parcae: sampled loop count capped at this times the mean
    # data
    corpus: str | None = None            # None = the built-in pydoc topics corpus; else a UTF-8 text file
    heldout_frac: float = 0.05
    vocab_size: int = 2048               # BPE vocabulary trained on the train split
    seq_len: int = 64
    batch: int = 16
    heldout_windows: int = 64            # at most this many seq_len+1 windows of held-out text
    # optimisation
    steps: int = 1000
    lr: float = 3e-3
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    clip: float = 1.0
    seed: int = 0
    # λ1 diagnostic
    lambda1_every: int = 100
    lambda1_prompts: int = 20            # the first N of loopjax's 20 built-in prompts
    lambda1_steps: int = 32              # Benettin steps of each λ1 measurement
    # λ1 regulariser
    lambda1_penalty: float = 0.0         # W; 0 = off
    lambda1_target: float = 0.0          # C in W * relu(λ1 - C)
    lambda1_horizon: int = 8             # loop steps of the differentiable probe

    def __post_init__(self):
        forward.check_arch(self.arch)
        positive = ("hidden", "layers", "heads", "intermediate", "seq_len", "batch", "steps", "lambda1_every",
                    "lambda1_prompts", "lambda1_steps", "lambda1_horizon", "backprop_depth", "vocab_size",
                    "heldout_windows")
        counts = [(n, 1) for n in positive] + [(n, 0) for n in ("prelude_layers", "coda_layers", "warmup")]
        counts += [("loops", 1)] if self.loops is not None else []
        bad = [problem for n, lo in counts if (problem := _int_problem(n, getattr(self, n), lo))]
        if problem := _int_problem("seed", self.seed, 0, SEED_MAX):   # what jax.random.key takes
            bad.append(problem)
        for name, lo in (("lr", None), ("clip", None), ("weight_decay", 0.0), ("lambda1_penalty", 0.0),
                         ("lambda1_target", -math.inf)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or (
                    v <= 0 if lo is None else v < lo):
                bad.append(f"{name}={v!r} (expected a finite number {'> 0' if lo is None else f'>= {lo}'})")
        if self.adapter_init not in ADAPTER_INITS:
            bad.append(f"adapter_init={self.adapter_init!r} (choose {' or '.join(ADAPTER_INITS)})")
        elif self.adapter_init == "identity" and not forward.has_adapter(self.arch):
            bad.append(f"adapter_init='identity' needs an arch with the (2H -> H) adapter, not {self.arch!r}")
        if self.ouro_loss not in OURO_LOSSES:
            bad.append(f"ouro_loss={self.ouro_loss!r} (choose {' or '.join(OURO_LOSSES)})")
        if bad:
            raise ValueError(f"TrainConfig: invalid value(s): {', '.join(bad)}")

    @property
    def n_loops(self) -> int:
        return self.loops if self.loops is not None else (8 if forward.is_recurrent(self.arch) else 4)

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads if self.kv_heads is not None else self.heads

    def to_json(self) -> dict:
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        d = {k: v for k, v in d.items() if k != "format_version"}
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"train recipe has unknown field(s): {', '.join(unknown)}")
        return cls(**d)


def _int_problem(name: str, value, lo: int, hi: int | None = None) -> str | None:
    """`check_int`'s message for a bad integer field, None for a good one (so all are reported at once)."""
    try:
        check_int(name, value, lo, hi=hi)
    except ValueError as e:
        return str(e)
    return None


# ---- pieces ----

def make_optimizer(cfg: TrainConfig):
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.lr, warmup_steps=cfg.warmup,
        decay_steps=max(cfg.steps, cfg.warmup + 1), end_value=cfg.lr * cfg.min_lr_ratio)
    mask = lambda params: jax.tree.map(lambda w: w.ndim == 2, params)  # noqa: E731
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip),
                     optax.adamw(schedule, b1=0.9, b2=0.95, eps=1e-8, weight_decay=cfg.weight_decay, mask=mask))
    return tx, schedule


def optimizer_settings(cfg: TrainConfig) -> dict:
    return {"optimizer": "optax.chain(clip_by_global_norm, adamw)", "adamw": {"b1": 0.9, "b2": 0.95, "eps": 1e-8,
            "weight_decay": cfg.weight_decay, "weight_decay_mask": "leaves with ndim == 2 (kernels, embeddings)"},
            "clip_global_norm": cfg.clip,
            "schedule": {"kind": "optax.warmup_cosine_decay_schedule", "init_value": 0.0, "peak_value": cfg.lr,
                         "warmup_steps": cfg.warmup, "decay_steps": max(cfg.steps, cfg.warmup + 1),
                         "end_value": cfg.lr * cfg.min_lr_ratio}}


def sample_loops(cfg: TrainConfig, step: int) -> int:
    """Huginn's loop count for a training step (log-normal Poisson, see the module docstring)."""
    rng = np.random.default_rng([int(cfg.seed), int(step), 1])
    sigma, mean = 0.5, cfg.n_loops
    rate = rng.lognormal(math.log(mean) - sigma ** 2 / 2, sigma)
    return int(min(rng.poisson(rate) + 1, max(1, int(cfg.max_loops_factor * mean))))


def step_key(cfg: TrainConfig, step: int):
    """Key of a training step's random start state (Huginn) and λ1 probe (regulariser)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), 1_000_003), step)


def eval_key(cfg: TrainConfig):
    """Fixed key of the held-out evaluation's start state (Huginn)."""
    return jax.random.fold_in(jax.random.key(cfg.seed), 2_000_003)


def lambda1_key(cfg: TrainConfig, prompt_index: int):
    return jax.random.fold_in(jax.random.key(cfg.seed), prompt_index)


def build_loss(cfg: TrainConfig, config):
    """loss(params, batch (B, L+1), key, n_loops) -> (objective, aux) for this config."""
    recurrent = forward.is_recurrent(cfg.arch)

    def loss_fn(params, batch, key, n_loops):
        ids, targets = batch[:, :-1], batch[:, 1:]
        if recurrent:
            logits = forward.forward_logits(params, config, ids, n_loops=n_loops, n_grad_loops=cfg.backprop_depth,
                                            key=key)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
            aux = {"ce": ce}
        elif cfg.ouro_loss == "every-loop":
            logits = forward.forward_logits(params, config, ids, every_loop=True)
            per_loop = optax.softmax_cross_entropy_with_integer_labels(
                logits, jnp.broadcast_to(targets, logits.shape[:-1])).mean(axis=(1, 2))
            ce = per_loop.mean()
            aux = {"ce": ce, "ce_last_loop": per_loop[-1]}
        else:
            logits = forward.forward_logits(params, config, ids)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
            aux = {"ce": ce}
        total = ce
        if cfg.lambda1_penalty > 0:
            lam = forward.lambda1_probe(params, config, ids[0], horizon=cfg.lambda1_horizon,
                                        key=jax.random.fold_in(key, 7))
            penalty = cfg.lambda1_penalty * jax.nn.relu(lam - cfg.lambda1_target)
            total = ce + penalty
            aux.update(lambda1_probe=lam, penalty=penalty)
        return total, aux

    return loss_fn


def build_steps(cfg: TrainConfig, config):
    """(train_step, objective, heldout_ce), jitted; cached per (recipe without the seed, config), so runs
    that differ only in seed or are resumed in the same process share the compilations."""
    return _build_steps(dataclasses.replace(cfg, seed=0), config)


@functools.lru_cache(maxsize=8)
def _build_steps(cfg: TrainConfig, config):
    tx, _ = make_optimizer(cfg)
    loss_fn = build_loss(cfg, config)

    @jax.jit
    def train_step(params, opt_state, batch, key, n_loops):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key, n_loops)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}

    @jax.jit
    def objective(params, batch, key, n_loops):
        loss, aux = loss_fn(params, batch, key, n_loops)
        return {"loss": loss, **aux}

    @jax.jit
    def heldout_ce(params, windows, key):
        logits = forward.forward_logits(params, config, windows[:, :-1], key=key)
        return optax.softmax_cross_entropy_with_integer_labels(logits, windows[:, 1:]).mean()

    return train_step, objective, heldout_ce


def _floats(d: dict) -> dict:
    return {k: float(v) for k, v in d.items()}


def _first_difference(a: dict, b: dict) -> str | None:
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            return f"{k}: saved {a.get(k)!r}, now {b.get(k)!r}"
    return None


def _sem(x) -> float:
    """The standard error over prompts (`loopjax.engine.stats.standard_error`); 0.0 for a single prompt."""
    return float(standard_error(x)) if len(x) > 1 else 0.0


# ---- checkpoints ----

def _ckpt_dir(out_dir: Path, step: int) -> Path:
    return out_dir / CHECKPOINTS / f"step_{step:06d}"


def state_manager(out_dir: Path):
    """orbax's CheckpointManager of the training state (out_dir/train_state/<step>/: params and the optax
    state as pytrees, and the records so far as JSON); it keeps only the latest step, written atomically."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager((out_dir / TRAIN_STATE).absolute(), options=options)


def _save_state(manager, params, opt_state, step: int, records: list) -> None:
    import orbax.checkpoint as ocp

    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave({"params": params, "opt_state": opt_state}),
                                               records=ocp.args.JsonSave({"records": records})), force=True)
    manager.wait_until_finished()


def _restore_state(manager, params_like, opt_state_like):
    """(params, opt_state, step, records) of the latest saved step, or None when nothing is saved."""
    import orbax.checkpoint as ocp

    step = manager.latest_step()
    if step is None:
        return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params_like, "opt_state": opt_state_like})
    r = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                      records=ocp.args.JsonRestore()))
    return r["state"]["params"], r["state"]["opt_state"], int(step), r["records"]["records"]


# ---- the run ----

def prepare_data(cfg: TrainConfig, out_dir: Path, reuse_tokenizer: bool):
    """(corpus, tokenizer, its path in out_dir, train tokens, held-out windows). Writes nothing: a newly
    trained tokenizer is saved by `_open_out_dir` once every check passed."""
    corpus = data.load_corpus(cfg.corpus, cfg.heldout_frac)
    tok_path = out_dir / TOKENIZER_FILE
    if reuse_tokenizer and tok_path.is_file():
        tok = data.load_tokenizer(tok_path)
    else:
        tok = data.train_tokenizer(corpus.train_docs, cfg.vocab_size)
    train_tokens = data.encode_docs(tok, corpus.train_docs)
    if train_tokens.size < cfg.seq_len + 1:
        raise ValueError(f"the training corpus has {train_tokens.size} tokens, fewer than seq_len + 1 = "
                         f"{cfg.seq_len + 1}; use a larger corpus or a smaller --seq-len")
    heldout_tokens = data.encode_docs(tok, corpus.heldout_docs)
    windows = data.heldout_windows(heldout_tokens, cfg.seq_len, cfg.heldout_windows)
    return corpus, tok, tok_path, train_tokens, windows


@dataclasses.dataclass
class Run:
    """Everything one training run uses: recipe, data, model config, optimiser, compiled steps, settings."""
    cfg: TrainConfig
    out_dir: Path
    recipe: dict
    tok_path: Path
    train_tokens: np.ndarray
    windows: np.ndarray
    prompt_ids: list
    config: object
    init: loopjax.LoopModel
    schedule: Callable
    steps: tuple
    unigram: float
    settings: dict = dataclasses.field(default_factory=dict)


def _check_out_dir(cfg: TrainConfig, out_dir: Path, resume: bool, overwrite: bool) -> dict | None:
    """Check out_dir (reading only); returns the summary of an already complete run (--resume)."""
    if resume and (out_dir / RECIPE_FILE).is_file():
        diff = _first_difference(json.loads((out_dir / RECIPE_FILE).read_text()), cfg.to_json())
        if diff:
            raise ValueError(f"--resume: {out_dir} was trained with another recipe ({diff})")
        metrics_path = out_dir / METRICS_FILE
        if metrics_path.is_file():
            m = json.loads(metrics_path.read_text())
            if m.get("status") == "complete":
                return m["summary"]
        return None
    for where in (out_dir, *out_dir.parents):
        if where.exists() and not where.is_dir():
            raise FileExistsError(f"cannot use {out_dir}: {where} exists and is not a folder")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} is not empty; pass resume=True (--resume) or overwrite=True "
                              f"(--overwrite)")
    return None


def _open_out_dir(run: "Run", tok, resume: bool, overwrite: bool) -> None:
    """After every check: clear out_dir (overwrite), write the recipe and a newly trained tokenizer."""
    out_dir = run.out_dir
    continuing = resume and (out_dir / RECIPE_FILE).is_file()
    if not continuing and overwrite and out_dir.exists() and any(out_dir.iterdir()):
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / RECIPE_FILE, run.recipe)
    if not run.tok_path.is_file():
        data.save_tokenizer(tok, run.tok_path)


def _build_run(cfg: TrainConfig, out_dir: Path, resume: bool) -> Run:
    corpus, tok, tok_path, train_tokens, windows = prepare_data(cfg, out_dir, reuse_tokenizer=resume)
    vocab = tok.get_vocab_size()
    prompt_ids = data.encode_prompts(tok, forward.builtin_prompt_texts()[:cfg.lambda1_prompts])
    config = forward.make_config(cfg.arch, vocab_size=vocab, hidden=cfg.hidden, layers=cfg.layers,
                                 heads=cfg.heads, kv_heads=cfg.n_kv_heads, intermediate=cfg.intermediate,
                                 loops=cfg.n_loops, prelude_layers=cfg.prelude_layers,
                                 coda_layers=cfg.coda_layers)
    model = initial_model(cfg, config)
    _, schedule = make_optimizer(cfg)
    run = Run(cfg, out_dir, cfg.to_json(), tok_path, train_tokens, windows, prompt_ids, config, model, schedule,
              build_steps(cfg, config), data.unigram_cross_entropy(train_tokens, windows[:, 1:], vocab))
    run.settings = run_settings(run, corpus, tok)
    return run, tok


def initial_model(cfg: TrainConfig, config) -> loopjax.LoopModel:
    """The model training starts from: the architecture's reference init from key(seed), then, with
    adapter_init="identity", the adapter kernel's z rows (the first H of its 2H inputs) set to the identity."""
    model = loopjax.random_model(config, jax.random.key(cfg.seed))
    if cfg.adapter_init == "reference":
        return model
    kernel = model.params["adapter"]["kernel"]
    hidden = kernel.shape[1]
    kernel = kernel.at[:hidden].set(jnp.eye(hidden, dtype=kernel.dtype))
    return model.replace(params={**model.params, "adapter": {**model.params["adapter"], "kernel": kernel}})


def objective_text(cfg: TrainConfig) -> str:
    text = "mean next-token cross-entropy" + (
        "" if forward.is_recurrent(cfg.arch) else
        " of the last loop's logits" if cfg.ouro_loss == "last" else
        ", averaged over the logits read out after every loop (deep supervision; uniform weights in place "
        "of Ouro's learned exit distribution); the model's logits (eval, held-out, saved) are the last loop's")
    if cfg.lambda1_penalty > 0:
        text += (f" + {cfg.lambda1_penalty} * relu(lambda1_probe - {cfg.lambda1_target}) (loopjax.lambda1, one "
                 f"probe, horizon {cfg.lambda1_horizon}, first sequence of the batch)")
    return text


def loops_settings(cfg: TrainConfig) -> dict:
    if not forward.is_recurrent(cfg.arch):
        return {"fixed": cfg.n_loops, "eval_loops": cfg.n_loops}
    return {"sampler": "log-normal Poisson (Huginn reference): rate ~ LogNormal(log(mean) - 0.125, 0.5), "
                       "r = min(Poisson(rate) + 1, cap)", "mean": cfg.n_loops,
            "cap": max(1, int(cfg.max_loops_factor * cfg.n_loops)), "backprop_depth": cfg.backprop_depth,
            "eval_loops": cfg.n_loops, "injection": forward.injects(cfg.arch)}


def run_settings(run: Run, corpus, tok) -> dict:
    """metrics.json["settings"]: the recipe and everything derived from it (data, model, optimiser, λ1)."""
    cfg, windows = run.cfg, run.windows
    return {
        "train_config": run.recipe, "arch": cfg.arch, "model_config": forward.describe_config(run.config),
        "hf_config": forward.hf_config(run.config, cfg.arch), "num_params": run.init.num_params(),
        "corpus": corpus.describe(),
        "tokenizer": {"kind": "byte-level BPE (tokenizers)", "vocab_size": tok.get_vocab_size(),
                      "digest": data.tokenizer_digest(tok), "eos": data.EOS},
        "tokens": {"train": int(run.train_tokens.size), "heldout_windows": int(windows.shape[0]),
                   "heldout_targets": int(windows[:, 1:].size)},
        "objective": objective_text(cfg), **optimizer_settings(cfg), "loops": loops_settings(cfg),
        "batches": "random windows of seq_len+1 tokens, numpy default_rng([seed, step])",
        "heldout": f"first {windows.shape[0]} non-overlapping windows of seq_len+1 tokens of the held-out split",
        "lambda1": {"prompts": len(run.prompt_ids), "prompt_source": "loopjax built-in prompts (first N)",
                    "prompt_lengths": [int(p.size) for p in run.prompt_ids], "steps": cfg.lambda1_steps,
                    "key": "fold_in(key(seed), prompt_index)", "every": cfg.lambda1_every},
        "unigram_baseline_definition": "cross-entropy of the held-out targets under add-one-smoothed train "
                                       "unigram frequencies (nats/token)",
        "software": {"jax": jax.__version__, "optax": optax.__version__, "loopjax": loopjax.__version__,
                     "python": platform.python_version()},
    }


def _resume(run: Run, manager, params, opt_state):
    """(params, opt_state, start step, records) of the latest saved training state (same corpus, tokenizer
    and model size required); checkpoints past it (possibly incomplete) are removed."""
    saved_metrics = run.out_dir / METRICS_FILE
    if saved_metrics.is_file():
        before = json.loads(saved_metrics.read_text())["settings"]
        for what in ("corpus", "tokenizer", "num_params"):
            if before.get(what) != run.settings[what]:
                raise ValueError(f"--resume: the {what} differs from the interrupted run's "
                                 f"({before.get(what)} vs {run.settings[what]})")
    for leftover in run.out_dir.glob(".final.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    restored = _restore_state(manager, params, opt_state)
    start, records = 0, []
    if restored is not None:
        params, opt_state, start, records = restored
    root = run.out_dir / CHECKPOINTS
    for p in sorted(root.glob("step_*")) if root.is_dir() else []:
        if restored is None or p.name > _ckpt_dir(run.out_dir, start).name:
            shutil.rmtree(p)
    return params, opt_state, start, records


def _write_metrics(run: Run, records: list, status: str, summary: dict | None = None) -> None:
    m = {"settings": run.settings, "unigram_baseline": run.unigram, "status": status, "records": records}
    if summary is not None:
        m["summary"] = summary
    atomic_write_json(run.out_dir / METRICS_FILE, m)


def _measure(run: Run, manager, params, opt_state, step: int, rec: dict, records: list) -> None:
    """Held-out loss and λ1 over the prompts at a measured step; the loadable checkpoint of the model, the
    training state (orbax CheckpointManager) and metrics.json."""
    cfg = run.cfg
    m = loopjax.LoopModel(params, run.config)
    rec["heldout_loss"] = float(run.steps[2](params, jnp.asarray(run.windows), eval_key(cfg)))
    lams = [float(loopjax.lambda1(m, ids, steps=cfg.lambda1_steps, key=lambda1_key(cfg, i)))
            for i, ids in enumerate(run.prompt_ids)]
    rec["lambda1"] = {"mean": float(np.mean(lams)), "sem": _sem(lams), "per_prompt": lams}
    ckpt = _ckpt_dir(run.out_dir, step)
    if ckpt.exists():
        shutil.rmtree(ckpt)
    forward.save_orbax_checkpoint(m, ckpt, arch=cfg.arch, tokenizer_json=run.tok_path,
                                  meta={"step": step, "arch": cfg.arch, "train_recipe": run.recipe})
    _save_state(manager, params, opt_state, step, records)
    _write_metrics(run, records, "running")


def _step_inputs(cfg: TrainConfig, train_tokens, step: int):
    """(batch, loop count, key) of a training step: functions of (seed, step) only."""
    batch = jnp.asarray(data.sample_batch(train_tokens, step, batch=cfg.batch, seq_len=cfg.seq_len, seed=cfg.seed))
    n_loops = jnp.asarray(sample_loops(cfg, step) if forward.is_recurrent(cfg.arch) else cfg.n_loops, jnp.int32)
    return batch, n_loops, step_key(cfg, step)


def _loop(run: Run, manager, params, opt_state, start: int, records: list, progress, stop_after,
          stop_requested=None):
    """Steps start..cfg.steps (the last one evaluates without updating); returns (params, the step it stopped
    at with `stop_after` or `stop_requested()`, or None when all steps are done). When `stop_requested()` is
    true after an update, the training state after it is saved (resumable) before stopping."""
    cfg = run.cfg
    train_step, objective, _ = run.steps
    for step in range(start, cfg.steps + 1):
        if stop_after is not None and step >= stop_after:
            return params, step
        if records and records[-1]["step"] == step:
            rec = records[-1]                    # resumed at a checkpoint: its measurements are saved
        else:
            rec = {"step": step}
            records.append(rec)
        batch, n_loops, key = _step_inputs(cfg, run.train_tokens, step)
        if forward.is_recurrent(cfg.arch):
            rec["loops"] = int(n_loops)
        if (step % cfg.lambda1_every == 0 or step == cfg.steps) and "lambda1" not in rec:
            _measure(run, manager, params, opt_state, step, rec, records)
        if step < cfg.steps:
            rec["lr"] = float(run.schedule(step))
            params, opt_state, out = train_step(params, opt_state, batch, key, n_loops)
        else:
            out = objective(params, batch, key, n_loops)
        rec.update(_floats(out))
        if progress is not None:
            progress(step, rec)
        if stop_requested is not None and step < cfg.steps and stop_requested():
            _save_state(manager, params, opt_state, step + 1, records)
            _write_metrics(run, records, "interrupted")
            return params, step + 1
    return params, None


def _finish(run: Run, params, records: list, start: int, resume: bool, wall: float) -> dict:
    """The final model (HF layout, moved into out_dir atomically) and the summary in metrics.json."""
    cfg = run.cfg
    tmp = run.out_dir / f".final.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    forward.save_hf_checkpoint(loopjax.LoopModel(params, run.config), tmp, arch=cfg.arch)
    for name in sorted(os.listdir(tmp)):
        os.replace(tmp / name, run.out_dir / name)
    tmp.rmdir()
    last = records[-1]
    summary = {"arch": cfg.arch, "steps": cfg.steps, "final_loss": last["loss"],
               "final_heldout_loss": last["heldout_loss"], "unigram_baseline": run.unigram,
               "final_lambda1": last["lambda1"]["mean"], "final_lambda1_sem": last["lambda1"]["sem"],
               "num_params": run.init.num_params(), "wall_seconds_this_session": wall,
               "resumed_from_step": start if resume else None, "out_dir": str(run.out_dir)}
    _write_metrics(run, records, "complete", summary)
    return summary


def train(cfg: TrainConfig, out_dir, *, resume: bool = False, overwrite: bool = False,
          progress: Callable[[int, dict], None] | None = None, stop_after: int | None = None,
          stop_requested: Callable[[], bool] | None = None) -> dict:
    """Train one model into out_dir; returns a summary dict (also the tail of metrics.json).

    resume=True continues from the latest complete checkpoint (same TrainConfig required) and ends with
    the same params and records as an uninterrupted run; a finished run is returned as is.
    overwrite=True clears a non-empty out_dir. progress(step, record) is called after every step.
    stop_after=n stops like a kill once n updates are done (nothing more is saved), for tests.
    stop_requested() (the CLI's Ctrl-C flag) is polled after every update: when true, the training state is
    saved and {"status": "interrupted", "step": n, "out_dir": ...} returned; resume=True continues it.
    Everything (recipe, corpus, tokenizer, model config) is checked before out_dir is written.
    """
    out_dir = Path(out_dir)
    finished = _check_out_dir(cfg, out_dir, resume, overwrite)
    if finished is not None:
        return finished
    t_start = time.time()
    run, tok = _build_run(cfg, out_dir, resume)
    _open_out_dir(run, tok, resume, overwrite)
    params, opt_state = run.init.params, make_optimizer(cfg)[0].init(run.init.params)
    with state_manager(out_dir) as manager:
        start, records = 0, []
        if resume:
            params, opt_state, start, records = _resume(run, manager, params, opt_state)
        params, stopped = _loop(run, manager, params, opt_state, start, records, progress, stop_after,
                                stop_requested)
    if stopped is not None:
        return {"status": "interrupted", "step": stopped, "out_dir": str(out_dir)}
    return _finish(run, params, records, start, resume, time.time() - t_start)
