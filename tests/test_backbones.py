import pytest
import torch

from sslkit.nn.backbones import build_backbone


@pytest.mark.parametrize("name, dim", [("test_resnet", 96), ("torchvision.resnet18", 512)])
def test_backbone_maps_images_to_pooled_features(name, dim):
    backbone = build_backbone(name).eval()
    assert backbone.dim == dim
    assert backbone(torch.randn(2, 3, 64, 64)).shape == (2, dim)


def test_small_image_stem_keeps_resolution():
    big = build_backbone("torchvision.resnet18")
    small = build_backbone("torchvision.resnet18", small_images=True)
    assert small.model.conv1.kernel_size == (3, 3) and small.model.conv1.stride == (1, 1)
    assert isinstance(small.model.maxpool, torch.nn.Identity)
    # the stem keeps 32x32: layer1 sees 4x more positions than with the ImageNet stem
    seen = {}
    for name, model in (("big", big), ("small", small)):
        model.model.layer1.register_forward_hook(lambda m, i, o, n=name: seen.__setitem__(n, o.shape[-1]))
        model.eval()(torch.randn(1, 3, 32, 32))
    assert seen == {"big": 8, "small": 32}


def test_unknown_torchvision_name():
    with pytest.raises(ValueError, match="unknown backbone 'torchvision.resnet19'"):
        build_backbone("torchvision.resnet19")
