"""loopjax: looped transformers (Ouro, Huginn) in JAX, and the Lyapunov spectrum of their loop dynamics."""
import os

# jaxlib's CPU QR runs on scipy's bundled OpenBLAS, whose thread pool turns a (448, 32) QR from 0.3 ms into
# ~200 ms on a busy 2-core machine. Takes effect if set before the first QR; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# isort: split
from loopjax.analysis import attribution, convergence, lambda1, similarity, spectrum
from loopjax.loading import load, source_dir
from loopjax.lyapunov import LyapunovResult, benettin, benettin_sublayers
from loopjax.model import (LoopModel, context, early_exit, init_state, logits, loop_map, random_model, sublayer_maps,
                           trajectory)

__version__ = "0.1.0"

__all__ = ["load", "random_model", "LoopModel", "logits", "trajectory", "init_state", "context", "early_exit", "loop_map",
           "sublayer_maps", "benettin", "benettin_sublayers", "LyapunovResult", "spectrum", "attribution",
           "lambda1", "similarity", "convergence", "source_dir"]
