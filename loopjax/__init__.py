"""loopjax: looped transformers (Ouro, Huginn) in JAX, and the Lyapunov spectrum of their loop dynamics."""
from loopjax.analysis import attribution, convergence, lambda1, similarity, spectrum
from loopjax.loading import load, source_dir
from loopjax.lyapunov import LyapunovResult, benettin, benettin_sublayers
from loopjax.model import (LoopModel, context, early_exit, init_state, logits, loop_map, random_model, sublayer_maps,
                           trajectory)

__version__ = "0.1.0"

__all__ = ["load", "random_model", "LoopModel", "logits", "trajectory", "init_state", "context", "early_exit", "loop_map",
           "sublayer_maps", "benettin", "benettin_sublayers", "LyapunovResult", "spectrum", "attribution",
           "lambda1", "similarity", "convergence", "source_dir"]
