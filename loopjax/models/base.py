"""The protocol every architecture implements: one `Architecture` subclass per model folder.

A model folder (`loopjax/models/<name>/`) holds `modeling.py` (config dataclass, Flax modules, the loop
map's named sublayers) and `params.py` (the HF name table); its `__init__.py` exports one
`Architecture` instance. Generic code (LoopModel, loading, the engine front-ends) only ever talks to
this interface, so adding an architecture touches nothing outside its folder and the registry.
"""
from __future__ import annotations

from typing import Any, Callable

# A sublayer of the loop map: (params, config, context, state) -> state of the same shape.
SublayerFn = Callable[[Any, Any, dict, Any], Any]


class Architecture:
    """Config, loop map and HF name table of one architecture. Subclasses set the class attributes and
    implement the methods; `sublayers(config)` declares the loop map once as (name, function) pairs,
    whose composition (in order) is one loop step."""

    name: str = ""                      # short name, e.g. "ouro"
    model_types: tuple[str, ...] = ()   # config.json "model_type" values this architecture reads
    class_names: tuple[str, ...] = ()   # config.json "_class_name" / "model_class_name" values (configs without
                                        # a model_type, e.g. Parcae's)
    config_class: type = object         # frozen dataclass with from_hf(dict) / to_hf()
    table: tuple = ()                   # (HF name regex, param path regex, transform) rows

    def config_from_hf(self, cfg: dict):
        return self.config_class.from_hf(cfg)

    def ignored(self, config) -> tuple[tuple[str, str], ...]:
        """(HF name regex, why) for checkpoint tensors loopjax reads past on purpose."""
        return ()

    def init_params(self, config, key, param_dtype=None):
        raise NotImplementedError

    def context(self, params, config, ids) -> dict:
        """What the loop map needs besides the state (RoPE angles, an injection), fixed for the loop."""
        raise NotImplementedError

    def initial_state(self, params, config, ids, ctx, key):
        """z_0 of the loop for token ids (..., L)."""
        raise NotImplementedError

    def sublayers(self, config) -> tuple[tuple[str, SublayerFn], ...]:
        raise NotImplementedError

    def readout(self, params, config, ctx, z):
        """Logits from a loop state."""
        raise NotImplementedError

    def attention_probs(self, params, config, ctx, z) -> dict:
        """{sublayer name: attention probabilities (heads, L, L)} of one loop step from state z (L, H), in
        sublayer order (the softmax rows each attention-bearing sublayer computes on its way through the loop)."""
        raise NotImplementedError(f"attention_probs is not implemented for {self.name}")

    def early_exit(self, params, config, states, threshold=None) -> dict:
        raise ValueError(f"early_exit is defined for Ouro models, not {self.name}")

    def injection_fields(self, config=None) -> tuple[str, ...]:
        """Context entries that are input injections (scaled by `loopjax.scale_injection`) for `config`."""
        return ()

    def __repr__(self):
        return f"<architecture {self.name}>"
