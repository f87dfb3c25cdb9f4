"""``index.md`` and ``index.html`` for a report folder: every figure and the key numbers.

The same content is rendered twice: Markdown (for GitHub / a terminal) and a self-contained HTML page
(figures referenced by relative path, so the folder can be moved or zipped as a whole).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from loopjax.analysis.ablation import NO_CROSSING, injection_sublayer
from loopjax.cli.runstore import utc_now
from loopjax.io.files import atomic_write_json, atomic_write_text
from loopjax.summary import exponent_table, summary_from_json


def _fmt(v: Any, prec: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:+.{prec}f}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


def _std(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _blurb(name: str, r: dict) -> str:
    st = r["settings"]
    if name == "spectrum":
        return (f"Top-{st['k']} exponents of the loop map over T={st['steps']} steps (Benettin/QR every step), "
                f"per prompt; the state is the prompt's whole (L, H) residual stream.")
    if name == "attribution":
        form = ("gauge-relative: each sublayer's own state growth log(‖z_out‖/‖z_in‖) is subtracted, so a rescaling "
                "between sublayers that leaves f unchanged leaves every contribution unchanged; the contributions "
                "plus the net state growth sum to the loop's exponents. Neither form is coordinate-free"
                if st.get("relative") else "plain form: coordinate-dependent, a rescaling between sublayers that "
                "leaves f unchanged moves the contributions")
        return (f"QR after every sublayer (k={st['k']}, T={st['steps']}; {form}). Bars: each sublayer's contribution to λ1 (direction 1); line: cumulative λ1 through "
                f"the loop" + ("; heatmap: sublayer × direction." if st["k"] > 1 else "."))
    if name == "similarity":
        return (f"Cosine similarity between the (flattened) states after every sublayer, {st['loops']} loops, "
                f"mean over prompts.")
    if name == "trajectory":
        return f"‖z_(t+1) − z_t‖ and ‖z_t‖ over {st['steps']} loop steps, per prompt (thin) and mean (thick)."
    if name == "tokens":
        return (f"λ1 of each position's own block of the loop Jacobian (one probe, T={st['steps']}); the loop map "
                f"is causal, so the prompt's spectrum is the union of the positions' spectra.")
    if name == "regime":
        return ("What each prompt's orbit does, decided by `loopjax.regime` at a horizon that grows until λ1 has "
                "converged (the horizon is given per prompt; at the cap without convergence the verdict is "
                "'undetermined'). A fixed point's exponents are log|eig J(z*)|, a cycle's its Floquet exponents; "
                "'chaotic' needs λ1 > 0 beyond its error, a finite-perturbation check and no period; "
                "'quasi_periodic' a non-closing orbit with λ1 = 0 within error. The per-prompt evidence is in "
                "regime/results.json.")
    if name == "complete":
        return (f"All d = L·H exponents of the first prompts ({st['method']} method: the causal loop map's Jacobian is "
                f"block lower-triangular over positions, so the spectrum is the union of the diagonal blocks'; "
                f"T={st['steps']} after {st['warmup']} warm-up steps). Structural exponents (−inf: directions "
                f"the map annihilates, one per position for a final RMSNorm) are counted apart; sums, Kaplan–Yorke "
                f"dimension and Ruelle bound are per prompt over the finite ones (d differs between prompts).")
    if name == "dynamics":
        return (f"Covariant Lyapunov vectors (Ginelli; k={st['clv_k']}, window of {st['window']} loops after "
                f"{st['warmup']}): the minimal angle between the unstable and the stable span (near 0: close to "
                f"non-hyperbolic; with no positive exponent the split is after v1), v1's localisation over token "
                f"positions, finite-time λ1; the logit lens (readout after each of {st['lens_steps']} loops) and "
                f"attention-pattern similarity across {st['attention_loops']} loops.")
    if name == "ablation":
        return (f"The injection e scaled by alpha (Huginn's adapter sees concat(z, alpha·e); Parcae's injection adds alpha·b⊙(eBᵀ)): λ1 (one probe, "
                f"T={st['steps_lambda1']}) and the k=1 attribution per alpha; details: ablation/index.md.")
    return f"λ1 (one probe, T={st['steps']}) per prompt for each checkpoint."


TITLES = {"regime": "Regime per prompt (adaptive horizon)", "spectrum": "Lyapunov spectrum (the paper's protocol)", "attribution": "Per-sublayer attribution",
          "similarity": "Residual-stream similarity across loops", "trajectory": "Convergence of the loop",
          "tokens": "λ1 per token", "complete": "Complete spectrum",
          "dynamics": "Covariant vectors, logit lens and attention across loops", "ablation": "Input-injection ablation", "sweep": "λ1 across checkpoints"}


def _sections(results: dict) -> list[dict]:
    """[{title, blurb, rows: [(label, value)], figures: [relpath], json: relpath}]; every row comes from the
    analysis' summary (`loopjax.summary`), read back from its results.json."""
    out = []
    for name, title in TITLES.items():
        r = results.get(name)
        if not r:
            continue
        summary = summary_from_json(r["summary"])
        rows = summary.rows()
        pert = r.get("prompts", [{}])[0].get("lambda1_perturbation") if name == "spectrum" else None
        if pert:  # loopjax.lambda1_finite on the first prompt: a check of the linearisation
            rows.append(("λ1 of prompt 0: finite perturbation vs Benettin",
                         f"{pert['lambda1']:+.4f} vs {max(r['prompts'][0]['exponents']):+.4f}"))
        if name == "sweep":  # name the checkpoints in the per-checkpoint rows
            labels = [c["label"] for c in r["checkpoints"]]
            rows = rows[:2] + [(f"  {lab}", v) for lab, (_, v) in zip(labels, rows[2:])]
        table = exponent_table(summary) if name == "spectrum" else None
        out.append({"title": title, "blurb": _blurb(name, r), "rows": rows, "table": table,
                    "figures": [f"{name}/{f}" for f in r["figures"]], "json": f"{name}/results.json"})
    return out


