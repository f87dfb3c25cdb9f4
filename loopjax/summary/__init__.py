"""Typed summaries of per-prompt results: `summarize(results)` and each analysis' summary class."""
from loopjax.summary.summaries import Summary, exponent_table, summarize, summary_from_json

__all__ = ["Summary", "summarize", "summary_from_json", "exponent_table"]
