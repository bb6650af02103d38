import torch
from torch import nn

from sslkit.nn.momentum import cosine_momentum, momentum_copy, momentum_update


def test_momentum_update_formula():
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = momentum_copy(online)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in target.parameters()]
    momentum_update(online, target, 0.9)
    for b, o, t in zip(before, online.parameters(), target.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o, atol=1e-7)
    assert all(not p.requires_grad for p in target.parameters())


def test_cosine_momentum_endpoints():
    assert cosine_momentum(0.996, 1.0, 0, 100) == 0.996
    assert abs(cosine_momentum(0.996, 1.0, 50, 100) - 0.998) < 1e-12
    assert cosine_momentum(0.996, 1.0, 100, 100) == 1.0
