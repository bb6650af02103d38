"""Pretrained backbones in and out: every checkpoint layout researchers have
(``load_backbone``), initialising a method from one (``load_backbone_weights``), and
plain timm/torchvision state_dicts out (``export_backbone``)."""
from .export import export_backbone
from .formats import FORMATS, CheckpointError, detect_format
from .loading import (
    LoadReport,
    file_digest,
    infer_resnet_arch,
    load_backbone,
    load_backbone_report,
    load_backbone_weights,
    load_projector,
)
from .reading import read_checkpoint

__all__ = [
    "FORMATS", "CheckpointError", "LoadReport", "detect_format", "export_backbone", "file_digest",
    "infer_resnet_arch", "load_backbone", "load_backbone_report", "load_backbone_weights", "load_projector",
    "read_checkpoint",
]
