"""Self-supervised methods as LightningModules; ``SSLMethod`` is the template every one of
them is built on."""
from sslkit.checkpoints.reading import allow_safe_types
from sslkit.eval.knn import KNNConfig
from sslkit.eval.online import OnlineClassifierConfig
from sslkit.nn.backbones import BackboneConfig

from .barlow_twins import BarlowTwins
from .byol import BYOL
from .dino import DINO
from .lars import LARS
from .method import SSLMethod
from .mocov2 import MoCoV2
from .mocov3 import MoCoV3
from .optim import OptimConfig
from .simclr import SimCLR
from .simsiam import SimSiam
from .speed import SpeedConfig
from .swav import SwAV
from .vicreg import VICReg

allow_safe_types()  # Lightning's own loads (resume, load_from_checkpoint) read sslkit's configs too

__all__ = ["BYOL", "BackboneConfig", "BarlowTwins", "DINO", "KNNConfig", "LARS", "MoCoV2", "MoCoV3",
           "OnlineClassifierConfig", "OptimConfig", "SSLMethod", "SimCLR", "SimSiam", "SpeedConfig", "SwAV", "VICReg"]
