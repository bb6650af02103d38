"""SimCLR's hardness band, beta-reweighting and BG_Swaps' hard negative over the 2N - 2
negatives of each anchor, against naive per-anchor loops."""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_baseline, tiny_data, tiny_trainer
from sslkit.nn.hardness import HardNegatives, HardnessBand
from sslkit.nn.losses import info_nce_logits, nt_xent, simclr_pairs


def embeddings(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    return z1, z1 + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)


def naive_banded_nt_xent(z1, z2, temperature, skip, end, extra=None):
    """For every anchor of each view: its 2N - 2 negatives (the other view's other images and
    its own view's other images) sorted by similarity, ranks [skip, end) kept, cross-entropy
    with the positive first; the two views' means summed. ``extra``: one more logit per anchor
    of view 1."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n, total = len(z1), 0.0
    for a, b, first in ((z1, z2, True), (z2, z1, False)):
        losses = []
        for i in range(n):
            negatives = [float(a[i] @ b[j]) for j in range(n) if j != i] + [float(a[i] @ a[j]) for j in range(n) if j != i]
            band = sorted(negatives, reverse=True)[skip:end]
            logits = [float(a[i] @ b[i]) / temperature] + [s / temperature for s in band]
            if first and extra is not None:
                logits.append(float(extra[i]))
            losses.append(-logits[0] + math.log(sum(math.exp(v) for v in logits)))
        total += sum(losses) / n
    return total


def banded(z1, z2, temperature, band, extra=None):
    loss = z1.new_zeros(())
    for direction, (q, p, candidates, exclude) in enumerate(simclr_pairs(z1, z2, gather=False)):
        selection = HardNegatives(band)
        logits, targets, seen = info_nce_logits(q, p, candidates, temperature, selection,
                                                extra if direction == 0 else None, exclude)
        loss = loss + F.cross_entropy(logits, targets)
    return loss, seen


def test_the_full_band_is_nt_xent():
    z1, z2 = embeddings()
    loss, _ = banded(z1, z2, 0.2, HardnessBand(0.0, 1.0, 10))
    assert float(loss) == pytest.approx(float(nt_xent(z1, z2, 0.2, gather=False)), rel=1e-12)


@pytest.mark.parametrize("skip, end", [(1, 5), (0, 3), (4, 10)])
def test_a_band_keeps_each_anchors_ranks(skip, end):
    z1, z2 = embeddings(seed=1)
    loss, seen = banded(z1, z2, 0.2, HardnessBand(skip, end, 10, unit="count"))
    assert float(loss) == pytest.approx(naive_banded_nt_xent(z1, z2, 0.2, skip, end), rel=1e-10)
    exclude = simclr_pairs(z1, z2, gather=False)[1][3]
    assert not exclude.gather(1, seen.band_index).any()  # band indices never point at the positive or the anchor


def test_bg_swaps_negative_joins_view_1s_logits():
    z1, z2 = embeddings(seed=2)
    extra = torch.tensor([0.5, float("-inf"), 1.0, 0.0, -2.0, float("-inf")], dtype=torch.float64).view(-1, 1)
    loss, _ = banded(z1, z2, 0.2, None, extra)
    naive = naive_banded_nt_xent(z1, z2, 0.2, 0, 10, extra.view(-1))
    assert float(loss) == pytest.approx(naive, rel=1e-10)


def test_simclr_trains_with_a_hardness_band_and_logs_its_statistics(tmp_path):
    model = tiny_baseline("SimCLR", hardness_band=(0.1, 0.6), hardness_log_every=1)
    trainer = tiny_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(model, tiny_data())
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"])
    assert float(metrics["hardness/band_size"]) == 15  # ranks 3..18 of 2 x 16 - 2 = 30 negatives
    assert 0.0 <= float(metrics["hardness/same_class_band"]) <= 1.0


def test_a_band_beyond_the_negatives_is_refused_before_training(tmp_path):
    model = tiny_baseline("SimCLR", hardness_band=(2, 40), hardness_unit="count")
    with pytest.raises(ValueError, match=r"must satisfy 0 <= lo < hi <= 30"):
        tiny_trainer(tmp_path, max_steps=1).fit(model, tiny_data())


def test_simclr_with_bg_swaps_trains_and_logs_the_swap_negative(tmp_path):
    from sslkit.augmentations import BackgroundSwap, MoCoV2Views

    views = MoCoV2Views(crop_size=32, blur_p=0.0, background_swap=BackgroundSwap(p=1.0, hard_negative=True))
    model = tiny_baseline("SimCLR", augment=views)
    trainer = tiny_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(model, tiny_data())
    assert float(trainer.callback_metrics["train/swap_negative_rate"]) > 0.5
