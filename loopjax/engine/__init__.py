"""The engine: Lyapunov exponents and orbit/invariant functions of any map z -> f(z) (knows no model).

Imports nothing from loopjax's models, io, analysis, summary, train or cli.
"""
from loopjax.engine.lyapunov import LyapunovResult, benettin, benettin_continue, benettin_sublayers, concatenate
from loopjax.engine.dynamics import (kaplan_yorke_dimension, lambda1_perturbation, orbit_type, pesin_entropy,
                                     ruelle_bound)
from loopjax.engine.regime import Regime, RegimeCriteria, classify_regime
from loopjax.engine.stats import holm_sign_counts

__all__ = ["LyapunovResult", "benettin", "benettin_continue", "benettin_sublayers", "concatenate",
           "kaplan_yorke_dimension", "lambda1_perturbation", "orbit_type", "pesin_entropy", "ruelle_bound",
           "Regime", "RegimeCriteria", "classify_regime", "holm_sign_counts"]
