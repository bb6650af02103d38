"""State kept across batches must be right under DDP (2 CPU processes, gloo)."""
import torch

from ddp import run_distributed
from sslkit.nn.queue import NegativeQueue


def _enqueue(rank, world_size):
    torch.manual_seed(0)
    queue = NegativeQueue(size=10, dim=2)
    for step in range(3):
        keys = torch.tensor([[rank, step], [rank, step + 0.5]], dtype=torch.float32)
        queue.enqueue(keys)
    return queue.state_dict()


def test_queue_gathers_keys_from_all_ranks():
    states = run_distributed(_enqueue, 2)
    torch.manual_seed(0)
    reference = NegativeQueue(size=10, dim=2)
    for step in range(3):
        keys = torch.tensor([[r, s] for r in range(2) for s in (step, step + 0.5)], dtype=torch.float32)
        reference.enqueue(keys)
    for state in states:
        assert torch.equal(state["keys"], reference.keys)
        assert int(state["ptr"]) == int(reference.ptr) == 12 % 10


def _shuffle_bn_keys(rank, world_size):
    from helpers import tiny_moco

    torch.manual_seed(0)
    model = tiny_moco(batchnorm="shuffle")
    model.key_backbone.eval()  # running statistics: each key depends on its own image only
    model.key_head.eval()
    torch.manual_seed(100 + rank)
    images = torch.randn(4, 3, 32, 32)
    return model._keys(images), model._key_forward(images), images


def test_cross_rank_shuffle_bn_returns_each_ranks_own_keys():
    results = run_distributed(_shuffle_bn_keys, 2)
    for shuffled, direct, _ in results:
        assert torch.allclose(shuffled, direct, atol=1e-5)
    assert not torch.allclose(results[0][0], results[1][0])
