"""loopjax: looped transformers (Ouro, Huginn, Parcae) in JAX, and the Lyapunov spectrum of their loop dynamics.

The public API; `import loopjax` loads neither matplotlib nor the command line.
"""
import os

# jaxlib's CPU QR runs on scipy's bundled OpenBLAS, whose thread pool turns a (448, 32) QR from 0.3 ms into
# ~200 ms on a busy 2-core machine. Takes effect if set before the first QR; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# isort: split
from loopjax.analysis import (attribution, convergence, lambda1, lambda1_finite, orbit, padded_length, prompt_key,
                              similarity, spectrum, spectrum_probe_seeds, split_key)
from loopjax.dynamics import kaplan_yorke_dimension, lambda1_perturbation, orbit_type, pesin_entropy
from loopjax.loading import convert, load, source_dir
from loopjax.lyapunov import LyapunovResult, benettin, benettin_continue, benettin_sublayers, concatenate
from loopjax.model import (LoopModel, context, early_exit, init_state, logits, loop_map, random_model,
                           scale_injection, sublayer_maps, trajectory, validate_ids)
from loopjax.summary import summarize
from loopjax.weights import save_hf, to_hf_tensors

__version__ = "0.1.0"

__all__ = ["load", "convert", "save_hf", "to_hf_tensors", "source_dir", "random_model", "LoopModel", "logits",
           "trajectory", "init_state", "context", "early_exit", "loop_map", "sublayer_maps", "benettin",
           "benettin_sublayers", "benettin_continue", "concatenate", "LyapunovResult", "prompt_key", "split_key",
           "spectrum", "attribution", "lambda1", "similarity", "convergence", "summarize", "orbit_type",
           "lambda1_perturbation", "kaplan_yorke_dimension", "pesin_entropy", "spectrum_probe_seeds", "orbit",
           "lambda1_finite", "scale_injection", "padded_length", "validate_ids"]
