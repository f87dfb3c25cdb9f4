"""Loop-wise readouts: what each loop would predict if decoding stopped there (the logit lens; Ouro's exit
gate per loop), and how the attention pattern changes from loop to loop.

Key convention as for the other front-ends: the start state is drawn from split_key(key)[0] (Huginn; Ouro
starts from its embeddings), so `logit_lens(model, ids, steps=S, key=K).logits[-1]` equals
`loopjax.logits(model, ids[None], steps=S, init_state=z0[None])[0]` with
`z0 = loopjax.init_state(model, ids, key=split_key(K)[0])`.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from loopjax.analysis.frontends import padded_start, split_key
from loopjax.engine.dtypes import compute_dtype
from loopjax.models.base import Architecture
from loopjax.models.loop_model import LoopModel, check_ids, check_steps, context, trajectory
from loopjax.models.loop_model import init_state as init_state_of


def _tolist(x):
    return None if x is None else np.asarray(x, dtype=np.float64).tolist()


@flax.struct.dataclass
class LogitLens:
    """Per-loop readout of one prompt (S loops, L positions, V vocabulary).

    logits (S, L, V): the readout (Ouro: the head; Huginn: coda + head) of the state after loop s.
    entropy (S, L): of softmax(logits), nats. top1 (S, L): argmax ids. agreement (S,): fraction of positions
    whose top-1 equals the last loop's. kl_to_final (S,): mean over positions of KL(p_S ‖ p_s), nats.
    exit_gate (S, L) / exit_pdf (L, S): Ouro's gate sigmoid(gate(z_s)) and exit distribution; None otherwise."""
    logits: jax.Array
    entropy: jax.Array
    top1: jax.Array
    agreement: jax.Array
    kl_to_final: jax.Array
    exit_gate: jax.Array | None = None
    exit_pdf: jax.Array | None = None

    def to_json(self) -> dict:
        """Per-loop summaries (the logits themselves are left out: (S, L, V))."""
        return {"steps": int(self.logits.shape[0]), "entropy": _tolist(self.entropy),
                "entropy_mean": _tolist(self.entropy.mean(-1)), "top1": np.asarray(self.top1).tolist(),
                "agreement": _tolist(self.agreement), "kl_to_final": _tolist(self.kl_to_final),
                "exit_gate": _tolist(self.exit_gate),
                "exit_gate_mean": None if self.exit_gate is None else _tolist(self.exit_gate.mean(-1)),
                "exit_pdf": _tolist(self.exit_pdf)}


@jax.jit
def _lens(model: LoopModel, ctx, states, n):
    """The lens of states (S, Lb, H) whose first n rows are the prompt's (the means run over those)."""
    logits = jax.vmap(lambda z: model.arch.readout(model.params, model.config, ctx, z))(states)
    logp = jax.nn.log_softmax(logits.astype(compute_dtype()), axis=-1)
    p = jnp.exp(logp)
    entropy = -jnp.sum(p * logp, axis=-1)
    top1 = jnp.argmax(logp, axis=-1)
    real = jnp.arange(states.shape[-2]) < n
    agreement = jnp.sum((top1 == top1[-1]) & real, axis=-1) / n
    kl = jnp.sum(jnp.where(real, jnp.sum(p[-1] * (logp[-1] - logp), axis=-1), 0), axis=-1) / n
    return logits.astype(compute_dtype()), entropy, top1, agreement, kl


def has_exit_gate(model: LoopModel) -> bool:
    """Whether the architecture implements an early-exit gate (Ouro)."""
    return type(model.arch).early_exit is not Architecture.early_exit


def _start(model, ids, key, init_state, pad_multiple):
    """(ids to run, z0): the prompt's own, or right-padded to a multiple of `pad_multiple` tokens
    (`loopjax.analysis.frontends.padded_start`: one compiled program per padded length)."""
    if pad_multiple is None:
        return ids, init_state_of(model, ids, key=split_key(key)[0]) if init_state is None else init_state
    ids_pad, z0, _ = padded_start(model, ids, pad_multiple, key=split_key(key)[0], init_state=init_state)
    return ids_pad, z0


@jax.jit
def _early_exit(model: LoopModel, states):
    out = model.arch.early_exit(model.params, model.config, states)
    return jax.nn.sigmoid(out["gate_logits"]), out["exit_pdf"]


def logit_lens(model: LoopModel, tokens, *, steps=None, key=None, init_state=None,
               pad_multiple: int | None = None) -> LogitLens:
    """The logit lens over the loop for one prompt (L,): the logits after each of `steps` loops (default: the
    checkpoint's own), their entropy, top-1 agreement and KL to the last loop; Ouro's exit gate per loop.
    pad_multiple=N runs the prompt right-padded to a multiple of N tokens (causal: the real positions are
    the prompt's own, up to float rounding) and cuts the pads off (on the host)."""
    ids = check_ids(model, tokens, ndim=(1,))
    steps = check_steps(steps, model)
    L = int(ids.shape[0])
    run_ids, z0 = _start(model, ids, key, init_state, pad_multiple)
    states = trajectory(model, run_ids, steps=steps, init_state=z0)[1:]
    lens = _lens(model, context(model, run_ids), states, L)
    gate = pdf = None
    if has_exit_gate(model):
        gate, pdf = _early_exit(model, states)
    if pad_multiple is not None:   # position axes: -1 of entropy/top1/gate, -2 of logits/exit_pdf
        lens, gate, pdf = jax.device_get((lens, gate, pdf))
        lens = (lens[0][:, :L], lens[1][:, :L], lens[2][:, :L], lens[3], lens[4])
        gate, pdf = (None, None) if gate is None else (gate[:, :L], pdf[:L])
    logits, entropy, top1, agreement, kl = lens
    return LogitLens(logits=logits, entropy=entropy, top1=top1, agreement=agreement, kl_to_final=kl,
                     exit_gate=gate, exit_pdf=pdf)


