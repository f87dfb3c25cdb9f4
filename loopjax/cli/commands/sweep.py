"""`loopjax sweep`: λ1 (one probe) across a list of checkpoints, the same per-prompt keys for each."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import loopjax
from loopjax.cli import fingerprint as fp
from loopjax.cli.budget import check_budget
from loopjax.cli.commands.base import (PAPER, PRESETS, Command, Common, Context, Transient, check_lengths, load_model,
                                       open_run, or_default, prompt_units, read_prompts, recorded_settings, say)
from loopjax.cli.parser import add_common, add_transient
from loopjax.cli.runner import header, prompt_entries
from loopjax.cli.runstore import RunStore, read_json
from loopjax.cli.session import CLIError, check_source_exists, model_name, parse_checkpoint_spec, software_versions
from loopjax.io.prompts import SWEEP_PROMPTS, Prompt


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepSettings(Transient):
    """What a sweep records besides the common provenance: the checkpoints and the λ1 run."""
    checkpoints: list
    steps: int
    k: int = 1

    @classmethod
    def from_args(cls, args, checkpoints, *, steps=None) -> "SweepSettings":
        return cls(checkpoints=[[s, r] for s, r in checkpoints],
                   steps=or_default(steps if steps is not None else args.steps, PAPER["sweep"]["steps"]),
                   **dataclasses.asdict(Transient.from_args(args)))


def sweep_list(args) -> list[tuple[str, str | None]]:
    specs = list(getattr(args, "checkpoints", None) or [])
    if getattr(args, "preset", None):
        specs = PRESETS[args.preset] + specs
    return [parse_checkpoint_spec(s) for s in specs]


def training_step(source: str, revision: str | None) -> int | None:
    """The training step a checkpoint's name or revision states (``step-00006144-...``), else None."""
    m = re.search(r"step[-_]?0*(\d+)", f"{source} {revision or ''}")
    return int(m.group(1)) if m else None


def run_sweep(common: Common, ctx: Context, settings: SweepSettings, prompts: list[Prompt], out: Path, *,
              title: str) -> dict:
    """λ1 (one probe) for every checkpoint and prompt; prompt i uses prompt_key(seed, i) for every checkpoint."""
    checkpoints = [tuple(c) for c in settings.checkpoints]
    if not checkpoints:
        raise CLIError("sweep needs --checkpoints A B@REV ... or --preset NAME")
    for src, _rev in checkpoints:
        check_source_exists(src)
    recorded = {**recorded_settings(common, "sweep", prompts, prompt_set="paper-5", digest=True),
                **dataclasses.asdict(settings)}
    runner = open_run(common, ctx, out / "sweep", "sweep", recorded, sweep_fingerprint(checkpoints, prompts))
    keys = [[f"c{c:02d}-p{i:03d}" for i in range(len(prompts))] for c in range(len(checkpoints))]
    with runner:
        runner.begin([k for row in keys for k in row])
        return sweep_results(common, settings, prompts, checkpoints, runner, keys, title)


def checkpoint_fingerprints(src: str, rev: str | None) -> tuple[str, str]:
    """(weights, tokenizer) fingerprints of one checkpoint from its files, without loading its weights
    (its config.json is read, and so checked, for the vocabulary size of the fallback tokenizer)."""
    from loopjax.io.tokenizer import get_tokenizer
    from loopjax.models import config_from_hf

    where = loopjax.source_dir(src, rev)
    if where is None:  # a random built-in: a function of its name
        return fp.weights_fingerprint(None, src), f"name:{src}"
    try:
        vocab = config_from_hf(read_json(where / "config.json")).vocab_size
        tok = get_tokenizer(where, vocab)
        return fp.weights_fingerprint(where, src), fp.tokenizer_fingerprint(where, tok)
    except (OSError, ValueError) as e:
        raise CLIError(f"cannot read checkpoint {src!r}{'@' + rev if rev else ''}: {e}") from None


def sweep_fingerprint(checkpoints: list, prompts: list[Prompt]) -> dict:
    """What a sweep records and --resume compares: the weights and tokenizer of every checkpoint (in order)
    and the prompts (texts and registers; their token ids are checked per unit when a checkpoint loads)."""
    each = [checkpoint_fingerprints(src, rev) for src, rev in checkpoints]
    return {"weights": fp.prompts_fingerprint([w for w, _ in each]),
            "tokenizer": fp.prompts_fingerprint([t for _, t in each]),
            "prompts": fp.prompts_fingerprint([[p.text, p.register] for p in prompts])}


