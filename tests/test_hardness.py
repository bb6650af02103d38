import pytest
import torch
import torch.nn.functional as F

from ddp import run_distributed
from sslkit.nn.hardness import HardNegatives, HardnessBand, MoCHi, hardness_statistics
from sslkit.nn.losses import info_nce, info_nce_logits
from sslkit.nn.queue import NegativeQueue


def unit(*shape):
    return F.normalize(torch.randn(*shape), dim=-1)


def hard_logits(q, k, queue, band=None, beta=0.0, mochi=None):
    """InfoNCE logits and targets with ``HardNegatives`` as the selection, and what it saw."""
    return info_nce_logits(q, k, queue, 0.2, HardNegatives(band, beta, mochi))


def naive_band(similarity, skip, end):
    """Reference: sort each query's similarities in Python and slice ranks [skip, end)."""
    rows = []
    for row in similarity.tolist():
        order = sorted(range(len(row)), key=lambda j: -row[j])[skip:end]
        rows.append(order)
    return torch.tensor(rows)


@pytest.mark.parametrize("lo, hi, unit_, skip, end", [
    (0.001, 0.05, "fraction", 4, 205),     # K = 4096: drop the hardest 0.1%, keep to 5%
    (0.0, 0.05, "fraction", 0, 205),
    (0.05, 1.0, "fraction", 204, 4096),    # the easiest 95%
    (0.0, 0.001, "fraction", 0, 5),
    (10, 50, "count", 10, 50),
])
def test_band_equals_naive_sort_and_slice(lo, hi, unit_, skip, end):
    torch.manual_seed(0)
    band = HardnessBand(lo, hi, 4096, unit_)
    assert (band.skip, band.end) == (skip, end)
    similarity = unit(6, 16) @ unit(4096, 16).T
    values, index = band.select(similarity)
    assert torch.equal(index, naive_band(similarity, skip, end))
    assert torch.equal(values, similarity.gather(1, index))


def test_full_band_is_plain_info_nce_bit_for_bit():
    torch.manual_seed(0)
    q, k, queue = unit(8, 32), unit(8, 32), unit(512, 32)
    plain, targets, _ = info_nce_logits(q, k, queue, 0.2)
    for band in (None, HardnessBand(0.0, 1.0, 512)):
        banded, banded_targets, _ = hard_logits(q, k, queue, band)
        assert torch.equal(banded, plain)
        assert torch.equal(F.cross_entropy(banded, banded_targets), F.cross_entropy(plain, targets))
        assert torch.equal(info_nce(q, k, queue, 0.2, HardNegatives(band)), F.cross_entropy(plain, targets))


def test_gradients_reach_only_the_selected_negatives_and_the_positive():
    torch.manual_seed(0)
    q = unit(4, 16).requires_grad_()
    k = unit(4, 16).requires_grad_()
    queue = unit(200, 16).requires_grad_()
    logits, targets, seen = hard_logits(q, k, queue, HardnessBand(0.05, 0.2, 200))
    F.cross_entropy(logits, targets).backward()
    selected = torch.zeros(200, dtype=torch.bool)
    selected[seen.band_index.flatten()] = True
    touched = queue.grad.abs().sum(1) > 0
    assert torch.equal(touched, selected)
    assert (k.grad.abs().sum(1) > 0).all()
    assert logits.shape == (4, 1 + 30)


def test_beta_zero_is_info_nce_and_beta_weights_hard_negatives_more():
    torch.manual_seed(0)
    q, k, queue = unit(8, 16), unit(8, 16), unit(300, 16)
    plain = info_nce_logits(q, k, queue, 0.2)[0]
    assert torch.equal(hard_logits(q, k, queue, beta=0.0)[0], plain)
    weighted = hard_logits(q, k, queue, beta=5.0)[0]
    # log-weights log(K w_i) with w = softmax(beta s): closed form
    s = plain[:, 1:] * 0.2
    expected = plain[:, 1:] + torch.log(torch.tensor(300.0)) + torch.log_softmax(5.0 * s, dim=1)
    assert torch.allclose(weighted[:, 1:], expected, atol=1e-5)
    assert torch.equal(weighted[:, 0], plain[:, 0])