def _model_rows(info: dict, seconds: float | None, software: dict | None) -> list[tuple[str, str]]:
    rows = [("model", info.get("source")), ("revision", info.get("revision") or "—"),
            ("model type", info.get("model_type")), ("hidden size", info.get("hidden_size")),
            ("vocab size", info.get("vocab_size")), ("parameters", f"{info.get('num_params'):,}"),
            ("weight dtypes", ", ".join(info.get("param_dtypes") or [])),
            ("tokenizer", info.get("tokenizer"))]
    if seconds is not None:
        rows.append(("wall time", f"{seconds:.1f} s"))
    if software:
        rows.append(("software", ", ".join(f"{k} {v}" for k, v in software.items()
                                           if k in ("loopjax", "jax", "jaxlib", "flax", "numpy", "python"))))
    return [(k, str(v)) for k, v in rows]


def render_markdown(title: str, model_rows, note: str, sections) -> str:
    lines = [f"# {title}", "", f"Generated {utc_now()} by `loopjax report`.", ""]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in model_rows] + [""]
    if note:
        lines += [f"*{note}*", ""]
    for sec in sections:
        lines += [f"## {sec['title']}", "", sec["blurb"], "", "| quantity | value |", "|---|---|"]
        lines += [f"| {k.strip()} | {v} |" for k, v in sec["rows"]]
        if sec.get("table"):
            head, rows = sec["table"]
            lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines += [""] + [f"![{Path(f).stem}]({f})" for f in sec["figures"]]
        lines += ["", f"All numbers: [`{sec['json']}`]({sec['json']})", ""]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #0072B2;padding-bottom:.2em} h2{margin-top:2em;color:#0072B2}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ddd;padding:.25em .7em;text-align:left}
