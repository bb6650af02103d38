import math

import torch
import torch.nn.functional as F

from sslkit.nn.losses import info_nce


def naive_info_nce(q, k, negatives, t):
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ n) / t) for n in negatives)
        total += -math.log(pos / (pos + neg))
    return total / q.shape[0]


def test_info_nce_matches_per_sample_loop():
    q = F.normalize(torch.randn(6, 8, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(6, 8, dtype=torch.float64), dim=1)
    negatives = F.normalize(torch.randn(10, 8, dtype=torch.float64), dim=1)
    for t in (0.07, 0.2, 1.0):
        assert abs(float(info_nce(q, k, negatives, t)) - naive_info_nce(q, k, negatives, t)) < 1e-9


def test_info_nce_per_query_negatives_match_shared():
    q = F.normalize(torch.randn(4, 5), dim=1)
    k = F.normalize(torch.randn(4, 5), dim=1)
    negatives = F.normalize(torch.randn(7, 5), dim=1)
    shared = info_nce(q, k, negatives, 0.2)
    per_query = info_nce(q, k, negatives.expand(4, -1, -1), 0.2)
    assert torch.allclose(shared, per_query, atol=1e-6)


def test_info_nce_gradient_only_through_query_when_keys_detached():
    """With detached keys only the query gets a gradient, and it is the closed form
    dL/dq_i = ((p_i0 - 1) k_i + sum_j p_ij n_j) / (tau B), p_i = softmax of query i's logits."""
    torch.manual_seed(0)
    tau = 0.2
    q = F.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    k = F.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    queue = F.normalize(torch.randn(5, 4), dim=1).requires_grad_()
    info_nce(q, k.detach(), queue.detach(), tau).backward()
    assert k.grad is None and queue.grad is None
    expected = []
    for i in range(3):
        p = torch.softmax(torch.cat([(q[i] @ k[i])[None], queue @ q[i]]) / tau, dim=0).detach()
        expected.append(((p[0] - 1) * k[i] + p[1:] @ queue).detach() / (tau * 3))
    assert torch.allclose(q.grad, torch.stack(expected), atol=1e-6)
