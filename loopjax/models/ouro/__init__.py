"""Ouro (ByteDance Ouro-1.4B): modeling.py (config, modules, loop map) and params.py (HF name table)."""
from loopjax.models.ouro.modeling import OURO, OuroConfig

__all__ = ["OURO", "OuroConfig"]
