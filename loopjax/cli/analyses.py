"""The per-prompt analyses of the CLI, each a short declaration: which library front-end computes one
prompt (always called with key = loopjax.prompt_key(seed, i)), how its result is stored and read back,
which summary (loopjax.summarize) and which figures. Each takes its command's typed options
(`loopjax.cli.commands.<command>`), read as attributes."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np

import loopjax
from loopjax.analysis import tokens as positions
from loopjax.analysis.readouts import attention_similarity, logit_lens
from loopjax.engine.complete import CompleteSpectrum
from loopjax.engine.lyapunov import LyapunovResult, benettin, benettin_continue, concatenate
from loopjax.engine.regime import Regime


@dataclasses.dataclass(frozen=True)
class Analysis:
    name: str                                   # results folder DIR/<name>/ and the "analysis" field
    kind: str                                   # loopjax.summarize kind
    compute: Callable[..., Any]                 # (model, ids, key, options, unit, core) -> library result
    to_record: Callable[[Any], dict]            # library result -> JSON of one prompt
    from_record: Callable[[dict], Any]          # and back (what summarize takes)
    figures: Callable[[Path, list, Any, str], list[Path]]   # (folder, results, summary, title) -> PNGs
    summary_extras: Callable[[list[dict]], dict] = lambda records: {}   # records -> summarize(**extras)
    batch: Callable[..., list] | None = None    # (model, ids list, key list, options) -> core results, one program


# ---- spectrum ------------------------------------------------------------------------------------------

def _engine(o) -> dict:
    """The engine options of a command's typed options (`warmup`, `renorm_every`)."""
    return {"warmup": o.warmup or 0, "renorm_every": o.renorm_every or 1}


def _spectrum_batch(model, ids_list, keys, o):
    return loopjax.spectrum(model, ids_list, k=o.k, steps=o.steps, key=keys, pad_multiple=o.pad_multiple,
                            **_engine(o))


def _spectrum(model, ids, key, o, unit, core=None):
    """The spectrum of one prompt, its orbit type and (with --probe-seeds N) N re-runs with other probes."""
    every = o.checkpoint_every
    if core is not None:
        result = core
    elif o.devices:
        result = _spectrum_on_mesh(model, ids, key, o)
    elif not every or every >= o.steps:
        result = loopjax.spectrum(model, ids, k=o.k, steps=o.steps, key=key, **_engine(o))
    else:
        result = _spectrum_in_segments(model, ids, key, o, unit)
    out = {"result": result, "orbit": loopjax.orbit(model, ids, steps=o.orbit_steps, key=key,
                                                       pad_multiple=o.pad_multiple)}
    if o.probe_seeds:
        out["probe_seeds"] = loopjax.spectrum_probe_seeds(model, ids, k=o.k, steps=o.steps, key=key,
                                                          n_seeds=o.probe_seeds, **_engine(o))
    if o.perturbation and unit.index == 0:
        out["lambda1_perturbation"] = loopjax.lambda1_finite(model, ids, steps=o.steps, key=key)
    return out


def _spectrum_record(out) -> dict:
    rec = {**out["result"].to_json(), "orbit": out["orbit"].to_json()}
    if "probe_seeds" in out:
        rec["probe_seed_exponents"] = [np.asarray(r.exponents, dtype=np.float64) for r in out["probe_seeds"]]
    if "lambda1_perturbation" in out:
        rec["lambda1_perturbation"] = out["lambda1_perturbation"].to_json()
    return rec


def _spectrum_extras(records) -> dict:
    extras = {"orbits": [r["orbit"] for r in records]}
    if "probe_seed_exponents" in records[0]:
        extras["probe_seed_results"] = [r["probe_seed_exponents"] for r in records]
    return extras


def _spectrum_on_mesh(model, ids, key, o):
    """The probe axis sharded over the first `devices` devices; k is padded to a multiple of the device
    count with extra orthonormal probe columns and the first k exponents kept (QR is column-ordered, so
    they equal the 1-device run up to float rounding)."""
    import jax
    from jax.sharding import Mesh

    mesh = Mesh(np.array(jax.devices()[:o.devices]), ("p",))
    q = positions.spectrum_probes_for_mesh(model, ids, k=o.k, key=key, n_devices=mesh.size)
    res = loopjax.spectrum(model, ids, k=q.shape[1], steps=o.steps, key=key, probes=q, mesh=mesh, **_engine(o))
    return positions.first_probes(res, o.k)


