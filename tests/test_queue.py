import pytest
import torch

from sslkit.nn.queue import NegativeQueue


def test_fifo_order_and_wrap_around():
    queue = NegativeQueue(size=5, dim=2)
    written = []
    for step in range(4):
        keys = torch.full((3, 2), float(step)) + torch.arange(3.0).view(3, 1) / 10
        queue.enqueue(keys)
        written.extend(keys.unbind())
    # naive reference: slot j holds the latest key whose running position = j (mod 5)
    expected = [None] * 5
    for position, key in enumerate(written):
        expected[position % 5] = key
    assert torch.equal(queue.keys, torch.stack(expected))
    assert int(queue.ptr) == len(written) % 5
    assert int(queue.filled) == 5


def test_batch_equal_to_size_and_state_dict_round_trip():
    queue = NegativeQueue(size=4, dim=3)
    queue.enqueue(torch.ones(4, 3))
    assert int(queue.ptr) == 0 and torch.equal(queue.keys, torch.ones(4, 3))
    clone = NegativeQueue(size=4, dim=3)
    clone.load_state_dict(queue.state_dict())
    assert torch.equal(clone.keys, queue.keys) and int(clone.ptr) == int(queue.ptr)


def test_too_many_keys_is_a_clear_error():
    queue = NegativeQueue(size=4, dim=3)
    with pytest.raises(ValueError, match="queue_size=4 is smaller"):
        queue.enqueue(torch.ones(5, 3))