def sweep_results(common: Common, settings: SweepSettings, prompts, checkpoints, runner, keys, title: str) -> dict:
    """λ1 of every (checkpoint, prompt) computed (or reused) into the begun `runner`, summarized, drawn, finished."""
    lam, per_ckpt = [], []
    for c, (src, rev) in enumerate(checkpoints):
        records = _checkpoint_units(common, runner, settings, keys[c], prompts, (src, rev),
                                    f"{c + 1}/{len(checkpoints)}")
        lam.append([rec["result"]["lambda1"] for rec in records])
        info = records[0]["result"].get("model") or {}
        per_ckpt.append({"source": src, "revision": rev, "label": model_name(src, rev), "model": info,
                         "training_step": training_step(src, rev), "resolved_commit": info.get("resolved_commit"),
                         "prompts": prompt_entries(records)})
    summary = loopjax.summarize(lam, kind="sweep")
    res = header("sweep", None, runner.store, software_versions())
    res.update(title=title, checkpoints=per_ckpt, lambda1=lam, summary=summary.to_json())
    from loopjax.cli import plots

    f = plots.plot_sweep(runner.store.root / "sweep_lambda1.png", [p["label"] for p in per_ckpt], np.asarray(lam),
                         title, [p["training_step"] for p in per_ckpt])
    res["figures"] = [f.name]
    return runner.finish(res)


def _checkpoint_units(common: Common, runner, settings: SweepSettings, keys, prompts, ckpt, where: str):
    """The records of one checkpoint: all saved ones on --resume (no loading), else computed (and saved)."""
    src, rev = ckpt
    records = _saved_sweep_units(runner.store, keys, prompts, [src, rev]) if common.resume else None
    if records is not None:  # load the checkpoint only when some unit is missing
        return records
    loaded = load_model(src, rev, common.dtype)
    tokens = loaded.tokenize(prompts, common.token_ids)
    check_lengths(loaded, prompts, tokens, common.allow_long_prompts)
    check_budget("sweep", loaded.model, tokens, steps=settings.steps)
    units = prompt_units(prompts, tokens, key=lambda i: keys[i], checkpoint=[src, rev])
    engine = {"warmup": settings.warmup, "renorm_every": settings.renorm_every}

    def compute(unit, inputs):
        v = loopjax.lambda1(loaded.model, jnp.asarray(inputs["token_ids"], jnp.int32), steps=settings.steps,
                            key=loopjax.prompt_key(common.seed, inputs["index"]), **engine)
        return {"lambda1": float(v), "model": loaded.info}

    return runner.units(units, compute, desc=f"sweep {where} {loaded.name}")


def _saved_sweep_units(store: RunStore, keys: list[str], prompts: list[Prompt], ckpt: list) -> list[dict] | None:
    """All saved units of one checkpoint (settings and prompt texts checked), or None if any is missing.
    The token ids are checked only when the checkpoint is loaded (i.e. when some unit is missing)."""
    if not all(store.unit_path(k).is_file() for k in keys):
        return None
    out = []
    for i, (k, p) in enumerate(zip(keys, prompts)):
        saved = read_json(store.unit_path(k)).get("inputs", {})
        want = {"index": i, "text": p.text, "register": p.register, "checkpoint": ckpt,
                "token_ids": saved.get("token_ids")}
        out.append(store.load_unit(k, want))
    return out


def add_options(p) -> None:
    p.add_argument("--checkpoints", nargs="+", default=None, metavar="CKPT",
                   help="checkpoint dirs or hub ids, optionally ORG/NAME@REVISION")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a named checkpoint list (prepended to --checkpoints)")
    add_common(p, model=False, steps_default=PAPER["sweep"]["steps"])
    add_transient(p, probe_seeds=False)


def run(args, ctx) -> int:
    common = Common.from_args(args)
    prompts = read_prompts(common, default=SWEEP_PROMPTS)
    out = Path(common.out) if common.out else Path("results") / (args.preset or "sweep")
    r = run_sweep(common, ctx, SweepSettings.from_args(args, sweep_list(args)), prompts, out,
                  title=args.preset or "checkpoints")["summary"]
    say(common.quiet, f"sweep: std across checkpoints {r['std_across_checkpoints']:.4f} vs mean per-prompt std "
                      f"{r['mean_per_prompt_std']:.4f} -> {out / 'sweep' / 'results.json'}")
    return 0


COMMAND = Command(
    "sweep", help="lambda_1 (one probe) across a list of checkpoints",
    description="Prompts: the paper's five quoted prompts (two declarative, one narrative, two instructional; "
                "Fig. 3) unless --prompts is given. The x axis of the figure is the training step read from the "
                "checkpoint names. lambda_1 (single probe) per prompt for each checkpoint; the same per-prompt "
                "keys for every checkpoint.\nPresets:\n  huginn-pretraining: "
                + ", ".join(PRESETS["huginn-pretraining"]),
    add_options=add_options, run=run)
