"""sslkit's crop and colour stages against torchvision, the implementation MoCo, SwAV and
solo-learn call per image: box distribution (two-sample Kolmogorov-Smirnov tests),
resampled pixels, mask alignment, and per-sample colour jitter."""
import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF
from scipy.stats import ks_2samp

from sslkit.augmentations import ColorJitter, RandomGrayscale, RandomResizedCrop, View
from sslkit.augmentations.geometry import random_resized_boxes

DRAWS = 20_000


def box_statistics(boxes: np.ndarray, height: int, width: int) -> dict[str, np.ndarray]:
    top, left, h, w = boxes.T.astype(np.float64)
    return {"area": h * w / (height * width), "log_aspect": np.log(w / h),
            "centre_x": (left + w / 2) / width, "centre_y": (top + h / 2) / height}


@pytest.mark.parametrize("height, width, scale", [(375, 500, (0.08, 1.0)), (500, 333, (0.2, 1.0)),
                                                  (100, 1000, (0.08, 1.0)), (32, 32, (0.14, 1.0))])
def test_crop_boxes_are_distributed_as_torchvision_draws_them(height, width, scale):
    """Including the central fallback of extreme aspect ratios (100 x 1000: most draws fail
    the 10 attempts)."""
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    reference = np.array([T.RandomResizedCrop.get_params(image, scale, (3 / 4, 4 / 3)) for _ in range(DRAWS)])
    ours = random_resized_boxes(torch.tensor([[height, width]]).expand(DRAWS, 2), scale).numpy()
    assert (ours[:, 0] >= 0).all() and (ours[:, 0] + ours[:, 2] <= height).all()
    assert (ours[:, 1] >= 0).all() and (ours[:, 1] + ours[:, 3] <= width).all()
    ref_stats, our_stats = box_statistics(reference, height, width), box_statistics(ours, height, width)
    for name in ref_stats:
        result = ks_2samp(ref_stats[name], our_stats[name])
        assert result.pvalue > 1e-3, (name, result)
    if height * 10 == width:  # the central fallback (100 x 133) must come as often as in torchvision
        ours_fallback = ((ours[:, 2] == 100) & (ours[:, 3] == 133)).mean()
        reference_fallback = ((reference[:, 2] == 100) & (reference[:, 3] == 133)).mean()
        assert reference_fallback > 0.1 and abs(ours_fallback - reference_fallback) < 0.02


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_each_view_is_torchvision_resized_crop_of_its_own_box(dtype, mode):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 96, 128), dtype=torch.uint8)
    if dtype == torch.float32:
        images = images.float() / 255
    stage = RandomResizedCrop(48, scale=(0.08, 1.0), interpolation=mode)
    params = stage.draw({"image": images})
    out = stage.apply({"image": images}, params)["image"]
    interpolation = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}[mode]
    assert out.shape == (6, 3, 48, 48) and out.dtype == dtype
    assert len({tuple(b) for b in params["boxes"].tolist()}) == 6  # a box per sample
    for image, box, view in zip(images, params["boxes"].tolist(), out):
        assert torch.equal(view, TF.resized_crop(image, *box, [48, 48], interpolation=interpolation, antialias=True))


def test_masks_follow_the_same_boxes_exactly():
    torch.manual_seed(0)
    mask = torch.rand(1, 1, 300, 400) > 0.5
    image = mask.expand(-1, 3, -1, -1).to(torch.uint8) * 255
    stage = RandomResizedCrop(64, scale=(0.1, 1.0))
    params = stage.draw({"image": image, "mask": mask})
    out = stage({"image": image, "mask": mask}, params)
    top, left, h, w = params["boxes"][0].tolist()
    expected = TF.resized_crop(mask[0].float(), top, left, h, w, [64, 64],
                               interpolation=T.InterpolationMode.NEAREST_EXACT) > 0.5
    assert torch.equal(out["mask"][0], expected)


def test_colour_jitter_equals_torchvision_per_sample_in_its_own_order():
    torch.manual_seed(0)
    images = torch.rand(64, 3, 12, 12)
    stage = ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)
    params = stage.draw({"image": images})
    out = stage({"image": images}, params)["image"]
    adjust = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(len(images)):
        expected = images[i]
        for op in params["order"][i].tolist():
            expected = adjust[op](expected, float(params["factors"][i, op]))
        assert torch.allclose(out[i], expected, atol=2e-6), i
    orders = {tuple(o) for o in params["order"].tolist()}
    assert len(orders) > 10  # drawn per image, as torchvision's ColorJitter does, not per batch


def test_colour_jitter_draws_follow_torchvision_ranges_and_probability():
    stage = ColorJitter(0.4, 0.3, 0.2, 0.1, p=0.8)
    params = stage.draw({"image": torch.zeros(20_000, 3, 1, 1)})
    factors = params["factors"]
    for i, (lo, hi) in enumerate([(0.6, 1.4), (0.7, 1.3), (0.8, 1.2), (-0.1, 0.1)]):
        assert lo <= float(factors[:, i].min()) and float(factors[:, i].max()) <= hi
        assert abs(float(factors[:, i].mean()) - (lo + hi) / 2) < 0.01
    assert abs(float(params["applied"].float().mean()) - 0.8) < 0.01
    # every one of the 24 orders appears about equally often
    counts = np.bincount([hash(tuple(o)) % 1_000_003 for o in params["order"].tolist()])
    assert (counts > 0).sum() == math.factorial(4)


def test_grayscale_uses_torchvision_luma_weights():
    images = torch.rand(4, 3, 5, 5)
    out = View([RandomGrayscale(p=1.0)])({"image": images})["image"]
    assert torch.allclose(out, TF.rgb_to_grayscale(images, num_output_channels=3), atol=1e-6)
