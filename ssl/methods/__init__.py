"""Self-supervised methods as LightningModules."""
from .byol import BYOL
from .lars import LARS
from .mocov2 import MoCoV2
from .optim import OptimConfig
from .speed import SpeedConfig
from .swav import SwAV

__all__ = ["BYOL", "LARS", "MoCoV2", "OptimConfig", "SpeedConfig", "SwAV"]
