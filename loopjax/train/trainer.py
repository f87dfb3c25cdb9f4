"""Train small looped transformers (Ouro, Huginn, Huginn without injection, Parcae) with optax, tracking λ1.

Objective: next-token cross-entropy (mean over the batch's seq_len positions; for Ouro by default the mean
over the logits read out after every loop, ``ouro_loss="every-loop"``, see below), plus, when
``lambda1_penalty`` W > 0, ``W * relu(λ1_probe - lambda1_target)`` with the differentiable single-probe
estimate of ``forward.lambda1_probe`` (horizon ``lambda1_horizon`` loop steps on the batch's first
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
                             (loopjax.load reads it); the latest also has train_state/ (params, optimiser
                             state, step, records; orbax, moved into place atomically) for ``resume``.
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
from loopjax.train import data, forward

RECIPE_FILE = "train_recipe.json"
METRICS_FILE = "metrics.json"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINTS = "checkpoints"
TRAIN_STATE = "train_state"
FORMAT_VERSION = 1
OURO_LOSSES = ("every-loop", "last")


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
        bad = [f"{n}={getattr(self, n)}" for n in positive if not getattr(self, n) >= 1]
        bad += [f"{n}={getattr(self, n)}" for n in ("prelude_layers", "coda_layers", "warmup")
                if not getattr(self, n) >= 0]
        if self.loops is not None and self.loops < 1:
            bad.append(f"loops={self.loops}")
        if self.ouro_loss not in OURO_LOSSES:
            bad.append(f"ouro_loss={self.ouro_loss!r} (choose {' or '.join(OURO_LOSSES)})")
        if self.lambda1_penalty < 0:
            bad.append(f"lambda1_penalty={self.lambda1_penalty}")
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
    inject = forward.injects(cfg.arch)
    recurrent = forward.is_recurrent(cfg.arch)

    def loss_fn(params, batch, key, n_loops):
        ids, targets = batch[:, :-1], batch[:, 1:]
        if recurrent:
            logits = forward.forward_logits(params, config, ids, inject=inject, n_loops=n_loops,
                                            n_grad_loops=cfg.backprop_depth, key=key)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
            aux = {"ce": ce}
        elif cfg.ouro_loss == "every-loop":
            logits = forward.forward_logits(params, config, ids, inject=inject, every_loop=True)
            per_loop = optax.softmax_cross_entropy_with_integer_labels(
                logits, jnp.broadcast_to(targets, logits.shape[:-1])).mean(axis=(1, 2))
            ce = per_loop.mean()
            aux = {"ce": ce, "ce_last_loop": per_loop[-1]}
        else:
            logits = forward.forward_logits(params, config, ids, inject=inject)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
            aux = {"ce": ce}
        total = ce
        if cfg.lambda1_penalty > 0:
            lam = forward.lambda1_probe(params, config, ids[0], inject=inject, horizon=cfg.lambda1_horizon,
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
    inject = forward.injects(cfg.arch)

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
        logits = forward.forward_logits(params, config, windows[:, :-1], inject=inject, key=key)
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
    x = np.asarray(x, dtype=np.float64)
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


# ---- checkpoints ----

def _ckpt_dir(out_dir: Path, step: int) -> Path:
    return out_dir / CHECKPOINTS / f"step_{step:06d}"


def _latest_state(out_dir: Path) -> Path | None:
    root = out_dir / CHECKPOINTS
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step_*") if (p / TRAIN_STATE / "records.json").is_file())
    return done[-1] if done else None


def _save_state(ckpt: Path, params, opt_state, step: int, records: list) -> None:
    import orbax.checkpoint as ocp

    final = ckpt / TRAIN_STATE
    tmp = ckpt / f".{TRAIN_STATE}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    leaves = jax.tree.leaves(opt_state)
    state = {"params": params, "opt_state": {f"{i:04d}": leaf for i, leaf in enumerate(leaves)},
             "step": np.asarray(step, np.int64)}
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp / "state", state)
    (tmp / "records.json").write_text(json.dumps(records))
    os.replace(tmp, final)


def _restore_state(ckpt: Path, params_like, opt_state_like):
    import orbax.checkpoint as ocp

    treedef = jax.tree.structure(opt_state_like)
    leaves = jax.tree.leaves(opt_state_like)
    target = {"params": params_like, "opt_state": {f"{i:04d}": leaf for i, leaf in enumerate(leaves)},
              "step": np.asarray(0, np.int64)}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    with ocp.StandardCheckpointer() as ckptr:
        state = ckptr.restore(ckpt / TRAIN_STATE / "state", abstract)
    opt_state = jax.tree.unflatten(treedef, [state["opt_state"][f"{i:04d}"] for i in range(len(leaves))])
    records = json.loads((ckpt / TRAIN_STATE / "records.json").read_text())
    return state["params"], opt_state, int(state["step"]), records


# ---- the run ----

def prepare_data(cfg: TrainConfig, out_dir: Path, reuse_tokenizer: bool):
    corpus = data.load_corpus(cfg.corpus, cfg.heldout_frac)
    tok_path = out_dir / TOKENIZER_FILE
    if reuse_tokenizer and tok_path.is_file():
        tok = data.load_tokenizer(tok_path)
    else:
        tok = data.train_tokenizer(corpus.train_docs, cfg.vocab_size)
        data.save_tokenizer(tok, tok_path)
    train_tokens = data.encode_docs(tok, corpus.train_docs)
    heldout_tokens = data.encode_docs(tok, corpus.heldout_docs)
    windows = data.heldout_windows(heldout_tokens, cfg.seq_len, cfg.heldout_windows)
    return corpus, tok, tok_path, train_tokens, windows


def train(cfg: TrainConfig, out_dir, *, resume: bool = False, overwrite: bool = False,
          progress: Callable[[int, dict], None] | None = None, stop_after: int | None = None) -> dict:
    """Train one model into out_dir; returns a summary dict (also the tail of metrics.json).

    resume=True continues from the latest complete checkpoint (same TrainConfig required) and ends with
    the same params and records as an uninterrupted run; a finished run is returned as is.
    overwrite=True clears a non-empty out_dir. progress(step, record) is called after every step.
    stop_after=n stops like a kill once n updates are done (nothing more is saved), for tests.
    """
    out_dir = Path(out_dir)
    recipe = cfg.to_json()
    if resume and (out_dir / RECIPE_FILE).is_file():
        saved = json.loads((out_dir / RECIPE_FILE).read_text())
        diff = _first_difference(saved, recipe)
        if diff:
            raise ValueError(f"--resume: {out_dir} was trained with another recipe ({diff})")
        metrics_path = out_dir / METRICS_FILE
        if metrics_path.is_file():
            m = json.loads(metrics_path.read_text())
            if m.get("status") == "complete":
                return m["summary"]
    elif out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir} is not empty; pass resume=True (--resume) or overwrite=True "
                                  f"(--overwrite)")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data.write_json_atomic(out_dir / RECIPE_FILE, recipe)

    t_start = time.time()
    corpus, tok, tok_path, train_tokens, windows = prepare_data(cfg, out_dir, reuse_tokenizer=resume)
    vocab = tok.get_vocab_size()
    prompt_ids = data.encode_prompts(tok, forward.builtin_prompt_texts()[:cfg.lambda1_prompts])
    config = forward.make_config(cfg.arch, vocab_size=vocab, hidden=cfg.hidden, layers=cfg.layers,
                                 heads=cfg.heads, kv_heads=cfg.n_kv_heads, intermediate=cfg.intermediate,
                                 loops=cfg.n_loops, prelude_layers=cfg.prelude_layers,
                                 coda_layers=cfg.coda_layers)
    model = loopjax.random_model(config, jax.random.key(cfg.seed))
    tx, schedule = make_optimizer(cfg)
    params, opt_state = model.params, tx.init(model.params)
    train_step, objective, heldout_ce = build_steps(cfg, config)
    windows_j = jnp.asarray(windows)
    unigram = data.unigram_cross_entropy(train_tokens, windows[:, 1:], vocab)

    settings = {
        "train_config": recipe, "arch": cfg.arch, "model_config": forward.describe_config(config),
        "hf_config": forward.hf_config(config, cfg.arch), "num_params": model.num_params(),
        "corpus": corpus.describe(),
        "tokenizer": {"kind": "byte-level BPE (tokenizers)", "vocab_size": vocab,
                      "digest": data.tokenizer_digest(tok), "eos": data.EOS},
        "tokens": {"train": int(train_tokens.size), "heldout_windows": int(windows.shape[0]),
                   "heldout_targets": int(windows[:, 1:].size)},
        "objective": ("mean next-token cross-entropy" + (
            "" if forward.is_recurrent(cfg.arch) else
            " of the last loop's logits" if cfg.ouro_loss == "last" else
            ", averaged over the logits read out after every loop (deep supervision; uniform weights in place "
            "of Ouro's learned exit distribution); the model's logits (eval, held-out, saved) are the last loop's")) + (
            f" + {cfg.lambda1_penalty} * relu(lambda1_probe - {cfg.lambda1_target}) (single-probe jvp, "
            f"horizon {cfg.lambda1_horizon}, first sequence of the batch)" if cfg.lambda1_penalty > 0 else ""),
        **optimizer_settings(cfg),
        "loops": ({"sampler": "log-normal Poisson (Huginn reference): rate ~ LogNormal(log(mean) - 0.125, 0.5), "
                              "r = min(Poisson(rate) + 1, cap)", "mean": cfg.n_loops,
                   "cap": max(1, int(cfg.max_loops_factor * cfg.n_loops)),
                   "backprop_depth": cfg.backprop_depth, "eval_loops": cfg.n_loops,
                   "injection": forward.injects(cfg.arch)}
                  if forward.is_recurrent(cfg.arch) else {"fixed": cfg.n_loops, "eval_loops": cfg.n_loops}),
        "batches": "random windows of seq_len+1 tokens, numpy default_rng([seed, step])",
        "heldout": f"first {windows.shape[0]} non-overlapping windows of seq_len+1 tokens of the held-out split",
        "lambda1": {"prompts": len(prompt_ids), "prompt_source": "loopjax built-in prompts (first N)",
                    "prompt_lengths": [int(p.size) for p in prompt_ids], "steps": cfg.lambda1_steps,
                    "key": "fold_in(key(seed), prompt_index)", "every": cfg.lambda1_every},
        "unigram_baseline_definition": "cross-entropy of the held-out targets under add-one-smoothed train "
                                       "unigram frequencies (nats/token)",
        "software": {"jax": jax.__version__, "optax": optax.__version__, "loopjax": loopjax.__version__,
                     "python": platform.python_version()},
    }

    start, records = 0, []
    if resume:
        saved_metrics = out_dir / METRICS_FILE
        if saved_metrics.is_file():
            before = json.loads(saved_metrics.read_text())["settings"]
            for what in ("corpus", "tokenizer", "num_params"):
                if before.get(what) != settings[what]:
                    raise ValueError(f"--resume: the {what} differs from the interrupted run's "
                                     f"({before.get(what)} vs {settings[what]})")
        for leftover in out_dir.glob(".final.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        latest = _latest_state(out_dir)
        if latest is not None:
            params, opt_state, start, records = _restore_state(latest, params, opt_state)
        # drop checkpoints past the resumed one (possibly incomplete)
        for p in sorted((out_dir / CHECKPOINTS).glob("step_*")) if (out_dir / CHECKPOINTS).is_dir() else []:
            if latest is None or p.name > latest.name:
                shutil.rmtree(p)

    def write_metrics(status: str, summary: dict | None = None):
        m = {"settings": settings, "unigram_baseline": unigram, "status": status, "records": records}
        if summary is not None:
            m["summary"] = summary
        data.write_json_atomic(out_dir / METRICS_FILE, m)

    def measure(step: int, rec: dict):
        m = loopjax.LoopModel(params, config)
        rec["heldout_loss"] = float(heldout_ce(params, windows_j, eval_key(cfg)))
        lams = [float(loopjax.lambda1(m, ids, steps=cfg.lambda1_steps, key=lambda1_key(cfg, i)))
                for i, ids in enumerate(prompt_ids)]
        rec["lambda1"] = {"mean": float(np.mean(lams)), "sem": _sem(lams), "per_prompt": lams}
        ckpt = _ckpt_dir(out_dir, step)
        if ckpt.exists():
            shutil.rmtree(ckpt)
        forward.save_orbax_checkpoint(m, ckpt, arch=cfg.arch, tokenizer_json=tok_path,
                                      meta={"step": step, "arch": cfg.arch, "train_recipe": recipe})
        _save_state(ckpt, params, opt_state, step, records)
        for older in (out_dir / CHECKPOINTS).glob("step_*"):   # resume needs only the latest train state
            if older.name < ckpt.name:
                shutil.rmtree(older / TRAIN_STATE, ignore_errors=True)
        write_metrics("running")

    for step in range(start, cfg.steps + 1):
        if stop_after is not None and step >= stop_after:
            return {"status": "interrupted", "step": step}
        if records and records[-1]["step"] == step:
            rec = records[-1]                    # resumed at a checkpoint: its measurements are saved
        else:
            rec = {"step": step}
            records.append(rec)
        batch = jnp.asarray(data.sample_batch(train_tokens, step, batch=cfg.batch, seq_len=cfg.seq_len,
                                              seed=cfg.seed))
        n_loops = jnp.asarray(sample_loops(cfg, step) if forward.is_recurrent(cfg.arch) else cfg.n_loops, jnp.int32)
        key = step_key(cfg, step)
        if forward.is_recurrent(cfg.arch):
            rec["loops"] = int(n_loops)
        measured = step % cfg.lambda1_every == 0 or step == cfg.steps
        if measured and "lambda1" not in rec:
            measure(step, rec)
        if step < cfg.steps:
            rec["lr"] = float(schedule(step))
            params, opt_state, out = train_step(params, opt_state, batch, key, n_loops)
        else:
            out = objective(params, batch, key, n_loops)
        rec.update(_floats(out))
        if progress is not None:
            progress(step, rec)

    wall = time.time() - t_start
    final = loopjax.LoopModel(params, config)
    tmp = out_dir / f".final.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    forward.save_hf_checkpoint(final, tmp, arch=cfg.arch)
    for name in sorted(os.listdir(tmp)):
        os.replace(tmp / name, out_dir / name)
    tmp.rmdir()
    last = records[-1]
    summary = {"arch": cfg.arch, "steps": cfg.steps, "final_loss": last["loss"],
               "final_heldout_loss": last["heldout_loss"], "unigram_baseline": unigram,
               "final_lambda1": last["lambda1"]["mean"], "final_lambda1_sem": last["lambda1"]["sem"],
               "num_params": model.num_params(), "wall_seconds_this_session": wall,
               "resumed_from_step": start if resume else None, "out_dir": str(out_dir)}
    write_metrics("complete", summary)
    return summary
