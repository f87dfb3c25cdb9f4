"""Architectures: one folder each (modeling.py + params.py), registered here by config.json model_type (or,
for configs without one, by "_class_name" / "model_class_name")."""
from loopjax.models.base import Architecture
from loopjax.models.huginn import HUGINN
from loopjax.models.ouro import OURO
from loopjax.models.parcae import PARCAE

ARCHITECTURES: tuple[Architecture, ...] = (OURO, HUGINN, PARCAE)
BY_MODEL_TYPE = {t: arch for arch in ARCHITECTURES for t in arch.model_types}
BY_CLASS_NAME = {n: arch for arch in ARCHITECTURES for n in arch.class_names}
BY_CONFIG_CLASS = {arch.config_class: arch for arch in ARCHITECTURES}


def config_from_hf(cfg: dict):
    """The config dataclass for a checkpoint's config.json dict."""
    if not isinstance(cfg, dict):
        raise ValueError(f"config.json must hold a JSON object, got {type(cfg).__name__}")
    model_type = cfg.get("model_type")
    if model_type is None:
        for field in ("_class_name", "model_class_name"):
            if cfg.get(field) in BY_CLASS_NAME:
                return BY_CLASS_NAME[cfg[field]].config_from_hf(cfg)
    if model_type not in BY_MODEL_TYPE:
        raise ValueError(f"unknown model_type {model_type!r} in config.json; loopjax supports "
                         f"{sorted(BY_MODEL_TYPE)} (and, without a model_type, _class_name "
                         f"{sorted(BY_CLASS_NAME)})")
    return BY_MODEL_TYPE[model_type].config_from_hf(cfg)


def architecture(config) -> Architecture:
    """The architecture implementing a config dataclass."""
    try:
        return BY_CONFIG_CLASS[type(config)]
    except KeyError:
        raise TypeError(f"{type(config).__name__} is not the config of a registered architecture") from None


__all__ = ["Architecture", "ARCHITECTURES", "config_from_hf", "architecture", "OURO", "HUGINN", "PARCAE"]