td.num{font-family:ui-monospace,Menlo,Consolas,monospace} tr.sub td:first-child{padding-left:2em;color:#555}
img{max-width:100%;border:1px solid #eee;margin:.6em 0;display:block} .note{color:#555;font-style:italic}
nav a{margin-right:1em}
"""


def render_html(title: str, model_rows, note: str, sections) -> str:
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>",
             f"<p>Generated {e(utc_now())} by <code>loopjax report</code>.</p>"]
    if sections:
        parts.append("<nav>" + "".join(f"<a href='#s{i}'>{e(s['title'])}</a>"
                                       for i, s in enumerate(sections)) + "</nav>")
    parts.append("<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in model_rows)
                 + "</table>")
    if note:
        parts.append(f"<p class='note'>{e(note)}</p>")
    for i, sec in enumerate(sections):
        parts.append(f"<h2 id='s{i}'>{e(sec['title'])}</h2><p>{e(sec['blurb'])}</p><table>"
                     "<tr><th>quantity</th><th>value</th></tr>")
        for k, v in sec["rows"]:
            cls = " class='sub'" if k.startswith("  ") else ""
            parts.append(f"<tr{cls}><td>{e(k.strip())}</td><td class='num'>{e(str(v))}</td></tr>")
        parts.append("</table>")
        if sec.get("table"):
            head, rows = sec["table"]
            parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td class='num'>{e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
        for f in sec["figures"]:
            parts.append(f"<img src='{e(f)}' alt='{e(Path(f).stem)}'>")
        parts.append(f"<p>All numbers: <a href='{e(sec['json'])}'><code>{e(sec['json'])}</code></a></p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_index(out: str | Path, info: dict, results: dict, *, seconds: float | None = None,
                settings_note: str = "") -> tuple[Path, Path]:
    """Write ``out/index.md`` and ``out/index.html`` for one model's results."""
    out = Path(out)
    software = next((r.get("software") for r in results.values() if r), None)
    title = f"loopjax report: {info.get('name')}"
    rows = _model_rows(info, seconds, software)
    secs = _sections(results)
    md, ht = out / "index.md", out / "index.html"
    atomic_write_json(out / "report.json", {
        "model": info, "seconds": seconds, "note": settings_note, "software": software,
        "generated": utc_now(),
        "analyses": {name: {"results": f"{name}/results.json", "settings": r.get("settings"),
                            "figures": [f"{name}/{f}" for f in r.get("figures", [])],
                            "summary": {k: v for k, v in (r.get("summary") or {}).items()
                                        if k != "mean_matrix"}}
                     for name, r in results.items() if r},
    })
    atomic_write_text(md, render_markdown(title, rows, settings_note, secs))
    atomic_write_text(ht, render_html(title, rows, settings_note, secs))
    return md, ht


def write_top_index(root: str | Path, done: list[tuple[str, Path, dict]], figures=()) -> tuple[Path, Path]:
    """``root/index.{md,html}`` linking the per-model reports, with λ1 and the positive fraction, and the
    side-by-side model figures (`figures`, paths inside root)."""
    root = Path(root)
    figures = [Path(f).relative_to(root) for f in figures]
    rows = []
    for name, out, results in done:
        rel = Path(out).relative_to(root) if Path(out).is_relative_to(root) else Path(out)
        s = summary_from_json(results["spectrum"]["summary"]) if "spectrum" in results else None
        a = summary_from_json(results["attribution"]["summary"]) if "attribution" in results else None
        t64 = "—" if s is None else (f"{_fmt(s.lambda1_mean)} ± {_std(s.lambda1_std)} at T = {s.steps} "
                                     f"({'converged' if s.converged_sorted and s.converged_sorted[0] else 'not converged'})")
        rows.append((name, rel, _verdicts(results.get("regime")), t64, a and a.largest_expanding_sublayer))
    md = ["# loopjax reports", "", f"Generated {utc_now()}.", "",
          "| model | regime verdicts (horizons) | λ1, the paper's T (mean ± std) | largest relative expansion | "
          "report |", "|---|---|---|---|---|"]
    for name, rel, verdicts, t64, big in rows:
        md.append(f"| {name} | {verdicts} | {t64} | {big} | [{rel}/index.md]({rel}/index.md) |")
    md += [""] + [f"![{f.stem}]({f})" for f in figures]
    e = html.escape
    ht = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>loopjax reports</title>"
          f"<style>{_CSS}</style></head><body><h1>loopjax reports</h1><p>Generated {e(utc_now())}.</p>"
          "<table><tr><th>model</th><th>regime verdicts (horizons)</th><th>λ1, the paper's T (mean ± std)</th>"
          "<th>largest relative expansion</th><th>report</th></tr>"]
    for name, rel, verdicts, t64, big in rows:
        ht.append(f"<tr><td>{e(name)}</td><td>{e(verdicts)}</td><td class='num'>{e(t64)}</td><td>{e(str(big))}</td>"
                  f"<td><a href='{e(str(rel))}/index.html'>{e(str(rel))}/index.html</a></td></tr>")
    ht.append("</table>")
    ht += [f"<img src='{e(str(f))}' alt='{e(f.stem)}'>" for f in figures]
    for name, rel, *_ in rows:
        ht.append(f"<h2>{e(name)}</h2>")
        for sec in ("spectrum/spectrum_running_top5.png", "attribution/attribution_lambda1.png"):
            if (root / rel / sec).is_file():
                ht.append(f"<img src='{e(str(rel))}/{sec}' alt='{e(name)} {sec}'>")
    ht.append("</body></html>\n")
    mdp, htp = root / "index.md", root / "index.html"
    atomic_write_text(mdp, "\n".join(md) + "\n")
    atomic_write_text(htp, "\n".join(ht))
    return mdp, htp


def _verdicts(regime: dict | None) -> str:
    """'19 fixed point, 1 quasi periodic (512–8192 steps)' from a saved regime result."""
    if regime is None:
        return "—"
    sm = regime["summary"]
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(sm["counts"].items(), key=lambda kv: -kv[1]))
    return f"{counts} ({sm['horizon_min']}–{sm['horizon_max']} steps)"


