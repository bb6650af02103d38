import math

import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_data, tiny_moco, tiny_trainer
from sslkit.methods import KNNConfig


def test_training_updates_queue_and_key_encoder_stays_gradient_free(tmp_path):
    model = tiny_moco()
    keys_before = model.queue.keys.clone()
    tiny_trainer(tmp_path, max_steps=2).fit(model, tiny_data())
    assert int(model.queue.ptr) == (2 * 16) % 64
    assert not torch.equal(model.queue.keys[:32], keys_before[:32])
    assert torch.equal(model.queue.keys[32:], keys_before[32:])
    assert all(p.grad is None for p in model.momentum_backbone.parameters())
    assert model.eval().backbone(torch.randn(2, 3, 32, 32)).shape == (2, model.backbone.dim)


def test_symmetric_loss_is_the_mean_of_both_directions_and_enqueues_both_keys():
    """MoCo's symmetric variant: 0.5 (L(q1, k2) + L(q2, k1)), both against the queue as it
    was before the step, then both keys enter the queue (k2 first)."""
    torch.manual_seed(0)
    model = tiny_moco(symmetric=True, batchnorm="plain", temperature=0.2).train()
    x1, x2 = torch.rand(8, 3, 32, 32), torch.rand(8, 3, 32, 32)
    queue = model.queue.keys.clone()

    def encode(backbone, projector, x):
        return F.normalize(projector(backbone(x)), dim=1)

    def reference(q, k):
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], 1) / 0.2
        return F.cross_entropy(logits, torch.zeros(8, dtype=torch.long))

    with torch.no_grad():
        q1, q2 = encode(model.backbone, model.projector, x1), encode(model.backbone, model.projector, x2)
        k1 = encode(model.momentum_backbone, model.momentum_projector, x1)
        k2 = encode(model.momentum_backbone, model.momentum_projector, x2)
        expected = 0.5 * (reference(q1, k2) + reference(q2, k1))
        loss, _ = model.step([{"image": x1}, {"image": x2}])
    assert torch.allclose(loss, expected, atol=1e-6)
    assert int(model.queue.ptr) == 16
    assert torch.allclose(model.queue.keys[:16], torch.cat([k2, k1]), atol=1e-6)


def test_queue_smaller_than_global_batch_is_a_clear_error(tmp_path):
    model = tiny_moco(queue_size=8)
    with pytest.raises(ValueError, match="queue_size=8 is smaller than the 16 keys enqueued per step"):
        tiny_trainer(tmp_path).fit(model, tiny_data())


def test_unknown_backbone_names_close_matches():
    with pytest.raises(ValueError, match="unknown backbone 'resnet5O'.*resnet50"):
        tiny_moco(backbone="resnet5O")


def test_test_loop_reports_knn_accuracy(tmp_path):
    """``trainer.test`` reports the weighted kNN accuracy (Wu et al. 2018) of the backbone's
    features of the val split against the un-augmented train split, as a naive loop finds it."""
    model, data = tiny_moco(knn=KNNConfig(k=5, temperature=0.1)), tiny_data()
    results = tiny_trainer(tmp_path).test(model, data, verbose=False)

    def features(loader):
        out = [(model.backbone(model.augment.evaluate(batch)), batch["label"]) for batch in loader]
        return F.normalize(torch.cat([f for f, _ in out]), dim=1), torch.cat([y for _, y in out])

    model.eval()
    with torch.no_grad():
        bank_loader, query_loader = data.test_dataloader()
        bank, bank_labels = features(bank_loader)
        queries, query_labels = features(query_loader)
    assert len(bank) == 64 and len(queries) == 32
    correct = 0
    for query, label in zip(queries.tolist(), query_labels.tolist()):
        similarity = [sum(a * b for a, b in zip(query, item)) for item in bank.tolist()]
        votes = {}
        for j in sorted(range(len(similarity)), key=lambda j: -similarity[j])[:5]:
            votes[int(bank_labels[j])] = votes.get(int(bank_labels[j]), 0.0) + math.exp(similarity[j] / 0.1)
        correct += max(votes, key=votes.get) == label
    assert results[0]["val/knn_top1"] == pytest.approx(correct / len(queries), abs=1e-6)


def test_queue_per_view_is_solo_learn_mocov2plus_loss():
    """solo/losses/mocov2plus.py with solo/methods/mocov2plus.py: (L(q1, k2, queue[1]) +
    L(q2, k1, queue[0])) / 2, where queue[v] holds past keys of view v; then k1 and k2 enter
    their own queues."""
    import torch.nn.functional as F

    model = tiny_moco(symmetric=True, queue_per_view=True, batchnorm="plain").eval()
    g = torch.Generator().manual_seed(3)
    x1, x2 = torch.randn(16, 3, 32, 32, generator=g), torch.randn(16, 3, 32, 32, generator=g)
    past_view2, past_view1 = model.queue.keys.clone(), model.queue_2.keys.clone()

    def encode(backbone, head, x):
        return F.normalize(head(backbone(x)), dim=-1)

    q1, q2 = encode(model.backbone, model.projector, x1), encode(model.backbone, model.projector, x2)
    with torch.no_grad():
        k1, k2 = encode(model.momentum_backbone, model.momentum_projector, x1), encode(model.momentum_backbone, model.momentum_projector, x2)

    def solo_loss(query, key, queue, temperature=model.temperature):
        pos = torch.einsum("nc,nc->n", [query, key]).unsqueeze(-1)
        neg = torch.einsum("nc,ck->nk", [query, queue])
        logits = torch.cat([pos, neg], dim=1) / temperature
        return F.cross_entropy(logits, torch.zeros(query.size(0), dtype=torch.long))

    expected = (solo_loss(q1, k2, past_view2.T) + solo_loss(q2, k1, past_view1.T)) / 2
    loss, _ = model.step([{"image": x1}, {"image": x2}])
    assert torch.allclose(loss, expected, atol=1e-6)
    assert torch.allclose(model.queue.keys[:16], k2, atol=1e-6)
    assert torch.allclose(model.queue_2.keys[:16], k1, atol=1e-6)


def test_queue_per_view_needs_the_symmetric_loss():
    with pytest.raises(ValueError, match="queue_per_view needs model.symmetric: true"):
        tiny_moco(queue_per_view=True)
