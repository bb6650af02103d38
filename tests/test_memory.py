"""State that lives across steps (queues, prototypes, momentum encoders) exists once
and does not grow with steps or crops."""
import gc

import pytest
import torch

from helpers import tiny_byol, tiny_moco, tiny_swav


def live_tensor_bytes() -> int:
    """Bytes of every tensor storage Python can still reach (parameters, buffers, anything a
    method keeps in lists or dicts, autograd graphs held by them)."""
    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        if torch.is_tensor(obj) and obj.device.type == "cpu":
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


@pytest.mark.parametrize("build", [tiny_moco, tiny_byol, tiny_swav])
def test_state_does_not_grow_with_steps(build):
    """Once queues are full and the optimiser has its state, live memory stays flat: no
    per-step tensor is kept (histories, graphs, statistics)."""
    torch.manual_seed(0)
    model = build().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = {"image": torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8),
             "label": torch.arange(16) % 4}
    sizes = []
    for step in range(8):
        loss, stats = model.step(model.augment(batch), batch["label"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del loss, stats
        sizes.append(live_tensor_bytes())
    assert sizes[5:] == [sizes[5]] * 3, sizes  # queues (64 and 2 x 32 keys) full after 4 steps


def test_one_queue_and_one_set_of_prototypes():
    from sslkit.nn.queue import FeatureQueue, NegativeQueue

    moco = tiny_moco(queue_size=64)
    queues = {name: type(m) for name, m in moco.named_modules() if isinstance(m, FeatureQueue)}
    assert queues == {"queue": NegativeQueue} and moco.queue.keys.shape == (64, 16)
    swav = tiny_swav(queue_size=32)
    queues = {name: type(m) for name, m in swav.named_modules() if isinstance(m, FeatureQueue)}
    assert queues == {"queues.0": FeatureQueue, "queues.1": FeatureQueue}  # one per global crop, as in SwAV
    assert all(swav.queues[i].keys.shape == (32, 16) for i in range(2))
    prototypes = [n for n, p in swav.named_parameters() if "prototypes" in n]
    assert prototypes == ["prototypes.weight"]
