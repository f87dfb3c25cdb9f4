"""Typed summaries of per-prompt results: `summarize(results)`, each analysis' summary class registered with
its summariser (`loopjax.summary.base.register`), one module per analysis."""
from loopjax.summary.base import REGISTRY, Summary, kind_of, orbit_counts, summarize, summary_from_json
from loopjax.summary.spectrum import SpectrumSummary, exponent_table, summarize_spectrum
from loopjax.summary.attribution import AttributionSummary, summarize_attribution
from loopjax.summary.lambda1 import Lambda1Summary, SweepSummary, summarize_lambda1, summarize_sweep
from loopjax.summary.trajectory import (ConvergenceSummary, SimilaritySummary, summarize_convergence,
                                        summarize_similarity)
from loopjax.summary.tokens import TokenSummary, summarize_tokens
from loopjax.summary.ablation import AblationSummary, summarize_ablation
from loopjax.summary.complete import CompleteSummary, summarize_complete
from loopjax.summary.dynamics import DynamicsSummary, summarize_dynamics
from loopjax.summary.regime import RegimeSummary, summarize_regime

__all__ = ["Summary", "summarize", "summary_from_json", "kind_of", "exponent_table", "orbit_counts", "REGISTRY",
           "SpectrumSummary", "AttributionSummary", "Lambda1Summary", "SweepSummary", "SimilaritySummary",
           "ConvergenceSummary", "TokenSummary", "AblationSummary", "summarize_spectrum", "summarize_attribution",
           "summarize_lambda1", "summarize_sweep", "summarize_similarity", "summarize_convergence",
           "summarize_tokens", "summarize_ablation", "CompleteSummary", "summarize_complete",
           "DynamicsSummary", "summarize_dynamics", "RegimeSummary", "summarize_regime"]
