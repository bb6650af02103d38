import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddp import run_distributed
from sslkit.methods.lars import LARS
from sslkit.nn.losses import byol_loss, sinkhorn, swav_loss


def test_byol_loss_is_squared_distance_of_normalised_vectors():
    p, z = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    expected = np.mean([
        np.sum((pi / np.linalg.norm(pi) - zi / np.linalg.norm(zi)) ** 2) for pi, zi in zip(p.numpy(), z.numpy())
    ])
    assert abs(float(byol_loss(p, z)) - expected) < 1e-12
    assert float(byol_loss(z, z)) < 1e-12


def test_byol_loss_stops_gradient_at_target():
    p, z = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    byol_loss(p, z).backward()
    assert p.grad is not None and z.grad is None


def naive_sinkhorn(scores, eps, iters):
    q = np.exp(scores / eps).T
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iters):
        q = q / q.sum(axis=1, keepdims=True) / k
        q = q / q.sum(axis=0, keepdims=True) / b
    return (q * b).T


def test_sinkhorn_matches_numpy_reference_and_marginals():
    scores = F.normalize(torch.randn(16, 8, dtype=torch.float64), dim=1) @ F.normalize(
        torch.randn(6, 8, dtype=torch.float64), dim=1).T
    codes = sinkhorn(scores, epsilon=0.05, iterations=3)
    reference = naive_sinkhorn(scores.numpy(), 0.05, 3)
    assert np.allclose(codes.numpy(), reference, atol=1e-5)
    assert torch.allclose(codes.sum(1), torch.ones(16, dtype=codes.dtype), atol=1e-5)
    many = sinkhorn(scores, epsilon=0.05, iterations=300)
    assert torch.allclose(many.sum(0), torch.full((6,), 16 / 6, dtype=many.dtype), atol=1e-3)


def test_sinkhorn_rejects_nan():
    scores = torch.zeros(4, 3)
    scores[1, 2] = float("nan")
    with pytest.raises(FloatingPointError):
        sinkhorn(scores)


def test_swav_loss_matches_loop_over_crop_pairs():
    torch.manual_seed(1)
    scores = [torch.randn(4, 5, dtype=torch.float64) for _ in range(4)]
    codes = [torch.softmax(torch.randn(4, 5, dtype=torch.float64), 1) for _ in range(2)]
    total = 0.0
    for s in range(2):
        sub = 0.0
        for t in range(4):
            if t == s:
                continue
            for i in range(4):
                logits = scores[t][i].numpy() / 0.1
                log_p = logits - np.log(np.sum(np.exp(logits)))
                sub += -np.sum(codes[s][i].numpy() * log_p) / 4
        total += sub / 3
    assert abs(float(swav_loss(scores, codes, 0.1)) - total / 2) < 1e-10


def _sinkhorn_rank(rank, world_size, scores):
    local = scores.chunk(world_size)[rank]
    return sinkhorn(local, 0.05, 3)


def test_distributed_sinkhorn_equals_single_process_on_the_whole_batch():
    scores = torch.randn(8, 5) * 0.5
    parts = run_distributed(_sinkhorn_rank, 2, scores)
    assert torch.allclose(torch.cat(parts), sinkhorn(scores, 0.05, 3), atol=1e-6)


def test_lars_step_against_hand_computation():
    w = torch.tensor([3.0, 4.0], requires_grad=True)  # |w| = 5
    b = torch.tensor([1.0], requires_grad=True)
    opt = LARS([{"params": [w]}, {"params": [b], "exclude": True, "weight_decay": 0.0}],
               lr=0.1, momentum=0.9, weight_decay=0.5, trust_coefficient=0.01)
    w.grad = torch.tensor([0.5, -2.0])
    b.grad = torch.tensor([2.0])
    opt.step()
    update = np.array([0.5, -2.0]) + 0.5 * np.array([3.0, 4.0])  # [2, 0]
    trust = 0.01 * 5 / np.linalg.norm(update)
    assert np.allclose(w.detach().numpy(), np.array([3.0, 4.0]) - 0.1 * trust * update, atol=1e-6)
    assert math.isclose(float(b), 1.0 - 0.1 * 2.0, abs_tol=1e-7)  # excluded: plain SGD step
    w.grad = torch.tensor([0.5, -2.0])
    before = w.detach().clone()
    opt.step()
    update2 = np.array([0.5, -2.0]) + 0.5 * before.numpy()
    trust2 = 0.01 * np.linalg.norm(before.numpy()) / np.linalg.norm(update2)
    buf = 0.9 * trust * update + trust2 * update2
    assert np.allclose(w.detach().numpy(), before.numpy() - 0.1 * buf, atol=1e-6)
