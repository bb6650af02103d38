"""Split BatchNorm against the MoCo authors' CIFAR-10 demo (facebookresearch/moco,
branch colab-notebook, colab/moco_cifar10_demo.ipynb), whose ``SplitBatchNorm`` is
rewritten here from the notebook."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import tiny_moco
from sslkit.nn.splitbn import SplitBatchNorm2d, convert_split_batchnorm


class DemoSplitBatchNorm(nn.BatchNorm2d):
    """colab/moco_cifar10_demo.ipynb ``SplitBatchNorm``."""

    def __init__(self, num_features, num_splits, **kw):
        super().__init__(num_features, **kw)
        self.num_splits = num_splits

    def forward(self, input):
        N, C, H, W = input.shape
        if self.training or not self.track_running_stats:
            running_mean_split = self.running_mean.repeat(self.num_splits)
            running_var_split = self.running_var.repeat(self.num_splits)
            outcome = F.batch_norm(
                input.view(-1, C * self.num_splits, H, W), running_mean_split, running_var_split,
                self.weight.repeat(self.num_splits), self.bias.repeat(self.num_splits),
                True, self.momentum, self.eps).view(N, C, H, W)
            self.running_mean.data.copy_(running_mean_split.view(self.num_splits, C).mean(dim=0))
            self.running_var.data.copy_(running_var_split.view(self.num_splits, C).mean(dim=0))
            return outcome
        return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                            False, self.momentum, self.eps)


def pair(num_features=4, splits=8):
    torch.manual_seed(0)
    ours = SplitBatchNorm2d(num_features, splits)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-0.5, 0.5)
    demo = DemoSplitBatchNorm(num_features, splits)
    demo.load_state_dict(ours.state_dict())
    return ours, demo


def test_outputs_running_statistics_and_gradients_equal_the_demo_over_several_steps():
    ours, demo = pair()
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        x = (torch.randn(32, 4, 5, 5, generator=g) * 2 + 3)
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_ours, out_demo = ours(a), demo(b)
        assert torch.allclose(out_ours, out_demo, atol=1e-6)
        (out_ours * torch.arange(out_ours.numel()).view_as(out_ours).sin()).sum().backward()
        (out_demo * torch.arange(out_demo.numel()).view_as(out_demo).sin()).sum().backward()
        assert torch.allclose(a.grad, b.grad, atol=1e-5)
        assert torch.allclose(ours.weight.grad, demo.weight.grad, atol=1e-4)
        assert torch.allclose(ours.running_mean, demo.running_mean, atol=1e-6)
        assert torch.allclose(ours.running_var, demo.running_var, atol=1e-6)
    ours.eval(), demo.eval()
    x = torch.randn(6, 4, 5, 5, generator=g)
    assert torch.allclose(ours(x), demo(x), atol=1e-6)


def test_one_running_statistics_update_per_step():
    """A true mean of 3: after one step both give 0.9 * 0 + 0.1 * 3 = 0.3 (one momentum
    update with the split means averaged), not 1 - 0.9^8 = 0.57 of eight updates."""
    ours, demo = pair(num_features=1)
    x = torch.randn(64, 1, 4, 4) * 0.01 + 3
    ours(x), demo(x)
    assert float(ours.running_mean) == pytest.approx(float(demo.running_mean), abs=1e-6)
    assert float(ours.running_mean) == pytest.approx(0.3, abs=0.01)


def test_splits_are_interleaved_samples():
    """Split j holds samples j, j + s, j + 2s, ...: each is normalised with its split's statistics."""
    ours, _ = pair(num_features=1, splits=2)
    ours.weight.data.fill_(1.0)
    ours.bias.data.zero_()
    x = torch.tensor([0.0, 10.0, 2.0, 12.0]).view(4, 1, 1, 1)
    out = ours(x).view(-1)
    assert torch.allclose(out, torch.tensor([-1.0, -1.0, 1.0, 1.0]), atol=1e-4)


def test_uneven_batches_use_the_same_interleaved_splits():
    ours, _ = pair(num_features=2, splits=4)
    reference = copy.deepcopy(ours)
    x = torch.randn(10, 2, 3, 3)
    out = ours(x)
    expected = torch.empty_like(x)
    means, variances = [], []
    for j in range(4):
        mean, var = reference.running_mean.clone(), reference.running_var.clone()
        expected[j::4] = F.batch_norm(x[j::4], mean, var, reference.weight, reference.bias, True, 0.1, 1e-5)
        means.append(mean)
        variances.append(var)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(ours.running_mean, torch.stack(means).mean(0), atol=1e-6)


def test_moco_split_mode_uses_split_batchnorm_in_both_encoders():
    model = tiny_moco(batchnorm="split", bn_splits=2)
    for encoder in (model.backbone, model.momentum_backbone):
        norms = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms and all(isinstance(m, SplitBatchNorm2d) and m.num_splits == 2 for m in norms)
    plain = tiny_moco(batchnorm="plain")
    assert set(plain.state_dict()) == set(model.state_dict())  # checkpoints load either way


def test_other_normalisation_layers_are_refused_by_name():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4))
    with pytest.raises(ValueError, match="'1' is a SyncBatchNorm"):
        convert_split_batchnorm(net, 2)
