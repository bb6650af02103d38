import numpy as np
import pytest
import torch

from sslkit.checkpoints import CheckpointError, file_digest, load_backbone
from sslkit.eval.cache import cached_features
from sslkit.eval.features import extract_features
from sslkit.eval.knn import knn_predict
from sslkit.eval.linear import fit_logistic_regression, linear_probe, topk_accuracy


def blobs(n, d=32, classes=10, seed=0, spread=2.5):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(123))
    labels = torch.randint(0, classes, (n,), generator=g)
    return centres[labels] + spread * torch.randn(n, d, generator=g), labels


def test_logistic_regression_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    train_x, train_y = blobs(2000)
    test_x, test_y = blobs(1000, seed=1)
    l2 = 1e-3
    ours = fit_logistic_regression(train_x, train_y, l2, max_iter=1000)
    ours_acc = topk_accuracy(ours.logits(test_x), test_y, 1)
    mean, std = train_x.mean(0), train_x.std(0)
    reference = LogisticRegression(C=1.0 / (l2 * len(train_x)), max_iter=5000, tol=1e-8)
    reference.fit(((train_x - mean) / std).numpy(), train_y.numpy())
    ref_acc = reference.score(((test_x - mean) / std).numpy(), test_y.numpy())
    assert 0.3 < ref_acc < 0.95  # a problem where the classifier matters
    assert abs(ours_acc - ref_acc) <= 0.01
    agreement = (ours.logits(test_x).argmax(1).numpy() == reference.predict(((test_x - mean) / std).numpy())).mean()
    assert agreement > 0.98


def test_probe_sweeps_l2_on_held_out_data_and_reports_top5():
    train = blobs(1500)
    test = blobs(500, seed=1)
    result = linear_probe(train, test, l2_grid=(1e-4, 1e-2, 10.0), val_fraction=0.2)
    assert set(result.sweep) == {1e-4, 1e-2, 10.0} and result.l2 == max(result.sweep, key=result.sweep.get)
    assert result.sweep[10.0] < result.sweep[1e-4]  # a huge penalty underfits
    assert result.top5 >= result.top1 > 0.3


def test_knn_equals_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    bank, bank_labels = torch.randn(300, 16, generator=g), torch.randint(0, 5, (300,), generator=g)
    queries = torch.randn(40, 16, generator=g)
    scores = knn_predict(queries, bank, bank_labels, 5, k=7, temperature=0.1, chunk_size=16)
    for i, q in enumerate(queries.tolist()):
        sims = []
        for j, b in enumerate(bank.tolist()):
            cos = float(np.dot(q, b) / (np.linalg.norm(q) * np.linalg.norm(b)))
            sims.append((cos, j))
        votes = [0.0] * 5
        for cos, j in sorted(sims, reverse=True)[:7]:
            votes[int(bank_labels[j])] += float(np.exp(cos / 0.1))
        assert np.allclose(scores[i].numpy(), votes, rtol=1e-4)


def test_feature_cache_is_invalidated_when_the_checkpoint_changes(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    torch.save({"w": torch.zeros(3)}, ckpt)
    calls = []

    def compute():
        calls.append(1)
        return torch.randn(4, 2), torch.arange(4)

    def get():
        return cached_features(tmp_path / "cache", {"checkpoint": file_digest(ckpt), "split": "val"}, compute)

    first = get()
    second = get()
    assert not first[2] and second[2] and len(calls) == 1 and torch.equal(first[0], second[0])
    torch.save({"w": torch.ones(3)}, ckpt)
    third = get()
    assert not third[2] and len(calls) == 2


def test_extraction_needs_labels_and_checkpoints_need_a_backbone(tmp_path):
    loader = [{"image": torch.zeros(2, 3, 4, 4)}]
    with pytest.raises(ValueError, match="no 'label'"):
        extract_features(torch.nn.Flatten(), loader, lambda b: b["image"], progress=False)
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"classifier.weight": torch.zeros(2, 2)}, "hyper_parameters": {}}, path)
    with pytest.raises(CheckpointError, match="cannot tell the format of .*other.ckpt"):
        load_backbone(path)
    path.write_bytes(b"PK\x03\x04truncated")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .* truncated or not a PyTorch file"):
        load_backbone(path)


def test_standard_protocol_trains_the_classifier_only(tmp_path):
    import pytorch_lightning as pl

    from helpers import tiny_data, tiny_moco
    from sslkit.eval.linear_probe import LinearProbe

    data = tiny_data(num_train=128, num_val=64, batch_size=32)
    data.setup("fit")
    backbone = tiny_moco().backbone
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    probe = LinearProbe(backbone, num_classes=4, crop_size=32, lr=0.5, milestones=(1,))
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    loader = lambda ds, shuffle: torch.utils.data.DataLoader(ds, batch_size=32, shuffle=shuffle)  # noqa: E731
    trainer.fit(probe, loader(data.train_set, True), loader(data.val_set, False))
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics untouched
    assert 0.0 <= float(trainer.callback_metrics["val/top1"]) <= 1.0
    assert float(trainer.callback_metrics["val/top5"]) == 1.0  # 4 classes: top-5 always hits


def test_standard_probe_classifier_starts_as_main_lincls():
    """main_lincls.py: fc.weight ~ N(0, 0.01), fc.bias = 0."""
    from sslkit.eval import LinearProbe
    from sslkit.nn.backbones import build_backbone

    torch.manual_seed(0)
    probe = LinearProbe(build_backbone("torchvision.resnet18"), num_classes=1000, crop_size=32)
    weight = probe.classifier.weight
    assert torch.equal(probe.classifier.bias, torch.zeros(1000))
    assert abs(float(weight.mean())) < 1e-3 and abs(float(weight.std()) - 0.01) < 2e-4
