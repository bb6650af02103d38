"""Self-supervised methods as LightningModules; ``SSLMethod`` is what every one of them is."""
from .byol import BYOL
from .lars import LARS
from .method import SSLMethod
from .mocov2 import MoCoV2
from .optim import OptimConfig
from .speed import SpeedConfig
from .swav import SwAV

__all__ = ["BYOL", "LARS", "MoCoV2", "OptimConfig", "SSLMethod", "SpeedConfig", "SwAV"]