def write_ablation_index(folder: Path, res: dict, summary) -> Path:
    """DIR/ablation/index.md: settings, the per-alpha table (from the summary), alpha*, both figures."""
    st = res["settings"]
    c = summary.crossing
    star = (NO_CROSSING if c["alpha_star"] is None
            else f"**{c['alpha_star']:.4f}**" + ("" if c["note"] == "one crossing" else f" ({c['note']})")
            + " — " + ", ".join(c["directions"]))
    lines = [f"# Input-injection ablation: {res['model']['name']}", "",
             f"Adapter input concat(z, α·e) (`loopjax.scale_injection`{', mode mean' if st['mode'] else ''}); "
             f"{st['n_prompts']} prompts, seed {st['seed']} (prompt i: `loopjax.prompt_key(seed, i)` for every α); "
             f"λ1 one probe T={st['steps_lambda1']}, attribution k=1 T={st['attr_steps']}"
             + (f", spectrum k={st['k']} T={st['spectrum_steps']}" if st["k"] else "")
             + f", orbit {st['orbit_steps']} steps.", "",
             f"α* (mean λ1 crosses 0, linear interpolation): {star}", "",
             f"| α | λ1 mean ± s.e. | min / max | {injection_sublayer(summary.names)} | core_block.0 | "
             "total (attribution) | orbits |",
             "|---|---|---|---|---|---|---|"]
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.4f}"  # noqa: E731
    for j, a in enumerate(summary.alphas):
        lines.append(f"| {a:g} | {summary.lambda1_mean[j]:+.4f} ± {fmt(summary.lambda1_sem[j])} | "
                     f"{summary.lambda1_min[j]:+.4f} / {summary.lambda1_max[j]:+.4f} | "
                     f"{summary.adapter_mean[j]:+.4f} | {summary.core_block0_mean[j]:+.4f} | "
                     f"{summary.attribution_total_mean[j]:+.4f} | "
                     + ", ".join(f"{k} {n}" for k, n in summary.orbit_counts[j].items()) + " |")
    if summary.spectrum_summaries:
        lines += ["", "| α | spectrum λ1 mean | fraction positive | sum of exponents |", "|---|---|---|---|"]
        for a, s in zip(summary.alphas, summary.spectrum_summaries):
            lines.append(f"| {a:g} | {fmt(s['lambda1_mean'])} | {fmt(s['fraction_positive'])} | "
                         f"{fmt(s['sum_of_exponents_mean'])} |")
    lines += [""] + [f"![{Path(f).stem}]({f})" for f in res["figures"]]
    lines += ["", "All numbers: [`results.json`](results.json)", ""]
    path = Path(folder) / "index.md"
    atomic_write_text(path, "\n".join(lines))
    return path
