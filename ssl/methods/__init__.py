"""Self-supervised methods as LightningModules."""
from .mocov2 import MoCoV2
from .optim import OptimConfig

__all__ = ["MoCoV2", "OptimConfig"]