def test_mochi_negatives_are_unit_mixes_of_the_hardest():
    torch.manual_seed(0)
    q, k, queue = unit(4, 16), unit(4, 16), unit(100, 16)
    logits, _, seen = hard_logits(q, k, queue, mochi=MoCHi(hardest=10, synthetic=7, query_synthetic=3))
    assert logits.shape == (4, 1 + 100 + 10)
    synthetic_logits = logits[:, 101:] * 0.2
    assert (synthetic_logits.abs() <= 1 + 1e-5).all()
    # mixes of hard negatives sit near the hard end: above the median real negative
    assert (synthetic_logits[:, :7].mean(1) > seen.similarity.median(1).values).all()


def test_same_class_fraction_on_a_hand_made_example():
    similarity = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.7, 0.6]])
    band_similarity, band_index = HardnessBand(0, 2, 4, "count").select(similarity)
    queue_labels = torch.tensor([0, 1, 1, -1])   # the last key's label is unknown
    query_labels = torch.tensor([0, 1])
    stats = hardness_statistics(similarity, band_similarity, band_index, query_labels, queue_labels)
    # band: query 0 -> keys {0, 1}: labels 0, 1 -> 1 of 2 same; query 1 -> keys {2, 3}: 1, unknown -> 1 of 1
    assert float(stats["hardness/same_class_band"]) == pytest.approx(2 / 3)
    # whole queue, known keys only: query 0 -> 1 of 3; query 1 -> 2 of 3
    assert float(stats["hardness/same_class_queue"]) == pytest.approx(3 / 6)
    assert float(stats["hardness/band_sim_max"]) == pytest.approx((0.9 + 0.7) / 2)
    assert float(stats["hardness/band_sim_min"]) == pytest.approx((0.8 + 0.6) / 2)


def test_bad_bands_are_clear_errors_at_construction():
    with pytest.raises(ValueError, match=r"0 <= lo < hi <= 1"):
        HardnessBand(0.0, 1.5, 100)
    with pytest.raises(ValueError, match=r"0 <= lo < hi <= 1"):
        HardnessBand(0.05, 0.01, 100)
    with pytest.raises(ValueError, match="keeps no negative of a queue of 100"):
        HardnessBand(0.0, 1e-12, 100)
    with pytest.raises(ValueError, match="queue_size 100"):
        HardnessBand(10, 200, 100, "count")
    from helpers import tiny_moco

    with pytest.raises(ValueError, match="hardness_band"):
        tiny_moco(hardness_band=(0.2, 0.1))


def _band_on_each_rank(rank, world_size):
    torch.manual_seed(0)
    queue = NegativeQueue(64, 8)
    torch.manual_seed(10 + rank)
    queue.enqueue(unit(4, 8), torch.full((4,), rank))
    queries = unit(3, 8)
    seen = hard_logits(queries, unit(3, 8), queue.keys, HardnessBand(0.1, 0.3, 64))[2]
    return queue.keys.clone(), queue.labels.clone(), queries, seen.band_index


def test_band_under_ddp_uses_the_same_gathered_queue_on_every_rank():
    results = run_distributed(_band_on_each_rank, 2)
    (keys0, labels0, _, _), (keys1, labels1, _, _) = results
    assert torch.equal(keys0, keys1) and torch.equal(labels0, labels1)
    assert labels0[:8].tolist() == [0] * 4 + [1] * 4
    band = HardnessBand(0.1, 0.3, 64)
    for keys, _, queries, index in results:
        assert torch.equal(index, naive_band(queries @ keys.T, band.skip, band.end))


def test_moco_trains_on_the_band_and_logs_what_it_selects(tmp_path):
    from helpers import tiny_data, tiny_moco, tiny_trainer

    model = tiny_moco(hardness_band=(0.05, 0.5), hardness_log_every=2, negative_beta=1.0,
                      mochi=MoCHi(hardest=8, synthetic=4, query_synthetic=2))
    trainer = tiny_trainer(tmp_path, max_steps=8)
    trainer.fit(model, tiny_data())
    metrics = trainer.callback_metrics
    assert float(metrics["hardness/band_size"]) == model.negatives.band.size == 32 - 3
    for key in ("hardness/same_class_band", "hardness/same_class_queue", "hardness/sim_q5", "hardness/sim_q999"):
        assert torch.isfinite(metrics[key])
    assert float(metrics["hardness/band_sim_max"]) >= float(metrics["hardness/band_sim_min"])
    assert (model.queue.labels >= 0).all()  # SyntheticScenes has labels: every key's label is kept
    # statistics start once the queue holds real keys (step 4 of 4 per epoch): epoch 1 only
    assert sorted(p.name for p in (tmp_path / "hardness").glob("*.png")) == ["epoch_001.png"]
