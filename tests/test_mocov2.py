import pytest
import torch

from helpers import tiny_data, tiny_moco, tiny_trainer
from sslkit.methods import MoCoV2


def test_training_updates_queue_and_key_encoder_stays_gradient_free(tmp_path):
    model = tiny_moco()
    keys_before = model.queue.keys.clone()
    tiny_trainer(tmp_path, max_steps=2).fit(model, tiny_data())
    assert int(model.queue.ptr) == (2 * 16) % 64
    assert not torch.equal(model.queue.keys[:32], keys_before[:32])
    assert torch.equal(model.queue.keys[32:], keys_before[32:])
    assert all(p.grad is None for p in model.key_backbone.parameters())
    assert model.backbone(torch.randn(2, 3, 32, 32)).shape == (2, model.backbone.dim)


def test_symmetric_loss_enqueues_both_views(tmp_path):
    model = tiny_moco(symmetric=True)
    tiny_trainer(tmp_path, max_steps=1).fit(model, tiny_data())
    assert int(model.queue.ptr) == 2 * 16


def test_checkpoint_restores_queue_pointer_and_momentum_encoder(tmp_path):
    model = tiny_moco()
    trainer = tiny_trainer(tmp_path, max_steps=3)
    trainer.fit(model, tiny_data())
    path = tmp_path / "moco.ckpt"
    trainer.save_checkpoint(path)

    restored = MoCoV2.load_from_checkpoint(path)
    original = model.state_dict()
    for name, tensor in restored.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    assert int(restored.queue.ptr) == 3 * 16 % 64

    # resuming continues from the saved queue pointer and step
    resumed = tiny_moco()
    trainer = tiny_trainer(tmp_path, max_steps=4)
    trainer.fit(resumed, tiny_data(), ckpt_path=str(path))
    assert trainer.global_step == 4
    assert int(resumed.queue.ptr) == 4 * 16 % 64


def test_queue_smaller_than_global_batch_is_a_clear_error(tmp_path):
    model = tiny_moco(queue_size=8)
    with pytest.raises(ValueError, match="queue_size=8 is smaller than the 16 keys enqueued per step"):
        tiny_trainer(tmp_path).fit(model, tiny_data())


def test_unknown_backbone_names_close_matches():
    with pytest.raises(ValueError, match="unknown backbone 'resnet5O'.*resnet50"):
        tiny_moco(backbone="resnet5O")


def test_test_loop_reports_knn_accuracy(tmp_path):
    results = tiny_trainer(tmp_path).test(tiny_moco(), tiny_data(), verbose=False)
    assert "val/knn_top1" in results[0]
