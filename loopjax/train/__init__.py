"""Training small looped transformers (Ouro, Huginn, Huginn without input injection) with optax, with the
top Lyapunov exponent λ1 of the loop map tracked during training (and optionally regularised).

    from loopjax.train import TrainConfig, train, ablation
    train(TrainConfig(arch="huginn", steps=1500), "runs/huginn")      # -> loopjax.load("runs/huginn")
    ablation("runs/ablation", seeds=(0, 1))                          # huginn vs huginn-noinject

Model internals are reached only through loopjax.train.forward.
"""
from loopjax.train.injection_ablation import ablation
from loopjax.train.trainer import TrainConfig, train

__all__ = ["TrainConfig", "train", "ablation"]