def _spectrum_in_segments(model, ids, key, o, unit):
    """The same numbers as `loopjax.spectrum(model, ids, k, steps, key)`, run as segments of `every`
    steps (benettin, then benettin_continue) with an orbax checkpoint of the result so far after each."""
    state_key, probe_key = loopjax.split_key(key)
    f, z0 = loopjax.loop_map(model, ids, key=state_key)
    if o.warmup or (o.renorm_every or 1) > 1:
        raise ValueError("--checkpoint-every runs without --warmup / --renorm-every (segments continue the QR "
                         "every step)")
    ck = unit.checkpointer()
    latest = ck.latest()
    if latest is not None:
        done, arrays = latest
        so_far = LyapunovResult.from_arrays(arrays, total_steps=done)
    else:
        done, so_far = 0, None
    with unit.progress(total=o.steps, initial=done) as bar:
        while done < o.steps:
            n = min(o.checkpoint_every, o.steps - done)
            if so_far is None:
                so_far = benettin(f, z0, k=o.k, steps=n, key=probe_key)
            else:
                so_far = concatenate([so_far, benettin_continue(f, so_far, steps=n)])
            done += n
            ck.save(done, so_far.to_arrays())
            bar.update(n)
            unit.after_segment(done)
    ck.close(remove=True)
    return so_far


def _lyapunov_record(r: LyapunovResult) -> dict:
    return r.to_json()


def _spectrum_figures(folder, results, summary, title):
    from loopjax.cli import plots

    lgs = [np.asarray(r.log_growth, dtype=np.float64) for r in results]
    exps = np.stack([np.asarray(r.exponents, dtype=np.float64) for r in results])
    return [plots.plot_spectrum_running(folder / "spectrum_running_top5.png", lgs, title),
            plots.plot_spectrum_full(folder / "spectrum_full.png", exps, title)]


SPECTRUM = Analysis("spectrum", "spectrum", _spectrum, _spectrum_record, LyapunovResult.from_json, _spectrum_figures,
                    _spectrum_extras,
                    _spectrum_batch)


# ---- attribution ---------------------------------------------------------------------------------------

def _attribution(model, ids, key, o, unit, core=None):
    if core is not None:
        return core
    return loopjax.attribution(model, ids, k=o.k, steps=o.steps, key=key, relative=o.relative, **_engine(o))


def _attribution_batch(model, ids_list, keys, o):
    return loopjax.attribution(model, ids_list, k=o.k, steps=o.steps, key=keys, pad_multiple=o.pad_multiple,
                               relative=o.relative, **_engine(o))


def _attribution_figures(folder, results, summary, title):
    from loopjax.cli import plots

    ex = np.stack([np.asarray(r.exponents, dtype=np.float64) for r in results])  # (P, n_sub, k)
    figs = [plots.plot_attribution(folder / "attribution_lambda1.png", summary.names, ex[:, :, 0], title)]
    if summary.k > 1:
        figs.append(plots.plot_attribution_heatmap(folder / "attribution_heatmap.png", summary.names,
                                                   np.asarray(summary.exponents_mean), title))
    return figs


ATTRIBUTION = Analysis("attribution", "attribution", _attribution, _lyapunov_record, LyapunovResult.from_json,
                       _attribution_figures,
                       batch=_attribution_batch)


# ---- similarity and trajectory -------------------------------------------------------------------------

def _arrays_record(d: dict) -> dict:
    return {k: (v if isinstance(v, list) else np.asarray(v, dtype=np.float64)) for k, v in d.items()}


def _similarity(model, ids, key, o, unit, core=None):
    return loopjax.similarity(model, ids, loops=o.loops, key=key, pad_multiple=o.pad_multiple)


def _similarity_figures(folder, results, summary, title):
    from loopjax.cli import plots

    return [plots.plot_similarity(folder / "similarity.png", summary.states_names, np.asarray(summary.mean_matrix),
                                  summary.loops, title)]


SIMILARITY = Analysis("similarity", "similarity", _similarity, _arrays_record, dict,
                      _similarity_figures)


def _trajectory(model, ids, key, o, unit, core=None):
    return loopjax.convergence(model, ids, steps=o.steps, key=key, pad_multiple=o.pad_multiple)


def _trajectory_figures(folder, results, summary, title):
    from loopjax.cli import plots

    d = np.stack([np.asarray(r["step_norm"], dtype=np.float64) for r in results])
    s = np.stack([np.asarray(r["state_norm"], dtype=np.float64) for r in results])
    return [plots.plot_convergence(folder / "convergence.png", d, s, title)]


TRAJECTORY = Analysis("trajectory", "convergence", _trajectory, _arrays_record, dict,
                      _trajectory_figures)

# ---- per-token spectra ---------------------------------------------------------------------------------

def _tokens(model, ids, key, o, unit, core=None):
    return positions.token_spectrum(model, ids, k=o.k, steps=o.steps, key=key, pad_multiple=o.pad_multiple,
                                    **_engine(o))


