import pytest
import torch
import torch.nn.functional as F

from helpers import record_draws, tiny_byol, tiny_data, tiny_moco, tiny_swav, tiny_trainer
from sslkit.augmentations import BackgroundRemove, BackgroundSwap, BYOLViews, MoCoV2Views, MultiCropViews


def test_moco_appends_the_swap_negative_to_the_logits():
    """MoCo's loss with BG_Swaps equals a per-sample cross-entropy over [positive, queue,
    swap negative] written out by hand; a sample without a negative has no extra logit."""
    torch.manual_seed(0)
    model = tiny_moco().eval()  # BatchNorm on running statistics: keys independent of the batch
    batch = 6
    x1, x2, negative = (torch.rand(batch, 3, 32, 32) for _ in range(3))
    valid = torch.tensor([True, False, True, True, False, True])
    queue = model.queue.keys.clone()
    views = [{"image": x1}, {"image": x2, "hard_negative": negative, "hard_negative_valid": valid}]
    loss, stats = model.step(views)

    def encode(backbone, projector, x):
        return F.normalize(projector(backbone(x)), dim=1)

    with torch.no_grad():
        q = encode(model.backbone, model.projector, x1)
        k = encode(model.momentum_backbone, model.momentum_projector, x2)
        n = encode(model.momentum_backbone, model.momentum_projector, negative)
    losses = []
    for i in range(batch):
        logits = [q[i] @ k[i]] + [q[i] @ key for key in queue] + ([q[i] @ n[i]] if valid[i] else [])
        losses.append(F.cross_entropy(torch.stack(logits)[None] / model.temperature, torch.tensor([0])))
    assert float(loss) == pytest.approx(float(torch.stack(losses).mean()), abs=1e-5)
    assert float(stats["train/swap_negative_rate"]) == pytest.approx(4 / 6)
    assert int(model.queue.filled) == batch  # the keys of view 2 only, never the negatives


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
    draws = record_draws(byol.augment.background_swap)
    tiny_trainer(tmp_path, max_steps=2).fit(byol, tiny_data())
    assert len(draws) == 2 and all(d["chosen"].any() and "negative_valid" not in d for d in draws)
    assert torch.isfinite(byol.trainer.callback_metrics["train/loss"])
    swav = tiny_swav(augment=MultiCropViews(global_size=32, local_size=16, num_local=2, blur_p=0.0,
                                            background_swap=BackgroundSwap(p=0.5, hard_negative=False)))
    draws = record_draws(swav.augment.background_swap)
    tiny_trainer(tmp_path, max_steps=2).fit(swav, tiny_data())
    assert len(draws) == 2 and all(d["chosen"].any() and "negative_valid" not in d for d in draws)
    assert torch.isfinite(swav.trainer.callback_metrics["train/loss"])


def test_swav_crops_see_the_query_in_crop_0_and_swapped_positives_in_every_other():
    """SwAV's multi-crop with BG_Swaps (positive part only): with the same draws, global crop 0
    is the same with and without the swap, and every other crop changes."""
    data = tiny_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))

    def views(p):
        torch.manual_seed(0)
        recipe = MultiCropViews(global_size=32, local_size=16, num_local=2, blur_p=0.0,
                                background_swap=BackgroundSwap(p=p, hard_negative=False, foreground_range=(0.0, 1.0)))
        return recipe(batch)

    swapped, plain = views(1.0), views(0.0)
    assert len(swapped) == 4 and all("hard_negative" not in view for view in swapped)
    assert torch.equal(swapped[0]["image"], plain[0]["image"])
    assert all(not torch.equal(a["image"], b["image"]) for a, b in zip(swapped[1:], plain[1:]))
