"""loopjax: looped transformers (Ouro, Huginn, Parcae) in JAX, and the Lyapunov spectrum of their loop dynamics.

The public API; `import loopjax` loads neither matplotlib nor the command line.
"""
import os

# jaxlib's CPU QR runs on scipy's bundled OpenBLAS, whose thread pool turns a (448, 32) QR from 0.3 ms into
# ~200 ms on a busy 2-core machine. Takes effect if set before the first QR; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from loopjax import early_signals  # noqa: E402  (stdlib only: a Ctrl-C while jax imports is kept, not lost)

early_signals.begin_import()

# isort: split
from loopjax.analysis.frontends import (attribution, bucket_multiple, convergence, lambda1, lambda1_finite, orbit,
                                       padded_length, prompt_key, regime, similarity, spectrum, spectrum_probe_seeds,
                                       split_key)
from loopjax.analysis.tokens import token_spectrum
from loopjax.engine.dynamics import (kaplan_yorke_dimension, lambda1_perturbation, orbit_type, pesin_entropy,
                                     ruelle_bound)
from loopjax.engine.regime import Regime, RegimeCriteria, classify_regime
from loopjax.engine.stats import holm_sign_counts
from loopjax.analysis.complete import complete_spectrum
from loopjax.engine.complete import CompleteSpectrum, complete_spectrum_of_map
from loopjax.io.loading import convert, load, source_dir
from loopjax.engine.lyapunov import LyapunovResult, benettin, benettin_continue, benettin_sublayers, concatenate
from loopjax.models.loop_model import (LoopModel, context, early_exit, init_state, logits, loop_map, random_model,
                           scale_injection, sublayer_maps, trajectory, validate_ids)
from loopjax.summary import summarize
from loopjax.io.weights import save_hf, to_hf_tensors
from loopjax.engine.clv import (CovariantResult, covariant_vectors, finite_time_exponents, finite_time_statistics,
                                participation_ratio, sublayer_growth)
from loopjax.analysis.clv import clv, clv_attribution, localisation
from loopjax.analysis.readouts import attention_similarity, logit_lens

__version__ = "0.1.0"

early_signals.end_import()

__all__ = ["load", "convert", "save_hf", "to_hf_tensors", "source_dir", "random_model", "LoopModel", "logits",
           "trajectory", "init_state", "context", "early_exit", "loop_map", "sublayer_maps", "benettin",
           "benettin_sublayers", "benettin_continue", "concatenate", "LyapunovResult", "prompt_key", "split_key",
           "spectrum", "attribution", "lambda1", "similarity", "convergence", "summarize", "orbit_type",
           "lambda1_perturbation", "kaplan_yorke_dimension", "pesin_entropy", "spectrum_probe_seeds", "orbit",
           "lambda1_finite", "scale_injection", "padded_length", "bucket_multiple", "validate_ids", "complete_spectrum",
           "complete_spectrum_of_map", "CompleteSpectrum",
           "covariant_vectors", "CovariantResult", "participation_ratio", "finite_time_exponents",
           "finite_time_statistics", "sublayer_growth", "clv", "clv_attribution", "localisation", "logit_lens",
           "attention_similarity", "classify_regime", "regime", "Regime",
           "RegimeCriteria", "token_spectrum", "ruelle_bound", "holm_sign_counts"]