def _tokens_figures(folder, results, summary, title):
    from loopjax.cli import plots

    first = results[0]
    labels = first.get("pieces") or [str(t) for t in first["tokens"]]
    return [plots.plot_token_lambda1(folder / "tokens_lambda1.png", labels, np.asarray(first["lambda1"]),
                                     f"{title}, prompt 0")]


TOKENS = Analysis("tokens", "tokens", _tokens,
                  lambda r: r.to_json(), dict, _tokens_figures)

# ---- complete spectra (spectrum --k all) ---------------------------------------------------------------

def _complete(model, ids, key, o, unit, core=None):
    return loopjax.complete_spectrum(model, ids, key=key, steps=o.steps, warmup=o.warmup, method=o.method)


def _complete_figures(folder, results, summary, title):
    from loopjax.cli.plot_complete import plot_spectrum_density

    return [plot_spectrum_density(folder / "spectrum_density.png", results, title)]


COMPLETE = Analysis("complete", "complete", _complete, lambda r: r.to_json(), CompleteSpectrum.from_json,
                    _complete_figures)


# ---- dynamics: covariant vectors, finite-time λ1, logit lens, attention across loops ---------------------

def _dynamics(model, ids, key, o, unit, core=None):
    r = loopjax.clv(model, ids, k=min(o.clv_k, int(ids.shape[0]) * model.config.hidden_size), steps=o.window,
                    warmup=o.warmup, key=key, pad_multiple=o.pad_multiple)
    loc = loopjax.localisation(r)
    taus = [t for t in o.taus if t <= o.window]
    return {"clv": r.to_json(), "pr_positions_v1": float(np.mean(loc["positions"][:, 0])),
            "weights_v1": np.asarray(loc["weights"][0], np.float64),
            "finite_time_clv": loopjax.finite_time_statistics(r.log_growth, taus).to_json(),
            "finite_time_gs": loopjax.finite_time_statistics(r.gs_log_growth, taus).to_json(),
            "logit_lens": logit_lens(model, ids, steps=o.lens_steps, key=key, pad_multiple=o.pad_multiple).to_json(),
            "attention": _attention(model, ids, key, o)}


def _attention(model, ids, key, o):
    """The attention similarity across loops, or None for an architecture that exposes no attention
    probabilities (`Architecture.attention_probs`: Ouro and Huginn; not yet Parcae)."""
    try:
        return attention_similarity(model, ids, loops=o.attention_loops, key=key,
                                    pad_multiple=o.pad_multiple).to_json()
    except NotImplementedError:
        return None


def _dynamics_figures(folder, results, summary, title):
    from loopjax.cli import plot_dynamics as pd

    lens = [r["logit_lens"] for r in results]
    gate = [x["exit_gate_mean"] for x in lens] if lens[0]["exit_gate_mean"] is not None else None
    first = results[0]
    figs = [pd.plot_clv_angles(folder / "clv_angles.png", [r["clv"]["angles"] for r in results], title,
                               split=[r["clv"]["split"] for r in results]),
            pd.plot_localisation(folder / "clv_localisation.png", np.asarray(first["weights_v1"])[None],
                                 f"{title}, prompt 0", show=1),
            pd.plot_finite_time(folder / "finite_time_lambda1.png",
                                [np.asarray(r["clv"]["gs_log_growth"])[:, 0] for r in results],
                                first["finite_time_gs"]["taus"], title, label="Benettin (CLV window)"),
            pd.plot_logit_lens(folder / "logit_lens.png", [x["entropy_mean"] for x in lens],
                               [x["agreement"] for x in lens], title, exit_gate=gate)]
    if first["attention"] is not None:
        figs.append(pd.plot_attention_similarity(folder / "attention_similarity.png",
                                                 np.asarray(first["attention"]["matrix"]), first["attention"]["names"],
                                                 f"{title}, prompt 0", measure=first["attention"]["measure"]))
    return figs


DYNAMICS = Analysis("dynamics", "dynamics", _dynamics, lambda r: r, dict, _dynamics_figures)


# ---- regimes -------------------------------------------------------------------------------------------

def _regime(model, ids, key, o, unit, core=None):
    return loopjax.regime(model, ids, key=key, k=o.k, min_steps=o.min_steps, max_steps=o.max_steps,
                          max_period=o.max_period, pad_multiple=o.pad_multiple)


def _regime_figures(folder, results, summary, title):
    from loopjax.cli import plots

    return [plots.plot_regimes(folder / "regimes.png", summary, title)]


REGIME = Analysis("regime", "regime", _regime, lambda r: r.to_json(), Regime.from_json, _regime_figures)

ANALYSES = {a.name: a for a in (SPECTRUM, ATTRIBUTION, SIMILARITY, TRAJECTORY, TOKENS)}
