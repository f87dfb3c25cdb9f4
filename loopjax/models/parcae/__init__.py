"""Parcae (Prairie et al., arXiv 2604.12946; parcae_lm): modeling.py (config, modules, loop map) and params.py
(the state-dict name table)."""
from loopjax.models.parcae.modeling import PARCAE, ParcaeConfig

__all__ = ["PARCAE", "ParcaeConfig"]
