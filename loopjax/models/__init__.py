"""One file per architecture; each exposes the same protocol (see loopjax.model)."""
from loopjax.models import huginn, ouro

# config.json "model_type" -> model file
ARCHITECTURES = {"ouro": ouro, "huginn_raven": huginn, "huginn": huginn}
CONFIG_TYPES = {ouro.OuroConfig: ouro, huginn.HuginnConfig: huginn}


def config_from_hf(cfg: dict):
    """The config dataclass for a checkpoint's config.json dict."""
    model_type = cfg.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"unknown model_type {model_type!r} in config.json; loopjax supports "
                         f"{sorted(ARCHITECTURES)}")
    arch = ARCHITECTURES[model_type]
    return (arch.OuroConfig if arch is ouro else arch.HuginnConfig).from_hf(cfg)


def architecture(config):
    """The model file (module) implementing a config dataclass."""
    return CONFIG_TYPES[type(config)]
