"""State that lives across steps (queues, prototypes, momentum encoders) exists once
and does not grow with steps or crops."""
import pytest
import torch

from helpers import tiny_byol, tiny_moco, tiny_swav


def state_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


@pytest.mark.parametrize("build", [tiny_moco, tiny_byol, tiny_swav])
def test_state_does_not_grow_with_steps(build):
    torch.manual_seed(0)
    model = build().train()
    batch = {"image": torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)}
    sizes = []
    for _ in range(4):
        loss, _ = model.step(model.augment(batch))
        loss.backward()
        model.zero_grad(set_to_none=True)
        sizes.append(state_bytes(model))
    assert len(set(sizes)) == 1


def test_one_queue_and_one_set_of_prototypes():
    moco = tiny_moco(queue_size=64)
    queues = [name for name, t in moco.state_dict().items() if tuple(t.shape) == (64, 16)]
    assert queues == ["queue.keys"]
    swav = tiny_swav(queue_length=32)
    queues = [name for name, t in swav.state_dict().items() if tuple(t.shape) == (32, 16)]
    assert queues == ["queues.0.keys", "queues.1.keys"]  # one queue per global crop, as in SwAV
    prototypes = [n for n, p in swav.named_parameters() if "prototypes" in n]
    assert prototypes == ["prototypes.weight"]
