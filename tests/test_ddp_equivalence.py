"""One training step on 2 ranks x B/2 equals one step on 1 process x B (2 CPU processes,
gloo), for MoCo v2, BYOL, SwAV, SimCLR, SimSiam, Barlow Twins, VICReg and MoCo v3 (a ViT, keys
gathered over ranks) with BatchNorm over
the global batch: loss, gradients (through the parameters after an SGD step) and state."""
import pytest
import torch
import torch.distributed as dist

from ddp import run_distributed
from sslkit.nn.syncbn import convert_global_batchnorm

BATCH = 8
BASELINES = {"simclr": "SimCLR", "simsiam": "SimSiam", "barlow_twins": "BarlowTwins", "vicreg": "VICReg"}
METHODS = ["moco", "byol", "swav", *BASELINES, "mocov3"]


def build(method):
    from helpers import tiny_byol, tiny_moco, tiny_swav

    torch.manual_seed(0)
    if method == "moco":
        return tiny_moco(batchnorm="sync", queue_size=32)
    if method == "byol":
        return tiny_byol()
    if method == "mocov3":
        from helpers import tiny_mocov3

        return tiny_mocov3()
    if method in BASELINES:
        from helpers import tiny_baseline

        return tiny_baseline(BASELINES[method])
    return tiny_swav(queue_size=0, freeze_prototypes_epochs=0)


def views_for(method):
    g = torch.Generator().manual_seed(1)
    sizes = [32, 32] + ([16, 16] if method == "swav" else [])
    return [{"image": torch.randn(BATCH, 3, s, s, generator=g)} for s in sizes]


def one_step(rank, world_size, method):
    model = convert_global_batchnorm(build(method)).train()
    per_rank = BATCH // world_size
    views = [{"image": v["image"][rank * per_rank:(rank + 1) * per_rank]} for v in views_for(method)]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.5)
    loss, _ = model.step(views)
    loss.backward()
    for p in params:  # what DDP does: average the gradients over ranks
        if p.grad is not None and world_size > 1:
            dist.all_reduce(p.grad)
            p.grad /= world_size
    optimizer.step()
    global_loss = loss.detach().clone()
    if world_size > 1:
        dist.all_reduce(global_loss)
        global_loss /= world_size
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return float(global_loss), state


def every_method(rank, world_size):
    """One spawn for every check (starting processes is most of the cost)."""
    return {method: one_step(rank, world_size, method) for method in METHODS} | {
        "swav_queue": _swav_steps_with_queue(rank, world_size), "batchnorm": _batchnorm_step(rank, world_size)}


@pytest.fixture(scope="module")
def two_ranks():
    return run_distributed(every_method, 2)


@pytest.mark.parametrize("method", METHODS)
def test_two_ranks_with_global_batchnorm_equal_one_process(two_ranks, method):
    single_loss, single = one_step(0, 1, method)  # one process, the whole batch, no process group
    initial = build(method).state_dict()
    results = [ranked[method] for ranked in two_ranks]
    for loss, state in results:
        assert loss == pytest.approx(single_loss, rel=1e-5, abs=1e-6)
        for key, value in single.items():
            if value.is_floating_point():  # the step's change agrees to 1e-4 of its size (float32 sums)
                change = (value - initial[key]).abs().max()
                assert torch.allclose(state[key], value, rtol=0, atol=1e-6 + 1e-4 * float(change)), key
            else:
                assert torch.equal(state[key], value), key
    if method == "moco":  # the queue: the same keys, in the same order, on every rank
        assert torch.equal(results[0][1]["queue.keys"], results[1][1]["queue.keys"])
        assert torch.allclose(results[0][1]["queue.keys"], single["queue.keys"], atol=1e-5)


def _swav_steps_with_queue(rank, world_size):
    """Three SwAV steps with a queue of 16 per global crop at a global batch of 8: two
    steps fill it, the third computes its codes with it."""
    from helpers import tiny_swav

    torch.manual_seed(0)
    model = convert_global_batchnorm(tiny_swav(queue_size=16, queue_start_epoch=0)).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    losses = []
    for step in range(3):
        g = torch.Generator().manual_seed(10 + step)
        views = [{"image": torch.randn(BATCH, 3, s, s, generator=g)} for s in (32, 32, 16, 16)]
        per_rank = BATCH // world_size
        views = [{"image": v["image"][rank * per_rank:(rank + 1) * per_rank]} for v in views]
        optimizer.zero_grad()
        loss, _ = model.step(views)
        loss.backward()
        for p in model.parameters():
            if p.grad is not None and world_size > 1:
                dist.all_reduce(p.grad)
                p.grad /= world_size
        optimizer.step()
        global_loss = loss.detach().clone()
        if world_size > 1:
            dist.all_reduce(global_loss)
            global_loss /= world_size
        losses.append(float(global_loss))
    return losses, {k: v.clone() for k, v in model.state_dict().items() if k.startswith("queues.")}


def test_swav_queue_is_global_and_two_ranks_equal_one_process(two_ranks):
    """``queue_size`` is global, as in main_swav.py (each of the W ranks scores
    queue_size / W embeddings): every step's loss, the queue and the codes it feeds equal
    one process holding the whole batch and queue; every rank keeps the whole queue, so a
    checkpoint from rank 0 resumes on any number of ranks."""
    single_losses, single_queues = _swav_steps_with_queue(0, 1)
    results = [ranked["swav_queue"] for ranked in two_ranks]
    for key in single_queues:
        assert torch.equal(results[0][1][key], results[1][1][key]), key  # the same queue on every rank
    for losses, queues in results:
        assert losses == pytest.approx(single_losses, rel=1e-4)
        for key, value in single_queues.items():  # two SGD steps of float drift, not a reordering
            assert torch.allclose(queues[key], value, atol=2e-3), key


def _batchnorm_step(rank, world_size):
    torch.manual_seed(0)
    bn = convert_global_batchnorm(torch.nn.BatchNorm2d(3)).train()
    x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(2), requires_grad=True)
    part = x[rank * 8 // world_size:(rank + 1) * 8 // world_size]
    out = bn(part)
    (out * torch.arange(out.numel()).view_as(out)).sum().backward()
    return out.detach(), x.grad, bn.running_mean, bn.running_var


def test_global_batchnorm_matches_batchnorm_on_the_whole_batch(two_ranks):
    results = [ranked["batchnorm"] for ranked in two_ranks]
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3).train()
    x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(2), requires_grad=True)
    out = bn(x)
    weights = torch.cat([torch.arange(out[:4].numel()).view_as(out[:4])] * 2)
    (out * weights).sum().backward()
    assert torch.allclose(torch.cat([r[0] for r in results]), out.detach(), atol=1e-5)
    assert torch.allclose(results[0][1] + results[1][1], x.grad, atol=1e-4)  # each rank holds its rows
    for r in results:
        assert torch.allclose(r[2], bn.running_mean, atol=1e-6) and torch.allclose(r[3], bn.running_var, atol=1e-5)