@flax.struct.dataclass
class AttentionSimilarity:
    """Attention patterns of one prompt across loops and their similarity.

    probs (loops, n_layers, heads, L, L): softmax rows of each attention-bearing sublayer (`names`) in loop t.
    matrix (n_layers, heads, loops, loops): similarity of loop s's and loop t's patterns, = 1 - JS divergence
    (base 2, so in [0, 1]) between the two rows, averaged over query positions 1..L-1 (position 0 can only
    attend to itself; with L = 1 every entry is 1). consecutive (n_layers, heads, loops-1): matrix[..., t, t+1]."""
    probs: jax.Array
    matrix: jax.Array
    consecutive: jax.Array
    names: tuple = flax.struct.field(pytree_node=False, default=())
    measure: str = flax.struct.field(pytree_node=False, default="1 - JS divergence (bits), mean over queries 1..L-1")

    def to_json(self) -> dict:
        return {"names": list(self.names), "measure": self.measure, "matrix": _tolist(self.matrix),
                "consecutive": _tolist(self.consecutive),
                "consecutive_mean": _tolist(self.consecutive.mean(axis=(0, 1))),
                "layer_consecutive_mean": _tolist(self.consecutive.mean(axis=1))}


def js_similarity(p, q):
    """1 - Jensen–Shannon divergence in bits between distributions along the last axis (0 log 0 = 0)."""
    m = 0.5 * (p + q)
    kl = lambda a: jnp.sum(jnp.where(a > 0, a * (jnp.log2(jnp.where(a > 0, a, 1)) - jnp.log2(jnp.where(a > 0, m, 1))),
                                     0.0), axis=-1)  # noqa: E731
    return 1.0 - 0.5 * (kl(p) + kl(q))


def _stacked_probs(model: LoopModel, ctx, z, names_out=None):
    """(n, h, L, L) in the architecture's sublayer order (a dict through a jax transform comes back sorted)."""
    per = model.arch.attention_probs(model.params, model.config, ctx, z)
    if names_out is not None:
        names_out.extend(per)
    return jnp.stack(list(per.values()))


@jax.jit
def _attention(model: LoopModel, ctx, states, n):
    """Attention rows and their similarity across loops for states (T, Lb, H) whose first n rows are the
    prompt's: the mean over the query positions 1..n-1 (position 0 alone when n = 1)."""
    probs = jax.vmap(lambda z: _stacked_probs(model, ctx, z))(states)  # (T, n, h, Lb, Lb)
    sim = js_similarity(probs[:, None], probs[None, :])                 # (T, T, n, h, Lb)
    q = jnp.arange(sim.shape[-1])
    later = jnp.sum(jnp.where((q >= 1) & (q < n), sim, 0), axis=-1) / jnp.maximum(n - 1, 1)
    sim = jnp.where(n > 1, later, sim[..., 0])
    return probs, jnp.moveaxis(sim, (0, 1), (-2, -1))


def attention_similarity(model: LoopModel, tokens, *, loops: int = 4, key=None, init_state=None,
                         pad_multiple: int | None = None) -> AttentionSimilarity:
    """Per layer and head, the similarity of the attention patterns of one prompt (L,) between every pair of the
    first `loops` loops (loop t reads the state z_{t-1}; start state as in `logit_lens`). pad_multiple=N
    runs the prompt padded as in `logit_lens` (a real query never attends to a pad: causal) and cuts the
    pads off the attention rows (on the host)."""
    ids = check_ids(model, tokens, ndim=(1,))
    loops = check_steps(loops, model)
    L = int(ids.shape[0])
    run_ids, z0 = _start(model, ids, key, init_state, pad_multiple)
    states = trajectory(model, run_ids, steps=loops, init_state=z0)[:-1]
    ctx, names = context(model, run_ids), []
    jax.eval_shape(lambda z: _stacked_probs(model, ctx, z, names), states[0])  # the names, in order
    probs, matrix = _attention(model, ctx, states, L)
    if pad_multiple is not None:
        probs = jax.device_get(probs)[..., :L, :L]
    idx = jnp.arange(loops - 1)
    return AttentionSimilarity(probs=probs, matrix=matrix, consecutive=matrix[..., idx, idx + 1],
                               names=tuple(names))


__all__ = ["LogitLens", "logit_lens", "has_exit_gate", "AttentionSimilarity", "attention_similarity",
           "js_similarity"]
