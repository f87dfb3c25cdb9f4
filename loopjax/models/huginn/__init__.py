"""Huginn-0125 (tomg-group-umd): modeling.py (config, modules, loop map) and params.py (HF name table)."""
from loopjax.models.huginn.modeling import HUGINN, HuginnConfig

__all__ = ["HUGINN", "HuginnConfig"]
