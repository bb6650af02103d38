import pytest
import torch
import torch.nn.functional as F

from helpers import tiny_byol, tiny_data, tiny_moco, tiny_swav, tiny_trainer
from sslkit.augmentations import BackgroundRemove, BackgroundSwap, BYOLViews, MoCoV2Views, MultiCropViews


def test_moco_appends_the_swap_negative_to_the_logits():
    model = tiny_moco().eval()  # BatchNorm on running statistics: keys independent of the batch
    batch, dim = 6, 16
    query = F.normalize(torch.randn(batch, dim), dim=1)
    logits = torch.randn(batch, 1 + 64)
    view = {"hard_negative": torch.randn(batch, 3, 32, 32),
            "hard_negative_valid": torch.tensor([True, False, True, True, False, True])}
    out, stats = model._append_hard_negative(logits, query, view)
    assert out.shape == (batch, 66) and torch.equal(out[:, :65], logits)
    key = model._keys(view["hard_negative"])
    expected = (query * key).sum(1) / model.temperature
    valid = view["hard_negative_valid"]
    assert torch.allclose(out[valid, -1], expected[valid], atol=1e-5)
    assert torch.isneginf(out[~valid, -1]).all()
    assert float(stats["train/swap_negative_rate"]) == pytest.approx(4 / 6)
    # an invalid negative changes nothing: same cross-entropy as without the column
    targets = torch.zeros(batch, dtype=torch.long)
    assert torch.allclose(F.cross_entropy(out[~valid], targets[~valid]), F.cross_entropy(logits[~valid], targets[~valid]))


def test_moco_trains_with_background_stages_and_the_negative_never_enters_the_queue(tmp_path):
    augment = MoCoV2Views(crop_size=32, blur_p=0.0, background=[BackgroundRemove(p=0.5)],
                          background_swap=BackgroundSwap(p=0.5))
    model = tiny_moco(augment=augment)
    tiny_trainer(tmp_path, max_steps=3).fit(model, tiny_data())
    assert int(model.queue.filled) == 3 * 16
    metrics = model.trainer.callback_metrics
    assert metrics["train/swap_negative_rate"] > 0
    assert all(torch.isfinite(metrics[k]) for k in ("train/negative_sim", "train/positive_sim", "train/loss"))


def test_byol_and_swav_take_the_positive_only_form(tmp_path):
    with pytest.raises(ValueError, match="hard_negative: false"):
        tiny_byol(augment=BYOLViews(crop_size=32, blur_p=(0.0, 0.0), background_swap=BackgroundSwap()))
    byol = tiny_byol(augment=BYOLViews(crop_size=32, blur_p=(0.0, 0.0),
                                       background_swap=BackgroundSwap(p=0.5, hard_negative=False)))
    tiny_trainer(tmp_path, max_steps=2).fit(byol, tiny_data())
    swav = tiny_swav(augment=MultiCropViews(global_size=32, local_size=16, num_local=2, blur_p=0.0,
                                            background_swap=BackgroundSwap(p=0.5, hard_negative=False)))
    tiny_trainer(tmp_path, max_steps=2).fit(swav, tiny_data())
    assert torch.isfinite(swav.trainer.callback_metrics["train/loss"])
