"""State kept across batches must be right under DDP (2 CPU processes, gloo)."""
import pytest
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
    model = tiny_moco(batchnorm="shuffle")  # train mode: BatchNorm statistics of the sub-batch seen
    seen = []
    forward = model._key_forward

    def recording(images):
        keys = forward(images)
        seen.append((images.clone(), keys.clone()))
        return keys

    model._key_forward = recording
    torch.manual_seed(100 + rank)
    images = torch.randn(4, 3, 32, 32)
    return model._keys(images), images, seen[0]


def test_cross_rank_shuffle_bn_returns_each_ranks_own_keys():
    """Each rank's key encoder sees a sub-batch mixing both ranks' images (MoCo sec. 3.3,
    ``_batch_shuffle_ddp`` in moco/builder.py), and every rank gets back, in its own order,
    the key its image got in whichever sub-batch it went to."""
    results = run_distributed(_shuffle_bn_keys, 2)
    everyone = torch.cat([images for _, images, _ in results])
    encoded = [(images, keys) for _, _, (images, keys) in results]
    assert sorted(everyone.flatten(1).sum(1).tolist()) == pytest.approx(
        sorted(torch.cat([i for i, _ in encoded]).flatten(1).sum(1).tolist()))  # every image keyed once
    mixed = [any(torch.equal(x, y) for x in results[1 - r][1] for y in encoded[r][0]) for r in range(2)]
    assert all(mixed), "a rank's key encoder saw none of the other rank's images: no cross-rank shuffle"
    for keys, images, _ in results:
        for image, key in zip(images, keys):
            (batch, batch_keys), = [(b, k) for b, k in encoded if any(torch.equal(image, x) for x in b)]
            position = [torch.equal(image, x) for x in batch].index(True)
            assert torch.allclose(key, batch_keys[position], atol=1e-6)
