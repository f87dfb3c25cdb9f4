"""The numbers and figures of docs/dynamics.md: CLVs, localisation, finite-time λ1, CLV vs Gram–Schmidt
attribution, logit lens and attention similarity for builtin:ouro-tiny and builtin:huginn-tiny on the five
sweep prompts (loopjax.io.prompts.SWEEP_PROMPTS, tokenised as the CLI does; prompt i has key prompt_key(0, i)).

    PYTHONPATH=. python docs/scripts/dynamics_numbers.py     # writes docs/results/dynamics_numbers.json and
                                                             # docs/figures/{clv,lens,attn}-*.png
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

import loopjax
from loopjax.analysis.clv import clv, clv_attribution, localisation
from loopjax.analysis.readouts import attention_similarity, logit_lens
from loopjax.engine.clv import finite_time_statistics
from loopjax.io.prompts import SWEEP_PROMPTS
from loopjax.io.tokenizer import get_tokenizer

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "results" / "dynamics_numbers.json"
FIG = ROOT / "docs" / "figures"
MODELS = ("ouro-tiny", "huginn-tiny")
CFG = dict(k=8, warmup=64, window=64, backward=64, attr_k=4, attr_window=32, benettin_steps=512,
           taus=[4, 16, 64], clv_taus=[4, 16], lens_steps=16, attn_loops=8, seed=0)


def f64(x):
    return np.asarray(x, dtype=np.float64).tolist()


def one_prompt(model, ids, key):
    c = CFG
    r = clv(model, ids, k=c["k"], steps=c["window"], warmup=c["warmup"], backward=c["backward"], key=key)
    loc = localisation(r)
    att = clv_attribution(model, ids, k=c["attr_k"], steps=c["attr_window"], warmup=c["warmup"], key=key)
    bl = loopjax.spectrum(model, ids, k=1, steps=c["benettin_steps"], key=key)
    conv = loopjax.convergence(model, ids, steps=c["warmup"] + c["window"] + c["backward"], key=key)
    lens = logit_lens(model, ids, steps=c["lens_steps"], key=key)
    attn = attention_similarity(model, ids, loops=c["attn_loops"], key=key)
    rel = np.asarray(conv["relative_step"])
    deg = np.degrees(np.asarray(r.angles))
    return {
        "length": int(len(ids)),
        "clv": {**r.to_json(), "angle_deg": {"min": float(deg.min()), "median": float(np.median(deg)),
                                             "max": float(deg.max())},
                "adjacent_pairwise_deg_median": f64(np.degrees(np.median(
                    np.asarray(r.pairwise)[:, np.arange(c["k"] - 1), np.arange(1, c["k"])], axis=0))),
                "pr_positions_mean": f64(loc["positions"].mean(0)),
                "pr_coordinates_mean": f64(loc["coordinates"].mean(0)),
                "weights_v1": f64(loc["weights"][0]), "weights": f64(loc["weights"][:3])},
        "relative_step": {"at_window_start": float(rel[c["warmup"] - 1]),
                          "at_window_end": float(rel[c["warmup"] + c["window"] - 1]), "last": float(rel[-1])},
        "attribution": att.to_json(),
        "benettin_lambda1": float(bl.exponents[0]),
        "benettin_log_growth": f64(bl.log_growth[:, 0]),
        "finite_time_benettin": finite_time_statistics(bl.log_growth, c["taus"]).to_json(),
        "finite_time_clv": [finite_time_statistics(r.log_growth, c["clv_taus"], column=i).to_json() for i in (0, 1)],
        "finite_time_gs": [finite_time_statistics(r.gs_log_growth, c["clv_taus"], column=i).to_json() for i in (0, 1)],
        "logit_lens": lens.to_json(),
        "attention": attn.to_json(),
    }


def figures(name, res, pieces):
    from loopjax.cli import plot_dynamics as pd

    ps = res["prompts"]
    longest = int(np.argmax([p["length"] for p in ps]))
    pd.plot_clv_angles(FIG / f"clv-{name}-angles.png", [p["clv"]["angles"] for p in ps], name,
                       split=[p["clv"]["split"] for p in ps])
    pd.plot_localisation(FIG / f"clv-{name}-localisation.png", np.asarray(ps[longest]["clv"]["weights"]),
                         f"{name} (prompt {longest})", tokens=pieces[longest])
    pd.plot_finite_time(FIG / f"clv-{name}-finite-time.png", [np.asarray(p["benettin_log_growth"]) for p in ps],
                        CFG["taus"], name, label=f"Benettin, {CFG['benettin_steps']} loops")
    lens = [p["logit_lens"] for p in ps]
    gate = [x["exit_gate_mean"] for x in lens] if lens[0]["exit_gate_mean"] is not None else None
    pd.plot_logit_lens(FIG / f"lens-{name}.png", [x["entropy_mean"] for x in lens], [x["agreement"] for x in lens],
                       name, exit_gate=gate, trained_steps=res["default_steps"])
    a = ps[longest]["attention"]
    pd.plot_attention_similarity(FIG / f"attn-{name}.png", np.asarray(a["matrix"]), a["names"],
                                 f"{name} (prompt {longest})", measure=a["measure"])


def main():
    out = {"config": CFG, "prompts": [p.text for p in SWEEP_PROMPTS], "models": {}}
    for name in MODELS:
        t0 = time.time()
        model = loopjax.load(f"builtin:{name}")
        tok = get_tokenizer(loopjax.source_dir(f"builtin:{name}"), model.config.vocab_size)
        ids = [np.asarray(tok.encode(p.text), np.int32) for p in SWEEP_PROMPTS]
        res = {"default_steps": int(model.config.default_steps), "prompts": []}
        for i, x in enumerate(ids):
            res["prompts"].append(one_prompt(model, x, loopjax.prompt_key(CFG["seed"], i)))
            print(f"{name} prompt {i} ({len(x)} tokens) {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
        out["models"][name] = res
        pieces = [[tok.tok.decode([int(t)]) if hasattr(tok, "tok") else str(int(t)) for t in x] for x in ids]
        figures(name, res, pieces)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out))
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
